"""Data-parallel training on Dask: the digits MLP on a larger set, on 1 worker and on N.

Run: pip install -e ".[examples,distributed]" && python examples/distributed_digits.py [--workers 2] [--steps 20]

scikit-learn's 8x8 digits, each image also shifted by one pixel in four directions (8,985
images), train one MLP 64-128-10 by full-batch gradient steps with Adam: once with the batch's
gradient computed by one Dask worker, once split across N workers of a LocalCluster (the shards
stay on the workers; each step sends the parameters and sums the shards' gradients). Both runs
start from the same parameters, so their loss curves agree to rounding; the table shows each
step's time on 1 and on N workers and the speedup.
"""
import argparse
import sys
import time

import numpy as np

import tracegrad as tg
from tracegrad import nn, optim

try:
    import distributed
    import tracegrad.distributed as tgd
except ImportError:
    sys.exit('examples/distributed_digits.py needs Dask: pip install -e ".[examples,distributed]"')


def shifted_digits():
    """The digits and their copies shifted by one pixel up, down, left and right."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit('examples/distributed_digits.py needs scikit-learn: pip install -e ".[examples]"')
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target.astype(np.int64)
    copies = [images] + [np.roll(images, shift, axis) for shift in (-1, 1) for axis in (1, 2)]
    return np.concatenate(copies).reshape(-1, 64), np.tile(labels, len(copies))


def loss(params, x, labels):
    return nn.softmax_cross_entropy(nn.mlp(params, x, activation=nn.relu), labels)


def train(client, x, labels, shards: int, steps: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Full-batch Adam steps with the gradient from `shards` shards on `client`'s workers."""
    optimizer = optim.adam(1e-2)
    params = nn.init_mlp([64, 128, 10], seed=seed, init="he")
    state = optimizer.init(params)
    losses, seconds = [], []
    with tgd.DataParallel(loss, (x, labels), shards=shards, client=client) as parallel:
        for _ in range(steps):
            start = time.perf_counter()
            value, grads = parallel.value_and_grad(params)
            seconds.append(time.perf_counter() - start)
            params, state = optimizer.update(grads, state, params)
            losses.append(float(value))
    return losses, seconds


def main(workers: int = 2, steps: int = 20, verbose: bool = True) -> dict:
    x, labels = shifted_digits()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    try:
        one_losses, one_seconds = train(client, x, labels, shards=1, steps=steps)
        many_losses, many_seconds = train(client, x, labels, shards=workers, steps=steps)
    finally:
        client.run(tgd.leave_compiles_unfinished)
        client.close()
        cluster.close()
    if verbose:
        print(f"{len(x):,} images, full-batch steps; 1 worker against {workers}")
        print(f"{'step':>4} {'loss, 1 worker':>15} {f'loss, {workers} workers':>16} {'1 worker':>10} "
              f"{f'{workers} workers':>10} {'speedup':>8}")
        for k in range(steps):
            print(f"{k + 1:>4} {one_losses[k]:>15.6f} {many_losses[k]:>16.6f} {one_seconds[k] * 1e3:>8.1f}ms "
                  f"{many_seconds[k] * 1e3:>8.1f}ms {one_seconds[k] / many_seconds[k]:>7.2f}x")
        later = slice(steps // 2, None)  # after the first steps, which run while numba compiles
        print(f"median step, second half: 1 worker {np.median(one_seconds[later]) * 1e3:.1f} ms, {workers} workers "
              f"{np.median(many_seconds[later]) * 1e3:.1f} ms; largest loss difference "
              f"{max(abs(a - b) for a, b in zip(one_losses, many_losses)):.1e}")
    return {"one": one_losses, "many": many_losses, "one_seconds": one_seconds, "many_seconds": many_seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    arguments = parser.parse_args()
    main(arguments.workers, arguments.steps)

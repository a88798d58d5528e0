"""Data-parallel gradients on Dask (`tracegrad.distributed`): one process against 1 and 2 workers.

    python benchmarks/bench_distributed.py                     # W6's net at batch 1,024 ... 65,536
    python benchmarks/bench_distributed.py --batches 16384 --samples 5

W6's net (64-128-128-10 tanh, softmax cross-entropy; suite/workloads.py) on random batches. For
each batch size, in one run: `tg.jit(tg.value_and_grad(loss))` in this process, and
`DataParallel(loss, batch).value_and_grad` with the batch as 1 shard on 1 worker and as 2
shards on 2 workers of one LocalCluster (single-threaded worker processes, BLAS and numba
pinned to one thread each). Every gradient is checked against this process's before timing
(rtol 1e-10), and the workers' numba code is compiled before timing (`tg.wait_for_compiles` on
each). Per step: the median over samples of the mean of several steps. The communication cost
per step is the 1-worker time minus this process's (parameters out, gradients back, the
scheduler's work); scaling efficiency is 1-worker time / (2 x 2-worker time). The break-even
batch is the smallest measured batch at which 2 workers beat this process.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite.threads  # noqa: E402  (first: pins the thread pools before NumPy is imported)

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
from suite import losses, workloads  # noqa: E402
from suite.impl_tracegrad import OPS  # noqa: E402

try:
    import cloudpickle
    import distributed
    import tracegrad.distributed as tgd
except ImportError:
    sys.exit('bench_distributed.py needs Dask: pip install -e ".[distributed]"')


def seconds_per_step(step, samples: int, repeats: int) -> float:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        times.append((time.perf_counter() - start) / repeats)
    return statistics.median(times)


def check(result, expected) -> None:
    for got, want in zip(tg.tree_leaves(result), tg.tree_leaves(expected)):
        if not np.allclose(got, want, rtol=1e-10, atol=1e-12):
            sys.exit("a data-parallel gradient differs from this process's: nothing timed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--samples", type=int, default=5)
    arguments = parser.parse_args()
    tg.config.compile_in_background = False
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {suite.threads.describe()}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    cloudpickle.register_pickle_by_value(losses)  # the workers cannot import this directory's modules
    cloudpickle.register_pickle_by_value(suite)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    rows = []
    try:
        for batch in arguments.batches:
            workload = workloads.classifier(batch, f"W6/b{batch}")
            loss = losses.mlp(workload.mlp, OPS)
            params, x, labels = workload.args
            local = tg.jit(tg.value_and_grad(loss))
            expected = local(params, x, labels)
            times = {"this process": seconds_per_step(lambda: local(params, x, labels), arguments.samples, 3)}
            for workers in (1, 2):
                with tgd.DataParallel(loss, (x, labels), shards=workers, client=client) as parallel:
                    check(parallel.value_and_grad(params), expected)
                    client.run(tg.wait_for_compiles)
                    check(parallel.value_and_grad(params), expected)
                    times[f"{workers} worker{'s' if workers > 1 else ''}"] = seconds_per_step(
                        lambda: parallel.value_and_grad(params), arguments.samples, 3)
            rows.append((batch, times))
            print(f"batch {batch:>6,}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), flush=True)
    finally:
        client.run(tgd.leave_compiles_unfinished)
        client.close()
        cluster.close()
    print(f"\n{'batch':>7} {'this process':>13} {'1 worker':>9} {'2 workers':>10} {'speedup':>8} "
          f"{'efficiency':>10} {'communication':>14}")
    for batch, t in rows:
        one, two, here = t["1 worker"], t["2 workers"], t["this process"]
        print(f"{batch:>7,} {here * 1e3:>11.1f}ms {one * 1e3:>7.1f}ms {two * 1e3:>8.1f}ms {here / two:>7.2f}x "
              f"{one / (2 * two):>9.0%} {(one - here) * 1e3:>12.1f}ms")
    faster = [batch for batch, t in rows if t["2 workers"] < t["this process"]]
    print(f"break-even: 2 workers beat this process from batch {faster[0]:,} (of those measured)" if faster
          else "break-even: 2 workers beat this process at none of the batches measured")


if __name__ == "__main__":
    main()

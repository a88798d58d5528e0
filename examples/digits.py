"""A real data set: scikit-learn's 8x8 digits, an MLP 64-128-10, softmax cross-entropy, Adam.

Run: pip install -e ".[examples]" && python examples/digits.py [--epochs 15] [--epoch-in-jit]

`--epoch-in-jit` runs each epoch's minibatch steps inside one `tg.jit` call (a `tg.fori_loop` over
the batches), then trains again the usual way, one jitted step per minibatch, from the same
start on the same batches, and prints both accuracies and timings.
"""
import argparse
import sys
import time

import numpy as np

import tracegrad as tg
from tracegrad import nn, optim

BATCH = 64


def load_digits_or_exit():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit('examples/digits.py needs scikit-learn: pip install -e ".[examples]"')
    digits = load_digits()  # 1,797 images, bundled with scikit-learn: nothing to download
    return digits.data / 16.0, digits.target.astype(np.int64)


def split(x, y, test_fraction=0.2, seed=0):
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def logits(params, x):
    return nn.mlp(params, x, activation=nn.relu)


def loss(params, x, labels):
    return nn.softmax_cross_entropy(logits(params, x), labels)


optimizer = optim.adam(3e-3)


@tg.jit
def train_step(params, state, x, labels):
    value, grads = tg.value_and_grad(loss)(params, x, labels)
    params, state = optimizer.update(grads, state, params)
    return value, params, state


@tg.jit
def train_epoch(params, state, x_batches, label_batches):
    """A whole epoch in one compiled call: the same steps as train_step, in a `tg.fori_loop`.

    The minibatches come pre-shaped, (n_batches, BATCH, 64) and (n_batches, BATCH); step i
    trains on minibatch i, read with the loop's traced index. Returns the epoch's mean loss and
    the new parameters and optimizer state.
    """
    def step(i, carry):
        params, state, total = carry
        value, params, state = train_step(params, state, x_batches[i], label_batches[i])  # traced into the body
        return params, state, total + value

    n_batches = x_batches.shape[0]
    params, state, total = tg.fori_loop(0, n_batches, step, (params, state, 0.0))
    return total / n_batches, params, state


def progress(epoch, epochs, batches):
    """A progress bar over one epoch's minibatches: tqdm if installed, else a plain iterator."""
    try:
        from tqdm import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False)


def epoch_batches(rng, n: int) -> list[np.ndarray]:
    """This epoch's minibatches of training-set indices: whole batches only, so one compile."""
    order = rng.permutation(n)
    return [order[i:i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]


def main(epochs: int = 15, seed: int = 0, verbose: bool = True, epoch_in_jit: bool = False,
         compiled_after_first_epoch: bool = False) -> dict:
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = split(*load_digits_or_exit(), seed=seed)
    params = nn.init_mlp([64, 128, 10], seed=seed, init="he")
    state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    predict = tg.jit(logits)
    epoch_seconds = []
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        batches = epoch_batches(rng, len(x_train))
        if epoch_in_jit:  # one call: every minibatch step of the epoch inside one compiled loop
            order = np.concatenate(batches)
            x_batches = x_train[order].reshape(len(batches), BATCH, -1)
            label_batches = y_train[order].reshape(len(batches), BATCH)
            losses, params, state = train_epoch(params, state, x_batches, label_batches)
        else:
            losses = []
            for batch in progress(epoch, epochs, batches):
                value, params, state = train_step(params, state, x_train[batch], y_train[batch])
                losses.append(value)
        if compiled_after_first_epoch and epoch == 0:
            tg.wait_for_compiles()  # later epochs run numba's code, not the NumPy code of a first call
        epoch_seconds.append(time.perf_counter() - epoch_start)
        train_accuracy = nn.accuracy(predict(params, x_train), y_train)
        if verbose:
            print(f"epoch {epoch + 1:2d}/{epochs}  loss {np.mean(losses):.4f}  train accuracy {train_accuracy:.1%}")
    test_accuracy = nn.accuracy(predict(params, x_test), y_test)
    seconds = time.perf_counter() - start
    if verbose:
        print(f"test accuracy {test_accuracy:.1%} on {len(x_test)} images, {seconds:.1f} s from the start "
              "(new programs run as NumPy code while numba compiles them)")
    return {"test_accuracy": test_accuracy, "seconds": seconds, "epoch_seconds": epoch_seconds, "params": params}


def compare(epochs: int, seed: int = 0) -> dict:
    """Train with one jitted call per epoch, then per minibatch, from the same start; print both."""
    print("one tg.jit call per epoch (tg.fori_loop over the minibatches):")
    in_jit = main(epochs, seed, epoch_in_jit=True, compiled_after_first_epoch=True)
    print("\none tg.jit call per minibatch step (the usual path):")
    per_step = main(epochs, seed, compiled_after_first_epoch=True)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(tg.tree_leaves(in_jit["params"]),
                                                                   tg.tree_leaves(per_step["params"])))
    print(f"\n{'':28} {'test accuracy':>13} {'first epoch':>11} {'later epochs (median)':>22}")
    for name, result in (("one call per epoch", in_jit), ("one call per step", per_step)):
        later = float(np.median(result["epoch_seconds"][1:])) if epochs > 1 else float("nan")
        first = result["epoch_seconds"][0]
        print(f"{name:28} {result['test_accuracy']:>13.1%} {first:>9.2f} s {later * 1e3:>19.1f} ms")
    print(f"largest difference between the two runs' trained parameters: {difference:.1e}; the first epoch "
          "includes waiting for numba to compile, later epochs run compiled code")
    return {"epoch_in_jit": in_jit, "per_step": per_step, "max_param_difference": difference}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--epoch-in-jit", action="store_true",
                        help="train with one tg.jit call per epoch (tg.fori_loop over the minibatches), then the usual "
                             "way, and compare")
    arguments = parser.parse_args()
    if arguments.epoch_in_jit:
        compare(arguments.epochs)
    else:
        main(arguments.epochs)

"""A real data set: scikit-learn's 8x8 digits, an MLP 64-128-10, softmax cross-entropy, Adam.

Run: pip install -e ".[examples]" && python examples/digits.py
"""
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


def progress(epoch, epochs, batches):
    """A progress bar over one epoch's minibatches: tqdm if installed, else a plain iterator."""
    try:
        from tqdm import tqdm
    except ImportError:
        return batches
    return tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False)


def main(epochs: int = 15, seed: int = 0, verbose: bool = True) -> dict:
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = split(*load_digits_or_exit(), seed=seed)
    params = nn.init_mlp([64, 128, 10], seed=seed, init="he")
    state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    predict = tg.jit(logits)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        batches = [order[i:i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]  # whole batches: one compile
        losses = []
        for batch in progress(epoch, epochs, batches):
            value, params, state = train_step(params, state, x_train[batch], y_train[batch])
            losses.append(value)
        train_accuracy = nn.accuracy(predict(params, x_train), y_train)
        if verbose:
            print(f"epoch {epoch + 1:2d}/{epochs}  loss {np.mean(losses):.4f}  train accuracy {train_accuracy:.1%}")
    test_accuracy = nn.accuracy(predict(params, x_test), y_test)
    seconds = time.perf_counter() - start
    if verbose:
        print(f"test accuracy {test_accuracy:.1%} on {len(x_test)} images, {seconds:.1f} s from the start "
              "(new programs run as NumPy code while numba compiles them)")
    return {"test_accuracy": test_accuracy, "seconds": seconds}


if __name__ == "__main__":
    main()

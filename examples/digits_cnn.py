"""A small convolutional net on scikit-learn's 8x8 digits, in float32, with dropout from tg.random.

Run: pip install -e ".[examples]" && python examples/digits_cnn.py [--epochs 20]

conv 3x3 (1 -> 16) -> relu -> conv 3x3 (16 -> 32) -> relu -> max-pool 2x2 -> dense 512 -> 64 ->
relu -> dropout 0.25 -> dense 64 -> 10, softmax cross-entropy, Adam with a decaying step size,
minibatches of 64, each training image also used shifted by one pixel (a random direction per
epoch). The parameters and images are float32, so every step runs in float32. Dropout draws a
new mask on every step from `tg.random.fold_in(key, step)`: the step number is a traced int, so
one compiled step serves them all. Same split as examples/digits.py (20% held out).
"""
import argparse
import sys
import time

import numpy as np

import tracegrad as tg
import tracegrad.numpy as tnp
from digits import progress, split  # examples/digits.py: the same split and progress bar
from tracegrad import nn, optim

BATCH = 64
DROPOUT = 0.25


def load_digits_or_exit():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit('examples/digits_cnn.py needs scikit-learn: pip install -e ".[examples]"')
    digits = load_digits()  # 1,797 images, bundled with scikit-learn: nothing to download
    return (digits.images / 16.0).astype(np.float32)[..., None], digits.target.astype(np.int64)


def init(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"conv1": nn.init_conv(rng, 3, 1, 16, dtype=np.float32),
            "conv2": nn.init_conv(rng, 3, 16, 32, dtype=np.float32),
            "dense1": nn.init_dense(rng, 4 * 4 * 32, 64, "he", np.float32),
            "dense2": nn.init_dense(rng, 64, 10, "he", np.float32)}


def logits(params, images, key=None):
    """The class scores of NHWC images; with a key, dropout before the last layer (training)."""
    h = nn.relu(nn.conv2d(images, params["conv1"]["W"], params["conv1"]["b"]))
    h = nn.relu(nn.conv2d(h, params["conv2"]["W"], params["conv2"]["b"]))
    h = nn.max_pool2d(h)
    h = nn.relu(nn.dense(params["dense1"], tnp.reshape(h, (tnp.shape(h)[0], -1))))
    if key is not None:
        h = nn.dropout(key, h, DROPOUT)
    return nn.dense(params["dense2"], h)


def loss(params, images, labels, key):
    return nn.softmax_cross_entropy(logits(params, images, key), labels)


def make_train_step(optimizer):
    @tg.jit
    def train_step(params, state, images, labels, key, step):
        value, grads = tg.value_and_grad(loss)(params, images, labels, tg.random.fold_in(key, step))
        params, state = optimizer.update(grads, state, params)
        return value, params, state
    return train_step


def shifted(images, rng):
    """Each image moved by one pixel in a random direction (or not at all), zeros coming in."""
    out = np.zeros_like(images)
    moves = rng.integers(0, 5, len(images))
    for k, (dy, dx) in enumerate([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]):
        chosen = moves == k
        out[chosen] = np.roll(images[chosen], (dy, dx), axis=(1, 2))
        if dy:
            out[chosen, 0 if dy > 0 else -1] = 0.0
        if dx:
            out[chosen, :, 0 if dx > 0 else -1] = 0.0
    return out


def main(epochs: int = 20, seed: int = 0, verbose: bool = True) -> dict:
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = split(*load_digits_or_exit(), seed=seed)
    steps_per_epoch = len(x_train) // BATCH
    optimizer = optim.adam(optim.linear_decay(3e-3, 3e-4, epochs * steps_per_epoch))
    train_step = make_train_step(optimizer)
    params = init(seed)
    state = optimizer.init(params)
    key = tg.random.key(seed)
    rng = np.random.default_rng(seed)
    predict = tg.jit(logits)
    step = 0
    for epoch in range(epochs):
        images = shifted(x_train, rng) if epoch % 2 else x_train  # every other epoch, shifted copies
        order = rng.permutation(len(x_train))
        batches = [order[i:i + BATCH] for i in range(0, steps_per_epoch * BATCH, BATCH)]
        losses = []
        for batch in progress(epoch, epochs, batches):
            value, params, state = train_step(params, state, images[batch], y_train[batch], key, step)
            losses.append(value)
            step += 1
        if verbose:
            accuracy = nn.accuracy(predict(params, x_test), y_test)
            print(f"epoch {epoch + 1:2d}/{epochs}  loss {np.mean(losses):.4f}  test accuracy {accuracy:.1%}  "
                  f"{time.perf_counter() - start:5.1f} s")
    test_accuracy = nn.accuracy(predict(params, x_test), y_test)
    seconds = time.perf_counter() - start
    if verbose:
        print(f"test accuracy {test_accuracy:.1%} on {len(x_test)} images, {seconds:.1f} s from the start, float32 "
              "(new programs run as NumPy code while numba compiles them)")
    return {"test_accuracy": test_accuracy, "seconds": seconds, "params": params}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    arguments = parser.parse_args()
    main(arguments.epochs)

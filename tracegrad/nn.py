"""Neural-network helpers as pure functions over pytrees: initialisers, activations, losses.

Everything here is traceable, so it works inside `tg.grad` and `tg.jit`, and also computes
directly on NumPy arrays outside them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import numpy as tnp

# -- parameters --------------------------------------------------------------------------

INITIALISERS = {
    # micrograd's choice: every weight and bias uniform in [-1, 1]
    "uniform": lambda rng, n_in, n_out: (rng.uniform(-1, 1, (n_in, n_out)), rng.uniform(-1, 1, n_out)),
    # Glorot/Xavier uniform, zero biases: keeps tanh layers' variance steady
    "glorot": lambda rng, n_in, n_out: (rng.uniform(-1, 1, (n_in, n_out)) * np.sqrt(6 / (n_in + n_out)),
                                        np.zeros(n_out)),
    # He normal, zero biases: for relu layers
    "he": lambda rng, n_in, n_out: (rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in), np.zeros(n_out)),
}


def init_dense(rng: np.random.Generator, n_in: int, n_out: int, init: str = "glorot", dtype=np.float64) -> dict:
    """A dense layer's parameters `{"W": (n_in, n_out) array, "b": (n_out,) array}` of `dtype`
    (float64, or float32: drawn in float64 and rounded, so both start from the same numbers)."""
    if init not in INITIALISERS:
        raise ValueError(f"unknown initialiser {init!r}; choose one of {sorted(INITIALISERS)}")
    weights, bias = INITIALISERS[init](rng, n_in, n_out)
    return {"W": weights.astype(dtype), "b": bias.astype(dtype)}


def init_mlp(sizes: list[int], seed: int = 0, init: str = "glorot", dtype=np.float64) -> list[dict]:
    """Parameters of an MLP with layer widths `sizes` (inputs first), as a list of dense layers of `dtype`."""
    rng = np.random.default_rng(seed)
    return [init_dense(rng, n_in, n_out, init, dtype) for n_in, n_out in zip(sizes, sizes[1:])]


def dense(params: dict, x):
    """x @ W + b."""
    return x @ params["W"] + params["b"]


def mlp(params: list[dict], x, activation: Callable = None, final_activation: Callable = None):
    """Dense layers with `activation` (tanh by default) between them and `final_activation` after the last."""
    activation = activation or tanh
    for layer in params[:-1]:
        x = activation(dense(layer, x))
    x = dense(params[-1], x)
    return final_activation(x) if final_activation else x


# -- activations -------------------------------------------------------------------------

def relu(x):
    """max(x, 0), with gradient 0 at 0 (as micrograd)."""
    return tnp.where(x > 0.0, x, 0.0)


def tanh(x):
    return tnp.tanh(x)


def sigmoid(x):
    """1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2, which never overflows."""
    return 0.5 * (tnp.tanh(0.5 * x) + 1.0)


def logsumexp(x, axis=-1, keepdims: bool = False):
    """log(sum(exp(x))) along `axis`, shifted by the maximum so it never overflows.

    The shift cancels out of the value, so no gradient needs to flow through it.
    """
    shift = tnp.stop_gradient(tnp.max(x, axis=axis, keepdims=True))
    summed = tnp.sum(tnp.exp(x - shift), axis=axis, keepdims=keepdims)
    return tnp.log(summed) + tnp.reshape(shift, tnp.shape(summed))


def log_softmax(x, axis=-1):
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    return tnp.exp(log_softmax(x, axis=axis))


# -- losses ------------------------------------------------------------------------------

def mse(prediction, target):
    """Mean squared error."""
    return tnp.mean((prediction - target) ** 2)


def softmax_cross_entropy(logits, labels):
    """Mean negative log-likelihood of integer `labels` under softmax(`logits`), rows are examples."""
    n = tnp.shape(logits)[0]
    return -tnp.mean(log_softmax(logits, axis=-1)[np.arange(n), labels])


def hinge(scores, targets):
    """micrograd's SVM max-margin loss: mean(relu(1 - target * score)), targets in {-1, +1}."""
    return tnp.mean(relu(1.0 - targets * scores))


def accuracy(logits, labels) -> float:
    """Fraction of rows whose largest logit is at the label (on concrete arrays)."""
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == np.asarray(labels)))

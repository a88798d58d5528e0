"""Each workload's loss, written once over `ops`, a namespace of array operations per library.

`ops` provides sin, exp, log, tanh, relu, sum, mean and softmax_cross_entropy(logits, labels)
(mean over rows of -log softmax(logits)[label]). Every library runs the same formula, so the
benchmark compares the libraries, not different losses.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def exercise(ops):
    def f(a, b, c):
        return -a**3 + ops.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5
    return f


def softmax_nll(ops):
    def nll(logits):
        counts = [ops.exp(logit) for logit in logits]
        denominator = sum(counts)
        probs = [count / denominator for count in counts]
        return -ops.log(probs[3])
    return nll


def mlp(problem, ops):
    hidden = getattr(ops, problem.hidden)
    output = ops.tanh if problem.output == "tanh" else (lambda z: z)

    def loss(params, x, y):
        h = x
        for layer in params[:-1]:
            h = hidden(h @ layer["W"] + layer["b"])
        out = output(h @ params[-1]["W"] + params[-1]["b"])
        if problem.loss == "sse":
            err = out[:, 0] - y
            value = ops.sum(err * err)
        elif problem.loss == "svm":
            value = ops.mean(ops.relu(1.0 - y * out[:, 0]))
        else:
            value = ops.softmax_cross_entropy(out, y)
        if problem.l2:
            value = value + problem.l2 * sum(ops.sum(layer[key] * layer[key]) for layer in params for key in "Wb")
        return value
    return loss


def loss_function(workload, ops):
    """The workload's loss f(*workload.args) in the library that `ops` belongs to."""
    if workload.kind == "mlp":
        return mlp(workload.mlp, ops)
    return {"exercise": exercise, "softmax_nll": softmax_nll}[workload.kind](ops)


def numpy_like_ops(xp, logsumexp):
    """ops for a NumPy-compatible module `xp` (NumPy, autograd.numpy, jax.numpy)."""
    def softmax_cross_entropy(logits, labels):
        log_probs = logits - logsumexp(logits, axis=1, keepdims=True)
        return -xp.mean(log_probs[np.arange(len(labels)), labels])

    return SimpleNamespace(sin=xp.sin, exp=xp.exp, log=xp.log, tanh=xp.tanh, sum=xp.sum, mean=xp.mean,
                           relu=lambda z: xp.maximum(z, 0.0), softmax_cross_entropy=softmax_cross_entropy)


def numpy_logsumexp(x, axis, keepdims=False):
    shift = np.max(x, axis=axis, keepdims=True)
    result = np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True)) + shift
    return result if keepdims else np.squeeze(result, axis=axis)


NUMPY_OPS = numpy_like_ops(np, numpy_logsumexp)

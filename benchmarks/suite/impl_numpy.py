"""Forward and backward written by hand with NumPy arrays (plain Python floats for W1)."""
from __future__ import annotations

import math

import numpy as np

from .implementation import Implementation, Step

ACTIVATIONS = {  # name: (function, derivative from the output h)
    "tanh": (np.tanh, lambda h: 1.0 - h * h),
    "relu": (lambda z: np.maximum(z, 0.0), lambda h: (h > 0.0).astype(np.float64)),
    "linear": (lambda z: z, lambda h: 1.0),
}


def exercise_value_and_grad(a, b, c):
    value = -a**3 + math.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5
    return value, (-3.0 * a * a - 0.5 / math.sqrt(a), 3.0 * math.cos(3.0 * b) + 2.5 * b**1.5, 1.0 / (c * c))


def softmax_nll_value_and_grad(logits):
    counts = np.exp(np.asarray(logits))
    probs = counts / counts.sum()
    grad = probs.copy()
    grad[3] -= 1.0
    return float(-np.log(probs[3])), list(grad)


def sse(out, y):
    err = out[:, 0] - y
    d_out = np.zeros_like(out)
    d_out[:, 0] = 2.0 * err
    return float(err @ err), d_out


def svm(out, y):
    margin = 1.0 - y * out[:, 0]
    d_out = np.zeros_like(out)
    d_out[:, 0] = np.where(margin > 0.0, -y / len(y), 0.0)
    return float(np.maximum(margin, 0.0).mean()), d_out


def xent(out, labels):
    shifted = out - out.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    d_out = np.exp(log_probs) / len(labels)
    d_out[rows, labels] -= 1.0 / len(labels)
    return float(-log_probs[rows, labels].mean()), d_out


LOSSES = {"sse": sse, "svm": svm, "xent": xent}


def mlp_value_and_grad(problem, params, x, y):
    hidden, output = ACTIVATIONS[problem.hidden], ACTIVATIONS[problem.output]
    layer_activations = [hidden] * (len(params) - 1) + [output]
    hs = [x]
    for layer, (function, _) in zip(params, layer_activations):
        hs.append(function(hs[-1] @ layer["W"] + layer["b"]))
    value, d_h = LOSSES[problem.loss](hs[-1], y)
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        d_z = d_h * layer_activations[i][1](hs[i + 1])
        grads[i] = {"W": hs[i].T @ d_z, "b": d_z.sum(axis=0)}
        d_h = d_z @ params[i]["W"].T
    if problem.l2:
        value += problem.l2 * sum(float(np.sum(p * p)) for layer in params for p in layer.values())
        grads = [{key: g + 2.0 * problem.l2 * layer[key] for key, g in layer_grads.items()}
                 for layer, layer_grads in zip(params, grads)]
    return value, grads


def value_and_grad(workload):
    if workload.kind == "mlp":
        return mlp_value_and_grad(workload.mlp, *workload.args)
    step = build_step(workload)
    return step.fn(*step.args)


def build_step(workload) -> Step:
    if workload.kind == "exercise":
        return Step(exercise_value_and_grad, workload.args)
    if workload.kind == "softmax_nll":
        return Step(softmax_nll_value_and_grad, workload.args)

    def sgd_step(params, x, y):
        value, grads = mlp_value_and_grad(workload.mlp, params, x, y)
        return value, [{key: layer[key] - workload.lr * g[key] for key in layer} for layer, g in zip(params, grads)]
    return Step(sgd_step, workload.args)


VERSION = f"numpy {np.__version__}"
IMPLEMENTATIONS = [Implementation("numpy", "NumPy, hand-written", build_step, value_and_grad)]

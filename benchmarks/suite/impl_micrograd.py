"""micrograd (the PyPI package): a graph of scalar Values, zero_grad + backward + update.

micrograd's Value has +, *, ** and relu; tanh, exp, log and sin are added here as functions
in its own style. The MLPs use micrograd.nn.MLP's neurons and parameters; its neurons are
made linear and the activation is applied per layer, so that tanh layers are possible (relu
is Value.relu, as in micrograd's own MLP).
"""
from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
from micrograd.engine import Value
from micrograd.nn import MLP

from . import losses, trees
from .implementation import Implementation, Step, Unsupported, package_version

MAX_SCALAR_NODES = 3_000_000  # past this a step takes minutes and gigabytes
sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))  # backward() sorts the graph recursively


def unary(x: Value, data: float, slope: float, name: str) -> Value:
    out = Value(data, (x,), name)

    def _backward():
        x.grad += slope * out.grad
    out._backward = _backward
    return out


def tanh(x):
    t = math.tanh(x.data)
    return unary(x, t, 1.0 - t * t, "tanh")


def exp(x):
    e = math.exp(x.data)
    return unary(x, e, e, "exp")


OPS = SimpleNamespace(sin=lambda x: unary(x, math.sin(x.data), math.cos(x.data), "sin"), exp=exp,
                      log=lambda x: unary(x, math.log(x.data), 1.0 / x.data, "log"))
ACTIVATIONS = {"tanh": tanh, "relu": Value.relu, "linear": lambda v: v}


def scalar_nodes(workload) -> int:
    """About how many Values one step makes: a product, a sum and a constant per weight, per example."""
    sizes = workload.mlp.sizes
    return workload.batch * sum(3 * n_in * n_out + 2 * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def model_from(params) -> MLP:
    model = MLP(params[0]["W"].shape[0], [layer["b"].shape[0] for layer in params])
    for layer, values in zip(model.layers, params):
        for j, neuron in enumerate(layer.neurons):
            neuron.nonlin = False  # the activation is applied in `forward`
            for i, weight in enumerate(neuron.w):
                weight.data = float(values["W"][i, j])
            neuron.b.data = float(values["b"][j])
    return model


def model_arrays(model: MLP, field: str) -> list[dict]:
    """The model's parameter data or gradients as a list of {"W", "b"} arrays."""
    return [{"W": np.array([[getattr(w, field) for w in neuron.w] for neuron in layer.neurons], float).T,
             "b": np.array([getattr(neuron.b, field) for neuron in layer.neurons], float)}
            for layer in model.layers]


def forward(model: MLP, problem, row: list) -> list:
    activations = [ACTIVATIONS[problem.hidden]] * (len(model.layers) - 1) + [ACTIVATIONS[problem.output]]
    for layer, activation in zip(model.layers, activations):
        row = [activation(neuron(row)) for neuron in layer.neurons]
    return row


def cross_entropy(logits: list, label: int) -> Value:
    shift = max(logit.data for logit in logits)  # a constant: it cancels in the gradient
    return OPS.log(sum(exp(logit - shift) for logit in logits)) + shift - logits[label]


def mlp_loss(model: MLP, problem, x, y) -> Value:
    outputs = [forward(model, problem, row) for row in x.tolist()]
    targets = y.tolist()
    if problem.loss == "sse":
        total = sum((out[0] - target) ** 2 for out, target in zip(outputs, targets))
    elif problem.loss == "svm":
        total = sum((1 + -target * out[0]).relu() for out, target in zip(outputs, targets)) * (1.0 / len(targets))
    else:
        total = sum(cross_entropy(out, label) for out, label in zip(outputs, targets)) * (1.0 / len(targets))
    if problem.l2:
        total = total + problem.l2 * sum(p * p for p in model.parameters())
    return total


def check_size(workload) -> None:
    nodes = scalar_nodes(workload)
    if nodes > MAX_SCALAR_NODES:
        raise Unsupported(f"~{nodes / 1e6:.0f}M scalar Values per step (limit {MAX_SCALAR_NODES / 1e6:.0f}M): "
                          "minutes per step and gigabytes of memory")


def build_step(workload) -> Step:
    if workload.kind != "mlp":
        f = losses.loss_function(workload, OPS)

        def value_and_grad_step(*args):
            inputs = trees.tree_map(Value, args)
            out = f(*inputs)
            out.backward()
            return out.data, trees.tree_map(lambda v: v.grad, trees.differentiated(inputs, workload.argnums))
        return Step(value_and_grad_step, workload.args)

    check_size(workload)
    params, x, y = workload.args
    model = model_from(params)

    def sgd_step():
        loss = mlp_loss(model, workload.mlp, x, y)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= workload.lr * p.grad
        return loss
    return Step(sgd_step, (), lambda loss: (loss.data, model_arrays(model, "data")))


def value_and_grad(workload):
    if workload.kind != "mlp":
        step = build_step(workload)
        return step.fn(*step.args)
    check_size(workload)
    params, x, y = workload.args
    model = model_from(params)
    loss = mlp_loss(model, workload.mlp, x, y)
    loss.backward()
    return loss.data, model_arrays(model, "grad")


VERSION = package_version("micrograd")
IMPLEMENTATIONS = [Implementation("micrograd", "micrograd Value/MLP", build_step, value_and_grad)]

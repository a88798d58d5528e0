"""The workloads W1-W6: their inputs (float64, fixed seeds) and what one step computes.

A workload is a loss `f(*args)` of a kind that losses.py defines once for every library:

  W1  exercise     micrograd's f(a, b, c) = -a**3 + sin(3*b) - 1.0/c + b**2.5 - a**0.5 at (2, 3, 4)
  W2  softmax_nll  -log(softmax([0, 3, -2, 1])[3]), micrograd-style over a list of 4 floats
  W3  mlp          micrograd's MLP 3-4-4-1, tanh on every layer, its 4 examples, sum of squared errors
  W4  mlp          micrograd's moons demo: MLP 2-16-16-1 (relu, relu, linear), 100 two-moons points,
                   SVM max-margin loss mean(relu(1 - y*score)) + 1e-4 * sum of squares of all parameters
  W5  mlp          MLP 64-128-128-10 (tanh, tanh, linear), softmax cross-entropy with integer labels
                   (mean over the batch), batch 256 of random inputs
  W6  mlp          W5's net at batch 1, 16, 256 (that one is W5) and 4,096

W1 and W2's step is value and gradient (with respect to `argnums`); the MLP workloads' step is
one SGD step on the parameters `args[0]` (a list of {"W", "b"} dicts) with learning rate `lr`,
returning (loss, updated parameters).

This module needs only NumPy and the moons example (which imports tracegrad), so the startup
benchmark can build W4 in a fresh process.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from moons import make_moons  # noqa: E402  (W4's data is the moons example's)

LEARNING_RATE = 0.1
W6_BATCHES = (1, 16, 256, 4096)


@dataclass(frozen=True)
class MLPProblem:
    sizes: tuple[int, ...]
    hidden: str  # activation of the hidden layers: "tanh" or "relu"
    output: str  # of the last layer: "tanh" or "linear"
    loss: str  # "sse" (sum of squared errors), "svm" (mean hinge) or "xent" (softmax cross-entropy)
    l2: float = 0.0  # coefficient of the sum of squares of all parameters


@dataclass
class Workload:
    key: str
    title: str
    kind: str  # "exercise", "softmax_nll" or "mlp"
    args: tuple
    argnums: int | tuple = 0
    lr: float | None = None  # None: the step is value_and_grad; else one SGD step on args[0]
    mlp: MLPProblem | None = None

    @property
    def batch(self) -> int:
        return len(self.args[1]) if self.kind == "mlp" else 1


def uniform_params(rng, sizes, zero_bias: bool, scale=lambda n_in, n_out: 1.0) -> list[dict]:
    """Dense layers with weights uniform in [-scale, scale] and zero or uniform biases."""
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weights = rng.uniform(-1, 1, (n_in, n_out)) * scale(n_in, n_out)
        layers.append({"W": weights, "b": np.zeros(n_out) if zero_bias else rng.uniform(-1, 1, n_out)})
    return layers


def w1() -> Workload:
    return Workload("W1", "W1 micrograd exercise f(a,b,c) at (2,3,4): value and gradient", "exercise",
                    (2.0, 3.0, 4.0), argnums=(0, 1, 2))


def w2() -> Workload:
    return Workload("W2", "W2 -log(softmax([0,3,-2,1])[3]): value and gradient", "softmax_nll",
                    ([0.0, 3.0, -2.0, 1.0],))


def w3() -> Workload:
    problem = MLPProblem((3, 4, 4, 1), hidden="tanh", output="tanh", loss="sse")
    params = uniform_params(np.random.default_rng(0), problem.sizes, zero_bias=False)  # micrograd's init
    xs = np.array([[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]])
    ys = np.array([1.0, -1.0, -1.0, 1.0])
    return Workload("W3", "W3 micrograd MLP 3-4-4-1 tanh, 4 examples, SSE: one SGD step", "mlp",
                    (params, xs, ys), lr=LEARNING_RATE, mlp=problem)


def w4() -> Workload:
    problem = MLPProblem((2, 16, 16, 1), hidden="relu", output="linear", loss="svm", l2=1e-4)
    params = uniform_params(np.random.default_rng(0), problem.sizes, zero_bias=True)  # micrograd's Neuron
    x, y = make_moons(100, noise=0.1, seed=1)
    return Workload("W4", "W4 moons MLP 2-16-16-1 relu, 100 points, SVM loss + L2: one SGD step", "mlp",
                    (params, x, y), lr=LEARNING_RATE, mlp=problem)


def classifier(batch: int, key: str) -> Workload:
    """W5's MLP 64-128-128-10 (Glorot-uniform weights, zero biases) on `batch` random examples."""
    problem = MLPProblem((64, 128, 128, 10), hidden="tanh", output="linear", loss="xent")
    glorot = lambda n_in, n_out: np.sqrt(6.0 / (n_in + n_out))  # noqa: E731
    params = uniform_params(np.random.default_rng(0), problem.sizes, zero_bias=True, scale=glorot)
    data = np.random.default_rng(1000 + batch)
    x = data.standard_normal((batch, 64))
    labels = data.integers(0, 10, batch)
    also = " (= W6 at batch 256)" if key == "W5" else ""
    return Workload(key, f"{key} MLP 64-128-128-10 tanh, softmax cross-entropy, batch {batch}{also}: "
                         "one SGD step", "mlp", (params, x, labels), lr=LEARNING_RATE, mlp=problem)


BUILDERS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": lambda: classifier(256, "W5")}
BUILDERS.update({f"W6/b{batch}": (lambda batch=batch: classifier(batch, f"W6/b{batch}"))
                 for batch in W6_BATCHES if batch != 256})
GROUPS = {"W6": [f"W6/b{batch}" if batch != 256 else "W5" for batch in W6_BATCHES]}


def select(names: list[str] | None = None) -> list[str]:
    """Workload keys for names such as W4, W6 (its batch sizes) or W6/b16, without repeats."""
    keys: list[str] = []
    for name in names or ["W1", "W2", "W3", "W4", "W5", "W6"]:
        name = name.strip().upper().replace("/B", "/b")
        if name not in BUILDERS and name not in GROUPS:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join([*BUILDERS, *GROUPS])}")
        keys.extend(key for key in GROUPS.get(name, [name]) if key not in keys)
    return keys


def get(key: str) -> Workload:
    return BUILDERS[key]()

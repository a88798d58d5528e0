"""Optimisers as pure `(init, update)` pairs over pytrees: no mutation, state is a pytree.

    optimizer = optim.adam(1e-3)
    state = optimizer.init(params)
    params, state = optimizer.update(grads, state, params)   # inside tg.jit, too

A learning rate is a float or a schedule: a function of the step number (a traced value
inside tg.jit, so write schedules with arithmetic or tnp functions).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from . import numpy as tnp
from .tree import tree_map

Schedule = Callable[[object], object]


class Optimizer(NamedTuple):
    init: Callable  # params -> state
    update: Callable  # (grads, state, params) -> (new params, new state)


def learning_rate(lr: float | Schedule, step):
    return lr(step) if callable(lr) else lr


def zeros_like_tree(params):
    return tree_map(lambda p: 0.0 if np.ndim(p) == 0 else np.zeros(np.shape(p)), params)


def sgd(lr: float | Schedule, momentum: float = 0.0) -> Optimizer:
    """Stochastic gradient descent, with heavy-ball momentum when `momentum` > 0."""

    def init(params):
        return {"step": 0.0, "velocity": zeros_like_tree(params)}

    def update(grads, state, params):
        rate = learning_rate(lr, state["step"])
        velocity = tree_map(lambda v, g: momentum * v + g, state["velocity"], grads) if momentum else grads
        new_params = tree_map(lambda p, v: p - rate * v, params, velocity)
        return new_params, {"step": state["step"] + 1.0,
                            "velocity": velocity if momentum else state["velocity"]}

    return Optimizer(init, update)


def adam(lr: float | Schedule = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Optimizer:
    """Adam (Kingma & Ba), with bias-corrected first and second moment estimates."""

    def init(params):
        return {"step": 0.0, "m": zeros_like_tree(params), "v": zeros_like_tree(params)}

    def update(grads, state, params):
        step = state["step"] + 1.0
        rate = learning_rate(lr, state["step"])
        m = tree_map(lambda m, g: b1 * m + (1.0 - b1) * g, state["m"], grads)
        v = tree_map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state["v"], grads)
        correction1, correction2 = 1.0 - b1**step, 1.0 - b2**step
        new_params = tree_map(lambda p, m, v: p - rate * (m / correction1) / (tnp.sqrt(v / correction2) + eps),
                              params, m, v)
        return new_params, {"step": step, "m": m, "v": v}

    return Optimizer(init, update)


# -- schedules ---------------------------------------------------------------------------

def linear_decay(start: float, end: float, steps: int) -> Schedule:
    """From `start` at step 0 to `end` at `steps`, then constant."""
    return lambda step: start + (end - start) * tnp.minimum(step / steps, 1.0)


def exponential_decay(start: float, rate: float, every: int = 1) -> Schedule:
    """`start * rate ** (step / every)`."""
    return lambda step: start * rate ** (step / every)

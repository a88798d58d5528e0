"""Optimisers as pure `(init, update)` pairs over pytrees: no mutation, state is a pytree.

    optimizer = optim.adam(1e-3)
    state = optimizer.init(params)
    params, state = optimizer.update(grads, state, params)   # inside tg.jit, too

A learning rate is a float or a schedule: a function of the step number (a traced value
inside tg.jit, so write schedules with arithmetic or tnp functions). Parameters keep their dtype:
float32 parameters get float32 state and float32 updates.
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
    """Zeros shaped like each parameter, in its float dtype (float32 stays float32)."""
    def zeros(p):
        dtype = np.float32 if is_float32(p) else np.float64
        return dtype(0.0) if np.ndim(p) == 0 else np.zeros(np.shape(p), dtype)

    return tree_map(zeros, params)


def is_float32(p) -> bool:
    return (p.dtype if hasattr(p, "dtype") else np.asarray(p).dtype) == np.float32


def in_dtype_of(value, p):
    """A scalar factor of an update (a traced learning rate, a bias correction) in parameter p's float
    dtype: a float64 factor would make a float32 parameter's update float64. A Python float is weak
    already (it takes the parameter's dtype)."""
    if is_float32(p) and not isinstance(value, float) and not is_float32(value):
        return tnp.astype(value, np.float32)
    return value


def sgd(lr: float | Schedule, momentum: float = 0.0) -> Optimizer:
    """Stochastic gradient descent, with heavy-ball momentum when `momentum` > 0."""

    def init(params):
        return {"step": 0.0, "velocity": zeros_like_tree(params)}

    def update(grads, state, params):
        rate = learning_rate(lr, state["step"])
        velocity = tree_map(lambda v, g: momentum * v + g, state["velocity"], grads) if momentum else grads
        new_params = tree_map(lambda p, v: p - in_dtype_of(rate, p) * v, params, velocity)
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
        new_params = tree_map(lambda p, m, v: p - in_dtype_of(rate, p) * (m / in_dtype_of(correction1, p)) / (
            tnp.sqrt(v / in_dtype_of(correction2, p)) + eps), params, m, v)
        return new_params, {"step": step, "m": m, "v": v}

    return Optimizer(init, update)


# -- schedules ---------------------------------------------------------------------------

def linear_decay(start: float, end: float, steps: int) -> Schedule:
    """From `start` at step 0 to `end` at `steps`, then constant."""
    return lambda step: start + (end - start) * tnp.minimum(step / steps, 1.0)


def exponential_decay(start: float, rate: float, every: int = 1) -> Schedule:
    """`start * rate ** (step / every)`."""
    return lambda step: start * rate ** (step / every)

"""JAX: jax.jit of (value_and_grad + SGD update), float64 enabled, arguments on the device first."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import losses
from .implementation import Implementation, Step

jax.config.update("jax_enable_x64", True)
OPS = losses.numpy_like_ops(jnp, jax.nn.logsumexp)


def to_numpy(tree):
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf) if leaf.ndim else float(leaf), tree)


def blocking(fn):
    return lambda *args: jax.block_until_ready(fn(*args))


def device_args(workload) -> tuple:
    return jax.tree_util.tree_map(jnp.asarray, workload.args)


def build_step(workload) -> Step:
    value_and_grad = jax.value_and_grad(losses.loss_function(workload, OPS), argnums=workload.argnums)
    if workload.lr is None:
        return Step(blocking(jax.jit(value_and_grad)), device_args(workload), to_numpy)

    def sgd_step(params, *data):
        value, grads = value_and_grad(params, *data)
        return value, jax.tree_util.tree_map(lambda p, g: p - workload.lr * g, params, grads)
    return Step(blocking(jax.jit(sgd_step)), device_args(workload), to_numpy)


def value_and_grad(workload):
    function = jax.jit(jax.value_and_grad(losses.loss_function(workload, OPS), argnums=workload.argnums))
    return to_numpy(function(*device_args(workload)))


VERSION = f"jax {jax.__version__}"
IMPLEMENTATIONS = [Implementation("jax", "JAX jit(value_and_grad + update)", build_step, value_and_grad)]

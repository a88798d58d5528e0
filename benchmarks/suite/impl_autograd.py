"""HIPS autograd: autograd.value_and_grad on NumPy arrays, the SGD update in NumPy."""
from __future__ import annotations

import autograd
import autograd.numpy as anp
from autograd.scipy.special import logsumexp

from . import losses, trees
from .implementation import Implementation, Step, package_version

OPS = losses.numpy_like_ops(anp, logsumexp)


def build_step(workload) -> Step:
    value_and_grad = autograd.value_and_grad(losses.loss_function(workload, OPS), argnum=workload.argnums)
    if workload.lr is None:
        return Step(value_and_grad, workload.args)

    def sgd_step(params, *data):
        value, grads = value_and_grad(params, *data)
        return value, trees.tree_map(lambda p, g: p - workload.lr * g, params, grads)
    return Step(sgd_step, workload.args)


def value_and_grad(workload):
    return autograd.value_and_grad(losses.loss_function(workload, OPS), argnum=workload.argnums)(*workload.args)


VERSION = package_version("autograd")
IMPLEMENTATIONS = [Implementation("autograd", "autograd value_and_grad + update", build_step, value_and_grad)]

"""tracegrad: tg.jit of the whole step, which calls tg.value_and_grad inside."""
from __future__ import annotations

from types import SimpleNamespace

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import nn

from . import losses
from .implementation import Implementation, Step

OPS = SimpleNamespace(sin=tnp.sin, exp=tnp.exp, log=tnp.log, tanh=tnp.tanh, relu=nn.relu, sum=tnp.sum,
                      mean=tnp.mean, softmax_cross_entropy=nn.softmax_cross_entropy)


def loss_for(workload):
    return losses.loss_function(workload, OPS)


def build_step(workload) -> Step:
    value_and_grad = tg.value_and_grad(loss_for(workload), argnums=workload.argnums)
    if workload.lr is None:
        return Step(tg.jit(value_and_grad), workload.args)

    def sgd_step(params, *data):
        value, grads = value_and_grad(params, *data)
        return value, tg.tree_map(lambda p, g: p - workload.lr * g, params, grads)
    return Step(tg.jit(sgd_step), workload.args)


def value_and_grad(workload):
    return tg.value_and_grad(loss_for(workload), argnums=workload.argnums)(*workload.args)


VERSION = f"tracegrad {tg.__version__}"
IMPLEMENTATIONS = [Implementation("tracegrad", "tracegrad jit(step)", build_step, value_and_grad)]

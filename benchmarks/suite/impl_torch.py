"""PyTorch eager on one thread: tensors made once; each step zero_grad, forward, backward, SGD."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from . import losses, trees
from .implementation import Implementation, Step

torch.set_num_threads(1)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:  # already set, or parallel work has started
    pass

OPS = SimpleNamespace(sin=torch.sin, exp=torch.exp, log=torch.log, tanh=torch.tanh, relu=torch.relu,
                      sum=torch.sum, mean=torch.mean, softmax_cross_entropy=torch.nn.functional.cross_entropy)


def tensors(workload) -> tuple:
    """The workload's arguments as tensors; the differentiated ones require grad."""
    args = trees.tree_map(lambda leaf: torch.tensor(np.asarray(leaf)), workload.args)
    for leaf in trees.leaves(trees.differentiated(args, workload.argnums)):
        leaf.requires_grad_(True)
    return args


def to_numpy(tensor):
    return tensor.item() if tensor.ndim == 0 else tensor.detach().numpy().copy()


def build_step(workload) -> Step:
    loss = losses.loss_function(workload, OPS)
    args = tensors(workload)
    if workload.lr is None:
        inputs = trees.leaves(trees.differentiated(args, workload.argnums))

        def value_and_grad_step(*step_args):
            value = loss(*step_args)
            return value, torch.autograd.grad(value, inputs)

        def read(result):
            value, grads = result
            return value.item(), trees.unflatten_like(trees.differentiated(args, workload.argnums),
                                                      [to_numpy(g) for g in grads])
        return Step(value_and_grad_step, args, read)

    params = args[0]
    optimizer = torch.optim.SGD(trees.leaves(params), lr=workload.lr)

    def sgd_step():
        optimizer.zero_grad()
        value = loss(*args)
        value.backward()
        optimizer.step()
        return value
    return Step(sgd_step, (), lambda value: (value.item(), trees.tree_map(to_numpy, params)))


def value_and_grad(workload):
    args = tensors(workload)
    value = losses.loss_function(workload, OPS)(*args)
    value.backward()
    return value.item(), trees.tree_map(lambda leaf: to_numpy(leaf.grad),
                                        trees.differentiated(args, workload.argnums))


VERSION = f"torch {torch.__version__}"
IMPLEMENTATIONS = [Implementation("torch", "PyTorch eager", build_step, value_and_grad)]

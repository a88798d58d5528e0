"""tracegrad: trace a Python function once, differentiate it as a program, compile it with numba.

    import tracegrad as tg
    import tracegrad.numpy as tnp

    tg.grad(loss)(params)            # gradients in the structure of params
    tg.jit(train_step)(params, x, y) # traced once per signature, compiled
    print(tg.make_ir(loss)(params))  # the program, printed like a jaxpr
"""
from . import errors, linalg, nn, optim, random
from .api import cache_info, grad, jit, jvp, linearize, make_ir, value_and_grad, vjp, vmap
from .check import check_grads
from .concurrency import wait_for_compiles
from .config import config
from .control_flow import cond, fori_loop, scan, switch, while_loop
from .custom import checkpoint, custom_jvp, custom_vjp
from .export import export
from .core import typecheck
from .graph import draw, to_dot
from .jacobian import hessian, jacfwd, jacobian, jacrev
from .ir import Program
from .numpy import stop_gradient
from .tree import register_pytree_node, tree_flatten, tree_leaves, tree_map, tree_unflatten
from .version import __version__

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "linearize", "vmap", "jacfwd", "jacrev", "jacobian",
           "hessian", "jit", "make_ir", "check_grads", "stop_gradient", "scan", "fori_loop", "while_loop",
           "cond", "switch", "custom_vjp", "custom_jvp", "checkpoint", "cache_info", "wait_for_compiles",
           "config", "to_dot", "draw", "tree_flatten", "tree_unflatten", "register_pytree_node", "tree_map",
           "tree_leaves", "Program", "typecheck", "errors", "nn", "optim", "random", "linalg", "export"]

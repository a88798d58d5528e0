"""tg.check_grads: gradients against central differences, coordinate by coordinate."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .api import LEAF_TREE, grad, jit
from .tree import tree_flatten, tree_unflatten


def check_grads(fun: Callable, args, order: int = 1, eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6,
                seed: int = 0) -> None:
    """Check `grad` against central differences, coordinate by coordinate.

    `fun` may return any pytree: it is reduced to a scalar by a fixed random projection.
    With `order=2` the gradient's gradient is checked too. Raises AssertionError with a
    table of every coordinate that disagrees.
    """
    args = tuple(args)
    scalar_fun = random_projection(fun, args, np.random.default_rng(seed))
    argnums = tuple(range(len(args)))
    analytic = grad(scalar_fun, argnums)(*args)
    evaluate = jit(scalar_fun)
    rows = []
    for argnum, arg in enumerate(args):
        leaves, treedef = tree_flatten(arg)
        grad_leaves = tree_flatten(analytic[argnum])[0]
        for leaf_index, (leaf, leaf_grad) in enumerate(zip(leaves, grad_leaves)):
            for coordinate in np.ndindex(np.shape(leaf)):
                numeric = central_difference(evaluate, args, argnum, treedef, leaves, leaf_index, coordinate, eps)
                exact = float(np.asarray(leaf_grad)[coordinate])
                error = abs(exact - numeric)
                rows.append((argnum, leaf_index, coordinate, exact, numeric, error,
                             error <= atol + rtol * abs(numeric)))
    failed = [row for row in rows if not row[-1]]
    if failed:
        table = "\n".join(f"  arg {a} leaf {l} {c}: grad {g:.12g}  numeric {n:.12g}  |diff| {d:.3g}"
                          for a, l, c, g, n, d, _ in failed)
        raise AssertionError(f"check_grads: {len(failed)} of {len(rows)} coordinates disagree "
                             f"(eps={eps}, rtol={rtol}, atol={atol}):\n{table}")
    if order > 1:
        check_grads(grad(scalar_fun, argnums), args, order - 1, eps, rtol, atol, seed + 1)


def random_projection(fun: Callable, args: tuple, rng) -> Callable:
    """`fun` reduced to a scalar: a fixed random weighted sum of its float outputs."""
    from . import numpy as tnp

    out_leaves, out_tree = tree_flatten(jit(fun)(*args))
    if out_tree == LEAF_TREE and np.ndim(out_leaves[0]) == 0:
        return fun
    weights = [rng.standard_normal(np.shape(x)) for x in out_leaves]

    def projected(*xs):
        return sum(tnp.sum(w * y) for w, y in zip(weights, tree_flatten(fun(*xs))[0]))

    projected.__name__ = f"projected_{getattr(fun, '__name__', 'fun')}"
    return projected


def central_difference(evaluate, args, argnum, treedef, leaves, leaf_index, coordinate, eps) -> float:
    def shifted(step: float):
        leaf = np.array(leaves[leaf_index], dtype=float)
        leaf[coordinate] += step
        moved = list(leaves)
        moved[leaf_index] = float(leaf) if leaf.ndim == 0 else leaf
        new_args = list(args)
        new_args[argnum] = tree_unflatten(treedef, moved)
        return float(evaluate(*new_args))

    return (shifted(eps) - shifted(-eps)) / (2 * eps)

"""tg.check_grads: gradients against central differences, coordinate by coordinate."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .api import LEAF_TREE, grad, jit
from .tree import tree_flatten, tree_map, tree_unflatten


def check_grads(fun: Callable, args, order: int = 1, eps: float = 1e-6, rtol: float | None = None,
                atol: float | None = None, seed: int = 0) -> None:
    """Check `grad` against central differences, coordinate by coordinate.

    `fun` may return any pytree: it is reduced to a scalar by a fixed random projection.
    With `order=2` the gradient's gradient is checked too. Raises AssertionError with a
    table of every coordinate that disagrees. The differences are taken in float64, float32
    arguments made float64 (a step of 1e-6 is below float32's resolution); the gradient is the
    one `grad` gives for the arguments as they are, so with any float32 argument the default
    tolerances are float32's (rtol 2e-3, atol 1e-4) instead of float64's (rtol 1e-5, atol 1e-6).
    """
    args = tuple(args)
    float32 = any(np.asarray(leaf).dtype == np.float32 for leaf in tree_flatten(args)[0])
    rtol = rtol if rtol is not None else (2e-3 if float32 else 1e-5)
    atol = atol if atol is not None else (1e-4 if float32 else 1e-6)
    scalar_fun = random_projection(fun, args, np.random.default_rng(seed))
    argnums = tuple(range(len(args)))
    analytic = grad(scalar_fun, argnums)(*args)
    evaluate = jit(scalar_fun)
    rows = []
    wide_args = tuple(tree_map(as_float64, arg) for arg in args)  # what the differences are taken of
    for argnum, arg in enumerate(wide_args):
        leaves, treedef = tree_flatten(arg)
        grad_leaves = tree_flatten(analytic[argnum])[0]
        for leaf_index, (leaf, leaf_grad) in enumerate(zip(leaves, grad_leaves)):
            for coordinate in np.ndindex(np.shape(leaf)):
                numeric = central_difference(evaluate, wide_args, argnum, treedef, leaves, leaf_index, coordinate,
                                             eps)
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


def as_float64(leaf):
    """A float32 leaf as float64 (an array, or a Python float for a number); other leaves as they are."""
    if np.asarray(leaf).dtype != np.float32:
        return leaf
    return float(leaf) if np.ndim(leaf) == 0 else np.asarray(leaf, np.float64)


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

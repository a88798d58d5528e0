"""Comparing results leaf by leaf, and checking the reference gradient with central differences."""
from __future__ import annotations

import numpy as np

from . import losses, trees

RTOL, ATOL = 1e-9, 1e-12


def mismatch(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    """None if `actual` matches `expected` leaf by leaf, else a description of the worst difference."""
    got = [np.asarray(leaf, dtype=np.float64) for leaf in trees.leaves(actual)]
    want = [np.asarray(leaf, dtype=np.float64) for leaf in trees.leaves(expected)]
    if len(got) != len(want):
        return f"{len(got)} leaves, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"leaf {i}: shape {g.shape}, expected {w.shape}"
        if not np.allclose(g, w, rtol=rtol, atol=atol):
            excess = np.abs(g - w) - rtol * np.abs(w)
            worst = np.unravel_index(np.argmax(excess), g.shape) if g.shape else ()
            return (f"leaf {i}{list(map(int, worst)) if worst else ''}: {float(g[worst])!r}, "
                    f"expected {float(w[worst])!r}")
    return None


def central_difference_mismatch(workload, grads, per_leaf: int = 6, eps: float = 1e-6,
                                rtol: float = 1e-5, atol: float = 1e-7) -> str | None:
    """Compare `grads` with central differences of the workload's NumPy loss at a few
    coordinates of every differentiated leaf (all of them for small leaves)."""
    loss = losses.loss_function(workload, losses.NUMPY_OPS)
    primal = trees.differentiated(workload.args, workload.argnums)
    primal_leaves = trees.leaves(primal)
    rng = np.random.default_rng(0)
    for k, (leaf, grad) in enumerate(zip(primal_leaves, trees.leaves(grads))):
        array, grad = np.array(leaf, dtype=np.float64), np.asarray(grad, dtype=np.float64)
        positions = rng.permutation(array.size)[:per_leaf]
        for flat_index in positions:
            index = np.unravel_index(flat_index, array.shape)

            def loss_at(delta):
                moved = array.copy()
                moved[index] += delta
                changed = list(primal_leaves)
                changed[k] = moved if array.shape else float(moved)
                new_args = trees.with_differentiated(workload.args, workload.argnums,
                                                     trees.unflatten_like(primal, changed))
                return float(loss(*new_args))

            numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
            if not np.isclose(grad[index], numeric, rtol=rtol, atol=atol):
                return (f"reference gradient leaf {k}{list(map(int, index))}: {float(grad[index])!r}, "
                        f"central difference {numeric!r}")
    return None

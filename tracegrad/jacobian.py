"""Jacobians and Hessians: every column by forward mode or every row by reverse mode at once, as
`vmap` of the JVP (or the pullback) over the basis vectors, as JAX does: the program holds one
copy of the JVP or pullback, on a batch as wide as the input (or output).

`tg.jacfwd(f)(x)` runs the JVP once per element of `x`; `tg.jacrev(f)(x)` runs `f` once and its
pullback once per element of `f(x)`: forward mode for wide functions (few inputs), reverse mode
for tall ones (few outputs), as in JAX. `tg.hessian(f)` is `jacfwd(jacrev(f))`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from . import ad, errors, forward
from .api import Transformed, generated_name, jit_transform, normalize_argnums, positional_form, transformed
from .batching import batch
from .core import NUMPY_DTYPES, aval_of, bind
from .ir import FLOAT_DTYPES
from .primitives import broadcast_to_p, eq_p, float_dtype, reshape_p, transpose_p, where_p
from .source_info import user_source, where_text
from .tree import tree_flatten, tree_unflatten


def basis(shape: tuple[int, ...], dtype: str = "f64"):
    """The standard basis of arrays of `shape` and float `dtype`, stacked: (size, *shape), made by the
    program (an equality of two index ranges), not stored in it."""
    size = math.prod(shape)
    one, zero = NUMPY_DTYPES[dtype](1.0), NUMPY_DTYPES[dtype](0.0)
    equal = bind(eq_p, np.arange(size).reshape(size, 1), np.arange(size).reshape(1, size))
    identity = bind(where_p, equal, one, zero)
    return bind(reshape_p, identity, shape=(size,) + shape)


def element_axes_last(stacked, out_shape: tuple[int, ...], in_shape: tuple[int, ...]):
    """(size, *out_shape) stacked per input element -> (*out_shape, *in_shape)."""
    rank = len(out_shape)
    moved = bind(transpose_p, stacked, perm=tuple(range(1, rank + 1)) + (0,)) if rank else stacked
    return bind(reshape_p, moved, shape=out_shape + in_shape)


def split_args(fun: Callable, args: tuple, argnums, has_aux: bool):
    """The differentiated arguments' leaves and a function of those leaves giving the output's leaves."""
    numbers = normalize_argnums(argnums, len(args))
    leaves, in_tree = tree_flatten(tuple(args[n] for n in numbers))
    for leaf in leaves:
        if aval_of(leaf).dtype not in FLOAT_DTYPES:
            raise errors.NonDifferentiableArgumentError(
                f"Jacobians are taken with respect to float values only; argnums {argnums} names a "
                f"{aval_of(leaf)} leaf (at {where_text(user_source())})")
    found = {}

    def flat_fun(*values):
        chosen = tree_unflatten(in_tree, values)
        full = list(args)
        for n, value in zip(numbers, chosen):
            full[n] = value
        result, aux = fun(*full), None
        if has_aux:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(f"with has_aux=True the function must return a pair (output, aux) "
                                f"(at {where_text(user_source())})")
            result, aux = result
        out_leaves, found["tree"] = tree_flatten(result)
        aux_leaves, found["aux_tree"] = tree_flatten(aux)
        found["outputs"] = len(out_leaves)
        return out_leaves + aux_leaves  # the aux as outputs too, so a transformation hands back its values

    return leaves, in_tree, flat_fun, found


def assemble(blocks: dict, out_leaves, out_tree, in_leaves, in_tree, argnums):
    """The Jacobian's tree: the output's structure, each leaf the differentiated arguments' structure
    of blocks (a tuple over argnums when argnums is a tuple), as JAX gives it."""
    per_output = []
    for k in range(len(out_leaves)):
        chosen = tree_unflatten(in_tree, [blocks[(k, j)] for j in range(len(in_leaves))])
        per_output.append(chosen[0] if isinstance(argnums, int) else chosen)
    return tree_unflatten(out_tree, per_output)


def jacobian_transformation(kind: str, fun: Callable, argnums, has_aux: bool) -> Transformed:
    fun = positional_form(fun)

    def jacobian_at(*args):
        in_leaves, in_tree, flat_fun, found = split_args(fun, args, argnums, has_aux)
        columns = jacobian_by_columns if kind == "jacfwd" else jacobian_by_rows
        blocks, results = columns(flat_fun, in_leaves, found)
        out_tree, aux_tree, n_out = found["tree"], found["aux_tree"], found["outputs"]  # of the first call, outside any loop
        jac = assemble(blocks, results[:n_out], out_tree, in_leaves, in_tree, argnums)
        return (jac, tree_unflatten(aux_tree, results[n_out:])) if has_aux else jac

    options = (kind, argnums, has_aux)
    return transformed(fun, options, lambda settings: Transformed(
        fun, jit_transform(jacobian_at, ()), generated_name(kind, fun), settings))


def jacobian_by_columns(flat_fun: Callable, in_leaves: list, found: dict) -> tuple[dict, list]:
    """Forward mode: for each input leaf, the JVPs along all its basis vectors, as one batch."""
    results = flat_fun(*in_leaves)  # the output's shapes and the aux, computed once
    out_leaves, state = results[:found["outputs"]], dict(found)
    blocks = {}
    for j, leaf in enumerate(in_leaves):
        shape = aval_of(leaf).shape

        def column(tangent, j=j):
            tangents = [None] * len(in_leaves)
            tangents[j] = tangent
            return forward.jvp(flat_fun, list(in_leaves), tangents)[1][:len(out_leaves)]

        stacked, batched = batch(column, [basis(shape, aval_of(leaf).dtype)], [True], math.prod(shape))
        for k, out in enumerate(out_leaves):
            blocks[(k, j)] = element_axes_last(repeated(stacked[k], batched[k], math.prod(shape)),
                                               aval_of(out).shape, shape)
    found.update(state)  # the trees of the call outside the batch
    return blocks, results


def jacobian_by_rows(flat_fun: Callable, in_leaves: list, found: dict) -> tuple[dict, list]:
    """Reverse mode: the function once, then for each output leaf the pullbacks of all its basis
    vectors, as one batch."""
    results, pullback = ad.vjp(flat_fun, list(in_leaves), list(range(len(in_leaves))))
    out_leaves = results[:found["outputs"]]
    blocks = {}
    for k, out in enumerate(out_leaves):
        out_shape = aval_of(out).shape

        def row(cotangent, k=k):
            cotangents = [None] * len(results)
            cotangents[k] = cotangent
            return pullback(cotangents)

        stacked, batched = batch(row, [basis(out_shape, float_dtype(aval_of(out).dtype))], [True],
                                 math.prod(out_shape))
        for j, leaf in enumerate(in_leaves):
            in_shape = aval_of(leaf).shape
            rows = repeated(stacked[j], batched[j], math.prod(out_shape))
            blocks[(k, j)] = bind(reshape_p, rows, shape=out_shape + in_shape)
    return blocks, results


def repeated(value, batched: bool, size: int):
    """A batch's output: as it is, or (when the same for every basis vector, a zero) repeated."""
    return value if batched else bind(broadcast_to_p, value, shape=(size,) + aval_of(value).shape)


def jacfwd(fun: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The Jacobian of `fun` with respect to the arguments at `argnums`, by forward mode (one JVP per
    input element), as `jax.jacfwd`: for an output of shape S and an input of shape T, an array of
    shape S + T, in the output's structure of the inputs' structures."""
    return jacobian_transformation("jacfwd", fun, argnums, has_aux)


def jacrev(fun: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The Jacobian of `fun` by reverse mode (`fun` once, one pullback per output element), as
    `jax.jacrev`; shaped as `jacfwd`'s."""
    return jacobian_transformation("jacrev", fun, argnums, has_aux)


jacobian = jacrev


def hessian(fun: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The Hessian of a scalar `fun`, forward over reverse (`jacfwd(jacrev(fun))`), as `jax.hessian`."""
    return jacfwd(jacrev(fun, argnums, has_aux), argnums, has_aux)

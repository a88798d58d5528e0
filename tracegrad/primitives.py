"""The primitive registry: one paragraph per primitive.

Each paragraph holds, side by side:
  shape rule  input avals (and static params) -> output aval
  impl        NumPy on concrete values (used outside tracing)
  emit        generated source: a template over the input names and params, or a function
              returning an expression or the lines that assign `out`
  vjp         (g, out, *inputs, **params) -> one cotangent per input, None where there is none
  neutral     optionally (value, positions): a literal `value` at one of those positions leaves
              the other operand unchanged (`x * 1.0`, `0.0 + x`), so bind skips the op
  scalar      for elementwise primitives, the template of one element, used inside fused loops
              (`elementwise=True` takes the emit template)
  numpy_emit  for the python backend, where numba's emit is a loop: the same op in NumPy calls
  simd_ufunc  the NumPy ufunc whose vectorised loop beats numba's per-element libm call; large
              arrays are computed by it (in numba's object mode) instead of in a fused loop

VJP rules build IR by calling primitives on tracers, never strings. A cotangent may have the
broadcast shape of the output; the AD pass sums it back to its input's shape.
"""
from __future__ import annotations

from typing import Callable

import attrs
import numpy as np

from . import trace
from .errors import ShapeError
from .ir import DTYPES, Aval, Op

bind = trace.bind  # stage a primitive on tracers, or evaluate it on concrete values


@attrs.frozen
class Primitive:
    name: str
    shape_rule: Callable[..., Aval]
    impl: Callable
    emit: str | Callable[..., str | list[str]]
    vjp: Callable
    neutral: tuple[float, tuple[int, ...]] | None = None
    scalar: str | None = None
    numpy_emit: str | Callable[..., str | list[str]] | None = None
    simd_ufunc: str | None = None
    libm_call: bool = False  # its scalar form calls libm: 5-15 ns per element in numba, worth threads sooner


PRIMITIVES: dict[str, Primitive] = {}


def register(name, shape_rule, impl, emit, vjp, neutral=None, elementwise=False, scalar=None,
             numpy_emit=None, simd_ufunc=None, libm_call=False) -> None:
    PRIMITIVES[name] = Primitive(name, shape_rule, impl, emit, vjp, neutral, scalar or (emit if elementwise else None),
                                 numpy_emit, simd_ufunc, libm_call)


# -- shared shape rules ------------------------------------------------------------------


def promote(*avals: Aval) -> str:
    dtypes = {a.dtype for a in avals}
    return dtypes.pop() if len(dtypes) == 1 else max(dtypes, key=DTYPES.index)


def broadcast_shapes(name: str, *avals: Aval) -> tuple[int, ...]:
    shapes = {a.shape for a in avals} - {()}
    if len(shapes) <= 1:  # the common case: equal shapes, or scalars with one shape
        return shapes.pop() if shapes else ()
    try:
        return tuple(np.broadcast_shapes(*(a.shape for a in avals)))
    except ValueError:
        shown = " and ".join(str(a) for a in avals)
        raise ShapeError(f"{name}: shapes {shown} do not broadcast together") from None


def float_unary(x: Aval) -> Aval:
    return Aval(x.shape, "f64")


def arithmetic(name):
    return lambda *avals: Aval(broadcast_shapes(name, *avals), promote(*avals))


def comparison(name):
    return lambda x, y: Aval(broadcast_shapes(name, x, y), "bool")


def numpy_dtype(dtype: str) -> str:
    return {"f64": "np.float64", "i64": "np.int64", "bool": "np.bool_"}[dtype]


# -- elementwise arithmetic --------------------------------------------------------------

# neg: -x
register("neg", arithmetic("neg"), np.negative, "-{0}",
         lambda g, out, x: (-g,), elementwise=True)

# add: x + y
register("add", arithmetic("add"), np.add, "{0} + {1}",
         lambda g, out, x, y: (g, g), neutral=(0.0, (0, 1)), elementwise=True)

# sub: x - y
register("sub", arithmetic("sub"), np.subtract, "{0} - {1}",
         lambda g, out, x, y: (g, -g), neutral=(0.0, (1,)), elementwise=True)

# mul: x * y
register("mul", arithmetic("mul"), np.multiply, "{0} * {1}",
         lambda g, out, x, y: (g * y, g * x), neutral=(1.0, (0, 1)), elementwise=True)

# div: x / y (true division, always float)
register("div", lambda x, y: Aval(broadcast_shapes("div", x, y), "f64"), np.true_divide, "{0} / {1}",
         lambda g, out, x, y: (g / y, -g * out / y), neutral=(1.0, (1,)), elementwise=True)

def pow_vjp(g, out, x, y):
    # d/dx = y x^(y-1), and 0 where y == 0 (x^0 is constant): the exponent is taken as 0 there, so
    # x^-1 = inf at x = 0 never meets the factor y = 0 (JAX does this for integer exponents only, and
    # gives nan for 0.0 ** 0.0). d/dy = log(x) x^y with log(1) = 0 where x == 0, as in JAX. A concrete
    # operand (a literal, a constant array) has no cotangent, and a where on it is computed now, so
    # the adjoint of `x ** 2.5` is still two ops (pow, mul): no compare and no where
    x_cotangent = y_cotangent = None
    if isinstance(x, trace.Tracer):
        x_cotangent = g * y * x ** (bind("where", y == 0.0, 1.0, y) - 1.0)
    if isinstance(y, trace.Tracer):
        y_cotangent = g * bind("log", bind("where", x == 0.0, 1.0, x)) * out
    return x_cotangent, y_cotangent


# pow: x ** y; d/dx = y x^(y-1) (0 where y == 0), d/dy = log(x) x^y (0 where x == 0)
register("pow", lambda x, y: Aval(broadcast_shapes("pow", x, y), "f64"), np.power, "{0} ** {1}", pow_vjp,
         neutral=(1.0, (1,)), elementwise=True, libm_call=True)

# maximum: ties split the cotangent evenly, as in JAX
register("maximum", arithmetic("maximum"), np.maximum, "np.maximum({0}, {1})",
         lambda g, out, x, y: (g * ((x > y) + 0.5 * (x == y)), g * ((y > x) + 0.5 * (x == y))),
         elementwise=True)

# minimum: ties split the cotangent evenly
register("minimum", arithmetic("minimum"), np.minimum, "np.minimum({0}, {1})",
         lambda g, out, x, y: (g * ((x < y) + 0.5 * (x == y)), g * ((y < x) + 0.5 * (x == y))),
         elementwise=True)

# -- elementwise functions ---------------------------------------------------------------

# exp: d/dx e^x = e^x
register("exp", float_unary, np.exp, "np.exp({0})",
         lambda g, out, x: (g * out,),
         elementwise=True, simd_ufunc="np.exp", libm_call=True)

# log: d/dx log x = 1/x
register("log", float_unary, np.log, "np.log({0})",
         lambda g, out, x: (g / x,),
         elementwise=True, simd_ufunc="np.log", libm_call=True)

# tanh: d/dx tanh x = 1 - tanh^2 x
register("tanh", float_unary, np.tanh, "np.tanh({0})",
         lambda g, out, x: (g * (1.0 - out * out),),
         elementwise=True, simd_ufunc="np.tanh", libm_call=True)

# sin: d/dx sin x = cos x
register("sin", float_unary, np.sin, "np.sin({0})",
         lambda g, out, x: (g * bind("cos", x),), elementwise=True, libm_call=True)

# cos: d/dx cos x = -sin x
register("cos", float_unary, np.cos, "np.cos({0})",
         lambda g, out, x: (-g * bind("sin", x),), elementwise=True, libm_call=True)

# sqrt: d/dx sqrt x = 1 / (2 sqrt x)
register("sqrt", float_unary, np.sqrt, "np.sqrt({0})",
         lambda g, out, x: (g * 0.5 / out,), elementwise=True)

# abs: d/dx |x| = sign x
register("abs", arithmetic("abs"), np.abs, "np.abs({0})",
         lambda g, out, x: (g * bind("sign", x),), elementwise=True)

# sign: piecewise constant, so no cotangent flows through it
register("sign", arithmetic("sign"), np.sign, "np.sign({0})",
         lambda g, out, x: (None,), elementwise=True)

# stop_gradient: x itself, but no cotangent flows back through it
register("stop_gradient", float_unary, lambda x: x, "{0}",
         lambda g, out, x: (None,))

# -- comparisons and selection -----------------------------------------------------------

for _name, _ufunc, _symbol in [("gt", np.greater, ">"), ("lt", np.less, "<"), ("ge", np.greater_equal, ">="),
                               ("le", np.less_equal, "<="), ("eq", np.equal, "=="), ("ne", np.not_equal, "!=")]:
    # comparisons give booleans, which carry no cotangent
    register(_name, comparison(_name), _ufunc, "{0} %s {1}" % _symbol,
             lambda g, out, x, y: (None, None), elementwise=True)


def emit_where(out: str, ins: list[str], op: Op):
    shape = op.out.aval.shape
    if shape == ():
        return f"{ins[1]} if {ins[0]} else {ins[2]}"
    # a flat loop: numba's np.where takes seconds to compile
    size, lines, flat = int(np.prod(shape)), [], []
    for role, name, atom in zip("cxy", ins, op.inputs):
        if atom.aval.shape == ():
            flat.append(name)
            continue
        if atom.aval.shape != shape:
            zeros = f"np.zeros({shape}, {numpy_dtype(atom.aval.dtype)})"
            name = f"({name} != {zeros})" if atom.aval.dtype == "bool" else f"({name} + {zeros})"
        lines.append(f"{out}_{role} = np.ascontiguousarray({name}).reshape({size})")
        flat.append(f"{out}_{role}[_k]")
    return lines + [f"{out}_flat = np.empty({size}, {numpy_dtype(op.out.aval.dtype)})",
                    f"for _k in range({size}):",
                    f"    {out}_flat[_k] = {flat[1]} if {flat[0]} else {flat[2]}",
                    f"{out} = {out}_flat.reshape({shape})"]


# where: cond ? x : y, the cotangent goes to the branch that was taken
register("where", lambda c, x, y: Aval(broadcast_shapes("where", c, x, y), promote(x, y)), np.where, emit_where,
         lambda g, out, c, x, y: (None, bind("where", c, g, 0.0), bind("where", c, 0.0, g)),
         scalar="{1} if {0} else {2}", numpy_emit="np.where({0}, {1}, {2})")

# -- shapes ------------------------------------------------------------------------------


def keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def reduced(x: Aval, axes: tuple[int, ...]) -> Aval:
    return Aval(tuple(n for i, n in enumerate(x.shape) if i not in axes), x.dtype)


def contiguous_blocks(axes: tuple[int, ...]) -> list[tuple[int, int]]:
    """Sorted axes as runs [start, stop) of consecutive axes."""
    blocks: list[list[int]] = []
    for axis in axes:
        if blocks and blocks[-1][1] == axis:
            blocks[-1][1] = axis + 1
        else:
            blocks.append([axis, axis + 1])
    return [(start, stop) for start, stop in blocks]


def emit_reduction(out: str, ins: list[str], op: Op, kind: str):
    """Sum or max over axes, as loops over (before, reduced, after) blocks.

    numba compiles `np.sum(x, axis=...)` in seconds and has no `np.max(x, axis=...)`; these
    loops compile in well under one.
    """
    (x,), axes = op.inputs, op.param["axes"]
    if len(axes) == x.aval.ndim:
        return f"np.{kind}({ins[0]})"
    dtype = numpy_dtype(op.out.aval.dtype)
    lines, source, shape = [], ins[0], list(x.aval.shape)
    for step, (start, stop) in enumerate(reversed(contiguous_blocks(axes))):
        before, reduced, after = (int(np.prod(shape[:start])), int(np.prod(shape[start:stop])),
                                  int(np.prod(shape[stop:])))
        result = f"{out}_{step}"
        lines.append(f"{result}_in = np.ascontiguousarray({source}).reshape(({before}, {reduced}, {after}))")
        if after == 1:
            lines += [f"{result} = np.empty({before}, {dtype})",
                      f"for _i in range({before}):",
                      f"    {result}[_i] = np.{kind}({result}_in[_i, :, 0])"]
        elif kind == "sum":
            lines += [f"{result} = np.zeros(({before}, {after}), {dtype})",
                      f"for _i in range({before}):",
                      f"    {result}_row = {result}[_i]",
                      f"    for _r in range({reduced}):",
                      f"        {result}_row += {result}_in[_i, _r]"]
        else:
            lines += [f"{result} = np.empty(({before}, {after}), {dtype})",
                      f"for _i in range({before}):",
                      f"    for _j in range({after}):",
                      f"        {result}[_i, _j] = np.max({result}_in[_i, :, _j])"]
        source, shape = result, shape[:start] + shape[stop:]
    return lines + [f"{out} = {source}.reshape({op.out.aval.shape})"]


# reduce_sum: the cotangent is broadcast back over the summed axes
register("reduce_sum", lambda x, axes: Aval(reduced(x, axes).shape, "i64" if x.dtype == "bool" else x.dtype),
         lambda x, axes: np.sum(x, axis=axes), lambda out, ins, op: emit_reduction(out, ins, op, "sum"),
         lambda g, out, x, axes: (bind("broadcast_to", bind("reshape", g, shape=keepdims_shape(x.shape, axes)),
                                       shape=x.shape),),
         numpy_emit="np.sum({0}, axis={axes})")


def reduce_max_vjp(g, out, x, axes):
    # the cotangent is shared among the elements that attain the maximum
    kept_shape = keepdims_shape(x.shape, axes)
    at_max = x == bind("broadcast_to", bind("reshape", out, shape=kept_shape), shape=x.shape)
    share = g / bind("reduce_sum", at_max, axes=axes)
    return (at_max * bind("broadcast_to", bind("reshape", share, shape=kept_shape), shape=x.shape),)


# reduce_max: maximum over axes
register("reduce_max", reduced, lambda x, axes: np.max(x, axis=axes),
         lambda out, ins, op: emit_reduction(out, ins, op, "max"), reduce_max_vjp,
         numpy_emit="np.max({0}, axis={axes})")


def emit_reshape(out: str, ins: list[str], op: Op):
    shape = op.param["shape"]
    if op.inputs[0].aval.shape == ():
        return f"np.full({shape}, {ins[0]})"
    if shape == ():
        return f"{ins[0]}.flat[0]"
    return f"np.ascontiguousarray({ins[0]}).reshape({shape})"


def reshape_rule(x: Aval, shape):
    if x.size != int(np.prod(shape)):
        raise ShapeError(f"reshape: cannot reshape {x} into shape {shape}")
    return Aval(shape, x.dtype)


# reshape: same elements, new shape
register("reshape", reshape_rule, lambda x, shape: np.reshape(x, shape), emit_reshape,
         lambda g, out, x, shape: (bind("reshape", g, shape=x.shape),))


def emit_broadcast_to(out: str, ins: list[str], op: Op):
    shape = op.param["shape"]
    if op.inputs[0].aval.shape == ():
        return f"np.full({shape}, {ins[0]})"
    return f"{ins[0]} + np.zeros({shape}, {numpy_dtype(op.out.aval.dtype)})"


def broadcast_to_rule(x: Aval, shape):
    if broadcast_shapes("broadcast_to", x, Aval(shape)) != shape:
        raise ShapeError(f"broadcast_to: cannot broadcast {x} to shape {shape}")
    return Aval(shape, x.dtype)


# broadcast_to: the AD pass sums the cotangent back over the broadcast axes
register("broadcast_to", broadcast_to_rule, lambda x, shape: np.broadcast_to(x, shape).copy(), emit_broadcast_to,
         lambda g, out, x, shape: (g,), scalar="{0}")  # in a fused loop, x is read at the broadcast index

# transpose: permute axes; the cotangent goes through the inverse permutation
register("transpose", lambda x, perm: Aval(tuple(x.shape[i] for i in perm), x.dtype),
         lambda x, perm: np.transpose(x, perm),
         lambda out, ins, op: f"{ins[0]}.T" if op.param["perm"] == (1, 0) else f"np.transpose({ins[0]}, {op.param['perm']})",
         lambda g, out, x, perm: (bind("transpose", g, perm=tuple(np.argsort(perm).tolist())),))


def matmul_rule(x: Aval, y: Aval) -> Aval:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
        raise ShapeError(f"matmul: shapes {x} and {y} do not fit (need (n,k) @ (k,m))")
    return Aval((x.shape[0], y.shape[1]), promote(x, y))


# matmul: 2-d by 2-d; tnp.matmul reshapes 1-d operands to 2-d around it. Under numba, the code
# generator sends float64 products to tracegrad.gemm instead of `@` (SourceWriter.statement)
register("matmul", matmul_rule, np.matmul, "{0} @ {1}",
         lambda g, out, x, y: (g @ bind("transpose", y, perm=(1, 0)), bind("transpose", x, perm=(1, 0)) @ g))

# -- indexing ----------------------------------------------------------------------------


def slice_text(index) -> str:
    parts = []
    for start, stop, step in index:
        stop_text = "" if stop < 0 else str(stop)  # a negative stop only ends a backward slice at 0
        parts.append(f"{start}:{stop_text}:{step}")
    return ", ".join(parts)


def sliced_shape(index) -> tuple[int, ...]:
    return tuple(len(range(start, stop, step)) for start, stop, step in index)


def emit_pad(out: str, ins: list[str], op: Op):
    return [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})",
            f"{out}_view = {out}[{slice_text(op.param['index'])}]",
            f"{out}_view += {ins[0]}"]  # in place on a view: numba compiles slice assignment slowly


def pad_impl(x, shape, index):
    out = np.zeros(shape, x.dtype)
    out[tuple(slice(a, b if b >= 0 else None, c) for a, b, c in index)] = x
    return out


# slice: basic slicing, one (start, stop, step) per axis
register("slice", lambda x, index: Aval(sliced_shape(index), x.dtype),
         lambda x, index: x[tuple(slice(a, b if b >= 0 else None, c) for a, b, c in index)],
         lambda out, ins, op: f"{ins[0]}[{slice_text(op.param['index'])}]",
         lambda g, out, x, index: (bind("pad", g, shape=x.shape, index=index),))

# pad: zeros of `shape` with x written at `index` (the adjoint of slice)
register("pad", lambda x, shape, index: Aval(shape, x.dtype), pad_impl, emit_pad,
         lambda g, out, x, shape, index: (bind("slice", g, index=index),))


def gather_rule(x: Aval, *indices: Aval) -> Aval:
    if len(indices) > x.ndim or any(i.dtype != "i64" or i.shape != indices[0].shape or i.ndim != 1
                                    for i in indices):
        raise ShapeError(f"gather: cannot index {x} with {', '.join(map(str, indices))}")
    return Aval(indices[0].shape + x.shape[len(indices):], x.dtype)


def out_of_bounds_message(op: Op, axis: int, size: int) -> str:
    """The IndexError of generated code. It names no index value: formatting one in numba's code (with
    str) added about a second to a cold compile."""
    return (f"an index is out of bounds for axis {axis} of size {size} (at {trace.where_text(op.source)}); "
            f"indices must lie in [-{size}, {size}), negative ones counting from the end")


def checked_index_reads(out: str, indices: list[str], sizes: tuple[int, ...], op: Op) -> list[str]:
    """Loop-body lines reading each index array at `_k` into `{out}_at{axis}`, raising IndexError out of
    bounds; a negative index is left to numba, whose indexing counts it from the end."""
    lines = []
    for axis, (index, size) in enumerate(zip(indices, sizes)):
        lines += [f"    {out}_at{axis} = {index}[_k]",
                  f"    if not -{size} <= {out}_at{axis} < {size}:",
                  f"        raise IndexError({out_of_bounds_message(op, axis, size)!r})"]
    return lines


def reraised_index_error(out: str, indices: list[str], sizes: tuple[int, ...], op: Op) -> list[str]:
    """The python backend's `except` after NumPy indexing, whose own IndexError names no line: the first
    index out of bounds is found again, in the order numba's loop meets it (by position, then axis)."""
    outside = ", ".join(f"({index} < -{size}) | ({index} >= {size})" for index, size in zip(indices, sizes))
    messages = [out_of_bounds_message(op, axis, size) for axis, size in enumerate(sizes[:len(indices)])]
    return ["except IndexError:",
            f"    {out}_outside = np.flatnonzero(np.stack([{outside}], axis=1))",
            f"    raise IndexError({messages!r}[{out}_outside[0] % {len(indices)}]) from None"]


def emit_gather(out: str, ins: list[str], op: Op):
    at = ", ".join(f"{out}_at{axis}" for axis in range(len(ins) - 1))
    lines = [f"{out} = np.zeros({op.out.aval.shape}, {numpy_dtype(op.out.aval.dtype)})",
             f"for _k in range({op.out.aval.shape[0]}):"]
    lines += checked_index_reads(out, ins[1:], op.inputs[0].aval.shape, op)
    if op.out.aval.ndim == 1:
        return lines + [f"    {out}[_k] = {ins[0]}[{at}]"]
    return lines + [f"    {out}_row = {out}[_k]",  # rows are added in place: numba compiles row assignment slowly
                    f"    {out}_row += {ins[0]}[{at}]"]


def emit_scatter_add(out: str, ins: list[str], op: Op):
    at = ", ".join(f"{out}_at{axis}" for axis in range(len(ins) - 1))
    lines = [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})",
             f"for _k in range({op.inputs[0].aval.shape[0]}):"]
    lines += checked_index_reads(out, ins[1:], op.param["shape"], op)
    if op.inputs[0].aval.ndim == 1:
        return lines + [f"    {out}[{at}] += {ins[0]}[_k]"]
    return lines + [f"    {out}_row = {out}[{at}]",
                    f"    {out}_row += {ins[0]}[_k]"]


def numpy_gather(out: str, ins: list[str], op: Op) -> list[str]:
    # `try:` shares the indexing's line: the comment over the adjoint's code quotes an op's first line
    return ([f"try: {out} = {ins[0]}[{', '.join(ins[1:])}]"]
            + reraised_index_error(out, ins[1:], op.inputs[0].aval.shape, op))


def numpy_scatter_add(out: str, ins: list[str], op: Op) -> list[str]:
    return [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})",
            "try:",
            f"    np.add.at({out}, ({''.join(i + ', ' for i in ins[1:])}), {ins[0]})"
            ] + reraised_index_error(out, ins[1:], op.param["shape"], op)


def scatter_add_impl(x, *indices, shape):
    out = np.zeros(shape, x.dtype)
    np.add.at(out, tuple(indices), x)
    return out


# gather: x[i, j, ...] with equal-length 1-d integer index arrays on the leading axes; an index out of
# bounds raises IndexError naming the line, on both backends
register("gather", gather_rule, lambda x, *indices: x[tuple(indices)], emit_gather,
         lambda g, out, x, *indices: (bind("scatter_add", g, *indices, shape=x.shape),) + (None,) * len(indices),
         numpy_emit=numpy_gather)

# scatter_add: zeros of `shape`, with each row of x added at its index (the adjoint of gather); indices
# are checked as gather's are
register("scatter_add", lambda x, *indices, shape: Aval(shape, x.dtype), scatter_add_impl, emit_scatter_add,
         lambda g, out, x, *indices, shape: (bind("gather", g, *indices),) + (None,) * len(indices),
         numpy_emit=numpy_scatter_add)

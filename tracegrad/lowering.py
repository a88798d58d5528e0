"""Lowering: how the code generator writes each primitive, one entry per primitive.

This is the code generator's own rule table (as PyTensor's `numba_funcify` is a dispatch on the
op, kept apart from the ops): the maths of a primitive is its paragraph in
tracegrad/primitives.py, its code is its entry here. An entry (`Lowering`) holds

    statement        the numba form: a template over the inputs' names and the params
                     ("np.tanh({0})"), or a function (out, ins, op) giving an expression or the
                     lines that assign `out` (the loops of where, reductions, pad, gather)
    numpy_statement  the python backend's form, where `statement` is a loop written for numba
    element          for an elementwise primitive: the template of one element, used when runs
                     of elementwise ops are fused into one loop, and by the tape; or a function
                     (ins, op) giving it, for one whose element depends on its params (convert)
    simd_ufunc       the NumPy ufunc whose SIMD loop beats numba's per-element libm call: large
                     arrays are computed by it (in numba's object mode) instead of in a loop
    libm_call        its element calls libm (3-15 ns each in numba): a loop of them is worth threads sooner
    view             its statement may hand back its input's array or a view of it (reshape, x.T,
                     x[1:]): outputs made so are copied, and never kept in a workspace; for a
                     primitive of several results, a function (op, result) saying it of one
    product          a matrix product: float64 operands call tracegrad.gemm's kernels under numba
    accumulator      a sum over every axis of a fused loop's value is a `+=` in that loop
    control_flow     a loop or branch: a function (writer, op) giving its lines, its sub-programs'
                     statements written by `writer.sub_program_lines` inside it, in the IR's names
    allocates        for a control-flow primitive, (op) -> the results its code fills into new arrays
                     (`writer.allocate`), which may then be kept from call to call
"""
from __future__ import annotations

import os
from typing import Callable

import attrs
import numpy as np

from .control_flow import cond_p, scan_p, while_p
from .custom import checkpoint_call_p, custom_jvp_call_p, custom_vjp_call_p
from .ir import Op, Primitive
from .primitives import (abs_p, add_p, and_p, arccos_p, arccosh_p, arcsin_p, arcsinh_p, arctan2_p, arctan_p,
                         arctanh_p, argmax_p, argsort_p, batch_matmul_p, broadcast_to_p, cbrt_p, ceil_p, convert_p,
                         cos_p, cosh_p, cumsum_p, div_p, eq_p, erf_p, exp2_p, exp_p, expm1_p, floor_divide_p, floor_p,
                         gather_p, ge_p, gt_p, hypot_p, invert_p, le_p, log1p_p, log2_p, log10_p, log_p, lt_p,
                         matmul_p, maximum_p, minimum_p, mod_p, mul_p, ne_p, neg_p, optimization_barrier_p, or_p,
                         pad_p, pow_p, reduce_max_p, reduce_sum_p, reshape_p, rint_p, scatter_add_p, sign_p, sin_p,
                         sinh_p, slice_p, sqrt_p, stop_gradient_p, sub_p, tan_p, tanh_p, transpose_p, where_p, xor_p)
from .linalg import cholesky_p, det_p, eigh_p, qr_p, slogdet_p, solve_p
from .random import KEY_PARITY, ROTATIONS, WORD, argsort_keys_p, threefry2x32_p
from .source_info import where_text

Emit = str | Callable[[str, list[str], Op], str | list[str]]


@attrs.frozen
class Lowering:
    """How the code generator writes one primitive (see the module's docstring for each field)."""

    statement: Emit
    numpy_statement: Emit | None = None
    element: str | None = None
    simd_ufunc: str | None = None
    libm_call: bool = False
    view: bool | Callable[[Op, object], bool] = False
    product: bool = False
    accumulator: bool = False
    control_flow: Callable | None = None
    allocates: Callable[[Op], tuple] | None = None


rules: dict[Primitive, Lowering] = {}


def rule_for(primitive: Primitive) -> Lowering:
    try:
        return rules[primitive]
    except KeyError:
        raise NotImplementedError(f"the code generator has no lowering for {primitive.name}: "
                                  "add an entry to tracegrad.lowering.rules") from None


def elementwise(template: str, **fields) -> Lowering:
    """An elementwise primitive whose statement on arrays is its element's template too."""
    return Lowering(template, element=template, **fields)


def numpy_dtype(dtype: str) -> str:
    return {"f64": "np.float64", "f32": "np.float32", "i64": "np.int64", "bool": "np.bool_"}[dtype]


# -- elementwise ---------------------------------------------------------------------------

rules[neg_p] = elementwise("-{0}")
rules[add_p] = elementwise("{0} + {1}")
rules[sub_p] = elementwise("{0} - {1}")
rules[mul_p] = elementwise("{0} * {1}")
rules[div_p] = elementwise("{0} / {1}")
rules[pow_p] = elementwise("{0} ** {1}", libm_call=True)
rules[maximum_p] = elementwise("np.maximum({0}, {1})")
rules[minimum_p] = elementwise("np.minimum({0}, {1})")

rules[exp_p] = elementwise("np.exp({0})", simd_ufunc="np.exp", libm_call=True)
rules[log_p] = elementwise("np.log({0})", simd_ufunc="np.log", libm_call=True)
rules[tanh_p] = elementwise("np.tanh({0})", simd_ufunc="np.tanh", libm_call=True)
rules[sin_p] = elementwise("np.sin({0})", libm_call=True)
rules[cos_p] = elementwise("np.cos({0})", libm_call=True)
rules[sqrt_p] = elementwise("np.sqrt({0})")
rules[abs_p] = elementwise("np.abs({0})")
rules[sign_p] = elementwise("np.sign({0})")
rules[stop_gradient_p] = elementwise("{0}", view=True)
rules[optimization_barrier_p] = Lowering("{0}", view=True)
rules[gt_p] = elementwise("{0} > {1}")
rules[lt_p] = elementwise("{0} < {1}")
rules[ge_p] = elementwise("{0} >= {1}")
rules[le_p] = elementwise("{0} <= {1}")
rules[eq_p] = elementwise("{0} == {1}")
rules[ne_p] = elementwise("{0} != {1}")


# NumPy's other ufuncs, which numba also has for scalars and arrays
for _primitive in (log1p_p, expm1_p, log2_p, log10_p, exp2_p, tan_p, arcsin_p, arccos_p, arctan_p, sinh_p, cosh_p,
                   arcsinh_p, arccosh_p, arctanh_p, cbrt_p):
    rules[_primitive] = elementwise(f"np.{_primitive.name}({{0}})", simd_ufunc=f"np.{_primitive.name}", libm_call=True)
rules[arctan2_p] = elementwise("np.arctan2({0}, {1})", libm_call=True)
rules[hypot_p] = elementwise("np.hypot({0}, {1})", libm_call=True)
rules[mod_p] = elementwise("np.mod({0}, {1})")
rules[floor_divide_p] = elementwise("np.floor_divide({0}, {1})")
rules[floor_p] = elementwise("np.floor({0})")
rules[ceil_p] = elementwise("np.ceil({0})")
rules[rint_p] = elementwise("np.rint({0})")
rules[and_p] = elementwise("{0} & {1}")
rules[or_p] = elementwise("{0} | {1}")
rules[xor_p] = elementwise("{0} ^ {1}")
rules[invert_p] = elementwise("np.invert({0})")  # logical `not` on booleans, in NumPy and numba


def emit_erf(out: str, ins: list[str], op: Op):
    # math.erf takes one number (NumPy has no erf ufunc): a flat loop over an array
    shape = op.out.aval.shape
    if shape == ():
        return f"math.erf({ins[0]})"
    size = int(np.prod(shape))
    return [f"{out}_x = np.ascontiguousarray({ins[0]}).reshape({size})",
            f"{out}_flat = np.empty({size}, np.float64)",
            f"for _i0 in range({size}):",
            f"    {out}_flat[_i0] = math.erf({out}_x[_i0])",
            f"{out} = {out}_flat.reshape({shape})"]


def numpy_erf(out: str, ins: list[str], op: Op):
    if op.out.aval.shape == ():
        return f"math.erf({ins[0]})"
    return f"np.vectorize(math.erf, otypes=[np.float64])({ins[0]})"


rules[erf_p] = Lowering(emit_erf, numpy_statement=numpy_erf, element="math.erf({0})", libm_call=True)


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
        flat.append(f"{out}_{role}[_i0]")
    return lines + [f"{out}_flat = np.empty({size}, {numpy_dtype(op.out.aval.dtype)})",
                    f"for _i0 in range({size}):",
                    f"    {out}_flat[_i0] = {flat[1]} if {flat[0]} else {flat[2]}",
                    f"{out} = {out}_flat.reshape({shape})"]


rules[where_p] = Lowering(emit_where, numpy_statement="np.where({0}, {1}, {2})", element="{1} if {0} else {2}")

# -- reductions and shapes -------------------------------------------------------------------


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
                      f"for _i0 in range({before}):",
                      f"    {result}[_i0] = np.{kind}({result}_in[_i0, :, 0])"]
        elif kind == "sum":
            lines += [f"{result} = np.zeros(({before}, {after}), {dtype})",
                      f"for _i0 in range({before}):",
                      f"    {result}_row = {result}[_i0]",
                      f"    for _i1 in range({reduced}):",
                      f"        {result}_row += {result}_in[_i0, _i1]"]
        else:
            lines += [f"{result} = np.empty(({before}, {after}), {dtype})",
                      f"for _i0 in range({before}):",
                      f"    for _i1 in range({after}):",
                      f"        {result}[_i0, _i1] = np.max({result}_in[_i0, :, _i1])"]
        source, shape = result, shape[:start] + shape[stop:]
    return lines + [f"{out} = {source}.reshape({op.out.aval.shape})"]


rules[reduce_sum_p] = Lowering(lambda out, ins, op: emit_reduction(out, ins, op, "sum"),
                               numpy_statement="np.sum({0}, axis={axes})", accumulator=True)
rules[reduce_max_p] = Lowering(lambda out, ins, op: emit_reduction(out, ins, op, "max"),
                               numpy_statement="np.max({0}, axis={axes})")



def axis_blocks(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """The sizes of the axes before `axis`, of `axis`, and of those after: x as (before, n, after)."""
    return int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))


def emit_along_axis(out: str, ins: list[str], op: Op, call: str, dtype: str, keeps_axis: bool) -> list[str]:
    """`call` (a function of one 1-d lane, like np.argmax) on each lane of x along the op's axis."""
    before, n, after = axis_blocks(op.inputs[0].aval.shape, op.param["axis"])
    result = f"np.empty(({before}, {n}, {after}), {dtype})" if keeps_axis else f"np.empty(({before}, {after}), {dtype})"
    target = f"{out}_all[_i0, :, _i1]" if keeps_axis else f"{out}_all[_i0, _i1]"
    return [f"{out}_in = np.ascontiguousarray({ins[0]}).reshape(({before}, {n}, {after}))",
            f"{out}_all = {result}",
            f"for _i0 in range({before}):",
            f"    for _i1 in range({after}):",
            f"        {target} = {call.format(f'{out}_in[_i0, :, _i1]')}",
            f"{out} = {out}_all.reshape({op.out.aval.shape})"]


rules[argmax_p] = Lowering(lambda out, ins, op: emit_along_axis(out, ins, op, "np.argmax({0})", "np.int64", False),
                           numpy_statement="np.argmax({0}, axis={axis})")
rules[argsort_p] = Lowering(
    lambda out, ins, op: emit_along_axis(out, ins, op, "np.argsort({0}, kind='mergesort')", "np.int64", True),
    numpy_statement="np.argsort({0}, axis={axis}, kind='stable')")


def emit_cumsum(out: str, ins: list[str], op: Op) -> list[str]:
    before, n, after = axis_blocks(op.inputs[0].aval.shape, op.param["axis"])
    dtype = numpy_dtype(op.out.aval.dtype)
    steps = f"range({n} - 1, -1, -1)" if op.param["reverse"] else f"range({n})"
    return [f"{out}_in = np.ascontiguousarray({ins[0]}).reshape(({before}, {n}, {after}))",
            f"{out}_all = np.empty(({before}, {n}, {after}), {dtype})",
            f"for _i0 in range({before}):",
            f"    for _i2 in range({after}):",
            f"        {out}_total = {dtype}(0)",
            f"        for _i1 in {steps}:",
            f"            {out}_total += {out}_in[_i0, _i1, _i2]",
            f"            {out}_all[_i0, _i1, _i2] = {out}_total",
            f"{out} = {out}_all.reshape({op.out.aval.shape})"]


def numpy_cumsum(out: str, ins: list[str], op: Op) -> str:
    axis = op.param["axis"]
    if op.param["reverse"]:
        return f"np.flip(np.cumsum(np.flip({ins[0]}, {axis}), axis={axis}), {axis})"
    return f"np.cumsum({ins[0]}, axis={axis})"


rules[cumsum_p] = Lowering(emit_cumsum, numpy_statement=numpy_cumsum)

def emit_reshape(out: str, ins: list[str], op: Op):
    shape = op.param["shape"]
    if op.inputs[0].aval.shape == ():
        return f"np.full({shape}, {ins[0]})"
    if shape == ():
        return f"{ins[0]}.flat[0]"
    return f"np.ascontiguousarray({ins[0]}).reshape({shape})"


rules[reshape_p] = Lowering(emit_reshape, view=True)


def emit_broadcast_to(out: str, ins: list[str], op: Op):
    shape = op.param["shape"]
    if op.inputs[0].aval.shape == ():
        return f"np.full({shape}, {ins[0]})"
    return f"{ins[0]} + np.zeros({shape}, {numpy_dtype(op.out.aval.dtype)})"


rules[broadcast_to_p] = Lowering(emit_broadcast_to, element="{0}")  # in a fused loop, x is read at the broadcast index


def emit_transpose(out: str, ins: list[str], op: Op):
    perm = op.param["perm"]
    return f"{ins[0]}.T" if perm == (1, 0) else f"np.transpose({ins[0]}, {perm})"


rules[transpose_p] = Lowering(emit_transpose, view=True)
def emit_matmul(out: str, ins: list[str], op: Op):
    # numba's `@` takes operands of one dtype: a float32 operand beside a float64 one is converted first
    dtype = op.out.aval.dtype
    operands = [name if x.aval.dtype == dtype else f"{name}.astype({numpy_dtype(dtype)})"
                for name, x in zip(ins, op.inputs)]
    return f"{operands[0]} @ {operands[1]}"


rules[matmul_p] = Lowering(emit_matmul, numpy_statement="{0} @ {1}", product=True)


def emit_batch_matmul(out: str, ins: list[str], op: Op) -> list[str]:
    b = op.out.aval.shape[0]
    return [f"{out} = np.empty({op.out.aval.shape}, {numpy_dtype(op.out.aval.dtype)})",
            f"for _i0 in range({b}):",
            f"    {out}[_i0] = np.ascontiguousarray({ins[0]}[_i0]) @ np.ascontiguousarray({ins[1]}[_i0])"]


rules[batch_matmul_p] = Lowering(emit_batch_matmul, numpy_statement="np.matmul({0}, {1})")

# -- indexing ----------------------------------------------------------------------------------


def slice_text(index) -> str:
    parts = []
    for start, stop, step in index:
        stop_text = "" if stop < 0 else str(stop)  # a negative stop only ends a backward slice at 0
        parts.append(f"{start}:{stop_text}:{step}")
    return ", ".join(parts)


rules[slice_p] = Lowering(lambda out, ins, op: f"{ins[0]}[{slice_text(op.param['index'])}]", view=True)


def emit_pad(out: str, ins: list[str], op: Op):
    """Zeros, then the operand written into place by a loop nest (numba compiles `view += x` on a
    view of several dimensions far more slowly than a loop nest: measured on a batch of images)."""
    shape = op.inputs[0].aval.shape
    lines = [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})"]
    if not shape:
        return lines + [f"{out}[()] = {ins[0]}"]
    for axis, length in enumerate(shape):
        lines.append("    " * axis + f"for _i{axis} in range({length}):")
    target = ", ".join(f"{start} + {step} * _i{axis}" if step != 1 else f"{start} + _i{axis}"
                       for axis, (start, _, step) in enumerate(op.param["index"]))
    source = ", ".join(f"_i{axis}" for axis in range(len(shape)))
    return lines + ["    " * len(shape) + f"{out}[{target}] = {ins[0]}[{source}]"]


rules[pad_p] = Lowering(emit_pad)


def out_of_bounds_message(op: Op, axis: int, size: int) -> str:
    """The IndexError of generated code. It names no index value: formatting one in numba's code (with
    str) added about a second to a cold compile."""
    return (f"an index is out of bounds for axis {axis} of size {size} (at {where_text(op.source)}); "
            f"indices must lie in [-{size}, {size}), negative ones counting from the end")


def checked_index_reads(out: str, indices: list[str], sizes: tuple[int, ...], op: Op) -> list[str]:
    """Loop-body lines reading each index array at `_i0` into `{out}_at{axis}`, raising IndexError out of
    bounds; a negative index is left to numba, whose indexing counts it from the end."""
    lines = []
    for axis, (index, size) in enumerate(zip(indices, sizes)):
        lines += [f"    {out}_at{axis} = {index}[_i0]",
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
             f"for _i0 in range({op.out.aval.shape[0]}):"]
    lines += checked_index_reads(out, ins[1:], op.inputs[0].aval.shape, op)
    if op.out.aval.ndim == 1:
        return lines + [f"    {out}[_i0] = {ins[0]}[{at}]"]
    return lines + [f"    {out}_row = {out}[_i0]",  # rows are added in place: numba compiles row assignment slowly
                    f"    {out}_row += {ins[0]}[{at}]"]


def numpy_gather(out: str, ins: list[str], op: Op) -> list[str]:
    # `try:` shares the indexing's line: the comment over the adjoint's code quotes an op's first line
    return ([f"try: {out} = {ins[0]}[{', '.join(ins[1:])}]"]
            + reraised_index_error(out, ins[1:], op.inputs[0].aval.shape, op))


rules[gather_p] = Lowering(emit_gather, numpy_statement=numpy_gather)


def emit_scatter_add(out: str, ins: list[str], op: Op):
    at = ", ".join(f"{out}_at{axis}" for axis in range(len(ins) - 1))
    lines = [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})",
             f"for _i0 in range({op.inputs[0].aval.shape[0]}):"]
    lines += checked_index_reads(out, ins[1:], op.param["shape"], op)
    if op.inputs[0].aval.ndim == 1:
        return lines + [f"    {out}[{at}] += {ins[0]}[_i0]"]
    return lines + [f"    {out}_row = {out}[{at}]",
                    f"    {out}_row += {ins[0]}[_i0]"]


def numpy_scatter_add(out: str, ins: list[str], op: Op) -> list[str]:
    return [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})",
            "try:",
            f"    np.add.at({out}, ({''.join(i + ', ' for i in ins[1:])}), {ins[0]})"
            ] + reraised_index_error(out, ins[1:], op.param["shape"], op)


rules[scatter_add_p] = Lowering(emit_scatter_add, numpy_statement=numpy_scatter_add)


# -- convert (the float32 work's block) -----------------------------------------------------


def emit_convert(out: str, ins: list[str], op: Op) -> str:
    dtype = numpy_dtype(op.param["dtype"])
    return convert_element([ins[0]], op) if op.inputs[0].aval.shape == () else f"{ins[0]}.astype({dtype})"


def convert_element(ins: list[str], op: Op) -> str:
    """One element converted: a bool is `x != 0` (numba's np.bool_ of a float is not NumPy's)."""
    return f"({ins[0]} != 0)" if op.param["dtype"] == "bool" else f"{numpy_dtype(op.param['dtype'])}({ins[0]})"


rules[convert_p] = Lowering(emit_convert, element=convert_element)


# -- control flow: real loops and branches, their bodies written inside them -----------------

INDENT = "    "


def indented(lines: list[str]) -> list[str]:
    return [INDENT + line for line in lines]


def bind_values(writer, variables, atoms) -> list[str]:
    return [f"{writer.name(v)} = {writer.atom(a)}" for v, a in zip(variables, atoms)]


def loop_place(op: Op) -> str:
    return f"{os.path.basename(op.source.file)}:{op.source.line}" if op.source else "?"


def emit_scan(writer, op: Op) -> list[str]:
    """`for _t in range(length)`: the carries are the op's outputs, updated each step; each y is
    written into row _t of its stacked output."""
    body, n_consts, n_carry = op.param["body"], op.param["num_consts"], op.param["num_carry"]
    length, step = op.param["length"], writer.step_counter()
    carries, ys = op.outs[:n_carry], op.outs[n_carry:]
    xs = op.inputs[n_consts + n_carry:]
    lines = bind_values(writer, body.inputs[:n_consts], op.inputs[:n_consts])
    lines += bind_values(writer, carries, op.inputs[n_consts:n_consts + n_carry])
    lines += [f"{writer.name(y)} = {writer.allocate(y)}" for y in ys]
    lines.append(f"for {step} in range({length} - 1, -1, -1):" if op.param["reverse"] else
                 f"for {step} in range({length}):")
    inside = bind_values(writer, body.inputs[n_consts:n_consts + n_carry], carries)
    inside += [f"{writer.name(v)} = {writer.atom(x)}[{step}]" for v, x in zip(body.inputs[n_consts + n_carry:], xs)]
    inside += writer.sub_program_lines(body, (step, loop_place(op)))
    inside += bind_values(writer, carries, body.outputs[:n_carry])
    inside += [f"{writer.name(y)}[{step}] = {writer.atom(x)}" for y, x in zip(ys, body.outputs[n_carry:])]
    return lines + indented(inside)


def emit_while(writer, op: Op) -> list[str]:
    """`while True`: the condition's statements, a break, the body's statements, the carries updated."""
    cond, body, n_cond_consts = op.param["cond"], op.param["body"], op.param["num_cond_consts"]
    n_carry = len(op.outs)
    n_body_consts = len(body.inputs) - n_carry
    carries = op.outs
    lines = bind_values(writer, cond.inputs[:n_cond_consts], op.inputs[:n_cond_consts])
    lines += bind_values(writer, body.inputs[:n_body_consts], op.inputs[n_cond_consts:n_cond_consts + n_body_consts])
    lines += bind_values(writer, carries, op.inputs[len(op.inputs) - n_carry:])
    step = writer.step_counter()
    inside = bind_values(writer, cond.inputs[n_cond_consts:], carries)
    inside += writer.sub_program_lines(cond, (step, loop_place(op)))
    inside.append(f"if not {writer.atom(cond.outputs[0])}:")
    inside.append(INDENT + "break")
    inside += bind_values(writer, body.inputs[n_body_consts:], carries)
    inside += writer.sub_program_lines(body, (step, loop_place(op)))
    inside += bind_values(writer, carries, body.outputs)
    inside.append(f"{step} += 1")
    return lines + [f"{step} = 0", "while True:"] + indented(inside)


def emit_cond(writer, op: Op) -> list[str]:
    """`if`/`elif`/`else` over the branches; a boolean chooses branch 1 when true, an index is clamped."""
    branches, branch_consts = op.param["branches"], op.param["branch_consts"]
    index = writer.atom(op.inputs[0])
    operands = op.inputs[1 + sum(branch_consts):]
    if op.inputs[0].aval.dtype == "bool":
        headers, order = [f"if {index}:", "else:"], [1, 0]
    else:
        last = len(branches) - 1
        headers = [f"if {index} <= 0:"] + [f"elif {index} == {k}:" for k in range(1, last)] + ["else:"]
        order = list(range(len(branches)))
        if last == 0:
            headers = ["if True:"]
    lines = []
    for header, k in zip(headers, order):
        program, start = branches[k], 1 + sum(branch_consts[:k])
        inside = bind_values(writer, program.inputs, op.inputs[start:start + branch_consts[k]] + operands)
        inside += writer.sub_program_lines(program)
        inside += bind_values(writer, op.outs, program.outputs)
        lines += [header] + indented(inside or ["pass"])
    return lines


def carry_result(op: Op, result) -> bool:
    """A scan's carry may be its initial array (after no steps, or a body that returns it); its ys are new."""
    return result in op.outs[:op.param["num_carry"]]


def emit_call(writer, op: Op) -> list[str]:
    """A call of a sub-program (a custom_vjp function's): its statements inline, its results assigned."""
    body = op.param["body"]
    lines = bind_values(writer, body.inputs, op.inputs)
    lines += writer.sub_program_lines(body)
    return lines + bind_values(writer, op.outs, body.outputs)


rules[custom_vjp_call_p] = Lowering(emit_call, control_flow=emit_call, view=True)  # it may return an argument
rules[custom_jvp_call_p] = Lowering(emit_call, control_flow=emit_call, view=True)
rules[checkpoint_call_p] = Lowering(emit_call, control_flow=emit_call, view=True)
rules[scan_p] = Lowering(emit_scan, control_flow=emit_scan, view=carry_result,
                         allocates=lambda op: op.outs[op.param["num_carry"]:])  # its stacked ys
rules[while_p] = Lowering(emit_while, control_flow=emit_while, view=True)
rules[cond_p] = Lowering(emit_cond, control_flow=emit_cond, view=True)  # a branch may return an operand


# -- random numbers and linear algebra -------------------------------------------------------


# Threefry-2x32's rounds (tracegrad.random.encrypt) as one function of the generated module, called
# for each block: numba compiles the rounds once per program (0.3 s), not once per op that draws
THREEFRY_FUNCTION = f"""def tg_threefry2x32(k0, k1, x0, x1):
    # Threefry-2x32, 20 rounds, on int64 numbers (numba) or arrays (python backend) holding 32-bit words
    schedule = (k0, k1, k0 ^ k1 ^ {KEY_PARITY})
    x0 = (x0 + k0) & {WORD}
    x1 = (x1 + k1) & {WORD}
    for group in range(5):
        for rotation in {ROTATIONS}[group % 2]:
            x0 = (x0 + x1) & {WORD}
            x1 = (((x1 << rotation) | (x1 >> (32 - rotation))) & {WORD}) ^ x0
        x0 = (x0 + schedule[(group + 1) % 3]) & {WORD}
        x1 = (x1 + schedule[(group + 2) % 3] + group + 1) & {WORD}
    return x0, x1"""


def emit_threefry(writer, op: Op) -> list[str]:
    """The blocks of each key's counters: under numba a loop over keys and counters calling
    tg_threefry2x32 on numbers, in the python backend one call on arrays (keys x counters)."""
    if THREEFRY_FUNCTION not in writer.loop_functions:
        writer.loop_functions.append(THREEFRY_FUNCTION)
    out, keys, start = writer.name(op.out), writer.atom(op.inputs[0]), writer.atom(op.inputs[1])
    n_keys = int(np.prod(op.inputs[0].aval.shape[:-1]))
    n_blocks = int(np.prod(op.param["shape"]))
    if not writer.numba:
        return [f"{out}_keys = np.asarray({keys}).reshape(({n_keys}, 1, 2)) & {WORD}",
                f"{out}_counter = np.asarray({start}).reshape((-1, 1)) + np.arange({n_blocks})",
                f"{out}_x0, {out}_x1 = tg_threefry2x32({out}_keys[:, :, 0], {out}_keys[:, :, 1], "
                f"{out}_counter >> 32, {out}_counter)",
                f"{out} = np.stack(({out}_x0, {out}_x1), axis=-1).reshape({op.out.aval.shape})"]
    lines = [f"{out}_keys = np.ascontiguousarray({keys}).reshape(({n_keys}, 2))"]
    counter = f"{start} + _i1"
    if op.inputs[1].aval.shape != ():
        lines.append(f"{out}_start = np.ascontiguousarray({start}).reshape({n_keys})")
        counter = f"{out}_start[_i0] + _i1"
    return lines + [f"{out} = np.empty(({n_keys}, {n_blocks}, 2), np.int64)",
                    f"for _i0 in range({n_keys}):",
                    f"    {out}_k0 = {out}_keys[_i0, 0] & {WORD}",
                    f"    {out}_k1 = {out}_keys[_i0, 1] & {WORD}",
                    f"    for _i1 in range({n_blocks}):",
                    f"        {out}_counter = {counter}",
                    f"        {out}[_i0, _i1, 0], {out}[_i0, _i1, 1] = tg_threefry2x32({out}_k0, {out}_k1, "
                    f"{out}_counter >> 32, {out}_counter)",
                    f"{out} = {out}.reshape({op.out.aval.shape})"]


# a function of the writer, as calls' lowerings are: it adds tg_threefry2x32 to the module once
rules[threefry2x32_p] = Lowering(emit_threefry, control_flow=emit_threefry)


def emit_argsort_keys(out: str, ins: list[str], op: Op):
    """numba's np.argsort sorts 1-d arrays: one call per row, its order copied element by element."""
    shape = op.out.aval.shape
    if len(shape) == 1:
        return f'np.argsort({ins[0]}, kind="mergesort")'
    rows, n = int(np.prod(shape[:-1])), shape[-1]
    return [f"{out}_in = np.ascontiguousarray({ins[0]}).reshape(({rows}, {n}))",
            f"{out} = np.empty(({rows}, {n}), np.int64)",
            f"for _i0 in range({rows}):",
            f'    {out}_order = np.argsort({out}_in[_i0], kind="mergesort")',
            f"    for _i1 in range({n}):",
            f"        {out}[_i0, _i1] = {out}_order[_i1]",
            f"{out} = {out}.reshape({shape})"]


rules[argsort_keys_p] = Lowering(emit_argsort_keys, numpy_statement='np.argsort({0}, axis=-1, kind="stable")')


def stack_call_lines(call: str, outs: list[tuple[str, tuple]], ins: list[tuple[str, tuple]], core_ranks: list[int]):
    """numba's code for np.linalg's `call` on stacks of matrices: numba's np.linalg takes one contiguous
    matrix, so a stack is a loop over its matrices, each result added into its row of zeros (numba
    compiles row assignment slowly). `outs` and `ins` are (name, shape) pairs; `core_ranks` gives each
    result's rank without the stack axes. A single result without stack axes is an expression."""
    batch = outs[0][1][:len(outs[0][1]) - core_ranks[0]]
    if not batch:
        value = f"{call}({', '.join(f'np.ascontiguousarray({name})' for name, _ in ins)})"
        return value if len(outs) == 1 else [f"{''.join(name + ', ' for name, _ in outs)}= {value}"]
    first, count = outs[0][0], int(np.prod(batch))
    lines = [f"{first}_in{i} = np.ascontiguousarray({name}).reshape({(count,) + shape[len(batch):]})"
             for i, (name, shape) in enumerate(ins)]
    lines += [f"{name} = np.zeros({(count,) + shape[len(batch):]}, np.float64)" for name, shape in outs]
    each = [f"{name}_each" for name, _ in outs]
    arguments = ", ".join(f"{first}_in{i}[_i0]" for i in range(len(ins)))
    targets = each[0] if len(each) == 1 else ", ".join(each)
    lines += [f"for _i0 in range({count}):", f"    {targets} = {call}({arguments})"]
    for (name, shape), value, rank in zip(outs, each, core_ranks):
        lines += ([f"    {name}[_i0] = {value}"] if rank == 0 else
                  [f"    {name}_row = {name}[_i0]", f"    {name}_row += {value}"])
    return lines + [f"{name} = {name}.reshape({shape})" for name, shape in outs]


def stack_call(call: str, core_rank: int) -> Lowering:
    """A primitive of one result on stacks of matrices: `call` on the stack in the python backend, on each
    matrix in numba's loop."""
    def emit(out: str, ins: list[str], op: Op):
        return stack_call_lines(call, [(out, op.out.aval.shape)], list(zip(ins, (x.aval.shape for x in op.inputs))),
                                [core_rank])
    return Lowering(emit, numpy_statement=lambda out, ins, op: f"{call}({', '.join(ins)})")


def stack_call_results(call: str, core_ranks: list[int]) -> Lowering:
    """A primitive of several results on stacks of matrices, written (as calls are, through the writer)
    as an assignment of `call`'s tuple."""
    def emit(writer, op: Op) -> list[str]:
        outs = [(writer.name(v), v.aval.shape) for v in op.outs]
        ins = [(writer.atom(x), x.aval.shape) for x in op.inputs]
        if not writer.numba:
            return [f"{''.join(name + ', ' for name, _ in outs)}= {call}({', '.join(name for name, _ in ins)})"]
        return stack_call_lines(call, outs, ins, core_ranks)
    return Lowering(emit, control_flow=emit)


rules[solve_p] = stack_call("np.linalg.solve", 2)
rules[det_p] = stack_call("np.linalg.det", 0)
rules[cholesky_p] = stack_call("np.linalg.cholesky", 2)
rules[slogdet_p] = stack_call_results("np.linalg.slogdet", [0, 0])
rules[eigh_p] = stack_call_results("np.linalg.eigh", [1, 2])
rules[qr_p] = stack_call_results("np.linalg.qr", [2, 2])

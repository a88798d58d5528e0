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
from .primitives import (abs_p, add_p, broadcast_to_p, convert_p, cos_p, div_p, eq_p, exp_p, gather_p, ge_p, gt_p,
                         le_p, log_p, lt_p, matmul_p, maximum_p, minimum_p, mul_p, ne_p, neg_p, optimization_barrier_p,
                         pad_p, pow_p, reduce_max_p, reduce_sum_p, reshape_p, scatter_add_p, sign_p, sin_p,
                         slice_p, sqrt_p, stop_gradient_p, sub_p, tanh_p, transpose_p, where_p)
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

# -- indexing ----------------------------------------------------------------------------------


def slice_text(index) -> str:
    parts = []
    for start, stop, step in index:
        stop_text = "" if stop < 0 else str(stop)  # a negative stop only ends a backward slice at 0
        parts.append(f"{start}:{stop_text}:{step}")
    return ", ".join(parts)


rules[slice_p] = Lowering(lambda out, ins, op: f"{ins[0]}[{slice_text(op.param['index'])}]", view=True)


def emit_pad(out: str, ins: list[str], op: Op):
    return [f"{out} = np.zeros({op.param['shape']}, {numpy_dtype(op.out.aval.dtype)})",
            f"{out}_view = {out}[{slice_text(op.param['index'])}]",
            f"{out}_view += {ins[0]}"]  # in place on a view: numba compiles slice assignment slowly


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
    return f"{dtype}({ins[0]})" if op.inputs[0].aval.shape == () else f"{ins[0]}.astype({dtype})"


rules[convert_p] = Lowering(emit_convert, element=lambda ins, op: f"{numpy_dtype(op.param['dtype'])}({ins[0]})")


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

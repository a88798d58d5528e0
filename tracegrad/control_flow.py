"""Loops and branches that stay loops: `scan`, `fori_loop`, `while_loop` and `cond`.

Each is a primitive whose params hold its sub-programs (a loop's body, traced once), with
JAX's signatures. The values a body closes over are inputs of the loop op (its "consts", first),
not copies baked into the body, so the body is a closed Program:

    scan   inputs: consts, initial carries, xs        body: consts, carries, x[t] -> carries, y[t]
           params: body, num_consts, num_carry, length, reverse   results: final carries, stacked ys
    while  inputs: cond consts, body consts, carries  cond: consts, carries -> bool
           params: cond, body, num_cond_consts        body: consts, carries -> carries
    cond   inputs: index, each branch's consts, operands
           params: branches, branch_consts            branch k: its consts, operands -> results

Reverse mode runs a scan forward once, stacking per step what its body's adjoint reads (the
residuals), then a scan the other way over the body's adjoint (`forward_vjp_rules`); a cond
differentiates the branch taken. A while loop has no reverse mode: its trip count is unknown
until it runs, as in JAX.
"""
from __future__ import annotations

from typing import Callable

import attrs
import numpy as np

from . import errors
from .ad import cotangent_aval, evaluated_outputs, split_forward_backward, vjp, vjp_program, zeros
from .batching import batch
from .core import (NUMPY_DTYPES, Tracer, abstract_eval_rules, as_traceable_array, aval_of, batch_rules, bind,
                   forward_vjp_rules, impl_rules, jvp_rules)
from .forward import jvp
from .ir import FLOAT_DTYPES, Aval, ClosedProgram, Literal, Primitive, Program, Var
from .passes import atom_key, eliminate_common_subexpressions
from .primitives import (broadcast_to_p, ge_p, gt_p, ne_p, pad_p, reduce_sum_p, reshape_p, transpose_p,
                         where_p)
from .source_info import user_source, where_text
from .trace import trace_flat
from .tree import TreeDef, tree_flatten, tree_unflatten

scan_p = Primitive("scan", multiple_results=True)
while_p = Primitive("while", multiple_results=True)
cond_p = Primitive("cond", multiple_results=True)


# -- tracing a body once -------------------------------------------------------------------


def closed_program(fun: Callable, in_avals: list[Aval]) -> tuple[Program, tuple]:
    """Trace `fun(*values) -> list of leaves` once: a Program whose first inputs are the values
    it closes over (arrays, or values of an enclosing trace), and those values."""
    closed = trace_flat(fun, in_avals)
    program = closed.program
    return Program((), program.constvars + program.inputs, program.ops, program.outputs), closed.consts


def hoisted(program: Program, consts: tuple) -> tuple[Program, tuple]:
    """Compute a body's loop-invariant ops (those reading only its consts) once, before the loop.

    They are bound in the current interpreter (staged, or differentiated, as the function's other
    ops) and their values join the loop's consts: a step reads `w[0]` once, not once per step,
    and reverse mode neither stores it per step nor sums its cotangent per step.
    """
    invariant = set(program.inputs[:len(consts)])
    moved, kept = [], []
    for op in program.ops:
        if not op.sub_programs() and all(isinstance(x, Literal) or x in invariant for x in op.inputs):
            moved.append(op)
            invariant.update(op.outs)
        else:
            kept.append(op)
    if not moved:
        return program, consts
    used = {x for op in kept for x in op.inputs} | set(program.outputs)
    computed = [out for op in moved for out in op.outs if out in used]
    # the same value computed twice (`p[0]` read in two places) is one const, with one cotangent to sum
    before = eliminate_common_subexpressions(ClosedProgram(Program((), program.inputs[:len(consts)], tuple(moved),
                                                                   tuple(computed)), ())).program
    first: dict = {}
    renamed = {var: first.setdefault(atom_key(atom), var) for var, atom in zip(computed, before.outputs)}
    unique = [var for var in computed if renamed[var] is var]
    rename = lambda atom: renamed.get(atom, atom) if isinstance(atom, Var) else atom
    kept = [attrs.evolve(op, inputs=tuple(map(rename, op.inputs))) for op in kept]
    outputs = tuple(map(rename, program.outputs))
    values = evaluated_outputs(ClosedProgram(attrs.evolve(before, outputs=tuple(
        atom for var, atom in zip(computed, before.outputs) if renamed[var] is var)), ()), list(consts))
    used = {x for op in kept for x in op.inputs} | set(outputs)
    still_read = [(var, value) for var, value in zip(program.inputs, consts) if var in used]
    body = Program((), tuple(var for var, _ in still_read) + tuple(unique) + program.inputs[len(consts):],
                   tuple(kept), outputs)
    return body, tuple(value for _, value in still_read) + tuple(values)


def leaf_value(leaf):
    """A carry's or xs' leaf as tracing sees it: a tracer, a Python number, or a float64/int64/bool array."""
    if isinstance(leaf, (Tracer, bool, int, float, np.float32)):
        return leaf
    return as_traceable_array(leaf)


def check_carry(kind: str, carry_tree: TreeDef, carry_avals: list[Aval], out_tree: TreeDef,
                out_avals: list[Aval]) -> None:
    if out_tree != carry_tree:
        raise errors.TreeStructureError(
            f"the {kind} must return a carry of the structure it was given: {carry_tree} in, {out_tree} out "
            f"(at {where_text(user_source())})")
    for index, (given, returned) in enumerate(zip(carry_avals, out_avals)):
        if given != returned:
            raise errors.ShapeError(
                f"the {kind} must return a carry of the shapes and dtypes it was given: leaf {index} is "
                f"{given} in, {returned} out (at {where_text(user_source())}); a Python int starts an "
                "int64 carry, write 0.0 to start a float one")


def carried(leaf, aval: Aval):
    """A body's returned carry leaf in its carry's dtype: a Python int where a float carry is expected is a
    float, a Python number where a float32 one is expected an np.float32."""
    if type(leaf) in (int, float) and aval.dtype in FLOAT_DTYPES:
        return np.float32(leaf) if aval.dtype == "f32" else float(leaf)
    return leaf


# -- scan ----------------------------------------------------------------------------------


def scan(f: Callable, init, xs=None, length: int | None = None, reverse: bool = False,
         checkpoint_every: int | None = None, *, recompute: bool = False):
    """Loop `f(carry, x) -> (carry, y)` over the leading axis of `xs`, as `jax.lax.scan`.

    Returns the final carry and the `y`s stacked along a new leading axis. `init` and `xs` are
    pytrees; `length` gives the trip count when `xs` is None; `reverse=True` runs from the last
    element of `xs` to the first (the `y`s still line up with the `xs`). `f` is traced once: the
    program holds one `scan` op whose body is `f`'s program, and the compiled code is a loop.

    Reverse mode stores the values the body's adjoint reads, one row per step. With
    `checkpoint_every=k` it stores only the carry at the start of every k-th step and, going
    backwards, recomputes each segment of k steps from it: about length/k + k rows of memory
    instead of length, for one more forward pass of the loop (docs/api.md has measurements).
    """
    if checkpoint_every is not None:
        return checkpointed_scan(f, init, xs, length, reverse, int(checkpoint_every))
    init_leaves, carry_tree = tree_flatten(init)
    xs_leaves, xs_tree = tree_flatten(xs)
    init_leaves = [leaf_value(leaf) for leaf in init_leaves]
    xs_leaves = [leaf_value(leaf) for leaf in xs_leaves]
    lengths = {aval_of(leaf).shape[0] if aval_of(leaf).ndim else None for leaf in xs_leaves}
    if None in lengths:
        raise errors.ShapeError(f"scan's xs must be arrays with a leading axis to loop over "
                                f"(at {where_text(user_source())})")
    if length is not None:
        lengths.add(int(length))
    if len(lengths) != 1:
        raise errors.ShapeError(
            f"scan needs one trip count: xs' leading axes and length give {sorted(lengths)}" if lengths else
            f"scan needs xs or length to know how many steps to run (at {where_text(user_source())})")
    (length,) = lengths
    carry_avals = [aval_of(leaf) for leaf in init_leaves]
    x_avals = [Aval(aval_of(leaf).shape[1:], aval_of(leaf).dtype) for leaf in xs_leaves]
    n_carry, found = len(carry_avals), {}

    def body(*values):
        carry = tree_unflatten(carry_tree, values[:n_carry])
        x = tree_unflatten(xs_tree, values[n_carry:])
        result = f(carry, x)
        if not isinstance(result, tuple) or len(result) != 2:
            raise TypeError(f"scan's function must return a pair (carry, y) (at {where_text(user_source())})")
        new_carry, y = result
        carry_leaves, out_tree = tree_flatten(new_carry)
        if out_tree == carry_tree:
            carry_leaves = [carried(leaf, aval) for leaf, aval in zip(carry_leaves, carry_avals)]
        check_carry("scan's function", carry_tree, carry_avals, out_tree, [aval_of(leaf) for leaf in carry_leaves])
        y_leaves, found["y_tree"] = tree_flatten(y)
        return carry_leaves + y_leaves

    program, consts = hoisted(*closed_program(body, carry_avals + x_avals))
    recomputed = {"recompute": True} if recompute else {}  # printed only when set
    outs = bind(scan_p, *consts, *init_leaves, *xs_leaves, body=program, num_consts=len(consts),
                num_carry=n_carry, length=length, reverse=bool(reverse), **recomputed)
    return tree_unflatten(carry_tree, outs[:n_carry]), tree_unflatten(found["y_tree"], outs[n_carry:])


def checkpointed_scan(f: Callable, init, xs, length: int | None, reverse: bool, every: int):
    """A scan over segments of `every` steps whose reverse mode recomputes each segment (see `scan`)."""
    if every < 1:
        raise ValueError(f"checkpoint_every must be a positive int, not {every} (at {where_text(user_source())})")
    xs_leaves, xs_tree = tree_flatten(xs)
    xs_leaves = [leaf_value(leaf) for leaf in xs_leaves]
    if length is None:
        if not xs_leaves:
            raise errors.ShapeError(f"scan needs xs or length to know how many steps to run "
                                    f"(at {where_text(user_source())})")
        length = aval_of(xs_leaves[0]).shape[0]
    segments = length // every
    if segments < 2:
        return scan(f, init, xs, length, reverse)
    covered = segments * every  # the rest run as a plain scan, after the segments in the loop's order
    segment_rows = (length - covered, length) if reverse else (0, covered)
    rest_rows = (0, length - covered) if reverse else (covered, length)

    def rows(leaf, start: int, stop: int):
        return leaf[start:stop]

    def as_segments(leaf):
        part = rows(leaf, *segment_rows)
        return reshape(part, (segments, every) + tuple(aval_of(leaf).shape[1:]))

    def segment(carry, x_segment):
        return scan(f, carry, tree_unflatten(xs_tree, x_segment) if xs_leaves else None, length=every,
                    reverse=reverse)

    carry, y_segments = scan(segment, init, [as_segments(leaf) for leaf in xs_leaves], length=segments,
                             reverse=reverse, recompute=True)
    y_segment_leaves, y_tree = tree_flatten(y_segments)
    y_leaves = [reshape(y, (covered,) + tuple(aval_of(y).shape[2:])) for y in y_segment_leaves]
    if covered == length:
        return carry, tree_unflatten(y_tree, y_leaves)
    rest = tree_unflatten(xs_tree, [rows(leaf, *rest_rows) for leaf in xs_leaves]) if xs_leaves else None
    carry, y_rest = scan(f, carry, rest, length=length - covered, reverse=reverse)
    joined = [rows_joined(y, segment_rows, other, rest_rows, length)
              for y, other in zip(y_leaves, tree_flatten(y_rest)[0])]
    return carry, tree_unflatten(y_tree, joined)


def reshape(x, shape: tuple[int, ...]):
    return x if aval_of(x).shape == shape else bind(reshape_p, x, shape=shape)


def rows_joined(first, first_rows: tuple[int, int], second, second_rows: tuple[int, int], length: int):
    """The rows of `first` and `second` placed at their row ranges of one stacked array."""
    placed = []
    for part, (start, stop) in ((first, first_rows), (second, second_rows)):
        shape = (length,) + tuple(aval_of(part).shape[1:])
        index = ((start, stop, 1),) + tuple((0, n, 1) for n in shape[1:])
        placed.append(bind(pad_p, part, shape=shape, index=index))
    return placed[0] + placed[1]


def scan_abstract_eval(*avals, body: Program, num_consts: int, num_carry: int, length: int, reverse: bool,
                       recompute: bool = False):
    carry = avals[num_consts:num_consts + num_carry]
    xs = avals[num_consts + num_carry:]
    if any(x.shape[:1] != (length,) for x in xs):
        raise errors.ShapeError(f"scan of length {length} over xs of shapes {[str(x) for x in xs]}")
    expected = avals[:num_consts + num_carry] + tuple(Aval(x.shape[1:], x.dtype) for x in xs)
    if tuple(v.aval for v in body.inputs) != expected:
        raise errors.ShapeError(f"scan's body takes {[str(v.aval) for v in body.inputs]}, "
                                f"is given {[str(a) for a in expected]}")
    outs = [x.aval for x in body.outputs]
    if tuple(outs[:num_carry]) != carry:
        raise errors.ShapeError(f"scan's body returns carries {[str(a) for a in outs[:num_carry]]} "
                                f"for {[str(a) for a in carry]}")
    return tuple(carry) + tuple(Aval((length,) + y.shape, y.dtype) for y in outs[num_carry:])


def scan_impl(*args, body: Program, num_consts: int, num_carry: int, length: int, reverse: bool,
              recompute: bool = False):
    consts, carry = list(args[:num_consts]), list(args[num_consts:num_consts + num_carry])
    xs = args[num_consts + num_carry:]
    closed = ClosedProgram(body, ())
    ys: list[list] = [[] for _ in body.outputs[num_carry:]]
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        outs = evaluated_outputs(closed, consts + carry + [x[t] for x in xs])
        carry = outs[:num_carry]
        for stack, y in zip(ys, outs[num_carry:]):
            stack.append(y)
    stacked = []
    for stack, y in zip(ys, body.outputs[num_carry:]):
        if reverse:
            stack.reverse()
        dtype = NUMPY_DTYPES[y.aval.dtype]
        stacked.append(np.array(stack, dtype) if stack else np.empty((0,) + y.aval.shape, dtype))
    return carry + stacked


def depends_on(program: Program, flags) -> list[bool]:
    """For each output of `program`: whether a differentiable path leads to it from an input flagged True."""
    reached = {var for var, flag in zip(program.inputs, flags) if flag}
    for op in program.ops:
        if op.primitive.differentiable and any(isinstance(x, Var) and x in reached for x in op.inputs):
            reached.update(op.outs)
    return [isinstance(x, Var) and x in reached and x.aval.dtype in FLOAT_DTYPES for x in program.outputs]


def scan_forward_vjp(primals, differentiated, *, body: Program, num_consts: int, num_carry: int, length: int,
                     reverse: bool, recompute: bool = False):
    """Run the scan once, stacking what the body's adjoint reads; backward is a scan the other way.

    Differentiated are the float inputs the caller differentiates, and the carries a body step
    makes depend on them (found by iterating to a fixed point). A residual that is a const of
    the loop is read as one by the backward scan; one that is an `x` is read from `xs`; every
    other residual is stacked, one row per step.
    """
    n_in, n_out = len(body.inputs), len(body.outputs)
    flags = [flag and v.aval.dtype in FLOAT_DTYPES for flag, v in zip(differentiated, body.inputs)]
    while True:  # a carry that depends on a differentiated value after a step is differentiated
        reached = depends_on(body, flags)[:num_carry]
        carries = [flag or now for flag, now in zip(flags[num_consts:num_consts + num_carry], reached)]
        if carries == flags[num_consts:num_consts + num_carry]:
            break
        flags[num_consts:num_consts + num_carry] = carries
    wrt = [i for i, flag in enumerate(flags) if flag]
    if not wrt:
        return bind(scan_p, *primals, body=body, num_consts=num_consts, num_carry=num_carry, length=length,
                    reverse=reverse), None
    if recompute:
        return recomputing_scan_vjp(primals, wrt, body, num_consts, num_carry, length, reverse)
    forward, backward = split_forward_backward(vjp_program(ClosedProgram(body, ()), wrt), n_in, n_out)
    forward_program = forward.program
    residuals = forward_program.outputs[n_out:]
    position = {var: i for i, var in enumerate(forward_program.inputs)}
    kinds = []  # per residual: ("const", input index), ("x", input index) or ("stacked", None)
    for var in residuals:
        index = position.get(var)
        if index is not None and index < num_consts:
            kinds.append(("const", index))
        elif index is not None and index >= num_consts + num_carry:
            kinds.append(("x", index))
        else:
            kinds.append(("stacked", None))
    stacked = [var for var, (kind, _) in zip(residuals, kinds) if kind == "stacked"]
    forward_body = Program((), forward_program.constvars + forward_program.inputs, forward_program.ops,
                           forward_program.outputs[:n_out] + tuple(stacked))
    outs = bind(scan_p, *forward.consts, *primals, body=forward_body, num_consts=len(forward.consts) + num_consts,
                num_carry=num_carry, length=length, reverse=reverse)
    results, stacked_values = outs[:n_out], outs[n_out:]
    const_residuals = [primals[index] for kind, index in kinds if kind == "const"]
    x_residuals = [primals[index] for kind, index in kinds if kind == "x"]
    y_avals = [cotangent_aval(x.aval) for x in body.outputs[num_carry:]]
    carry_avals = [cotangent_aval(v.aval) for v in body.inputs[num_consts:num_consts + num_carry]]
    const_wrt = [i for i in wrt if i < num_consts]
    carry_wrt = [i for i in wrt if num_consts <= i < num_consts + num_carry]
    x_wrt = [i for i in wrt if i >= num_consts + num_carry]

    def pullback(cotangents):
        carry_cotangents = [cotangents[i - num_consts] if cotangents[i - num_consts] is not None
                            else zeros(carry_avals[i - num_consts]) for i in carry_wrt]
        y_given = [i for i, g in enumerate(cotangents[num_carry:]) if g is not None]

        def backward_step(*values):
            values = list(values)
            take = lambda count: [values.pop(0) for _ in range(count)]
            const_values, accumulated = take(len(const_residuals)), take(len(const_wrt))
            carry_cotangent = dict(zip(carry_wrt, take(len(carry_wrt))))
            row_values, x_values = take(len(stacked)), take(len(x_residuals))
            y_cotangent = dict(zip(y_given, take(len(y_given))))
            sources = {"const": iter(const_values), "x": iter(x_values), "stacked": iter(row_values)}
            residual_values = [next(sources[kind]) for kind, _ in kinds]
            output_cotangents = [carry_cotangent.get(num_consts + i, None) for i in range(num_carry)]
            output_cotangents = [g if g is not None else zeros(carry_avals[i]) for i, g in enumerate(output_cotangents)]
            output_cotangents += [y_cotangent[j] if j in y_given else zeros(y_avals[j]) for j in range(len(y_avals))]
            input_cotangents = dict(zip(wrt, evaluated_outputs(backward, residual_values + output_cotangents)))
            return ([a + input_cotangents[i] for a, i in zip(accumulated, const_wrt)]
                    + [input_cotangents[i] for i in carry_wrt] + [input_cotangents[i] for i in x_wrt])

        step_avals = ([aval_of(v) for v in const_residuals]
                      + [cotangent_aval(body.inputs[i].aval) for i in const_wrt]
                      + [carry_avals[i - num_consts] for i in carry_wrt]
                      + [Aval(aval_of(v).shape[1:], aval_of(v).dtype) for v in stacked_values]
                      + [Aval(aval_of(v).shape[1:], aval_of(v).dtype) for v in x_residuals]
                      + [y_avals[j] for j in y_given])
        step, step_consts = closed_program(backward_step, step_avals)
        n_carry = len(const_wrt) + len(carry_wrt)
        outs = bind(scan_p, *step_consts, *const_residuals,
                    *[zeros(cotangent_aval(body.inputs[i].aval)) for i in const_wrt], *carry_cotangents,
                    *stacked_values, *x_residuals, *[cotangents[num_carry + j] for j in y_given],
                    body=step, num_consts=len(step_consts) + len(const_residuals), num_carry=n_carry, length=length,
                    reverse=not reverse)
        found = dict(zip(const_wrt + carry_wrt + x_wrt, outs))
        return [found.get(i) for i in range(n_in)]

    return results, pullback


def recomputing_scan_vjp(primals, wrt: list[int], body: Program, num_consts: int, num_carry: int, length: int,
                         reverse: bool):
    """Reverse mode storing only each step's incoming carries; the backward scan recomputes each step
    (for checkpoint_every, a whole segment of steps) under reverse mode from them."""
    n_in, n_out = len(body.inputs), len(body.outputs)
    carry_inputs = body.inputs[num_consts:num_consts + num_carry]
    keeping = Program((), body.inputs, body.ops, body.outputs + carry_inputs)  # the incoming carries as ys
    outs = bind(scan_p, *primals, body=keeping, num_consts=num_consts, num_carry=num_carry, length=length,
                reverse=reverse)
    results, incoming = outs[:n_out], outs[n_out:]
    consts, xs = list(primals[:num_consts]), list(primals[num_consts + num_carry:])
    out_avals = [cotangent_aval(x.aval) for x in body.outputs]
    const_wrt = [i for i in wrt if i < num_consts]
    carry_wrt = [i for i in wrt if num_consts <= i < num_consts + num_carry]
    x_wrt = [i for i in wrt if i >= num_consts + num_carry]

    def pullback(cotangents):
        y_given = [j for j, g in enumerate(cotangents[num_carry:]) if g is not None]

        def backward_step(*values):
            values = list(values)
            take = lambda count: [values.pop(0) for _ in range(count)]
            const_values, accumulated = take(num_consts), take(len(const_wrt))
            carry_cotangent = dict(zip(carry_wrt, take(len(carry_wrt))))
            carry_values, x_values = take(num_carry), take(len(xs))
            y_cotangent = dict(zip(y_given, take(len(y_given))))
            step = lambda *inputs: evaluated_outputs(ClosedProgram(body, ()), list(inputs))
            _, step_pullback = vjp(step, const_values + carry_values + x_values, wrt)
            output_cotangents = [carry_cotangent.get(num_consts + i) for i in range(num_carry)]
            output_cotangents += [y_cotangent.get(j) for j in range(n_out - num_carry)]
            input_cotangents = dict(zip(wrt, step_pullback(output_cotangents)))
            return ([a + input_cotangents[i] for a, i in zip(accumulated, const_wrt)]
                    + [input_cotangents[i] for i in carry_wrt] + [input_cotangents[i] for i in x_wrt])

        step_avals = ([v.aval for v in body.inputs[:num_consts]]
                      + [cotangent_aval(body.inputs[i].aval) for i in const_wrt + carry_wrt]
                      + [v.aval for v in carry_inputs] + [v.aval for v in body.inputs[num_consts + num_carry:]]
                      + [out_avals[num_carry + j] for j in y_given])
        step, step_consts = closed_program(backward_step, step_avals)
        carry_cotangents = [cotangents[i - num_consts] if cotangents[i - num_consts] is not None
                            else zeros(out_avals[i - num_consts]) for i in carry_wrt]
        outs = bind(scan_p, *step_consts, *consts, *[zeros(cotangent_aval(body.inputs[i].aval)) for i in const_wrt],
                    *carry_cotangents, *incoming, *xs, *[cotangents[num_carry + j] for j in y_given],
                    body=step, num_consts=len(step_consts) + num_consts, num_carry=len(const_wrt) + len(carry_wrt),
                    length=length, reverse=not reverse)
        found = dict(zip(const_wrt + carry_wrt + x_wrt, outs))
        return [found.get(i) for i in range(n_in)]

    return results, pullback


def carry_flags(body: Program, flags: list[bool], start: int, count: int) -> list[bool]:
    """`flags` with each carry (inputs start..start+count, outputs 0..count) set once a step makes it
    depend on a flagged input: iterated to a fixed point."""
    flags = list(flags)
    while True:
        reached = depends_on(body, flags)[:count]
        carries = [flag or now for flag, now in zip(flags[start:start + count], reached)]
        if carries == flags[start:start + count]:
            return flags
        flags[start:start + count] = carries


def jvp_of_program(program: Program, flags: list[bool]) -> Callable:
    """A function of (inputs, then the tangents of the flagged inputs) giving (outputs, then the tangents
    of the flagged outputs): `program` under forward mode, to be traced into a loop's body."""
    out_flags = depends_on(program, flags)
    n_in = len(program.inputs)

    def run(*values):
        tangents = iter(values[n_in:])
        given = [next(tangents) if flag else None for flag in flags]
        outs, out_tangents = jvp(lambda *ins: evaluated_outputs(ClosedProgram(program, ()), list(ins)),
                                 list(values[:n_in]), given)
        return outs + [t for t, flag in zip(out_tangents, out_flags) if flag]

    return run


def scan_jvp(primals, tangents, *, body: Program, num_consts: int, num_carry: int, length: int, reverse: bool,
             recompute: bool = False):
    """A scan of the body under forward mode: each flagged carry and x comes with its tangent."""
    flags = [t is not None and v.aval.dtype in FLOAT_DTYPES for t, v in zip(tangents, body.inputs)]
    flags = carry_flags(body, flags, num_consts, num_carry)
    out_flags = depends_on(body, flags)
    out_flags[:num_carry] = flags[num_consts:num_consts + num_carry]
    avals = [v.aval for v in body.inputs] + [cotangent_aval(v.aval) for v, f in zip(body.inputs, flags) if f]
    tangent_of = lambda i: tangents[i] if tangents[i] is not None else zeros(cotangent_aval(body.inputs[i].aval))
    group = lambda start, stop: [i for i in range(start, stop) if flags[i]]
    consts, carries, xs = group(0, num_consts), group(num_consts, num_consts + num_carry), group(
        num_consts + num_carry, len(flags))

    def step(*values):  # consts, const tangents, carries, carry tangents, xs, x tangents -> the same order out
        values = list(values)
        take = lambda count: [values.pop(0) for _ in range(count)]
        c, ct, k, kt, x, xt = (take(num_consts), take(len(consts)), take(num_carry), take(len(carries)),
                               take(len(flags) - num_consts - num_carry), take(len(xs)))
        outs = jvp_of_program(body, flags)(*(c + k + x + ct + kt + xt))
        primal_outs, out_tangents = outs[:len(body.outputs)], outs[len(body.outputs):]
        return primal_outs[:num_carry] + out_tangents[:len(carries)] + primal_outs[num_carry:] + out_tangents[len(carries):]

    order = (list(range(num_consts)) + [len(flags) + j for j, _ in enumerate(consts)]
             + list(range(num_consts, num_consts + num_carry)) + [len(flags) + len(consts) + j for j in range(len(carries))]
             + list(range(num_consts + num_carry, len(flags)))
             + [len(flags) + len(consts) + len(carries) + j for j in range(len(xs))])
    program, step_consts = closed_program(step, [avals[i] for i in order])
    outs = bind(scan_p, *step_consts, *primals[:num_consts], *[tangent_of(i) for i in consts],
                *primals[num_consts:num_consts + num_carry], *[tangent_of(i) for i in carries],
                *primals[num_consts + num_carry:], *[tangent_of(i) for i in xs],
                body=program, num_consts=len(step_consts) + num_consts + len(consts),
                num_carry=num_carry + len(carries), length=length, reverse=reverse)
    results = outs[:num_carry] + outs[num_carry + len(carries):num_carry + len(carries) + len(body.outputs) - num_carry]
    found = iter(outs[num_carry:num_carry + len(carries)] + outs[num_carry + len(carries) + len(body.outputs) - num_carry:])
    return results, [next(found) if flag else None for flag in out_flags]


def reaches(program: Program, flags) -> list[bool]:
    """For each output of `program`: whether it depends on an input flagged True (through any op)."""
    reached = {var for var, flag in zip(program.inputs, flags) if flag}
    for op in program.ops:
        if any(isinstance(x, Var) and x in reached for x in op.inputs):
            reached.update(op.outs)
    return [isinstance(x, Var) and x in reached for x in program.outputs]


def batched_carries(body: Program, flags: list[bool], start: int, count: int) -> list[bool]:
    """`flags` with each carry set once a step makes it depend on a batched input (a fixed point)."""
    flags = list(flags)
    while True:
        now = [a or b for a, b in zip(flags[start:start + count], reaches(body, flags)[:count])]
        if now == flags[start:start + count]:
            return flags
        flags[start:start + count] = now


def batched_program(program: Program, flags: list[bool], size: int, batched_outputs: list[bool]) -> Callable:
    """`program` on a batch (inputs flagged batched hold `size` examples along axis 0), as a function to
    trace into a loop's body: outputs flagged in `batched_outputs` come out batched (repeated if need be)."""
    def run(*values):
        outs, out_batched = batch(lambda *ins: evaluated_outputs(ClosedProgram(program, ()), list(ins)),
                                  list(values), flags, size)
        return [bind(broadcast_to_p, out, shape=(size,) + aval_of(out).shape) if want and not got else out
                for out, got, want in zip(outs, out_batched, batched_outputs)]
    return run


def batched_aval(aval: Aval, size: int) -> Aval:
    return Aval((size,) + aval.shape, aval.dtype)


def swap_leading_axes(value):
    rank = aval_of(value).ndim
    return bind(transpose_p, value, perm=(1, 0) + tuple(range(2, rank)))


def scan_batch(values, batched, size, *, body: Program, num_consts: int, num_carry: int, length: int,
               reverse: bool, recompute: bool = False):
    """A scan over the batch: carries that come to depend on a batched value are batched (examples on
    axis 0), batched xs are read at [:, t], batched ys stacked as (length, size, ...) then swapped."""
    flags = batched_carries(body, list(batched), num_consts, num_carry)
    out_flags = flags[num_consts:num_consts + num_carry] + reaches(body, flags)[num_carry:]
    step, step_consts = closed_program(batched_program(body, flags, size, out_flags),
                                       [batched_aval(v.aval, size) if f else v.aval for v, f in zip(body.inputs, flags)])
    inits = [bind(broadcast_to_p, x, shape=(size,) + aval_of(x).shape) if f and not b else x
             for x, f, b in zip(values[num_consts:num_consts + num_carry], flags[num_consts:num_consts + num_carry],
                                batched[num_consts:num_consts + num_carry])]
    xs = [swap_leading_axes(x) if b else x for x, b in zip(values[num_consts + num_carry:], batched[num_consts + num_carry:])]
    outs = bind(scan_p, *step_consts, *values[:num_consts], *inits, *xs, body=step,
                num_consts=len(step_consts) + num_consts, num_carry=num_carry, length=length, reverse=reverse)
    outs = outs[:num_carry] + [swap_leading_axes(y) if f else y for y, f in zip(outs[num_carry:], out_flags[num_carry:])]
    return outs, out_flags


abstract_eval_rules[scan_p] = scan_abstract_eval
impl_rules[scan_p] = scan_impl
forward_vjp_rules[scan_p] = scan_forward_vjp
jvp_rules[scan_p] = scan_jvp
batch_rules[scan_p] = scan_batch


# -- fori_loop -----------------------------------------------------------------------------


def concrete_int(value) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def fori_loop(lower, upper, body_fun: Callable, init_val):
    """`for i in range(lower, upper): val = body_fun(i, val)`, as `jax.lax.fori_loop`.

    With Python ints for `lower` and `upper` it is a `scan` (reverse mode works through it);
    with traced bounds a `while_loop` (forward only).
    """
    start, stop = concrete_int(lower), concrete_int(upper)
    if start is None or stop is None:
        def condition(state):
            return state[0] < upper

        def step(state):
            i, value = state
            return i + 1, body_fun(i, value)

        return while_loop(condition, step, (lower, init_val))[1]

    def step(state, _):
        i, value = state
        return (i + 1, body_fun(i, value)), None

    return scan(step, (start, init_val), length=max(stop - start, 0))[0][1]


# -- while_loop ----------------------------------------------------------------------------


def while_loop(cond_fun: Callable, body_fun: Callable, init_val):
    """`while cond_fun(val): val = body_fun(val)`, as `jax.lax.while_loop`. Not reverse-differentiable."""
    init_leaves, carry_tree = tree_flatten(init_val)
    init_leaves = [leaf_value(leaf) for leaf in init_leaves]
    carry_avals = [aval_of(leaf) for leaf in init_leaves]

    def condition(*values):
        result = cond_fun(tree_unflatten(carry_tree, values))
        if aval_of(result) != Aval((), "bool"):
            raise TypeError(f"while_loop's cond_fun must return a boolean scalar, not {aval_of(result)} "
                            f"(at {where_text(user_source())})")
        return [result]

    def body(*values):
        carry_leaves, out_tree = tree_flatten(body_fun(tree_unflatten(carry_tree, values)))
        if out_tree == carry_tree:
            carry_leaves = [carried(leaf, aval) for leaf, aval in zip(carry_leaves, carry_avals)]
        check_carry("while_loop's body_fun", carry_tree, carry_avals, out_tree, [aval_of(x) for x in carry_leaves])
        return carry_leaves

    cond_program, cond_consts = closed_program(condition, carry_avals)
    body_program, body_consts = closed_program(body, carry_avals)
    outs = bind(while_p, *cond_consts, *body_consts, *init_leaves, cond=cond_program, body=body_program,
                num_cond_consts=len(cond_consts))
    return tree_unflatten(carry_tree, outs)


def while_abstract_eval(*avals, cond: Program, body: Program, num_cond_consts: int):
    carry = avals[len(avals) - len(body.outputs):]
    if tuple(v.aval for v in cond.inputs) != avals[:num_cond_consts] + carry:
        raise errors.ShapeError("while's condition does not take its consts and carries")
    if tuple(v.aval for v in body.inputs) != avals[num_cond_consts:]:
        raise errors.ShapeError("while's body does not take its consts and carries")
    if tuple(x.aval for x in body.outputs) != carry:
        raise errors.ShapeError("while's body does not return its carries")
    if cond.outputs[0].aval != Aval((), "bool"):
        raise errors.ShapeError("while's condition is not a boolean scalar")
    return carry


def while_impl(*args, cond: Program, body: Program, num_cond_consts: int):
    n_carry = len(body.outputs)
    cond_consts, body_consts = list(args[:num_cond_consts]), list(args[num_cond_consts:len(args) - n_carry])
    carry = list(args[len(args) - n_carry:])
    while evaluated_outputs(ClosedProgram(cond, ()), cond_consts + carry)[0]:
        carry = evaluated_outputs(ClosedProgram(body, ()), body_consts + carry)
    return carry


def while_forward_vjp(primals, differentiated, **params):
    raise errors.NonDifferentiableLoopError(
        f"reverse-mode differentiation of tg.while_loop (at {where_text(user_source())}): its trip count is known "
        "only when it runs, so there is no fixed set of steps to store. Use tg.fori_loop with Python int bounds "
        "or tg.scan, which are reverse-differentiable, as in JAX")


def while_jvp(primals, tangents, *, cond: Program, body: Program, num_cond_consts: int):
    """A while loop carrying the flagged carries' tangents; the condition reads the primal carries only."""
    n_carry = len(body.outputs)
    n_body_consts = len(body.inputs) - n_carry
    body_tangents = tangents[num_cond_consts:]
    flags = [t is not None and v.aval.dtype in FLOAT_DTYPES for t, v in zip(body_tangents, body.inputs)]
    flags = carry_flags(body, flags, n_body_consts, n_carry)
    consts, carries = ([i for i in range(n_body_consts) if flags[i]],
                       [i for i in range(n_body_consts, len(flags)) if flags[i]])
    tangent_avals = [cotangent_aval(body.inputs[i].aval) for i in carries]
    carry_avals = [v.aval for v in body.inputs[n_body_consts:]]

    def condition(*values):  # cond consts, carries, carry tangents
        return evaluated_outputs(ClosedProgram(cond, ()), list(values[:num_cond_consts + n_carry]))

    def step(*values):  # body consts, const tangents, carries, carry tangents
        c, ct = values[:n_body_consts], values[n_body_consts:n_body_consts + len(consts)]
        k, kt = values[n_body_consts + len(consts):n_body_consts + len(consts) + n_carry], values[
            n_body_consts + len(consts) + n_carry:]
        outs = jvp_of_program(body, flags)(*c, *k, *ct, *kt)
        return outs[:n_carry] + outs[n_carry:n_carry + len(carries)]

    cond_program, cond_consts = closed_program(condition, [v.aval for v in cond.inputs] + tangent_avals)
    step_avals = ([v.aval for v in body.inputs[:n_body_consts]]
                  + [cotangent_aval(body.inputs[i].aval) for i in consts]
                  + carry_avals + tangent_avals)
    body_program, body_consts = closed_program(step, step_avals)
    tangent_of = lambda i: body_tangents[i] if body_tangents[i] is not None else zeros(
        cotangent_aval(body.inputs[i].aval))
    outs = bind(while_p, *cond_consts, *primals[:num_cond_consts], *body_consts,
                *primals[num_cond_consts:num_cond_consts + n_body_consts], *[tangent_of(i) for i in consts],
                *primals[num_cond_consts + n_body_consts:], *[tangent_of(i) for i in carries],
                cond=cond_program, body=body_program, num_cond_consts=len(cond_consts) + num_cond_consts)
    found = iter(outs[n_carry:])
    return outs[:n_carry], [next(found) if flags[n_body_consts + j] else None for j in range(n_carry)]


def while_batch(values, batched, size, *, cond: Program, body: Program, num_cond_consts: int):
    """A while loop over the batch. With a condition the same for every example, the body runs
    batched; with one that differs, the loop runs while any example's holds, and an example whose
    condition fails keeps its carries (as JAX does)."""
    n_carry = len(body.outputs)
    cond_flags, body_flags = list(batched[:num_cond_consts]), list(batched[num_cond_consts:])
    n_body_consts = len(body.inputs) - n_carry
    while True:  # carries batched by the body; the condition batched if it reads a batched value
        body_flags = batched_carries(body, body_flags, n_body_consts, n_carry)
        carry_flags = body_flags[n_body_consts:]
        predicate_batched = reaches(cond, cond_flags + carry_flags)[0]
        if not predicate_batched or all(carry_flags):
            break
        body_flags[n_body_consts:] = [True] * n_carry  # each example stops on its own: every carry is per example
    carry_values = [bind(broadcast_to_p, x, shape=(size,) + aval_of(x).shape) if f and not b else x
                    for x, f, b in zip(values[len(values) - n_carry:], carry_flags, batched[len(batched) - n_carry:])]
    carry_avals = [batched_aval(v.aval, size) if f else v.aval for v, f in zip(body.inputs[n_body_consts:], carry_flags)]
    const_avals = [aval_of(v) for v in values[:len(values) - n_carry]]
    test = batched_program(cond, cond_flags + carry_flags, size, [predicate_batched])
    step = batched_program(body, body_flags, size, carry_flags)
    if predicate_batched:
        def any_holds(*values):
            holds = test(*values)[0]
            return [bind(gt_p, bind(reduce_sum_p, holds, axes=(0,)), 0)]

        def guarded_step(*values):  # the body's carries where the condition holds, the old ones elsewhere
            cond_consts, body_consts = values[:num_cond_consts], values[num_cond_consts:len(values) - n_carry]
            carries = values[len(values) - n_carry:]
            holds = test(*cond_consts, *carries)[0]
            new = step(*body_consts, *carries)
            return [bind(where_p, bind(reshape_p, holds, shape=(size,) + (1,) * (aval_of(c).ndim - 1)), n, c)
                    for n, c in zip(new, carries)]

        cond_program, cond_consts = closed_program(any_holds, const_avals[:num_cond_consts] + carry_avals)
        body_program, body_consts = closed_program(guarded_step, const_avals + carry_avals)
        outs = bind(while_p, *cond_consts, *values[:num_cond_consts], *body_consts, *values[:len(values) - n_carry],
                    *carry_values, cond=cond_program, body=body_program,
                    num_cond_consts=len(cond_consts) + num_cond_consts)
        return outs, carry_flags
    cond_program, cond_consts = closed_program(test, const_avals[:num_cond_consts] + carry_avals)
    body_program, body_consts = closed_program(step, const_avals[num_cond_consts:] + carry_avals)
    outs = bind(while_p, *cond_consts, *values[:num_cond_consts], *body_consts, *values[num_cond_consts:len(values) - n_carry],
                *carry_values, cond=cond_program, body=body_program, num_cond_consts=len(cond_consts) + num_cond_consts)
    return outs, carry_flags


abstract_eval_rules[while_p] = while_abstract_eval
impl_rules[while_p] = while_impl
forward_vjp_rules[while_p] = while_forward_vjp
jvp_rules[while_p] = while_jvp
batch_rules[while_p] = while_batch


# -- cond ----------------------------------------------------------------------------------


def cond(pred, true_fun: Callable, false_fun: Callable, *operands):
    """`true_fun(*operands)` if `pred` else `false_fun(*operands)`, as `jax.lax.cond`.

    Both branches are traced; the compiled code runs the one `pred` chooses, and reverse mode
    differentiates the branch taken. The branches must return values of one structure, shapes
    and dtypes.
    """
    pred_aval = aval_of(pred)
    if pred_aval.shape != ():
        raise errors.ShapeError(f"cond's predicate must be a scalar, not {pred_aval} (at {where_text(user_source())})")
    index = pred if pred_aval.dtype == "bool" else bind(ne_p, pred, 0)
    return switch_on(index, (false_fun, true_fun), operands)


def switch(index, branches, *operands):
    """`branches[index](*operands)`, with `index` clamped to the branches, as `jax.lax.switch`."""
    if aval_of(index) != Aval((), "i64"):
        raise TypeError(f"switch's index must be an integer scalar, not {aval_of(index)} "
                        f"(at {where_text(user_source())}); a Python int passed to a transformed function is "
                        "traced as a float: pass np.array(i) for an int64 index, or make it a static argument")
    return switch_on(index, tuple(branches), operands)


def switch_on(index, branches: tuple, operands: tuple):
    leaves, operand_tree = tree_flatten(operands)
    leaves = [leaf_value(leaf) for leaf in leaves]
    avals = [aval_of(leaf) for leaf in leaves]
    programs, consts, trees = [], [], []
    for branch in branches:
        found = {}

        def flat_branch(*values, branch=branch, found=found):
            out_leaves, found["tree"] = tree_flatten(branch(*tree_unflatten(operand_tree, values)))
            return out_leaves

        program, branch_consts = closed_program(flat_branch, avals)
        programs.append(program)
        consts.append(branch_consts)
        trees.append(found["tree"])
    out_avals = [[x.aval for x in program.outputs] for program in programs]
    if any(tree != trees[0] for tree in trees) or any(each != out_avals[0] for each in out_avals):
        described = "; ".join(f"{tree}: {[str(a) for a in each]}" for tree, each in zip(trees, out_avals))
        raise errors.ShapeError(f"cond's branches must return values of one structure, shapes and dtypes: "
                                f"{described} (at {where_text(user_source())})")
    outs = bind(cond_p, index, *[c for each in consts for c in each], *leaves, branches=tuple(programs),
                branch_consts=tuple(len(each) for each in consts))
    return tree_unflatten(trees[0], outs)


def cond_abstract_eval(index, *avals, branches: tuple, branch_consts: tuple):
    if index.shape != () or index.dtype not in ("bool", "i64"):
        raise errors.ShapeError(f"cond's index is {index}")
    operands = avals[sum(branch_consts):]
    start = 0
    for program, count in zip(branches, branch_consts):
        if tuple(v.aval for v in program.inputs) != avals[start:start + count] + operands:
            raise errors.ShapeError("a branch of cond does not take its operands")
        start += count
    return tuple(x.aval for x in branches[0].outputs)


def branch_arguments(args, branch_consts: tuple, chosen: int) -> list:
    start = sum(branch_consts[:chosen])
    return list(args[start:start + branch_consts[chosen]]) + list(args[sum(branch_consts):])


def chosen_branch(index, count: int) -> int:
    return min(max(int(index), 0), count - 1)


def cond_impl(index, *args, branches: tuple, branch_consts: tuple):
    chosen = chosen_branch(index, len(branches))
    return evaluated_outputs(ClosedProgram(branches[chosen], ()), branch_arguments(args, branch_consts, chosen))


def cond_forward_vjp(primals, differentiated, *, branches: tuple, branch_consts: tuple):
    """Each branch's forward part gives its results and every branch's residuals (zeros for the
    others'), so the backward cond reads the residuals of the branch the forward one took."""
    index, args = primals[0], primals[1:]
    flags = differentiated[1:]
    n_out = len(branches[0].outputs)
    splits, wrts = [], []
    start = 0
    for program, count in zip(branches, branch_consts):
        own = list(flags[start:start + count]) + list(flags[sum(branch_consts):])
        wrt = [i for i, (flag, v) in enumerate(zip(own, program.inputs)) if flag and v.aval.dtype in FLOAT_DTYPES]
        splits.append(split_forward_backward(vjp_program(ClosedProgram(program, ()), wrt), len(program.inputs), n_out))
        wrts.append(wrt)
        start += count
    residual_avals = [[Aval(x.aval.shape, x.aval.dtype) for x in forward.program.outputs[n_out:]]
                      for forward, _ in splits]

    def forward_branch(k):
        forward = splits[k][0]

        def run(*values):
            outs = evaluated_outputs(forward, list(values))
            residuals = []
            for j, avals in enumerate(residual_avals):
                residuals += outs[n_out:] if j == k else [zero_of(aval) for aval in avals]
            return outs[:n_out] + residuals
        return run

    forward_programs, forward_consts = [], []
    for k, program in enumerate(branches):
        traced, traced_consts = closed_program(forward_branch(k), [v.aval for v in program.inputs])
        forward_programs.append(traced)
        forward_consts.append(traced_consts)
    all_args = [args[sum(branch_consts[:k]):sum(branch_consts[:k + 1])] for k in range(len(branches))]
    operands = list(args[sum(branch_consts):])
    outs = bind(cond_p, index, *[c for k in range(len(branches)) for c in list(forward_consts[k]) + list(all_args[k])],
                *operands, branches=tuple(forward_programs),
                branch_consts=tuple(len(forward_consts[k]) + branch_consts[k] for k in range(len(branches))))
    results, residuals = outs[:n_out], outs[n_out:]
    n_args = len(args)

    def pullback(cotangents):
        out_avals = [cotangent_aval(x.aval) for x in branches[0].outputs]
        given = [g if g is not None else zeros(aval) for g, aval in zip(cotangents, out_avals)]
        wanted = [i for i, flag in enumerate(flags) if flag and aval_of(args[i]).dtype in FLOAT_DTYPES]

        def backward_branch(k):
            _, backward = splits[k]
            offset = sum(len(avals) for avals in residual_avals[:k])

            def run(*values):
                own_residuals = list(values[offset:offset + len(residual_avals[k])])
                cotangent_values = list(values[sum(len(a) for a in residual_avals):])
                found = dict(zip(wrts[k], evaluated_outputs(backward, own_residuals + cotangent_values)))
                own_start = sum(branch_consts[:k])
                result = []
                for i in wanted:  # args index -> this branch's input index
                    if own_start <= i < own_start + branch_consts[k]:
                        local = i - own_start
                    elif i >= sum(branch_consts):
                        local = branch_consts[k] + i - sum(branch_consts)
                    else:
                        local = None
                    value = found.get(local) if local is not None else None
                    result.append(value if value is not None else zero_of(cotangent_aval(aval_of(args[i]))))
                return result
            return run

        in_avals = [aval_of(r) for r in residuals] + out_avals
        backward_programs, backward_consts = [], []
        for k in range(len(branches)):
            traced, traced_consts = closed_program(backward_branch(k), in_avals)
            backward_programs.append(traced)
            backward_consts.append(traced_consts)
        outs = bind(cond_p, index, *[c for each in backward_consts for c in each], *residuals, *given,
                    branches=tuple(backward_programs), branch_consts=tuple(len(each) for each in backward_consts))
        found = dict(zip(wanted, outs))
        return [None] + [found.get(i) for i in range(n_args)]

    return results, pullback


def zero_of(aval: Aval):
    """A zero of `aval`'s shape and dtype, as a literal or a staged broadcast of one."""
    value = {"f64": 0.0, "f32": np.float32(0.0), "i64": 0, "bool": False}[aval.dtype]
    return value if aval.shape == () else bind(broadcast_to_p, value, shape=aval.shape)


def cond_jvp(primals, tangents, *, branches: tuple, branch_consts: tuple):
    """Each branch under forward mode, with the tangents of the flagged consts and operands; every
    float result gets a tangent (a branch whose result does not depend on them gives zeros)."""
    index, args, arg_tangents = primals[0], primals[1:], tangents[1:]
    flags = [t is not None and aval_of(a).dtype in FLOAT_DTYPES for t, a in zip(arg_tangents, args)]
    wanted = [i for i, flag in enumerate(flags) if flag]
    n_operands = len(args) - sum(branch_consts)
    out_avals = [x.aval for x in branches[0].outputs]
    tangent_outs = [i for i, aval in enumerate(out_avals) if aval.dtype in FLOAT_DTYPES]

    def branch_jvp(k):
        start = sum(branch_consts[:k])
        own = list(range(start, start + branch_consts[k])) + list(range(len(args) - n_operands, len(args)))
        own_flags = [flags[i] for i in own]
        run = jvp_of_program(branches[k], own_flags)
        out_flags = depends_on(branches[k], own_flags)

        def branch(*values):  # all args, then the tangents of the flagged ones
            given = dict(zip(wanted, values[len(args):]))
            outs = run(*[values[i] for i in own], *[given[i] for i, flag in zip(own, own_flags) if flag])
            primal_outs, found = outs[:len(out_avals)], iter(outs[len(out_avals):])
            out_tangents = [next(found) if flag else None for flag in out_flags]
            return primal_outs + [t if t is not None else zeros(cotangent_aval(out_avals[i]))
                                  for i, t in enumerate(out_tangents) if i in tangent_outs]
        return branch

    in_avals = [aval_of(a) for a in args] + [cotangent_aval(aval_of(args[i])) for i in wanted]
    programs, consts = zip(*(closed_program(branch_jvp(k), in_avals) for k in range(len(branches))))
    operands = list(args) + [arg_tangents[i] for i in wanted]
    outs = bind(cond_p, index, *[c for each in consts for c in each], *operands, branches=tuple(programs),
                branch_consts=tuple(len(each) for each in consts))
    found = iter(outs[len(out_avals):])
    return outs[:len(out_avals)], [next(found) if i in tangent_outs else None for i in range(len(out_avals))]


def cond_batch(values, batched, size, *, branches: tuple, branch_consts: tuple):
    """A cond over the batch: with one index for every example, each branch runs batched; with an
    index per example, every branch runs on the whole batch and each example's result is selected."""
    index, args, flags = values[0], values[1:], list(batched[1:])
    n_operands = len(args) - sum(branch_consts)
    own = lambda k: list(range(sum(branch_consts[:k]), sum(branch_consts[:k + 1]))) + list(
        range(len(args) - n_operands, len(args)))
    out_flags = [batched[0]] * len(branches[0].outputs)
    for k, program in enumerate(branches):
        out_flags = [a or b for a, b in zip(out_flags, reaches(program, [flags[i] for i in own(k)]))]
    runs = [batched_program(program, [flags[i] for i in own(k)], size, out_flags) for k, program in enumerate(branches)]
    if batched[0]:  # every branch, then a select per example: index <= 0 is branch 0, >= k chooses k
        results = runs[0](*[args[i] for i in own(0)])
        for k in range(1, len(branches)):
            chosen = index if aval_of(index).dtype == "bool" else bind(ge_p, index, k)
            new = runs[k](*[args[i] for i in own(k)])
            results = [bind(where_p, bind(reshape_p, chosen, shape=(size,) + (1,) * (aval_of(r).ndim - 1)), n, r)
                       for n, r in zip(new, results)]
        return results, out_flags
    in_avals = [aval_of(a) for a in args]  # batched ones with their batch axis
    traced = [closed_program(lambda *all_args, k=k: runs[k](*[all_args[i] for i in own(k)]), in_avals)
              for k in range(len(branches))]
    outs = bind(cond_p, index, *[c for _, consts in traced for c in consts], *args,
                branches=tuple(program for program, _ in traced), branch_consts=tuple(len(c) for _, c in traced))
    return outs, out_flags


abstract_eval_rules[cond_p] = cond_abstract_eval
impl_rules[cond_p] = cond_impl
forward_vjp_rules[cond_p] = cond_forward_vjp
jvp_rules[cond_p] = cond_jvp
batch_rules[cond_p] = cond_batch

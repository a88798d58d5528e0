"""Unrolled Python loops rolled back into scans.

A Python `for` loop in a traced function is unrolled: its program holds one copy of the body
per step, and numba compiles about one statement per millisecond, so a 1,000-step simulation
took minutes. `reroll_loops` finds a long run of ops that repeats with a period (the same
primitives, params, types and source lines, block after block) and whose blocks are wired as a
loop's steps are: each reads its own values, the previous block's values (the carries), the
same values from before the run (the consts), the same literals, and rows of one array at a
fixed stride (`target[t]`: the xs). Such a run is one `scan` whose body is one block. Every
condition is checked op by op, so a run that is not a loop stays as it is: the pass never
changes what a program computes.
"""
from __future__ import annotations

import collections

import attrs
import numpy as np

from .ir import Aval, ClosedProgram, Literal, Op, Program, Var
from .control_flow import scan_p
from .passes import atom_key
from .primitives import broadcast_to_p, reshape_p, slice_p

REROLL_MIN_OPS = 2000  # a shorter program compiles in a second or two as it is
MIN_STEPS = 8  # fewer repeats are left unrolled
WINDOW = 24  # ops compared at once when looking for the period
PYTHON_DTYPES = {float: "f64", np.float32: "f32", int: "i64", bool: "bool"}


def reroll_loops(closed: ClosedProgram) -> ClosedProgram:
    """`closed` with each long periodic run of ops (an unrolled loop) made a `scan`."""
    program = closed.program
    if len(program.ops) < REROLL_MIN_OPS:
        return closed
    ops, outputs = list(program.ops), list(program.outputs)
    constvars, consts = list(program.constvars), list(closed.consts)
    tried: set[tuple[int, int]] = set()
    while True:
        for start, period, steps in candidate_runs(ops):
            if (start, period) in tried:
                continue
            tried.add((start, period))
            # a loop's first step often differs (it reads Python numbers where the others read carries,
            # and `0.0 + x` is x): then the loop is the run after it
            rolled = roll(ops, outputs, start, period, steps) or (
                roll(ops, outputs, start + period, period, steps - 1) if steps > MIN_STEPS else None)
            if rolled is not None:
                ops, outputs, new_consts = rolled
                constvars += [var for var, _ in new_consts]
                consts += [value for _, value in new_consts]
                tried = set()
                break
        else:
            break
    if len(ops) == len(program.ops):
        return closed
    program = attrs.evolve(program, constvars=tuple(constvars), ops=tuple(ops), outputs=tuple(outputs))
    return ClosedProgram(program, tuple(consts))


def signature(op: Op):
    """What must repeat from block to block: a slice's index may move (`target[t]`), nothing else."""
    params = tuple(p for p in op.params if not (op.primitive is slice_p and p[0] == "index"))
    return (op.primitive, params, tuple(out.aval for out in op.outs), tuple(x.aval for x in op.inputs),
            op.source and (op.source.file, op.source.line, op.source.expression))


def candidate_runs(ops: list[Op]) -> list[tuple[int, int, int]]:
    """(start, period, steps) of the periodic runs of `ops`, the longest first.

    The period is the distance at which windows of WINDOW op signatures most often recur; a
    run is a stretch where each op's signature equals the one a period later.
    """
    if len(ops) < REROLL_MIN_OPS:
        return []
    ids: dict = {}
    codes = [ids.setdefault(signature(op), len(ids)) for op in ops]
    seen: dict[tuple, int] = {}
    distances: collections.Counter = collections.Counter()
    for i in range(len(codes) - WINDOW + 1):
        window = tuple(codes[i:i + WINDOW])
        if window in seen:
            distances[i - seen[window]] += 1
        seen[window] = i
    runs = []
    for period, _ in distances.most_common(3):
        i = 0
        while i + period < len(codes):
            if codes[i] != codes[i + period]:
                i += 1
                continue
            start = i
            while i + period < len(codes) and codes[i] == codes[i + period]:
                i += 1
            steps = (i - start + period) // period
            if steps >= MIN_STEPS:
                runs.append((start, period, steps))
    return sorted(runs, key=lambda run: -run[1] * run[2])


@attrs.define
class Wiring:
    """How each input of a block's op is wired, the same in every block after the first."""

    kind: str  # "literal", "local", "carry", "const"
    detail: object  # the literal's key; the position of the local or carried op; the const Var


def roll(ops: list[Op], outputs: list, start: int, period: int, steps: int):
    """`ops` with ops[start : start + period * steps] as one scan, or None if those blocks are not a loop's steps."""
    end = start + period * steps
    if any(op.sub_programs() or len(op.outs) != 1 for op in ops[start:end]):
        return None
    position: dict[Var, tuple[int, int]] = {}  # a Var the run defines -> (block, position in the block)
    for index in range(start, end):
        position[ops[index].out] = divmod(index - start, period)
    block = lambda k: ops[start + k * period:start + (k + 1) * period]
    template = block(1)

    wiring: dict[tuple[int, int], Wiring] = {}
    rows: dict[int, tuple[int, int]] = {}  # position of a `target[t]` slice -> (its axis-0 start, stride)
    for k in range(1, steps):
        for r, op in enumerate(block(k)):
            if op.params != template[r].params and not moving_row(op, template[r], k, rows, r):
                return None
            for j, atom in enumerate(op.inputs):
                found = wired(atom, k, position)
                if found is None:
                    return None
                known = wiring.setdefault((r, j), found)
                if known != found:
                    if not (known.kind in ("literal", "literals") and found.kind == "literal"
                            and known.detail[0] == found.detail[0]):
                        return None
                    wiring[(r, j)] = Wiring("literals", found.detail[:1])  # a number that changes: `target[t]` of NumPy
    initial: dict[int, object] = {}  # carried position -> what the first block reads instead
    for r, op in enumerate(block(0)):
        if r in rows and not starts_rows(op, rows[r]):
            return None
        if r not in rows and op.params != template[r].params:
            return None
        for j, atom in enumerate(op.inputs):
            wire = wiring[(r, j)]
            if wire.kind == "carry":
                if isinstance(atom, Var) and atom in position:
                    return None
                if initial.setdefault(wire.detail, atom) is not atom and not same_literal(initial[wire.detail], atom):
                    return None
            elif wire.kind == "literals":
                if not isinstance(atom, Literal) or type(atom.value) is not wire.detail[0]:
                    return None
            elif wired(atom, 0, position) != wire:
                return None
    carried = sorted({wire.detail for wire in wiring.values() if wire.kind == "carry"})
    later = [x for op in ops[end:] for x in op.inputs] + list(outputs)
    for atom in later:
        if isinstance(atom, Var) and atom in position:
            k, r = position[atom]
            if k != steps - 1:
                return None
            if r not in carried:
                carried.append(r)  # read after the loop only: carried from step to step all the same
    prelude: list[Op] = []
    inits = []
    for r in carried:
        aval = template[r].out.aval
        atom = initial.get(r)
        if atom is None:  # first read after the loop: any value of its type starts it
            atom = zero_of(aval, prelude, template[r])
        if atom.aval != aval:
            return None
        inits.append(atom)
    consts = list(dict.fromkeys(w.detail for w in wiring.values() if w.kind == "const"))

    const_vars = {var: Var(var.aval) for var in consts}
    carry_vars = {r: Var(template[r].out.aval) for r in carried}
    local_vars = {r: Var(op.out.aval) for r, op in enumerate(template)}
    xs, row_vars, body_ops = [], {}, []
    hoisted: dict[int, Var] = {}  # position of a loop-invariant op -> its value, computed before the loop
    hoisted_ops: dict[tuple, Var] = {}  # (primitive, inputs, params) of a hoisted op -> its value
    for r, (first, stride) in sorted(rows.items()):
        op = block(0)[r]
        if wiring[(r, 0)].kind != "const":  # rows of an array made inside the loop: not a loop's xs
            return None
        (lo, hi, step), *rest = op.param["index"]
        source = op.inputs[0]
        stacked = Var(Aval((steps,) + op.out.aval.shape[1:], op.out.aval.dtype))
        prelude.append(Op(slice_p, (source,), stacked, (("index", ((lo, lo + steps * stride, stride), *rest)),),
                          op.source, op.adjoint_of))
        xs.append(stacked)
        row_vars[r] = Var(Aval(op.out.aval.shape[1:], op.out.aval.dtype))
    numbers = sorted(key for key, wire in wiring.items() if wire.kind == "literals")
    number_rows = {key: Var(Aval((), PYTHON_DTYPES[wiring[key].detail[0]])) for key in numbers}
    new_consts = []
    for r, j in numbers:  # the numbers, one per step, as an array the loop reads row by row
        values = np.array([block(k)[r].inputs[j].value for k in range(steps)])
        stacked = Var(Aval((steps,), number_rows[(r, j)].aval.dtype))
        new_consts.append((stacked, values))
        xs.append(stacked)
    for r, op in enumerate(template):
        if r in rows:
            body_ops.append(Op(reshape_p, (row_vars[r],), local_vars[r], (("shape", op.out.aval.shape),),
                               op.source, op.adjoint_of))
            continue
        wires = [wiring[(r, j)] for j in range(len(op.inputs))]
        if r not in carried and all(w.kind in ("literal", "const") or (w.kind == "local" and w.detail in hoisted)
                                    for w in wires):  # the same value every step: computed once, before the loop
            outer_inputs = tuple(atom if w.kind == "literal" else w.detail if w.kind == "const" else hoisted[w.detail]
                                 for atom, w in zip(op.inputs, wires))
            key = (op.primitive, tuple(atom_key(x) for x in outer_inputs), op.params)
            if key in hoisted_ops:  # `p[0]` read again: one value, so one const and one cotangent to sum
                hoisted[r] = hoisted_ops[key]
                local_vars[r] = const_vars[hoisted[r]]
                continue
            outer = hoisted_ops[key] = hoisted[r] = Var(op.out.aval)
            prelude.append(Op(op.primitive, outer_inputs, outer, op.params, op.source, op.adjoint_of))
            const_vars[outer] = local_vars[r]
            continue
        inputs = []
        for j, (atom, wire) in enumerate(zip(op.inputs, wires)):
            inputs.append(atom if wire.kind == "literal" else number_rows[(r, j)] if wire.kind == "literals"
                          else local_vars[wire.detail] if wire.kind == "local"
                          else carry_vars[wire.detail] if wire.kind == "carry" else const_vars[wire.detail])
        body_ops.append(Op(op.primitive, tuple(inputs), local_vars[r], op.params, op.source, op.adjoint_of))
    read = {x for op in body_ops for x in op.inputs} | {local_vars[r] for r in carried}
    const_vars = {outer: inner for outer, inner in const_vars.items() if inner in read}
    consts = list(const_vars)
    body = Program((), tuple(const_vars.values()) + tuple(carry_vars.values()) + tuple(row_vars[r] for r in sorted(rows))
                   + tuple(number_rows[key] for key in numbers), tuple(body_ops), tuple(local_vars[r] for r in carried))
    finals = [Var(carry_vars[r].aval) for r in carried]
    loop = Op(scan_p, tuple(consts) + tuple(inits) + tuple(xs), tuple(finals),
              (("body", body), ("num_consts", len(consts)), ("num_carry", len(carried)), ("length", steps),
               ("reverse", False)), template[0].source)
    last = {block(steps - 1)[r].out: final for r, final in zip(carried, finals)}
    replace = lambda atom: last.get(atom, atom) if isinstance(atom, Var) else atom
    after = [attrs.evolve(op, inputs=tuple(map(replace, op.inputs))) for op in ops[end:]]
    return ops[:start] + prelude + [loop] + after, [replace(x) for x in outputs], new_consts


def wired(atom, k: int, position: dict) -> Wiring | None:
    """How an input of block k's op is wired, or None if it reads a block other than k or k - 1."""
    if isinstance(atom, Literal):
        return Wiring("literal", (type(atom.value), repr(atom.value)))
    if atom in position:
        block, r = position[atom]
        if block == k:
            return Wiring("local", r)
        if block == k - 1:
            return Wiring("carry", r)
        return None
    return Wiring("const", atom)


def same_literal(a, b) -> bool:
    return isinstance(a, Literal) and isinstance(b, Literal) and (type(a.value), repr(a.value)) == (
        type(b.value), repr(b.value))


def moving_row(op: Op, template: Op, k: int, rows: dict, r: int) -> bool:
    """Whether `op` is the template's slice moved k - 1 strides along axis 0 (`target[t]`): a row of xs."""
    if op.primitive is not slice_p or not isinstance(op.inputs[0], Var):
        return False
    (lo, hi, step), *rest = op.param["index"]
    (lo1, hi1, step1), *rest1 = template.param["index"]
    if rest != rest1 or step != step1 or hi - lo != hi1 - lo1 or len(range(lo, hi, step)) != 1:
        return False
    stride = (lo - lo1) // (k - 1) if k > 1 else None
    if k == 1:
        return True
    if stride is None or stride <= 0 or lo1 + (k - 1) * stride != lo:
        return False
    first = lo1 - stride
    return rows.setdefault(r, (first, stride)) == (first, stride)


def starts_rows(op: Op, row: tuple[int, int]) -> bool:
    """Whether the first block's slice reads the row the others' stride starts from."""
    (lo, hi, step), *_ = op.param["index"]
    first, stride = row
    return op.primitive is slice_p and lo == first and first >= 0


def zero_of(aval: Aval, prelude: list[Op], like: Op):
    value = {"f64": 0.0, "f32": np.float32(0.0), "i64": 0, "bool": False}[aval.dtype]
    if aval.shape == ():
        return Literal(value)
    out = Var(aval)
    prelude.append(Op(broadcast_to_p, (Literal(value),), out, (("shape", aval.shape),), like.source))
    return out

"""Long scalar programs on a tape: one small interpreter instead of one statement per op.

numba compiles straight-line code at about 1 ms per statement: a 100,000-op scalar program
(micrograd-style code, unrolled) took 390 s, split into 100 functions. A long program of
scalar ops is instead written as a table with one row per op (opcode, output slot, input
slots) that an interpreter loop runs over an array of values. The opcodes are the program's
own primitives, each written from its element template in tracegrad.lowering, so a primitive
added at run time runs on the tape too. numba compiles the interpreter in well under a second
(a first call, tape included, took 0.2-0.6 s); a call then costs about 4 ns per op (measured:
3.8 ns over 100,000 ops of two primitives, 4.2 ns over 9,600 of nineteen) instead of about
0.3 ns.
"""
from __future__ import annotations

import base64
import zlib

import numpy as np

from .ir import Literal, Primitive, Program
from .lowering import rule_for

TAPE_MIN_OPS = 5000  # below this, compiling the statements (~1 ms each) pays for itself soon
# stored as float64: exact for bools and for integers up to 2**53. A float32 program is not taped: its
# values would be rounded to float32 after every op, which a float64 slot does not do
SLOT_DTYPES = {"f64", "i64", "bool"}


def fits_tape(program: Program) -> bool:
    """Whether `program` is long and made only of elementwise ops on float, int and bool scalars."""
    if len(program.ops) < TAPE_MIN_OPS or program.constvars:
        return False

    def scalar(atom) -> bool:
        if isinstance(atom, Literal):
            return type(atom.value) in (float, int, bool)
        return atom.aval.shape == () and atom.aval.dtype in SLOT_DTYPES

    return (all(scalar(v) for v in program.inputs + program.outputs)
            and all(op.primitive.elementwise and isinstance(rule_for(op.primitive).element, str)  # not convert's
                    and scalar(op.out) and all(map(scalar, op.inputs)) for op in program.ops))


def packed(array: np.ndarray) -> str:
    """An array's bytes as a compressed literal that generated source can unpack."""
    return base64.b64encode(zlib.compress(array.tobytes(), 6)).decode()


def opcodes(program: Program) -> list[Primitive]:
    """The primitives of `program`, each an opcode of its tape (its index in this list)."""
    return sorted(set(op.primitive for op in program.ops), key=lambda primitive: primitive.name)


def interpreter_lines(name: str, primitives: list[Primitive]) -> list[str]:
    """The interpreter: for each row, values[out] = op(values[x], values[y], values[z]), each op
    written from its element template in tracegrad.lowering."""
    lines = [f"def {name}(tape, values):",
             "    for k in range(tape.shape[0]):",
             "        code, out = tape[k, 0], tape[k, 1]",
             "        x, y, z = values[tape[k, 2]], values[tape[k, 3]], values[tape[k, 4]]"]
    for code, primitive in enumerate(primitives):
        keyword = "if" if code == 0 else "elif"
        lines += [f"        {keyword} code == {code}:  # {primitive.name}",
                  f"            values[out] = {rule_for(primitive).element.format('x', 'y', 'z')}"]
    return lines


def tape_source(program: Program, name: str, statement, atom_text) -> str:
    """`program` as a function `name(*inputs)` that runs its ops from a tape.

    `statement(op)` and `atom_text(atom)` are the source writer's, so the comment listing the
    tape reads like the straight-line code it replaces.
    """
    slots: dict = {}
    start: list[float] = []

    def slot(atom) -> int:
        key = ("literal", type(atom.value), repr(atom.value)) if isinstance(atom, Literal) else atom
        if key not in slots:
            slots[key] = len(slots)
            start.append(float(atom.value) if isinstance(atom, Literal) else 0.0)
        return slots[key]

    input_slots = [slot(v) for v in program.inputs]
    primitives = opcodes(program)
    code_of = {primitive: code for code, primitive in enumerate(primitives)}
    rows = [(code_of[op.primitive], slot(op.out), *[slot(x) for x in op.inputs], 0, 0, 0)[:5]
            for op in program.ops]
    tape, values = np.array(rows, np.int64), np.array(start, np.float64)
    run = f"{name}_run_tape"
    lines = ["import base64", "import zlib", "",
             f"RUN_IN_PYTHON = ({name!r},)  # it only hands the tape to {run}; numba cannot cache large globals",
             f'{name}_TAPE = np.frombuffer(zlib.decompress(base64.b64decode("{packed(tape)}")), '
             f"np.int64).reshape({tape.shape})",
             f'{name}_START = np.frombuffer(zlib.decompress(base64.b64decode("{packed(values)}")), np.float64)',
             "", ""] + interpreter_lines(run, primitives) + ["", ""]
    lines += [f"def {name}({', '.join(atom_text(v) for v in program.inputs)}):",
              f"    # {len(program.ops):,} scalar ops, run from a tape by {run}: compiled one statement",
              "    # each, they would take numba minutes. The tape, row by row:"]
    lines += [f"    #   {statement(op)}" for op in program.ops]
    lines.append(f"    values = {name}_START.copy()")
    lines += [f"    values[{s}] = {atom_text(v)}" for s, v in zip(input_slots, program.inputs)]
    lines.append(f"    {run}({name}_TAPE, values)")
    as_python = {"f64": "float({})", "i64": "int({})", "bool": "bool({} != 0.0)"}
    results = [atom_text(x) if isinstance(x, Literal) else as_python[x.aval.dtype].format(f"values[{slots[x]}]")
               for x in program.outputs]
    lines.append(f"    return ({''.join(r + ', ' for r in results)})")
    return "\n".join(lines) + "\n"

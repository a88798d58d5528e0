"""The IR: a Program is an immutable list of ops over typed variables.

Every pass (tracing, AD, dead-code elimination) builds a new Program; nothing mutates one.
`str(program)` prints it like a jaxpr, one op per line; docs/ir.md holds the grammar. An op
applies a Primitive, whose rules are entries of tables keyed by it (tracegrad.core).
"""
from __future__ import annotations

import keyword
import math

import attrs
import numpy as np

DTYPES = ("bool", "i64", "f32", "f64")  # in promotion order (but i64 with f32 is f64, as in NumPy)
FLOAT_DTYPES = frozenset({"f32", "f64"})


@attrs.frozen
class Aval:
    """What tracing knows about a value: its shape and its dtype."""

    shape: tuple[int, ...]
    dtype: str = "f64"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


SCALAR = Aval(())
# a Python float or int literal is "weak", as in JAX and NumPy 2: next to a float32 value it is a float32
# (tracing writes it as an np.float32 literal); an np.float32 literal is a float32 of its own
SCALAR_AVALS = {float: SCALAR, int: Aval((), "i64"), bool: Aval((), "bool"), np.float32: Aval((), "f32")}


@attrs.frozen(eq=False)
class Var:
    """A value defined once in a Program; compared and hashed by identity."""

    aval: Aval


@attrs.frozen
class Literal:
    """A Python scalar written into the program text."""

    value: float | int | bool | np.float32

    @property
    def aval(self) -> Aval:
        return SCALAR_AVALS[type(self.value)]


Atom = Var | Literal


@attrs.frozen
class Source:
    """Where the user's code made an op: the file, the line, and the expression's text when Python
    knows it (from the code's table of positions: `tnp.sin(3 * b)`, `a**0.5`)."""

    file: str
    line: int
    expression: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@attrs.frozen
class Neutral:
    """A literal `value` at one of `positions` leaves the other operand unchanged: `x * 1.0` is `x`."""

    value: float
    positions: tuple[int, ...]


@attrs.frozen(eq=False)
class Primitive:
    """An operation of the IR: its name, and the traits that passes read.

    Its rules are entries of tables keyed by it: `tracegrad.core` holds one table per
    transformation (abstract evaluation, NumPy impl, VJP, ...), `tracegrad.lowering` the code
    generator's. `tracegrad/primitives.py` fills them, one paragraph per primitive.
    """

    name: str
    # out[i] = f(x[i], y[i], ...), each input read at NumPy's broadcast index: a fused loop can compute it
    elementwise: bool = False
    # False for piecewise-constant or stopped values (comparisons, sign, stop_gradient): no cotangent flows back
    differentiable: bool = True
    neutral: Neutral | None = None
    # its abstract evaluation gives a tuple of avals, its impl and `bind` a list of values (a loop's carries)
    multiple_results: bool = False

    def __repr__(self) -> str:
        return self.name


@attrs.frozen
class Op:
    """One equation: `outs = primitive[params] inputs`, remembering the user's code that made it.

    Most primitives give one value (`op.out`); a loop gives one per carry and per stacked
    output. A control-flow op's params hold its sub-programs (a loop's body) as Programs.

    An op of an adjoint keeps the source of the forward op it differentiates, and the name of
    that op's primitive in `adjoint_of`, both captured when the adjoint is built: the generated
    source's comments (`# Grad of: a**0.5`) and debug_nans' messages are made from them.
    """

    primitive: Primitive
    inputs: tuple[Atom, ...]
    outs: tuple[Var, ...] = attrs.field(converter=lambda outs: (outs,) if isinstance(outs, Var) else tuple(outs))
    params: tuple[tuple[str, object], ...] = ()
    source: Source | None = attrs.field(default=None, eq=False)
    adjoint_of: str | None = attrs.field(default=None, eq=False)

    @property
    def out(self) -> Var:
        """The value of a single-result op."""
        (out,) = self.outs
        return out

    @property
    def param(self) -> dict:
        return dict(self.params)

    def sub_programs(self) -> list[tuple[str, Program]]:
        """The (name, Program) params of a control-flow op, in params order: a loop's body."""
        found = []
        for key, value in self.params:
            if isinstance(value, Program):
                found.append((key, value))
            elif isinstance(value, tuple) and value and all(isinstance(x, Program) for x in value):
                found.extend((f"{key}[{i}]", x) for i, x in enumerate(value))
        return found


@attrs.frozen
class Program:
    """A function in IR: constants and inputs in, ops in order, outputs out."""

    constvars: tuple[Var, ...]
    inputs: tuple[Var, ...]
    ops: tuple[Op, ...]
    outputs: tuple[Atom, ...]

    def __str__(self) -> str:
        return print_program(self)


@attrs.frozen(eq=False)
class ClosedProgram:
    """A Program and the values of its constvars (arrays, or traced values of an enclosing trace)."""

    program: Program
    consts: tuple


# -- names and the printer ---------------------------------------------------------------

RESERVED_NAMES = frozenset({"np", "math"})


def variable_names():
    """a, b, ..., z, ba, bb, ...: the printer's names, skipping Python keywords and `np`."""
    index = 0
    while True:
        digits, n = [], index
        while True:
            digits.append("abcdefghijklmnopqrstuvwxyz"[n % 26])
            n //= 26
            if n == 0:
                break
        name = "".join(reversed(digits))
        index += 1
        if not keyword.iskeyword(name) and name not in RESERVED_NAMES:
            yield name


class Namer:
    """Gives each Var a name, in order of first appearance: `Namer.of(program)` names a program's
    binders, then each op's output in op order, as the printer and the generated source show them."""

    def __init__(self):
        self.names: dict[Var, str] = {}
        self.fresh = variable_names()

    @classmethod
    def of(cls, program: Program) -> Namer:
        namer = cls()
        namer.name_program(program)
        return namer

    def name_program(self, program: Program) -> None:
        """Name the binders, then each op's outputs and its sub-programs' values, in the printer's order.

        A sub-program's values get names of their own, after its op's outputs: one name means
        one value everywhere in the printed program and in the generated source, which writes a
        loop's body inside the function that runs it.
        """
        for var in program.constvars + program.inputs:
            self(var)
        for op in program.ops:
            for var in op.outs:
                self(var)
            for _, sub_program in op.sub_programs():
                self.name_program(sub_program)

    def __call__(self, atom: Atom) -> str:
        if isinstance(atom, Literal):
            return format_literal(atom.value)
        if atom not in self.names:
            self.names[atom] = next(self.fresh)
        return self.names[atom]


def format_literal(value) -> str:
    if isinstance(value, np.float32):  # printed with its type, as the binders are: 0.5:f32
        return f"{str(value) if math.isfinite(value) else format_literal(float(value))}:f32"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


def format_param(value) -> str:
    return str(value).replace(" ", "")


def print_program(program: Program) -> str:
    return "\n".join(program_lines(program, Namer.of(program), ""))


def program_lines(program: Program, name: Namer, indent: str) -> list[str]:
    """The printed program, each line after the first indented by `indent`; a sub-program (a
    loop's body) is printed under its op, indented, as `body={ lambda ... }`."""
    binders = lambda variables: " ".join(f"{name(v)}:{v.aval}" for v in variables)
    head = binders(program.constvars) + " ; " if program.constvars else ""
    head += binders(program.inputs)
    lines = [f"{{ lambda {head} . let"]
    for op in program.ops:
        sub_programs = op.sub_programs()
        nested = {key.split("[")[0] for key, _ in sub_programs}
        params = ",".join(f"{k}={format_param(v)}" for k, v in op.params if k not in nested)
        params = f"[{params}]" if params else ""
        args = " ".join(name(x) for x in op.inputs)
        outs = " ".join(f"{name(v)}:{v.aval}" for v in op.outs)
        lines.append(f"{indent}    {outs} = {op.primitive.name}{params} {args}")
        for key, sub_program in sub_programs:
            body = program_lines(sub_program, name, indent + "      ")
            lines.append(f"{indent}      {key}={body[0]}")
            lines.extend(body[1:])
    lines.append(f"{indent}  in ( {' '.join(name(x) for x in program.outputs)} ) }}")
    return lines


class IRTypeError(Exception):
    """A Program that breaks the IR's rules; always a bug in a pass, never the user's."""

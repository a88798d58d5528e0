"""The IR: a Program is an immutable list of ops over typed variables.

Every pass (tracing, AD, dead-code elimination) builds a new Program; nothing mutates one.
`str(program)` prints it like a jaxpr, one op per line; docs/ir.md holds the grammar.
"""
from __future__ import annotations

import keyword
import math

import attrs

DTYPES = ("bool", "i64", "f64")  # in promotion order


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
SCALAR_AVALS = {float: SCALAR, int: Aval((), "i64"), bool: Aval((), "bool")}


@attrs.frozen(eq=False)
class Var:
    """A value defined once in a Program; compared and hashed by identity."""

    aval: Aval


@attrs.frozen
class Literal:
    """A Python scalar written into the program text."""

    value: float | int | bool

    @property
    def aval(self) -> Aval:
        return SCALAR_AVALS[type(self.value)]


Atom = Var | Literal
SourceLine = tuple[str, int]  # (file name, line number) of the user's code


@attrs.frozen
class Op:
    """One equation: `out = primitive[params] inputs`, remembering which user line made it.

    An op of an adjoint program also points at the forward op it differentiates, so the
    generated source can say so in a comment.
    """

    primitive: str
    inputs: tuple[Atom, ...]
    out: Var
    params: tuple[tuple[str, object], ...] = ()
    source: SourceLine | None = attrs.field(default=None, eq=False)
    adjoint_of: Op | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def param(self) -> dict:
        return dict(self.params)


@attrs.frozen
class Program:
    """A function in IR: constants and inputs in, ops in order, outputs out."""

    constvars: tuple[Var, ...]
    inputs: tuple[Var, ...]
    ops: tuple[Op, ...]
    outputs: tuple[Atom, ...]

    def __str__(self) -> str:
        return print_program(self)


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
    """Gives each Var a name in order of first appearance."""

    def __init__(self):
        self.names: dict[Var, str] = {}
        self.fresh = variable_names()

    def __call__(self, atom: Atom) -> str:
        if isinstance(atom, Literal):
            return format_literal(atom.value)
        if atom not in self.names:
            self.names[atom] = next(self.fresh)
        return self.names[atom]


def format_literal(value) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return repr(value)


def format_param(value) -> str:
    return str(value).replace(" ", "")


def print_program(program: Program) -> str:
    name = Namer()
    binders = lambda variables: " ".join(f"{name(v)}:{v.aval}" for v in variables)
    head = binders(program.constvars) + " ; " if program.constvars else ""
    head += binders(program.inputs)
    lines = [f"{{ lambda {head} . let"]
    for op in program.ops:
        params = ",".join(f"{k}={format_param(v)}" for k, v in op.params)
        params = f"[{params}]" if params else ""
        args = " ".join(name(x) for x in op.inputs)
        lines.append(f"    {name(op.out)}:{op.out.aval} = {op.primitive}{params} {args}")
    lines.append(f"  in ( {' '.join(name(x) for x in program.outputs)} ) }}")
    return "\n".join(lines)


# -- the type checker --------------------------------------------------------------------


class IRTypeError(Exception):
    """A Program that breaks the IR's rules; always a bug in a pass, never the user's."""


def typecheck(program: Program) -> None:
    """Check that every Var is defined once before use and every op's type follows its rule."""
    from .primitives import PRIMITIVES

    defined: set[Var] = set()

    def define(var: Var, where: str) -> None:
        if not isinstance(var, Var):
            raise IRTypeError(f"{where}: {var!r} is not a Var")
        if var in defined:
            raise IRTypeError(f"{where}: a Var is defined twice")
        defined.add(var)

    def check_use(atom: Atom, where: str) -> None:
        if isinstance(atom, Var) and atom not in defined:
            raise IRTypeError(f"{where}: a Var is used before it is defined")

    for var in program.constvars + program.inputs:
        define(var, "binders")
    for index, op in enumerate(program.ops):
        where = f"op {index} ({op.primitive})"
        if op.primitive not in PRIMITIVES:
            raise IRTypeError(f"{where}: unknown primitive")
        for atom in op.inputs:
            check_use(atom, where)
        expected = PRIMITIVES[op.primitive].shape_rule(*(x.aval for x in op.inputs), **op.param)
        if expected != op.out.aval:
            raise IRTypeError(f"{where}: output is {op.out.aval}, its rule gives {expected}")
        define(op.out, where)
    for atom in program.outputs:
        check_use(atom, "outputs")

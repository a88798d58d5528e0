"""Program → Program passes that keep what a program computes.

`optimize` runs before code generation: algebraic simplification with constant folding, then
common-subexpression elimination, dead-code elimination, and a schedule that moves array
elementwise ops next to their first use so more of them fuse into one loop. Each pass reads
the ops once, in order, so a 100,000-op program costs milliseconds.
"""
from __future__ import annotations

import attrs
import numpy as np

from .ir import Atom, Literal, Op, Var
from .primitives import PRIMITIVES
from .trace import Traced

PYTHON_TYPES = {"f64": float, "i64": int, "bool": bool}


def optimize(traced: Traced) -> Traced:
    """The passes run before code generation."""
    return schedule_for_fusion(eliminate_dead_code(eliminate_common_subexpressions(simplify(traced))))


def eliminate_dead_code(traced: Traced) -> Traced:
    """Drop the ops and constants that no output depends on."""
    program = traced.program
    live = {x for x in program.outputs if isinstance(x, Var)}
    kept = []
    for op in reversed(program.ops):
        if op.out in live:
            kept.append(op)
            live.update(x for x in op.inputs if isinstance(x, Var))
    constants = [(v, c) for v, c in zip(program.constvars, traced.consts) if v in live]
    program = attrs.evolve(program, constvars=tuple(v for v, _ in constants), ops=tuple(reversed(kept)))
    return Traced(program, tuple(c for _, c in constants))


def select_outputs(traced: Traced, indices) -> Traced:
    """Keep only the outputs at `indices`, and what they need."""
    outputs = tuple(traced.program.outputs[i] for i in indices)
    return eliminate_dead_code(Traced(attrs.evolve(traced.program, outputs=outputs), traced.consts))


class Rewriter:
    """Rebuilds a program op by op: a Var may be replaced by another atom, an op by new ops.

    Adjoint ops keep pointing at (the rewritten form of) the forward op they differentiate.
    """

    def __init__(self, traced: Traced):
        self.traced = traced
        self.replaced: dict[Var, Atom] = {}
        self.ops: list[Op] = []
        self.new_op: dict[Op, Op] = {}

    def inputs(self, op: Op) -> tuple[Atom, ...]:
        return tuple(self.replaced.get(x, x) if isinstance(x, Var) else x for x in op.inputs)

    def keep(self, old: Op, primitive: str, inputs: tuple, params=None) -> None:
        params = old.params if params is None else params
        new = attrs.evolve(old, primitive=primitive, inputs=inputs, params=params,
                           adjoint_of=self.new_op.get(old.adjoint_of, old.adjoint_of))
        self.new_op[old] = new
        self.ops.append(new)

    def add(self, old: Op, primitive: str, inputs: tuple) -> Var:
        """A new op before `old`'s own, with its source line."""
        out = Var(PRIMITIVES[primitive].shape_rule(*(x.aval for x in inputs)))
        self.ops.append(Op(primitive, inputs, out, (), old.source, self.new_op.get(old.adjoint_of, old.adjoint_of)))
        return out

    def program(self) -> Traced:
        program = self.traced.program
        outputs = tuple(self.replaced.get(x, x) if isinstance(x, Var) else x for x in program.outputs)
        return Traced(attrs.evolve(program, ops=tuple(self.ops), outputs=outputs), self.traced.consts)


def simplify(traced: Traced) -> Traced:
    """Fold ops on literals, drop `x * 1.0`-style ops, and turn small integer powers into products.

    A constant array whose elements are all equal (the adjoint's seed of ones, broadcast) is
    read by elementwise ops as the scalar it repeats, so `ones * x` becomes `x`.
    """
    rewriter = Rewriter(traced)
    uniform = uniform_constants(traced)
    for op in traced.program.ops:
        inputs = rewriter.inputs(op)
        rule = PRIMITIVES[op.primitive]
        if rule.scalar is not None and any(x in uniform for x in inputs):
            as_scalars = tuple(uniform.get(x, x) for x in inputs)
            if rule.shape_rule(*(x.aval for x in as_scalars), **op.param) == op.out.aval:
                inputs = as_scalars
        if op.out.aval.shape == () and all(isinstance(x, Literal) for x in inputs):
            with np.errstate(all="ignore"):
                value = rule.impl(*(x.value for x in inputs), **op.param)
            rewriter.replaced[op.out] = Literal(PYTHON_TYPES[op.out.aval.dtype](value))
            continue
        if op.primitive == "stop_gradient" and inputs[0].aval == op.out.aval:  # it matters only to the AD pass
            rewriter.replaced[op.out] = inputs[0]
            continue
        if rule.neutral is not None:
            kept_input = neutral_operand(rule.neutral, inputs, op)
            if kept_input is not None:
                rewriter.replaced[op.out] = kept_input
                continue
        if (op.primitive == "pow" and isinstance(inputs[1], Literal) and inputs[1].value in POWERS_AS_PRODUCTS
                and inputs[0].aval == op.out.aval):
            POWERS_AS_PRODUCTS[inputs[1].value](rewriter, op, inputs[0])
            continue
        rewriter.keep(op, op.primitive, inputs)
    return rewriter.program()


def uniform_constants(traced: Traced) -> dict[Var, Literal]:
    """The constvars holding arrays whose elements are all one value, and that value."""
    uniform = {}
    for var, value in zip(traced.program.constvars, traced.consts):
        if isinstance(value, np.ndarray) and value.size and var.aval.dtype == "f64" and np.all(value == value.flat[0]):
            uniform[var] = Literal(float(value.flat[0]))
    return uniform


def neutral_operand(neutral, inputs, op: Op) -> Atom | None:
    """The operand left when the other is the neutral literal (`x` of `x * 1.0`), if its type is the output's."""
    value, positions = neutral
    for position in positions:
        other = inputs[1 - position]
        if isinstance(inputs[position], Literal) and inputs[position].value == value and other.aval == op.out.aval:
            return other
    return None


POWERS_AS_PRODUCTS = {  # numba's pow costs ~8 ns per call, a product ~0.3 ns
    2.0: lambda rewriter, op, x: rewriter.keep(op, "mul", (x, x), ()),
    3.0: lambda rewriter, op, x: rewriter.keep(op, "mul", (rewriter.add(op, "mul", (x, x)), x), ()),
    -1.0: lambda rewriter, op, x: rewriter.keep(op, "div", (Literal(1.0), x), ()),
}


def eliminate_common_subexpressions(traced: Traced) -> Traced:
    """Compute each (primitive, inputs, params) once: later copies reuse the first result."""
    rewriter = Rewriter(traced)
    first: dict[tuple, Op] = {}
    for op in traced.program.ops:
        inputs = rewriter.inputs(op)
        key = (op.primitive, tuple(atom_key(x) for x in inputs), op.params)
        if key in first:
            rewriter.replaced[op.out] = first[key].out
            rewriter.new_op[op] = first[key]
            continue
        rewriter.keep(op, op.primitive, inputs)
        first[key] = rewriter.ops[-1]
    return rewriter.program()


def atom_key(atom: Atom):
    return (type(atom.value), repr(atom.value)) if isinstance(atom, Literal) else atom


def schedule_for_fusion(traced: Traced) -> Traced:
    """Move each elementwise op on arrays down to just before its first use.

    Code generation fuses runs of consecutive elementwise ops of one shape into one loop; an
    op computed early and used late (a regulariser's gradient, used by the update at the end)
    would otherwise be a loop of its own.
    """
    ops = traced.program.ops
    maker = {op.out: op for op in ops}
    position = {op: i for i, op in enumerate(ops)}
    deferred: set[Op] = set()
    order: list[Op] = []

    def emit_deferred_inputs(op: Op) -> None:
        """Emit the deferred ops `op` reads, and theirs, in their original order."""
        needed, stack = [], [op]
        while stack:
            for x in stack.pop().inputs:
                source = maker.get(x) if isinstance(x, Var) else None
                if source in deferred:
                    deferred.discard(source)
                    needed.append(source)
                    stack.append(source)
        order.extend(sorted(needed, key=position.__getitem__))

    for op in ops:
        if PRIMITIVES[op.primitive].scalar is not None and op.out.aval.ndim > 0:
            deferred.add(op)
        else:
            emit_deferred_inputs(op)
            order.append(op)
    for atom in traced.program.outputs:
        if isinstance(atom, Var) and maker.get(atom) in deferred:
            emit_deferred_inputs(Op("outputs", (atom,), atom))
    return Traced(attrs.evolve(traced.program, ops=tuple(order)), traced.consts)

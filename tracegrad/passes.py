"""Program → Program passes that keep what a program computes.

`optimize` runs before code generation: algebraic simplification with constant folding, then
common-subexpression elimination, dead-code elimination, and a schedule that moves array
elementwise ops next to their first use so more of them fuse into one loop. Each pass reads
the ops once, in order, so its time grows linearly with the program's length (`optimize`
took about 2 s for a chain of 100,000 scalar adds, measured).
"""
from __future__ import annotations

import heapq

import attrs
import numpy as np

from .core import abstract_eval_rules, impl_rules
from .ir import Atom, ClosedProgram, Literal, Op, Primitive, Program, Var
from .primitives import (broadcast_to_p, div_p, eq_p, matmul_p, mul_p, pow_p, reduce_sum_p, reshape_p,
                         stop_gradient_p, transpose_p, where_p)

PYTHON_TYPES = {"f64": float, "f32": np.float32, "i64": int, "bool": bool}


def optimize(closed: ClosedProgram) -> ClosedProgram:
    """The passes run before code generation, on the program and on each sub-program (a loop's body)."""
    closed = schedule_for_fusion(eliminate_dead_code(eliminate_common_subexpressions(simplify(closed))))
    if not any(op.sub_programs() for op in closed.program.ops):
        return closed
    ops = tuple(with_optimized_sub_programs(op) for op in closed.program.ops)
    return ClosedProgram(attrs.evolve(closed.program, ops=ops), closed.consts)


def with_optimized_sub_programs(op: Op) -> Op:
    if not op.sub_programs():
        return op
    optimized = lambda program: optimize(ClosedProgram(program, ())).program
    params = tuple((key, optimized(value) if isinstance(value, Program)
                    else tuple(map(optimized, value)) if isinstance(value, tuple) and value
                    and all(isinstance(x, Program) for x in value) else value)
                   for key, value in op.params)
    return attrs.evolve(op, params=params)


def eliminate_dead_code(closed: ClosedProgram) -> ClosedProgram:
    """Drop the ops and constants that no output depends on."""
    program = closed.program
    live = {x for x in program.outputs if isinstance(x, Var)}
    kept = []
    for op in reversed(program.ops):
        if any(out in live for out in op.outs):
            kept.append(op)
            live.update(x for x in op.inputs if isinstance(x, Var))
    constants = [(v, c) for v, c in zip(program.constvars, closed.consts) if v in live]
    program = attrs.evolve(program, constvars=tuple(v for v, _ in constants), ops=tuple(reversed(kept)))
    return ClosedProgram(program, tuple(c for _, c in constants))


class Rewriter:
    """Rebuilds a program op by op: a Var may be replaced by another atom, an op by new ops, which
    keep its source and adjoint_of."""

    def __init__(self, closed: ClosedProgram):
        self.closed = closed
        self.replaced: dict[Var, Atom] = {}
        self.ops: list[Op] = []
        self.producer: dict[Var, Op] = {}  # of each Var made by an op kept so far
        self.const_values = dict(zip(closed.program.constvars, closed.consts))

    def inputs(self, op: Op) -> tuple[Atom, ...]:
        replaced = self.replaced
        return tuple([replaced.get(x, x) if type(x) is Var else x for x in op.inputs])

    def keep(self, old: Op, primitive: Primitive, inputs: tuple, params=None) -> None:
        params = old.params if params is None else params
        self.append(Op(primitive, inputs, old.outs, params, old.source, old.adjoint_of))

    def append(self, op: Op) -> None:
        self.ops.append(op)
        for out in op.outs:
            self.producer[out] = op

    def made_by(self, atom: Atom, primitive: Primitive) -> Op | None:
        """The op that made `atom`, if it is a `primitive` op."""
        op = self.producer.get(atom) if type(atom) is Var else None
        return op if op is not None and op.primitive is primitive else None

    def add(self, old: Op, primitive: Primitive, inputs: tuple, params=()) -> Var:
        """A new op before `old`'s own, with its source."""
        out = Var(abstract_eval_rules[primitive](*(x.aval for x in inputs), **dict(params)))
        self.append(Op(primitive, inputs, out, params, old.source, old.adjoint_of))
        return out

    def program(self) -> ClosedProgram:
        program = self.closed.program
        outputs = tuple(self.replaced.get(x, x) if isinstance(x, Var) else x for x in program.outputs)
        return ClosedProgram(attrs.evolve(program, ops=tuple(self.ops), outputs=outputs), self.closed.consts)


def simplify(closed: ClosedProgram) -> ClosedProgram:
    """Fold ops on literals, drop `x * 1.0`-style ops, and rewrite ops by `REWRITES`."""
    rewriter = Rewriter(closed)
    for op in closed.program.ops:
        inputs = rewriter.inputs(op)
        if op.primitive.multiple_results:
            rewriter.keep(op, op.primitive, inputs)
            continue
        if op.out.aval.shape == () and all(isinstance(x, Literal) for x in inputs):
            with np.errstate(all="ignore"):
                value = impl_rules[op.primitive](*(x.value for x in inputs), **op.param)
            rewriter.replaced[op.out] = Literal(PYTHON_TYPES[op.out.aval.dtype](value))
            continue
        if op.primitive.neutral is not None:
            kept_input = neutral_operand(op.primitive.neutral, inputs, op)
            if kept_input is not None:
                rewriter.replaced[op.out] = kept_input
                continue
        if op.primitive.elementwise and on_data_axes(rewriter, op, inputs):
            continue
        rewrite = REWRITES.get(op.primitive)
        if rewrite is None or not rewrite(rewriter, op, inputs):
            rewriter.keep(op, op.primitive, inputs)
    return rewriter.program()


def neutral_operand(neutral, inputs, op: Op) -> Atom | None:
    """The operand left when the other is the neutral literal (`x` of `x * 1.0`), if its type is the output's."""
    for position in neutral.positions:
        other = inputs[1 - position]
        if (isinstance(inputs[position], Literal) and inputs[position].value == neutral.value
                and other.aval == op.out.aval):
            return other
    return None


def power_as_products(rewriter: Rewriter, op: Op, inputs) -> bool:
    """`x ** 2.0` is `x * x`, `x ** 3.0` is `(x * x) * x`, `x ** -1.0` is `1.0 / x`: numba's pow costs
    ~8 ns per call, a product ~0.3 ns."""
    x, power = inputs
    if not isinstance(power, Literal) or x.aval != op.out.aval:
        return False
    if power.value == 2.0:
        rewriter.keep(op, mul_p, (x, x), ())
    elif power.value == 3.0:
        rewriter.keep(op, mul_p, (rewriter.add(op, mul_p, (x, x)), x), ())
    elif power.value == -1.0:
        rewriter.keep(op, div_p, (Literal(PYTHON_TYPES[x.aval.dtype](1.0)), x), ())
    else:
        return False
    return True


def without_stop_gradient(rewriter: Rewriter, op: Op, inputs) -> bool:
    """`stop_gradient x` is `x`: it matters only to differentiation, which is done."""
    if inputs[0].aval != op.out.aval:
        return False
    rewriter.replaced[op.out] = inputs[0]
    return True


def without_same_shape(rewriter: Rewriter, op: Op, inputs) -> bool:
    """A broadcast that leaves its operand as it is (vmap's batch of one example) is its operand."""
    if inputs[0].aval != op.out.aval:
        return False
    rewriter.replaced[op.out] = inputs[0]
    return True


def reshaped(rewriter: Rewriter, op: Op, x: Atom) -> bool:
    """`op`'s result as `x` reshaped (from the operand of `x`'s own reshape, so no reshape reads
    another): `x` itself when its shape is already the result's."""
    x = without_reshape(rewriter, x)
    if x.aval == op.out.aval:
        rewriter.replaced[op.out] = x
    else:
        rewriter.keep(op, reshape_p, (x,), (("shape", op.out.aval.shape),))
    return True


def without_reshape(rewriter: Rewriter, x: Atom) -> Atom:
    """The operand of the reshape that made `x`, or `x`."""
    inner = rewriter.made_by(x, reshape_p)
    return x if inner is None else inner.inputs[0]


def reshape_to(rewriter: Rewriter, op: Op, x: Atom, shape: tuple[int, ...]) -> Atom:
    """`x` reshaped to `shape` by a new op before `op` (none when it has that shape already)."""
    x = x if x.aval.shape == shape else without_reshape(rewriter, x)
    return x if x.aval.shape == shape else rewriter.add(op, reshape_p, (x,), (("shape", shape),))


def on_data_axes(rewriter: Rewriter, op: Op, inputs) -> bool:
    """An elementwise op whose result has axes of length 1 among others (vmap's and the Jacobians'
    layouts), and which reads an array without them reshaped to have them, computes on its
    operands without them, so that it fuses into one loop with the ops around it that have none;
    its result is reshaped back (and the next such op reads the smaller array in turn)."""
    shape = op.out.aval.shape
    data_axes = [axis for axis, length in enumerate(shape) if length != 1]
    if not data_axes or len(data_axes) == len(shape):
        return False
    squeezed = tuple(shape[axis] for axis in data_axes)
    if not any(without_reshape(rewriter, x).aval.shape == squeezed for x in inputs if isinstance(x, Var)):
        return False  # no operand is a reshape of an array without those axes: nothing to gain
    operands = []
    for x in inputs:
        if x.aval.shape == ():
            operands.append(x)
            continue
        padded = (1,) * (len(shape) - x.aval.ndim) + x.aval.shape  # as broadcasting aligns it
        operands.append(reshape_to(rewriter, op, x, tuple(padded[axis] for axis in data_axes)))
    params = tuple((key, squeezed) if key == "shape" else (key, value) for key, value in op.params)  # broadcast_to's
    smaller = rewriter.add(op, op.primitive, tuple(operands), params)
    rewriter.keep(op, reshape_p, (smaller,), (("shape", shape),))
    return True


def simpler_reshape(rewriter: Rewriter, op: Op, inputs) -> bool:
    """A reshape to the operand's own shape is the operand; a reshape of a reshape is one reshape."""
    x = inputs[0]
    if rewriter.made_by(x, reshape_p) is None and x.aval != op.out.aval:
        return False
    return reshaped(rewriter, op, x)


def simpler_transpose(rewriter: Rewriter, op: Op, inputs) -> bool:
    """Transposes as few and as small as they can be: a transpose of a transpose is one; a transpose
    that moves only axes of length 1 moves no data and is a reshape; any other transpose of an
    array with axes of length 1 (vmap's and the Jacobians' layouts) transposes the array without
    them; an identity matrix is its own transpose."""
    x, perm = inputs[0], op.param["perm"]
    inner = rewriter.made_by(x, transpose_p)
    if inner is not None:
        x, perm = inner.inputs[0], tuple(inner.param["perm"][axis] for axis in perm)
    shape = x.aval.shape
    moved = [axis for axis in perm if shape[axis] != 1]  # the axes holding data, in their new order
    if moved == sorted(moved) or is_identity(rewriter, x):
        return reshaped(rewriter, op, x)
    if len(non_unit(shape)) < len(shape):  # transpose the array without its axes of length 1
        source = rewriter.made_by(x, reshape_p)
        if source is not None and is_identity(rewriter, source.inputs[0]):
            return reshaped(rewriter, op, source.inputs[0])
        smaller = reshape_to(rewriter, op, x, non_unit(shape))
        data_axes = [axis for axis, length in enumerate(shape) if length != 1]
        smaller_perm = tuple(data_axes.index(axis) for axis in moved)
        x = rewriter.add(op, transpose_p, (smaller,), (("perm", smaller_perm),))
        return reshaped(rewriter, op, x)
    if inner is None:
        return False
    rewriter.keep(op, transpose_p, (x,), (("perm", perm),))
    return True


def non_unit(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(length for length in shape if length != 1)


def is_identity(rewriter: Rewriter, x: Atom) -> bool:
    """Whether `x` is an identity matrix made as the Jacobians' basis makes it:
    `where(arange(n)[:, None] == arange(n)[None, :], 1.0, 0.0)`."""
    select = rewriter.made_by(x, where_p)
    if select is None or x.aval.ndim != 2 or x.aval.shape[0] != x.aval.shape[1]:
        return False
    condition, one, zero = select.inputs
    comparison = rewriter.made_by(condition, eq_p)
    if not (isinstance(one, Literal) and one.value == 1 and isinstance(zero, Literal) and zero.value == 0
            and comparison is not None and all(a in rewriter.const_values for a in comparison.inputs)):
        return False
    n = x.aval.shape[0]
    rows, columns = (rewriter.const_values[a] for a in comparison.inputs)
    return ((np.array_equal(rows, np.arange(n).reshape(n, 1)) and np.array_equal(columns, np.arange(n).reshape(1, n)))
            or (np.array_equal(rows, np.arange(n).reshape(1, n)) and np.array_equal(columns, np.arange(n).reshape(n, 1))))


def product_with_identity(rewriter: Rewriter, op: Op, inputs) -> bool:
    """`x @ I` and `I @ x` are `x` (forward-mode Jacobians multiply by the identity they start from)."""
    x, y = inputs
    for identity, other in ((y, x), (x, y)):
        if other.aval == op.out.aval and is_identity(rewriter, identity):
            rewriter.replaced[op.out] = other
            return True
    return False


def sum_of_ones_as_reshape(rewriter: Rewriter, op: Op, inputs) -> bool:
    """A sum over axes of length 1 only (vmap's per-example outer products) moves no data: a reshape."""
    x = inputs[0]
    if not isinstance(x, Var) or any(x.aval.shape[axis] != 1 for axis in op.param["axes"]) or x.aval.dtype == "bool":
        return False
    rewriter.keep(op, reshape_p, (x,), (("shape", op.out.aval.shape),))
    return True


# rewrites of single ops, keyed by primitive: each returns whether it replaced the op
REWRITES = {pow_p: power_as_products, stop_gradient_p: without_stop_gradient, reshape_p: simpler_reshape,
            broadcast_to_p: without_same_shape, transpose_p: simpler_transpose, reduce_sum_p: sum_of_ones_as_reshape,
            matmul_p: product_with_identity}


def eliminate_common_subexpressions(closed: ClosedProgram) -> ClosedProgram:
    """Compute each (primitive, inputs, params) once: later copies reuse the first result."""
    rewriter = Rewriter(closed)
    first: dict[tuple, tuple[Var, ...]] = {}  # the outputs of the first op of each key
    for op in closed.program.ops:
        inputs = rewriter.inputs(op)
        key = (op.primitive, tuple(atom_key(x) for x in inputs), op.params)
        if key in first:
            rewriter.replaced.update(zip(op.outs, first[key]))
            continue
        rewriter.keep(op, op.primitive, inputs)
        first[key] = op.outs
    return rewriter.program()


def atom_key(atom: Atom):
    return (type(atom.value), repr(atom.value)) if isinstance(atom, Literal) else atom


def schedule_for_fusion(closed: ClosedProgram) -> ClosedProgram:
    """Move each elementwise op on arrays down to just before its first use, smaller results first.

    Code generation fuses runs of consecutive elementwise ops of one shape into one loop; an
    op computed early and used late (a regulariser's gradient, used by the update at the end)
    would otherwise be a loop of its own, and so would a run split by a smaller op between.
    """
    ops = closed.program.ops
    position = {out: i for i, op in enumerate(ops) for out in op.outs}  # of the op making each Var
    deferred: set[Var] = set()  # the outputs of the ops not emitted yet
    order: list[Op] = []

    def emit_deferred(atoms) -> None:
        """Emit the deferred ops that make `atoms`, and those they read: the smaller results first
        (each after what it reads, in the original order among equals), so that the ops of the
        largest shape come last, together, and fuse."""
        needed, stack = set(), [atoms]
        while stack:
            for x in stack.pop():
                if x in deferred:
                    deferred.discard(x)
                    needed.add(position[x])
                    stack.append(ops[position[x]].inputs)
        readers: dict[int, list[int]] = {i: [] for i in needed}
        unmet = {}
        for i in needed:
            reads = {position.get(x) for x in ops[i].inputs if type(x) is Var} & needed
            unmet[i] = len(reads)
            for j in reads:
                readers[j].append(i)
        ready = [(ops[i].out.aval.size, i) for i in needed if not unmet[i]]
        heapq.heapify(ready)
        while ready:
            _, i = heapq.heappop(ready)
            order.append(ops[i])
            for j in readers[i]:
                unmet[j] -= 1
                if not unmet[j]:
                    heapq.heappush(ready, (ops[j].out.aval.size, j))

    for op in ops:
        if op.primitive.elementwise and op.out.aval.ndim > 0:
            deferred.add(op.out)
        else:
            emit_deferred(op.inputs)
            order.append(op)
    for atom in closed.program.outputs:  # each output's deferred ops together, so they fuse
        emit_deferred((atom,))
    return ClosedProgram(attrs.evolve(closed.program, ops=tuple(order)), closed.consts)

"""Staging: run a Python function on tracers and record the ops it applies as a Program.

A StagingInterpreter is the current interpreter while a function is traced: `bind` appends
one Op per primitive applied. Only ops on numbers whose value is a number are computed at
once; no array is, so a program never holds an array that tracing made.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import errors
from .core import (INT64_MAX, INT64_MIN, Interpreter, Tracer, abstract_eval_rules, as_traceable_array,
                   check_alive, dtype_name, impl_rules, integer_overflow, set_interpreter)
from .ir import FLOAT_DTYPES, Aval, ClosedProgram, Literal, Op, Primitive, Program, Var
from .passes import eliminate_dead_code
from .primitives import broadcast_to_p, promote
from .source_info import current_adjoint_of, current_source, user_source, where_text


class StagingTracer(Tracer):
    """A value of the function being staged: a Var of the program being built."""

    __slots__ = ("variable", "interpreter")  # not `var`: that is NumPy's method x.var()

    def __init__(self, var: Var, interpreter: StagingInterpreter):
        self.variable = var
        self.interpreter = interpreter

    aval = property(lambda self: self.variable.aval)


class StagingInterpreter(Interpreter):
    """The staging context of one trace: it appends one Op per primitive applied (see `interpret_op`)."""

    def __init__(self):
        self.inputs: list[Var] = []
        self.ops: list[Op] = []
        self.constvars: list[Var] = []
        self.consts: list = []
        self.const_of: dict[int, Var] = {}  # id(value) -> its constvar
        self.captured: list = []
        self.scalar_broadcasts: dict[Var, Literal] = {}  # the outputs of `broadcast_to` of a literal

    def new_input(self, aval: Aval) -> StagingTracer:
        var = Var(aval)
        self.inputs.append(var)
        return StagingTracer(var, self)

    def atom(self, value) -> Var | Literal:
        """The IR atom for a value met in this trace: a Var for tracers and arrays, else a Literal."""
        if isinstance(value, Tracer):
            if value.interpreter is self:
                return value.variable
            check_alive(value)
            return self.constvar(value, value.aval)  # a value of an enclosing trace, captured
        if isinstance(value, (bool, int, float)):
            return Literal(value if type(value) in (bool, int, float) else float(value))  # np.float64 too
        if isinstance(value, np.float32):  # a float32 of its own (a Python float is weak: see `interpret_op`)
            return Literal(value)
        if isinstance(value, (np.generic, np.ndarray)):
            array = as_traceable_array(value)
            if array.ndim == 0:
                return Literal(array[()] if array.dtype == np.float32 else array.item())
            # a copy: closed-over arrays are constants, fixed when the function is traced
            return self.constvar(value, Aval(array.shape, dtype_name(array.dtype)), stored=array.copy())
        raise TypeError(f"tracegrad cannot trace a value of type {type(value).__name__} "
                        f"(at {where_text(user_source())}); use floats, ints and NumPy arrays")

    def constvar(self, value, aval: Aval, stored=None) -> Var:
        """The Var of a value captured by this trace; `stored` (default: the value) is what the program keeps."""
        var = self.const_of.get(id(value))
        if var is None:
            var = self.const_of[id(value)] = Var(aval)
            self.constvars.append(var)
            self.consts.append(value if stored is None else stored)
            self.captured.append(value)  # alive while the trace is, so its id is not reused
        return var

    def interpret_op(self, primitive: Primitive, args: tuple, params: dict):
        """Stage the op, simplified where that is known now (see docs/ir.md).

        An op on numbers only, whose value is a number, is computed at once with NumPy, which
        gives inf and nan without a warning, as the program's compiled code does (`tnp.log(0.0)`).
        No op's value is an array computed now: an array made from numbers (an adjoint's seed
        broadcast to a shape) is a staged `broadcast_to` of a literal, which elementwise ops read
        as the number it repeats.
        """
        inputs = [self.atom(a) for a in args]
        if primitive.multiple_results:  # a loop: staged as it is
            return self.add_op(primitive, inputs, abstract_eval_rules[primitive](*(x.aval for x in inputs), **params),
                               params)
        literal_dtype = weak_literal_dtype(inputs)
        if literal_dtype is not None:  # ints next to floats are floats: `a**3` is `pow a 3.0`
            as_float = np.float32 if literal_dtype == "f32" else float
            inputs = [Literal(as_float(x.value)) if is_weak(x) else x for x in inputs]
        else:  # an int literal stays an int64 in the generated code
            for x in inputs:
                if isinstance(x, Literal) and type(x.value) is int and not INT64_MIN <= x.value <= INT64_MAX:
                    raise integer_overflow(x.value, "integer")
        try:
            aval = abstract_eval_rules[primitive](*(x.aval for x in inputs), **params)
        except errors.ShapeError as error:
            raise errors.ShapeError(f"{error} (at {where_text(current_source())})") from None
        if aval.shape == () and all(isinstance(x, Literal) for x in inputs):
            return fold(primitive, inputs, params)
        if primitive.elementwise and any(x in self.scalar_broadcasts for x in inputs):
            scalars = [self.scalar_broadcasts.get(x, x) for x in inputs]
            scalar_aval = abstract_eval_rules[primitive](*(x.aval for x in scalars), **params)
            if scalar_aval.shape == () and all(isinstance(x, Literal) for x in scalars):
                value = fold(primitive, scalars, params)  # `ones * 2.0` is a broadcast 2.0
                if self.atom(value).aval.dtype == aval.dtype:
                    return self.interpret_op(broadcast_to_p, (value,), {"shape": aval.shape})
            elif scalar_aval == aval:  # `x * ones` reads the 1.0 (and is then x)
                inputs = scalars
        if primitive.neutral is not None:  # `x * 1.0` is x
            for position in primitive.neutral.positions:
                kept = inputs[1 - position]
                if (isinstance(inputs[position], Literal) and inputs[position].value == primitive.neutral.value
                        and isinstance(kept, Var) and kept.aval == aval):
                    return StagingTracer(kept, self)
        return self.add_op(primitive, inputs, aval, params)

    def add_op(self, primitive: Primitive, inputs, aval, params: dict):
        """Append the op; its tracer, or for a primitive of multiple results (`aval` a tuple) a list of them."""
        outs = tuple(Var(each) for each in aval) if primitive.multiple_results else Var(aval)
        self.ops.append(Op(primitive, tuple(inputs), outs, tuple(params.items()), current_source(), current_adjoint_of()))
        if primitive.multiple_results:
            return [StagingTracer(out, self) for out in outs]
        if primitive is broadcast_to_p and isinstance(inputs[0], Literal):
            self.scalar_broadcasts[outs] = inputs[0]
        return StagingTracer(outs, self)


def is_weak(atom) -> bool:
    """A Python int or float literal, whose dtype is its operands' (as in JAX and NumPy 2)."""
    return isinstance(atom, Literal) and type(atom.value) in (int, float)


def weak_literal_dtype(inputs) -> str | None:
    """The float dtype the op's Python int and float literals take: its other operands' float dtype
    (`x32 * 0.5` is float32), float64 beside integers or other literals where one of them is a float
    (`i * 0.5`), None where every operand is an integer or a bool (the literals stay ints)."""
    strong = [x.aval for x in inputs if not is_weak(x)]
    dtype = promote(*strong) if strong else None
    if dtype in FLOAT_DTYPES:
        return dtype
    if any(is_weak(x) and type(x.value) is float for x in inputs):
        return "f64"
    return None


def fold(primitive: Primitive, inputs: list[Literal], params: dict):
    """The value of an op on literals, computed now with NumPy's scalars (1.0 / 0.0 is inf, silently)."""
    values = [np.float64(x.value) if type(x.value) is float else x.value for x in inputs]
    with np.errstate(all="ignore"):
        return impl_rules[primitive](*values, **params)


@contextlib.contextmanager
def new_trace():
    interpreter = StagingInterpreter()
    try:
        with set_interpreter(interpreter):
            yield interpreter
    finally:
        interpreter.active = False


def trace_flat(fun, in_avals) -> ClosedProgram:
    """Trace `fun(*tracers) -> list of leaves` into a closed program, dead code removed."""
    with new_trace() as interpreter:
        args = [interpreter.new_input(aval) for aval in in_avals]
        outputs = [interpreter.atom(leaf) for leaf in fun(*args)]
    program = Program(tuple(interpreter.constvars), tuple(interpreter.inputs), tuple(interpreter.ops), tuple(outputs))
    return eliminate_dead_code(ClosedProgram(program, tuple(interpreter.consts)))

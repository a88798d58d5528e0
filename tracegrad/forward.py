"""Forward mode as an interpreter: each value carries its tangent (Autodidax's JVPTrace).

A JVPInterpreter sits on the interpreter that was current when it started. Each op applied to
its tracers goes to the primitive's entry in `core.jvp_rules`, whose ops (the output and its
tangent) are bound in that previous interpreter: under staging they are staged, under reverse
mode differentiated (so `grad` of `jvp` and `jvp` of `grad`, a Hessian-vector product, need no
special case). A zero tangent is None and is never made into an array.
"""
from __future__ import annotations

from typing import Callable

from .ad import in_dtype, zeros
from .core import Interpreter, Tracer, aval_of, bind, check_alive, current_interpreter, jvp_rules, set_interpreter
from .ir import FLOAT_DTYPES, Primitive
from .source_info import annotate, current_adjoint_of, current_source


class JVPTracer(Tracer):
    """A value under forward mode: its value in the previous interpreter and its tangent (None: zero)."""

    __slots__ = ("interpreter", "primal", "tangent")

    def __init__(self, interpreter: JVPInterpreter, primal, tangent):
        self.interpreter = interpreter
        self.primal = primal
        self.tangent = tangent

    aval = property(lambda self: aval_of(self.primal))


class JVPInterpreter(Interpreter):
    """Computes each op and its tangent with the primitive's JVP rule, in the previous interpreter."""

    def __init__(self, prev_interpreter: Interpreter):
        self.prev_interpreter = prev_interpreter

    def owns(self, value) -> bool:
        return isinstance(value, JVPTracer) and value.interpreter is self

    def lift(self, value, tangent) -> JVPTracer | object:
        """A value with its tangent (in the value's dtype), or the value itself when the tangent is zero or
        it is not a float."""
        dtype = aval_of(value).dtype
        if tangent is None or dtype not in FLOAT_DTYPES:
            return value
        return JVPTracer(self, value, in_dtype(tangent, dtype))

    def interpret_op(self, primitive: Primitive, args: tuple, params: dict):
        primals, tangents = [], []
        for arg in args:
            if self.owns(arg):
                primals.append(arg.primal)
                tangents.append(arg.tangent)
            else:  # a number, an array, or a value of another interpreter: its tangent is zero
                check_alive(arg)
                primals.append(arg)
                tangents.append(None)
        with set_interpreter(self.prev_interpreter), annotate(current_source(), current_adjoint_of()):
            if not primitive.differentiable or all(t is None for t in tangents):
                return bind(primitive, *primals, **params)
            out, tangent = jvp_rules[primitive](primals, tangents, **params)
        if primitive.multiple_results:
            return [self.lift(value, t) for value, t in zip(out, tangent)]
        return self.lift(out, tangent)


def jvp(fun: Callable, primals: list, tangents: list) -> tuple[list, list]:
    """Run `fun(*primals)` (a list of values, giving a list) under forward mode, in the current
    interpreter: its outputs and their tangents (zeros where an output does not depend on the
    inputs). A tangent of None is zero."""
    interpreter = JVPInterpreter(current_interpreter())
    args = [interpreter.lift(x, t) for x, t in zip(primals, tangents)]
    try:
        with set_interpreter(interpreter):
            outputs = fun(*args)
    finally:
        interpreter.active = False
    values = [x.primal if interpreter.owns(x) else x for x in outputs]
    out_tangents = [x.tangent if interpreter.owns(x) else zeros(aval_of(x)) for x in outputs]
    return values, out_tangents

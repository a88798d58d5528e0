"""vmap as an interpreter: each value carries the axis its examples lie along (Autodidax's BatchTrace).

A BatchInterpreter sits on the interpreter that was current when it started. Each op applied
to its tracers goes to the primitive's entry in `core.batch_rules`, which computes the whole
batch with array ops bound in that previous interpreter (never a Python loop over examples):
under staging they are staged, under reverse mode differentiated, so `vmap(grad(loss))` gives
per-example gradients in one program. A BatchTracer's aval is one example's; its value has the
batch axis at position 0 (the rules keep it there). A value of another interpreter, a number
or an array is the same for every example (not batched).
"""
from __future__ import annotations

from typing import Callable

from .core import Interpreter, Tracer, aval_of, batch_rules, bind, check_alive, current_interpreter, set_interpreter
from .ir import Aval, Primitive
from .source_info import annotate, current_adjoint_of, current_source


class BatchTracer(Tracer):
    """A batch of values, one per example, stacked along axis 0 of `value`."""

    __slots__ = ("interpreter", "value")

    def __init__(self, interpreter: BatchInterpreter, value):
        self.interpreter = interpreter
        self.value = value

    @property
    def aval(self) -> Aval:
        batched = aval_of(self.value)
        return Aval(batched.shape[1:], batched.dtype)


class BatchInterpreter(Interpreter):
    """Computes each op for every example at once with the primitive's batching rule."""

    def __init__(self, prev_interpreter: Interpreter, size: int):
        self.prev_interpreter = prev_interpreter
        self.size = size

    def owns(self, value) -> bool:
        return isinstance(value, BatchTracer) and value.interpreter is self

    def interpret_op(self, primitive: Primitive, args: tuple, params: dict):
        values, batched = [], []
        for arg in args:
            if self.owns(arg):
                values.append(arg.value)
                batched.append(True)
            else:
                check_alive(arg)
                values.append(arg)
                batched.append(False)
        with set_interpreter(self.prev_interpreter), annotate(current_source(), current_adjoint_of()):
            if not any(batched):
                return bind(primitive, *values, **params)
            out, out_batched = batch_rules[primitive](values, batched, self.size, **params)
        if primitive.multiple_results:
            return [BatchTracer(self, o) if b else o for o, b in zip(out, out_batched)]
        return BatchTracer(self, out) if out_batched else out


def batch(fun: Callable, args: list, batched: list[bool], size: int) -> tuple[list, list[bool]]:
    """Run `fun(*args)` (giving a list) for a batch of `size` examples, in the current interpreter:
    `args[i]` holds every example along axis 0 where `batched[i]`, else one value for all. Returns
    the outputs and whether each is batched (axis 0) or the same for every example."""
    interpreter = BatchInterpreter(current_interpreter(), size)
    inputs = [BatchTracer(interpreter, a) if b else a for a, b in zip(args, batched)]
    try:
        with set_interpreter(interpreter):
            outputs = fun(*inputs)
    finally:
        interpreter.active = False
    return ([x.value if interpreter.owns(x) else x for x in outputs],
            [interpreter.owns(x) for x in outputs])

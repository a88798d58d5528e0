"""Reverse-mode AD as a Program → Program pass.

The adjoint is built by tracing: the forward ops are replayed into a new trace, then each
op's VJP rule is applied in reverse order on tracers, so the result is a Program like any
other: printable, compilable, and differentiable again.
"""
from __future__ import annotations

import numpy as np

from . import trace
from .core import Tracer, bind, vjp_rules
from .ir import Aval, ClosedProgram, Program, Var
from .source_info import annotate
from .passes import eliminate_dead_code
from .primitives import broadcast_to_p, reduce_sum_p, reshape_p
from .trace import read


def shape_of(value) -> tuple[int, ...]:
    return value.shape if isinstance(value, Tracer) else np.shape(value)


def sum_to_shape(cotangent, shape: tuple[int, ...]):
    """Undo broadcasting: sum a cotangent over the axes that broadcasting added or stretched."""
    cotangent_shape = shape_of(cotangent)
    if cotangent_shape == shape:
        return cotangent
    if np.broadcast_shapes(cotangent_shape, shape) == shape:  # a smaller cotangent covers the whole input
        return bind(broadcast_to_p, cotangent, shape=shape)
    lead = len(cotangent_shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and cotangent_shape[lead + i] != 1)
    summed = bind(reduce_sum_p, cotangent, axes=axes)
    return summed if shape_of(summed) == shape else bind(reshape_p, summed, shape=shape)


def zeros(aval: Aval):
    """The cotangent of a value no output depends on: a number, or a staged broadcast of one, never an array."""
    return 0.0 if aval.shape == () else bind(broadcast_to_p, 0.0, shape=aval.shape)


def depends_on(program: Program, sources) -> set[Var]:
    """The float Vars whose value depends on any of `sources` through differentiable ops."""
    active = {v for v in sources if v.aval.dtype == "f64"}
    for op in program.ops:
        if (op.primitive.differentiable and op.out.aval.dtype == "f64"
                and any(x in active for x in op.inputs if isinstance(x, Var))):
            active.add(op.out)
    return active


def as_numpy_float(value):
    """A Python float as np.float64, whose arithmetic gives inf and nan as compiled code does
    (1.0 / 0.0, 0.0 ** -1.0) where Python's raises; any other value unchanged."""
    return np.float64(value) if type(value) is float else value


def backward(program: Program, env: dict, output_cotangents, wrt: list[Var]) -> dict:
    """Apply the VJP rules in reverse, in the current trace or on NumPy values.

    Returns the cotangent of every Var that depends on `wrt` and reaches an output. A rule may
    compute on concrete numbers (a seed of 1.0, a literal operand): it does so with NumPy's
    float64 semantics, silently, as the compiled adjoint would.
    """
    active = depends_on(program, wrt)
    cotangents: dict[Var, object] = {}

    def accumulate(var: Var, cotangent) -> None:  # a value used twice gets the sum of both cotangents
        cotangents[var] = cotangents[var] + cotangent if var in cotangents else cotangent

    for out, cotangent in zip(program.outputs, output_cotangents):
        if cotangent is not None and out in active:
            accumulate(out, sum_to_shape(as_numpy_float(cotangent), out.aval.shape))
    with np.errstate(all="ignore"):
        for op in reversed(program.ops):
            g = cotangents.get(op.out)
            if g is None:
                continue
            inputs = [as_numpy_float(read(env, x)) for x in op.inputs]
            with annotate(op.source, op.primitive.name):  # the adjoint's ops say which op they differentiate
                input_cotangents = vjp_rules[op.primitive](g, env[op.out], *inputs, **op.param)
                for x, cotangent in zip(op.inputs, input_cotangents):
                    if cotangent is not None and x in active:
                        accumulate(x, sum_to_shape(cotangent, x.aval.shape))
    return cotangents


def vjp_program(traced: ClosedProgram, wrt: list[int], seed_first_output: bool) -> ClosedProgram:
    """The joint forward-and-adjoint program of `traced`.

    Inputs: the primal inputs, then (unless `seed_first_output`) one cotangent per output.
    Outputs: the primal outputs, then the cotangent of each input listed in `wrt`.
    With `seed_first_output`, the first output (a scalar) is seeded with 1.0: that is `grad`.
    """
    program = traced.program
    n_inputs = len(program.inputs)

    def joint(*args):
        primals, given = args[:n_inputs], args[n_inputs:]
        env = trace.replay(program, traced.consts, primals)
        seeds = [1.0] + [None] * (len(program.outputs) - 1) if seed_first_output else list(given)
        wrt_vars = [program.inputs[i] for i in wrt]
        cotangents = backward(program, env, seeds, wrt_vars)
        return [read(env, x) for x in program.outputs] + [cotangents.get(v, zeros(v.aval)) for v in wrt_vars]

    cotangent_avals = [] if seed_first_output else [Aval(x.aval.shape, "f64") for x in program.outputs]
    return trace.trace_flat(joint, [v.aval for v in program.inputs] + cotangent_avals)


def split_forward_backward(joint: ClosedProgram, n_primals: int, n_outputs: int) -> tuple[ClosedProgram, ClosedProgram]:
    """Split a joint program (primals, cotangents) -> (outputs, input cotangents) in two.

    forward: primals -> outputs + residuals; backward: residuals + cotangents -> input cotangents.
    The residuals are the forward values the backward ops read.
    """
    program = joint.program
    primals, cotangent_inputs = program.inputs[:n_primals], program.inputs[n_primals:]
    in_backward = set(cotangent_inputs)
    forward_ops, backward_ops = [], []
    for op in program.ops:
        if any(x in in_backward for x in op.inputs if isinstance(x, Var)):
            in_backward.add(op.out)
            backward_ops.append(op)
        else:
            forward_ops.append(op)
    backward_outputs = program.outputs[n_outputs:]
    needed = [x for op in backward_ops for x in op.inputs] + list(backward_outputs)
    constvars = set(program.constvars)
    residuals = list(dict.fromkeys(x for x in needed
                                   if isinstance(x, Var) and x not in in_backward and x not in constvars))
    forward = Program(program.constvars, primals, tuple(forward_ops), program.outputs[:n_outputs] + tuple(residuals))
    backward = Program(program.constvars, tuple(residuals) + cotangent_inputs, tuple(backward_ops),
                       backward_outputs)
    return (eliminate_dead_code(ClosedProgram(forward, joint.consts)),
            eliminate_dead_code(ClosedProgram(backward, joint.consts)))


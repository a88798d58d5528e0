"""Reverse mode as an interpreter.

A ReverseInterpreter sits on the interpreter that was current when it started, its
`prev_interpreter` (evaluation, staging, or another reverse interpreter). Each op applied to
its tracers is computed by that interpreter and recorded as a node of a tape; the backward
pass applies the VJP rules (`core.vjp_rules`) to the nodes in reverse, binding their ops in
the interpreter then current. So under staging the adjoint is staged into the program being
traced, next to the forward ops (`grad` inside `jit`), and under another reverse interpreter
it is differentiated again (`grad` of `grad`). A value of another interpreter (an enclosing
trace's value a function closes over) is a constant to this one: no cotangent flows to it.

A zero cotangent is never made: a value whose cotangent is zero has no entry in the backward
pass's table, and an input no output depends on gets a number, or a staged broadcast of one.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .core import (NUMPY_DTYPES, Interpreter, Tracer, aval_of, bind, check_alive, current_interpreter, eval_program,
                   forward_vjp_rules, read, set_interpreter, vjp_rules)
from .ir import FLOAT_DTYPES, Aval, ClosedProgram, Literal, Primitive, Program, Source, Var
from .passes import eliminate_dead_code
from .primitives import broadcast_to_p, convert, reduce_sum_p, reshape_p
from .source_info import annotate, current_adjoint_of, current_source
from .trace import trace_flat


class Node:
    """An op recorded on the tape (or an input, with no primitive): what its VJP rule reads.

    An op of several results (a loop) is one Node with a `backward` function (from its
    `forward_vjp_rules` entry) and one result Node per differentiated output, whose cotangents
    it reads.
    """

    __slots__ = ("primitive", "parents", "inputs", "out", "params", "source", "aval", "backward", "results")

    def __init__(self, primitive: Primitive | None, parents: tuple, inputs: tuple, out, params: dict,
                 source: Source | None):
        self.primitive = primitive
        self.parents = parents  # per input: its Node, or None for a constant to this differentiation
        self.inputs = inputs  # the inputs' values in the previous interpreter
        self.out = out
        self.params = params
        self.source = source
        self.aval = None if primitive is not None and primitive.multiple_results else aval_of(out)
        self.backward: Callable | None = None
        self.results: list[Node | None] = []


class ReverseTracer(Tracer):
    """A value under reverse mode: its value in the previous interpreter, and its node on the tape."""

    __slots__ = ("interpreter", "primal", "node")

    def __init__(self, interpreter: ReverseInterpreter, primal, node: Node):
        self.interpreter = interpreter
        self.primal = primal
        self.node = node

    aval = property(lambda self: self.node.aval)


class ReverseInterpreter(Interpreter):
    """Computes each op in the previous interpreter and records it on a tape, for `backward`."""

    def __init__(self, prev_interpreter: Interpreter):
        self.prev_interpreter = prev_interpreter
        self.tape: list[Node] = []

    def new_input(self, primal) -> ReverseTracer:
        return ReverseTracer(self, primal, Node(None, (), (), primal, {}, None))

    def owns(self, value) -> bool:
        return isinstance(value, ReverseTracer) and value.interpreter is self

    def primal(self, value):
        return value.primal if self.owns(value) else value

    def interpret_op(self, primitive: Primitive, args: tuple, params: dict):
        primals, parents = [], []
        for arg in args:
            if self.owns(arg):
                primals.append(arg.primal)
                parents.append(arg.node)
            else:  # a number, an array, or a value of another interpreter: a constant here
                check_alive(arg)
                primals.append(arg)
                parents.append(None)
        source = current_source()
        if primitive in forward_vjp_rules:
            return self.interpret_with_forward_vjp(primitive, primals, tuple(parents), params, source)
        with set_interpreter(self.prev_interpreter), annotate(source, current_adjoint_of()):
            out = bind(primitive, *primals, **params)
        if not primitive.differentiable or not any(parents) or aval_of(out).dtype not in FLOAT_DTYPES:
            return out  # a constant to this differentiation
        node = Node(primitive, tuple(parents), tuple(primals), out, params, source)
        self.tape.append(node)
        return ReverseTracer(self, out, node)

    def interpret_with_forward_vjp(self, primitive: Primitive, primals: list, parents: tuple, params: dict,
                                   source: Source | None) -> list:
        """An op whose forward computation keeps what its backward one needs (a loop): one node, one
        result node per float output."""
        differentiated = tuple(parent is not None for parent in parents)
        with set_interpreter(self.prev_interpreter), annotate(source, current_adjoint_of()):
            if any(differentiated):
                outs, backward = forward_vjp_rules[primitive](primals, differentiated, **params)
            else:
                outs, backward = bind(primitive, *primals, **params), None
        if backward is None:
            return outs
        node = Node(primitive, parents, tuple(primals), outs, params, source)
        node.backward = backward
        self.tape.append(node)
        results = []
        for out in outs:
            if aval_of(out).dtype in FLOAT_DTYPES:
                result = Node(None, (), (), out, {}, source)
                node.results.append(result)
                results.append(ReverseTracer(self, out, result))
            else:
                node.results.append(None)
                results.append(out)
        return results

    def backward(self, seeds: list[tuple[Node, object]]) -> dict[Node, object]:
        """The cotangent of every node the seeded outputs depend on, by the VJP rules in reverse order.

        The rules' ops are bound in the current interpreter. A rule may compute on numbers (the
        seed 1.0, a literal operand): it does so with NumPy's float64 semantics, silently, as
        the compiled adjoint would.
        """
        cotangents: dict[Node, object] = {}

        def accumulate(node: Node, cotangent) -> None:  # a value used twice gets the sum of both cotangents
            cotangent = in_dtype(sum_to_shape(cotangent, node.aval.shape), node.aval.dtype)
            cotangents[node] = cotangents[node] + cotangent if node in cotangents else cotangent

        for node, cotangent in seeds:
            accumulate(node, as_numpy_float(cotangent))
        with np.errstate(all="ignore"):
            for node in reversed(self.tape):
                if node.backward is not None:
                    g = [None if result is None else cotangents.get(result) for result in node.results]
                    if all(x is None for x in g):
                        continue
                else:
                    g = cotangents.get(node)
                    if g is None:
                        continue
                inputs = [as_numpy_float(x) for x in node.inputs]
                with annotate(node.source, node.primitive.name):  # the adjoint's ops say what they differentiate
                    if node.backward is not None:
                        input_cotangents = node.backward(g)
                    else:
                        input_cotangents = vjp_rules[node.primitive](g, as_numpy_float(node.out), *inputs,
                                                                     **node.params)
                    for parent, cotangent in zip(node.parents, input_cotangents):
                        if parent is not None and cotangent is not None:
                            accumulate(parent, cotangent)
        return cotangents


def vjp(fun: Callable, primals: list, wrt: list[int]) -> tuple[list, Callable]:
    """Run `fun(*primals)` (a list of values) under reverse mode, in the current interpreter.

    Returns its outputs and `pullback(output_cotangents)`, which gives the cotangent of
    `primals[i]` for each `i` in `wrt` (None for an output cotangent: no cotangent). The
    pullback binds its ops in the interpreter current when it is called.
    """
    interpreter = ReverseInterpreter(current_interpreter())
    args = list(primals)
    for i in wrt:
        args[i] = interpreter.new_input(primals[i])
    try:
        with set_interpreter(interpreter):
            outputs = fun(*args)
    finally:
        interpreter.active = False  # its tracers met later were leaked
    output_nodes = [x.node if interpreter.owns(x) else None for x in outputs]
    input_nodes = [args[i].node for i in wrt]

    def pullback(output_cotangents) -> list:
        seeds = [(node, cotangent) for node, cotangent in zip(output_nodes, output_cotangents)
                 if node is not None and cotangent is not None]
        cotangents = interpreter.backward(seeds)
        return [cotangents[node] if node in cotangents else zeros(node.aval) for node in input_nodes]

    return [interpreter.primal(x) for x in outputs], pullback


def vjp_program(closed: ClosedProgram, wrt: list[int]) -> ClosedProgram:
    """Reverse mode as a Program → Program pass: the joint forward-and-adjoint program of `closed`.

    Inputs: the primal inputs, then one cotangent per output. Outputs: the primal outputs, then
    the cotangent of each input listed in `wrt`.
    """
    program = closed.program
    n_inputs = len(program.inputs)

    def joint(*args):
        outputs, pullback = vjp(lambda *primals: evaluated_outputs(closed, primals), list(args[:n_inputs]), wrt)
        return outputs + pullback(args[n_inputs:])

    cotangent_avals = [cotangent_aval(x.aval) for x in program.outputs]
    return trace_flat(joint, [v.aval for v in program.inputs] + cotangent_avals)


def evaluated_outputs(closed: ClosedProgram, args) -> list:
    env = eval_program(closed, args)
    return [read(env, x) for x in closed.program.outputs]


def sum_to_shape(cotangent, shape: tuple[int, ...]):
    """Undo broadcasting: sum a cotangent over the axes that broadcasting added or stretched."""
    cotangent_shape = aval_of(cotangent).shape
    if cotangent_shape == shape:
        return cotangent
    if np.broadcast_shapes(cotangent_shape, shape) == shape:  # a smaller cotangent covers the whole input
        return bind(broadcast_to_p, cotangent, shape=shape)
    lead = len(cotangent_shape) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1 and cotangent_shape[lead + i] != 1)
    summed = bind(reduce_sum_p, cotangent, axes=axes)
    return summed if aval_of(summed).shape == shape else bind(reshape_p, summed, shape=shape)


def zeros(aval: Aval):
    """The cotangent of a value no output depends on: a number, or a staged broadcast of one, never an
    array; float32 for a float32 value, else float64."""
    zero = np.float32(0.0) if aval.dtype == "f32" else 0.0
    return zero if aval.shape == () else bind(broadcast_to_p, zero, shape=aval.shape)


def cotangent_aval(aval: Aval) -> Aval:
    """The type of a value's cotangent: its own for a float value (float32 stays float32), float64 otherwise."""
    return Aval(aval.shape, aval.dtype if aval.dtype in FLOAT_DTYPES else "f64")


def in_dtype(cotangent, dtype: str):
    """A cotangent in its value's float dtype, as JAX gives it: a float64 cotangent of a float32 value
    (from a product with a float64 constant) is converted, a Python number made a float32 number."""
    if dtype not in FLOAT_DTYPES or aval_of(cotangent).dtype == dtype:
        return cotangent
    if isinstance(cotangent, (float, int, np.generic)) and type(cotangent) is not bool:
        return NUMPY_DTYPES[dtype](cotangent)
    return convert(cotangent, dtype)


def as_numpy_float(value):
    """A Python float as np.float64, whose arithmetic gives inf and nan as compiled code does
    (1.0 / 0.0, 0.0 ** -1.0) where Python's raises; any other value unchanged."""
    return np.float64(value) if type(value) is float else value


def split_forward_backward(joint: ClosedProgram, n_primals: int, n_outputs: int) -> tuple[ClosedProgram, ClosedProgram]:
    """Split a joint program (primals, cotangents) -> (outputs, input cotangents) in two.

    forward: primals -> outputs + residuals; backward: residuals + cotangents -> input cotangents.
    The residuals are the forward values the backward ops read.
    """
    program = joint.program
    primals, cotangent_inputs = program.inputs[:n_primals], program.inputs[n_primals:]
    in_backward = set(cotangent_inputs)
    constant: set[Var] = set()  # made from literals only (a zero broadcast to a shape): computed where read
    forward_ops, backward_ops = [], []
    for op in program.ops:
        if all(isinstance(x, Literal) or x in constant for x in op.inputs) and not op.sub_programs():
            constant.update(op.outs)
            forward_ops.append(op)
            backward_ops.append(op)
        elif any(x in in_backward for x in op.inputs if isinstance(x, Var)):
            in_backward.update(op.outs)
            backward_ops.append(op)
        else:
            forward_ops.append(op)
    backward_outputs = program.outputs[n_outputs:]
    needed = [x for op in backward_ops for x in op.inputs] + list(backward_outputs)
    constvars = set(program.constvars)
    residuals = list(dict.fromkeys(x for x in needed if isinstance(x, Var) and x not in in_backward
                                   and x not in constvars and x not in constant))
    forward = Program(program.constvars, primals, tuple(forward_ops), program.outputs[:n_outputs] + tuple(residuals))
    backward = Program(program.constvars, tuple(residuals) + cotangent_inputs, tuple(backward_ops),
                       backward_outputs)
    return (eliminate_dead_code(ClosedProgram(forward, joint.consts)),
            eliminate_dead_code(ClosedProgram(backward, joint.consts)))

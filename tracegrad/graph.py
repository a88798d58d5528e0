"""Pictures of programs: micrograd's `draw_dot` view, with data and gradient on every value.

`tg.to_dot(fun)(*args)` gives Graphviz DOT text; `tg.draw(fun, "graph.svg")(*args)` renders
it with the `graphviz` package (and Graphviz's `dot` program).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import ad
from .api import Signature, trace_function
from .core import aval_of, current_interpreter, eval_program, read, set_interpreter
from .ir import Aval, ClosedProgram, Namer, Var


def summary(value) -> str:
    """A value in a few characters: the number, a short vector, or shape and mean."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return f"{float(array):.4f}"
    if array.size <= 4:
        return "[" + ", ".join(f"{x:.4f}" for x in array.ravel()) + "]"
    return f"mean {array.mean():.4f}"


def escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("{", "\\{").replace("}", "\\}") \
        .replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


def values_and_gradients(closed: ClosedProgram, leaves: list) -> tuple[dict, dict]:
    """Every Var's value, and, for a float scalar output, every Var's gradient (empty if none has one).

    The program is evaluated under reverse mode, so each value is a node of its tape."""
    program = closed.program
    interpreter = ad.ReverseInterpreter(current_interpreter())
    inputs = [interpreter.new_input(x) if aval_of(x).dtype == "f64" else x for x in leaves]
    with set_interpreter(interpreter):
        env = eval_program(closed, inputs)
    values = {var: interpreter.primal(value) for var, value in env.items()}
    (output, *others) = [read(env, x) for x in program.outputs] or [None]
    if others or not interpreter.owns(output) or output.aval != Aval(()):
        return values, {}
    cotangents = interpreter.backward([(output.node, 1.0)])
    return values, {var: cotangents[value.node] for var, value in env.items()
                    if interpreter.owns(value) and value.node in cotangents}


def to_dot(fun: Callable) -> Callable[..., str]:
    """A function giving the DOT text of `fun` traced on its arguments.

    Each value is a record node with its name, type, forward value and (when `fun` returns
    a float scalar) the gradient of the output with respect to it; each op is an oval node.
    """

    def dot(*args) -> str:
        signature = Signature.of(args)
        traced, _ = trace_function(fun, (), signature)
        program = traced.program
        leaves = [float(x) if isinstance(x, int) else x for x in signature.leaves]
        values, gradients = values_and_gradients(traced, leaves)
        name = Namer.of(program)
        lines = ["digraph program {", "  rankdir=LR;", '  node [fontname="monospace"];']

        def value_node(var: Var) -> str:
            fields = [f"{name(var)}: {var.aval}", f"data {summary(values[var])}"]
            if gradients:
                fields.append(f"grad {summary(gradients.get(var, np.zeros(var.aval.shape)))}")
            lines.append(f'  {name(var)} [shape=record, label="{{ {" | ".join(map(escape, fields))} }}"];')
            return name(var)

        for var in program.constvars + program.inputs:
            value_node(var)
        for index, op in enumerate(program.ops):
            sub_programs = {key.split("[")[0] for key, _ in op.sub_programs()}
            params = ",".join(f"{k}=<{len(v.ops) if k == 'body' else '...'} ops>" if k in sub_programs else f"{k}={v}"
                              for k, v in op.params)
            label = " ".join([op.primitive.name + (f"[{params}]" if params else "")] + [name(x) for x in op.inputs])
            lines.append(f'  op{index} [shape=oval, label="{escape(label)}"];')
            for x in op.inputs:
                if isinstance(x, Var):
                    lines.append(f"  {name(x)} -> op{index};")
            for out in op.outs:  # a loop gives one value per carry and per stacked output
                lines.append(f"  op{index} -> {value_node(out)};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    return dot


def draw(fun: Callable, filename: str = "graph.svg") -> Callable[..., str]:
    """A function that renders `fun`'s program on its arguments to `filename` (.svg or .png).

    Needs the `graphviz` Python package and Graphviz's `dot` program.
    """

    def render(*args) -> str:
        try:
            import graphviz
        except ImportError:
            raise ImportError("tg.draw needs the graphviz package: pip install graphviz "
                              "(and Graphviz itself, e.g. apt-get install graphviz); "
                              "tg.to_dot(fun)(*args) gives the DOT text without it") from None
        extension = filename.rpartition(".")[2]
        if extension not in ("svg", "png"):
            raise ValueError(f"draw writes .svg or .png files, not {filename!r}")
        return graphviz.Source(to_dot(fun)(*args)).render(outfile=filename, format=extension, cleanup=True)

    return render

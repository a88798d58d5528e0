"""Program → Program passes that keep what a program computes."""
from __future__ import annotations

import attrs

from .ir import Var
from .trace import Traced


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

"""Custom derivative rules: `tg.custom_vjp` and `tg.custom_jvp`, with JAX's signatures.

    @tg.custom_vjp
    def f(x, y): ...                      # the function, for values
    def f_fwd(x, y): return f(x, y), residuals
    def f_bwd(residuals, g): return (cotangent of x, cotangent of y)
    f.defvjp(f_fwd, f_bwd)

A call of `f` is one `custom_vjp_call` op holding `f`'s program (traced once per signature,
closed over like a loop's body) and the rule. Every interpreter but reverse mode reads the
program (evaluation, staging, forward mode, vmap; the code generator writes its statements
inline); reverse mode calls `f_fwd` instead, keeps its residuals, and runs `f_bwd` backwards,
both in the interpreters below it, so `grad` of `grad` differentiates them in turn.

    @tg.custom_jvp
    def g(x): ...
    @g.defjvp
    def g_jvp(primals, tangents): return g(*primals), tangent_out

Forward mode calls `g_jvp`. Reverse mode needs the transpose of `g_jvp`'s tangent, a linear
function of the tangents: it is reverse mode of that function (its VJP at zero tangents), as
JAX's linearize-and-transpose gives.
"""
from __future__ import annotations

import functools
from typing import Callable

from .ad import evaluated_outputs, vjp, zeros
from .batching import batch
from .control_flow import closed_program, depends_on, jvp_of_program
from .core import Tracer, abstract_eval_rules, aval_of, batch_rules, bind, forward_vjp_rules, impl_rules, jvp_rules
from .errors import TreeStructureError
from .ir import ClosedProgram, Primitive, Program
from .primitives import optimization_barrier_p
from .source_info import user_source, where_text
from .tree import TreeDef, tree_flatten, tree_unflatten

custom_vjp_call_p = Primitive("custom_vjp_call", multiple_results=True)


def traced_call(fun: Callable, args: tuple) -> tuple[Program, tuple, list, TreeDef, TreeDef]:
    """`fun` traced once on `args`, closed over like a loop's body (the values it closes over are
    the op's first inputs): its program, those values, the arguments' leaves and structure, and
    the output's structure."""
    leaves, in_tree = tree_flatten(args)
    found = {}

    def flat_fun(*values):
        out_leaves, found["tree"] = tree_flatten(fun(*tree_unflatten(in_tree, values)))
        return out_leaves

    program, consts = closed_program(flat_fun, [aval_of(leaf) for leaf in leaves])
    return program, consts, leaves, in_tree, found["tree"]


class custom_vjp:
    """A function whose reverse-mode derivative is given by `defvjp(fwd, bwd)` (see the module)."""

    def __init__(self, fun: Callable):
        self.fun = fun
        self.fwd: Callable | None = None
        self.bwd: Callable | None = None
        functools.update_wrapper(self, fun)

    def defvjp(self, fwd: Callable, bwd: Callable) -> None:
        """`fwd(*args) -> (output, residuals)` and `bwd(residuals, output cotangent) -> one cotangent per argument`."""
        self.fwd, self.bwd = fwd, bwd

    def __repr__(self) -> str:
        return getattr(self.fun, "__name__", "custom_vjp")

    def __call__(self, *args):
        if self.fwd is None:
            raise TypeError(f"{self!r} is a tg.custom_vjp function without its rule: call {self!r}.defvjp(fwd, bwd) "
                            f"before calling it (at {where_text(user_source())})")
        program, consts, leaves, in_tree, out_tree = traced_call(self.fun, args)
        outs = bind(custom_vjp_call_p, *consts, *leaves, body=program, num_consts=len(consts), rule=self, in_tree=in_tree,
                    out_tree=out_tree)
        return tree_unflatten(out_tree, outs)


def body_outputs(args, body: Program):
    return evaluated_outputs(ClosedProgram(body, ()), list(args))


def custom_vjp_forward(primals, differentiated, *, body: Program, num_consts: int, rule: custom_vjp, in_tree: TreeDef,
                       out_tree: TreeDef):
    """Reverse mode: the user's fwd for the output and residuals, their bwd for the cotangents."""
    args = tree_unflatten(in_tree, primals[num_consts:])
    result = rule.fwd(*args)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{rule!r}'s fwd must return a pair (output, residuals) (at {where_text(user_source())})")
    out, residuals = result
    out_leaves, fwd_tree = tree_flatten(out)
    if fwd_tree != out_tree:
        raise TreeStructureError(f"{rule!r}'s fwd returns an output of structure {fwd_tree}, the function "
                                 f"{out_tree} (at {where_text(user_source())})")

    def pullback(cotangents):
        given = [g if g is not None else zeros(aval_of(out)) for g, out in zip(cotangents, out_leaves)]
        input_cotangents = rule.bwd(residuals, tree_unflatten(out_tree, given))
        if not isinstance(input_cotangents, tuple) or len(input_cotangents) != len(args):
            raise TypeError(f"{rule!r}'s bwd must return a tuple with one cotangent per argument ({len(args)}) "
                            f"(at {where_text(user_source())})")
        leaves, tree = tree_flatten(input_cotangents)
        if tree != in_tree:
            raise TreeStructureError(f"{rule!r}'s bwd returns cotangents of structure {tree} for arguments "
                                     f"{in_tree} (at {where_text(user_source())})")
        return [None] * num_consts + leaves

    return out_leaves, pullback


def custom_vjp_jvp(primals, tangents, *, body: Program, num_consts: int, **params):
    """Forward mode differentiates the function itself (the rule is for reverse mode)."""
    flags = [t is not None and aval_of(p).dtype in ("f32", "f64") for p, t in zip(primals, tangents)]
    outs = jvp_of_program(body, flags)(*primals, *[t for t, f in zip(tangents, flags) if f])
    found = iter(outs[len(body.outputs):])
    return outs[:len(body.outputs)], [next(found) if reached else None for reached in depends_on(body, flags)]


def custom_vjp_batch(values, batched, size, *, body: Program, num_consts: int, **params):
    """vmap runs the function's program on the batch (its reverse-mode rule is not batched)."""
    outs, out_batched = batch(lambda *args: body_outputs(args, body), list(values), list(batched), size)
    return outs, out_batched


abstract_eval_rules[custom_vjp_call_p] = lambda *avals, body, **params: tuple(x.aval for x in body.outputs)
impl_rules[custom_vjp_call_p] = lambda *args, body, **params: body_outputs(args, body)
forward_vjp_rules[custom_vjp_call_p] = custom_vjp_forward
jvp_rules[custom_vjp_call_p] = custom_vjp_jvp
batch_rules[custom_vjp_call_p] = custom_vjp_batch


custom_jvp_call_p = Primitive("custom_jvp_call", multiple_results=True)


class custom_jvp:
    """A function whose derivative is given by `defjvp(jvp)` (see the module)."""

    def __init__(self, fun: Callable):
        self.fun = fun
        self.jvp: Callable | None = None
        functools.update_wrapper(self, fun)

    def defjvp(self, jvp: Callable) -> Callable:
        """`jvp(primals, tangents) -> (output, tangent of the output)`; returns `jvp`, so it decorates."""
        self.jvp = jvp
        return jvp

    def __repr__(self) -> str:
        return getattr(self.fun, "__name__", "custom_jvp")

    def __call__(self, *args):
        if self.jvp is None:
            raise TypeError(f"{self!r} is a tg.custom_jvp function without its rule: decorate its JVP with "
                            f"@{self!r}.defjvp before calling it (at {where_text(user_source())})")
        program, consts, leaves, in_tree, out_tree = traced_call(self.fun, args)
        outs = bind(custom_jvp_call_p, *consts, *leaves, body=program, num_consts=len(consts), rule=self, in_tree=in_tree,
                    out_tree=out_tree)
        return tree_unflatten(out_tree, outs)


def user_jvp(rule: custom_jvp, primals: list, tangents: list, in_tree: TreeDef, out_tree: TreeDef) -> tuple[list, list]:
    """The user's JVP on flat leaves (None tangents as zeros): flat outputs and flat output tangents."""
    given = [t if t is not None else zeros(aval_of(p)) for p, t in zip(primals, tangents)]
    result = rule.jvp(tuple(tree_unflatten(in_tree, primals)), tuple(tree_unflatten(in_tree, given)))
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"{rule!r}'s jvp must return a pair (output, tangent of the output) "
                        f"(at {where_text(user_source())})")
    out, tangent = result
    out_leaves, tree = tree_flatten(out)
    tangent_leaves, tangent_tree = tree_flatten(tangent)
    if tree != out_tree or tangent_tree != out_tree:
        raise TreeStructureError(f"{rule!r}'s jvp returns an output of structure {tree} and a tangent of "
                                 f"structure {tangent_tree}, the function {out_tree} (at {where_text(user_source())})")
    return out_leaves, tangent_leaves


def custom_jvp_jvp(primals, tangents, *, body: Program, num_consts: int, rule: custom_jvp, in_tree: TreeDef,
                   out_tree: TreeDef):
    return user_jvp(rule, list(primals[num_consts:]), list(tangents[num_consts:]), in_tree, out_tree)


def custom_jvp_forward(primals, differentiated, *, body: Program, num_consts: int, rule: custom_jvp,
                       in_tree: TreeDef, out_tree: TreeDef):
    """Reverse mode: the output, and the transpose of the JVP's tangent map (its VJP at zero tangents)."""
    args = list(primals[num_consts:])
    outs = body_outputs(primals, body)
    wrt = [i for i, flag in enumerate(differentiated[num_consts:]) if flag]

    def tangent_map(*tangents):
        return user_jvp(rule, args, list(tangents), in_tree, out_tree)[1]

    def pullback(cotangents):
        given = [g if g is not None else zeros(aval_of(out)) for g, out in zip(cotangents, outs)]
        _, transpose = vjp(tangent_map, [zeros(aval_of(a)) for a in args], wrt)
        found = dict(zip(wrt, transpose(given)))
        return [None] * num_consts + [found.get(i) for i in range(len(args))]

    return outs, pullback


abstract_eval_rules[custom_jvp_call_p] = lambda *avals, body, **params: tuple(x.aval for x in body.outputs)
impl_rules[custom_jvp_call_p] = lambda *args, body, **params: body_outputs(args, body)
forward_vjp_rules[custom_jvp_call_p] = custom_jvp_forward
jvp_rules[custom_jvp_call_p] = custom_jvp_jvp
batch_rules[custom_jvp_call_p] = custom_vjp_batch


# -- checkpoint ------------------------------------------------------------------------------

checkpoint_call_p = Primitive("checkpoint_call", multiple_results=True)


def checkpoint(fun: Callable) -> Callable:
    """`fun`, with reverse mode storing only its arguments and computing its values again in the
    backward pass (`jax.checkpoint`, also called remat): memory traded for one more forward pass."""

    @functools.wraps(fun)
    def recomputed(*args):
        program, consts, leaves, _, out_tree = traced_call(fun, args)
        outs = bind(checkpoint_call_p, *consts, *leaves, body=program, num_consts=len(consts))
        return tree_unflatten(out_tree, outs)

    return recomputed


def checkpoint_forward(primals, differentiated, *, body: Program, num_consts: int):
    """Reverse mode: the outputs now; the body again under reverse mode when the cotangents come."""
    wrt = [i for i, flag in enumerate(differentiated) if flag]

    def pullback(cotangents):  # the arguments through a barrier, so no pass merges the recomputation away
        again = [bind(optimization_barrier_p, x) if i in wrt or isinstance(x, Tracer) else x for i, x in enumerate(primals)]
        _, recomputed_pullback = vjp(lambda *args: body_outputs(args, body), again, wrt)
        found = dict(zip(wrt, recomputed_pullback(list(cotangents))))
        return [found.get(i) for i in range(len(primals))]

    return body_outputs(primals, body), pullback


def checkpoint_jvp(primals, tangents, *, body: Program, num_consts: int):
    return custom_vjp_jvp(primals, tangents, body=body, num_consts=num_consts)


abstract_eval_rules[checkpoint_call_p] = lambda *avals, body, **params: tuple(x.aval for x in body.outputs)
impl_rules[checkpoint_call_p] = lambda *args, body, **params: body_outputs(args, body)
forward_vjp_rules[checkpoint_call_p] = checkpoint_forward
jvp_rules[checkpoint_call_p] = checkpoint_jvp
batch_rules[checkpoint_call_p] = custom_vjp_batch

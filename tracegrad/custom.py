"""Custom derivative rules: `tg.custom_vjp` and `tg.custom_jvp`, with JAX's signatures.

    @tg.custom_vjp
    def f(x, y): ...                      # the function, for values
    def f_fwd(x, y): return f(x, y), residuals
    def f_bwd(residuals, g): return (cotangent of x, cotangent of y)
    f.defvjp(f_fwd, f_bwd)

A call of `f` is one `custom_vjp_call` op holding `f`'s program (traced once per signature,
closed over like a loop's body) and the rule. Evaluation and staging read the program (the code
generator writes its statements inline); reverse mode calls `f_fwd` instead, keeps its
residuals, and runs `f_bwd` backwards, both in the interpreters below it, so `grad` of `grad`
differentiates them in turn. Forward mode uses the rule too: `f_bwd` is linear in the
cotangent, and its transpose is the JVP. vmap keeps the rule, batched: a custom_vjp op of the
batch whose fwd and bwd run the user's on every example.

    @tg.custom_jvp
    def g(x): ...
    @g.defjvp
    def g_jvp(primals, tangents): return g(*primals), tangent_out

Forward mode calls `g_jvp`. Reverse mode needs the transpose of `g_jvp`'s tangent, a linear
function of the tangents: it is reverse mode of that function (its VJP at zero tangents), as
JAX's linearize-and-transpose gives. vmap keeps the rule, batched, as for custom_vjp.
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
from .primitives import broadcast_to_p, optimization_barrier_p, reduce_sum_p
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


def custom_vjp_jvp(primals, tangents, *, body: Program, num_consts: int, rule: custom_vjp, in_tree: TreeDef,
                   out_tree: TreeDef):
    """Forward mode from the rule too: `bwd` is linear in the output's cotangent, g -> J^T g, and its
    transpose (reverse mode of that linear map, at a zero cotangent) is t -> J t, the JVP. (JAX
    refuses forward mode of a custom_vjp function; this keeps the rule's numbers, e.g. a stable
    gradient where the function's own formula overflows.)"""
    args, arg_tangents = list(primals[num_consts:]), list(tangents[num_consts:])
    out_leaves, pullback = custom_vjp_forward(primals, [False] * len(primals), body=body, num_consts=num_consts,
                                              rule=rule, in_tree=in_tree, out_tree=out_tree)
    if all(t is None for t in arg_tangents):
        return out_leaves, [None] * len(out_leaves)

    def cotangent_map(*cotangents):
        return [c if c is not None else zeros(aval_of(a)) for c, a in zip(pullback(list(cotangents))[num_consts:], args)]

    _, transpose = vjp(cotangent_map, [zeros(aval_of(out)) for out in out_leaves], list(range(len(out_leaves))))
    given = [t if t is not None else zeros(aval_of(a)) for t, a in zip(arg_tangents, args)]
    return out_leaves, transpose(given)


def program_jvp(primals, tangents, *, body: Program, num_consts: int):
    """Forward mode of the body's program (a checkpoint's, which has no rule of its own)."""
    flags = [t is not None and aval_of(p).dtype in ("f32", "f64") for p, t in zip(primals, tangents)]
    outs = jvp_of_program(body, flags)(*primals, *[t for t, f in zip(tangents, flags) if f])
    found = iter(outs[len(body.outputs):])
    return outs[:len(body.outputs)], [next(found) if reached else None for reached in depends_on(body, flags)]


def program_batch(values, batched, size, *, body: Program, num_consts: int):
    """vmap of the body's program (a checkpoint's)."""
    return batch(lambda *args: body_outputs(args, body), list(values), list(batched), size)


def every_example(fun: Callable, leaves: list, batched: list[bool], size: int) -> list:
    """`fun` (leaves -> leaves) for a batch, every output with the batch axis (repeated where it is
    the same for every example), so a rule's values line up whatever each one depends on."""
    outs, out_batched = batch(fun, list(leaves), list(batched), size)
    return [out if b else bind(broadcast_to_p, out, shape=(size,) + aval_of(out).shape)
            for out, b in zip(outs, out_batched)]


def batched_call(values, batched, size, body: Program, num_consts: int, in_tree: TreeDef, out_tree: TreeDef):
    """The pieces of a custom function's batch rule: its arguments' leaves, which are batched, and
    the function itself for the batch."""
    if any(batched[:num_consts]):
        raise TypeError(f"vmap of a custom-derivative function that closes over a mapped value "
                        f"(at {where_text(user_source())}): pass the value as an argument of the function")
    consts, args, flags = list(values[:num_consts]), list(values[num_consts:]), list(batched[num_consts:])

    def batch_fun(*tree_args):
        leaves = tree_flatten(tree_args)[0]
        outs = every_example(lambda *example: body_outputs(consts + list(example), body), leaves, flags, size)
        return tree_unflatten(out_tree, outs)

    return args, flags, batch_fun


def custom_vjp_batch(values, batched, size, *, body: Program, num_consts: int, rule: custom_vjp, in_tree: TreeDef,
                     out_tree: TreeDef):
    """vmap keeps the rule: a custom_vjp of the batch whose fwd and bwd are the user's, batched. An
    argument the batch shares gets the sum of the examples' cotangents."""
    args, flags, batch_fun = batched_call(values, batched, size, body, num_consts, in_tree, out_tree)
    found = {}

    def fwd(*tree_args):
        def per_example(*leaves):
            out, residuals = rule.fwd(*tree_unflatten(in_tree, leaves))
            out_leaves, _ = tree_flatten(out)
            residual_leaves, found["residuals"] = tree_flatten(residuals)
            found["outputs"] = len(out_leaves)
            return out_leaves + residual_leaves
        results = every_example(per_example, tree_flatten(tree_args)[0], flags, size)
        n = found["outputs"]
        return tree_unflatten(out_tree, results[:n]), tree_unflatten(found["residuals"], results[n:])

    def bwd(residuals, cotangent):
        residual_leaves, residual_tree = tree_flatten(residuals)
        leaves = residual_leaves + tree_flatten(cotangent)[0]

        def per_example(*example):
            given = rule.bwd(tree_unflatten(residual_tree, example[:len(residual_leaves)]),
                             tree_unflatten(out_tree, example[len(residual_leaves):]))
            return tree_flatten(given)[0]
        cotangents = every_example(per_example, leaves, [True] * len(leaves), size)
        cotangents = [c if c is None or mapped else bind(reduce_sum_p, c, axes=(0,)) for c, mapped in zip(cotangents, flags)]
        return tuple(tree_unflatten(in_tree, cotangents))

    batched_rule = custom_vjp(batch_fun)
    batched_rule.defvjp(fwd, bwd)
    outs = tree_flatten(batched_rule(*tree_unflatten(in_tree, args)))[0]
    return outs, [True] * len(outs)


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


def custom_jvp_batch(values, batched, size, *, body: Program, num_consts: int, rule: custom_jvp, in_tree: TreeDef,
                     out_tree: TreeDef):
    """vmap keeps the rule: a custom_jvp of the batch whose jvp is the user's, batched (a tangent is
    batched where its primal is)."""
    args, flags, batch_fun = batched_call(values, batched, size, body, num_consts, in_tree, out_tree)
    batched_rule = custom_jvp(batch_fun)

    @batched_rule.defjvp
    def batched_jvp(primals, tangents):
        primal_leaves, tangent_leaves = tree_flatten(primals)[0], tree_flatten(tangents)[0]
        n_primals = len(primal_leaves)

        def per_example(*example):
            outs, out_tangents = user_jvp(rule, list(example[:n_primals]), list(example[n_primals:]), in_tree, out_tree)
            return outs + out_tangents
        outs = every_example(per_example, primal_leaves + tangent_leaves, flags + flags, size)
        n = len(outs) // 2
        return tree_unflatten(out_tree, outs[:n]), tree_unflatten(out_tree, outs[n:])

    outs = tree_flatten(batched_rule(*tree_unflatten(in_tree, args)))[0]
    return outs, [True] * len(outs)


abstract_eval_rules[custom_jvp_call_p] = lambda *avals, body, **params: tuple(x.aval for x in body.outputs)
impl_rules[custom_jvp_call_p] = lambda *args, body, **params: body_outputs(args, body)
forward_vjp_rules[custom_jvp_call_p] = custom_jvp_forward
jvp_rules[custom_jvp_call_p] = custom_jvp_jvp
batch_rules[custom_jvp_call_p] = custom_jvp_batch


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


abstract_eval_rules[checkpoint_call_p] = lambda *avals, body, **params: tuple(x.aval for x in body.outputs)
impl_rules[checkpoint_call_p] = lambda *args, body, **params: body_outputs(args, body)
forward_vjp_rules[checkpoint_call_p] = checkpoint_forward
jvp_rules[checkpoint_call_p] = program_jvp
batch_rules[checkpoint_call_p] = program_batch

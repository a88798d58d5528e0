"""Minimal pytrees (tuples, lists, dicts by sorted key) shared by the adapters and the checks."""
from __future__ import annotations

from typing import Any, Callable


def leaves(tree) -> list:
    """The leaves of nested tuples, lists and dicts, in order (dicts by sorted key)."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in leaves(item)]
    return [tree]


def tree_map(fn: Callable, tree, *rest):
    """fn applied leaf by leaf to trees of one structure."""
    if isinstance(tree, dict):
        return {key: tree_map(fn, tree[key], *(other[key] for other in rest)) for key in tree}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, *children) for children in zip(tree, *rest))
    return fn(tree, *rest)


def unflatten_like(tree, new_leaves: list):
    """A tree shaped like `tree` with `new_leaves` (in `leaves` order) in its place."""
    remaining = iter(new_leaves)

    def rebuild(node):
        if isinstance(node, dict):
            return {key: rebuild(node[key]) for key in sorted(node)}
        if isinstance(node, (list, tuple)):
            return type(node)(rebuild(child) for child in node)
        return next(remaining)

    return rebuild(tree)


def differentiated(args: tuple, argnums) -> Any:
    """The part of `args` that a gradient is taken with respect to (a tuple for tuple argnums)."""
    return tuple(args[i] for i in argnums) if isinstance(argnums, tuple) else args[argnums]


def with_differentiated(args: tuple, argnums, new) -> tuple:
    """`args` with the differentiated part replaced by `new`."""
    replaced = list(args)
    for i, value in zip(argnums, new) if isinstance(argnums, tuple) else [(argnums, new)]:
        replaced[i] = value
    return tuple(replaced)

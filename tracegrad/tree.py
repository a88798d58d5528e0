"""Pytrees: nested tuples, lists, dicts, None, dataclasses, attrs classes and registered classes
over leaves (floats, ints, arrays).

`register_pytree_node(cls, flatten, unflatten)` teaches tracegrad a class, as in JAX:
`flatten(obj) -> (children, aux)` and `unflatten(aux, children) -> obj`, where `aux` (hashable)
is what is not a child. Dataclasses and attrs classes need no registration: their fields are
their children, in order.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import attrs
import numpy as np

from .errors import TreeStructureError
from .source_info import user_source, where_text

LEAF = None  # the structure of a leaf


@attrs.frozen
class TreeDef:
    """The structure of a pytree without its leaves; hashable, so it can key a cache."""

    structure: Any
    num_leaves: int

    def __repr__(self) -> str:
        return f"TreeDef({show(self.structure)})"


def show(structure) -> str:
    if structure is LEAF:
        return "*"
    kind, keys, children = structure
    if kind is type(None):
        return "None"
    if kind is dict:
        return "{" + ", ".join(f"{k!r}: {show(c)}" for k, c in zip(keys, children)) + "}"
    inner = ", ".join(show(c) for c in children)
    return f"[{inner}]" if kind is list else f"({inner}{',' if len(children) == 1 else ''})" if kind is tuple \
        else f"{kind.__name__}({inner})"


def dict_keys(node: dict) -> tuple:
    try:
        return tuple(sorted(node))
    except TypeError:  # keys that do not sort keep their order
        return tuple(node)


@attrs.frozen
class NodeType:
    """How a registered class (or a dataclass, an attrs class) splits into children and rebuilds."""

    flatten: Callable[[Any], tuple]  # obj -> (children, aux)
    unflatten: Callable[[Any, list], Any]  # (aux, children) -> obj


registered: dict[type, NodeType] = {}


def register_pytree_node(cls: type, flatten: Callable[[Any], tuple], unflatten: Callable[[Any, list], Any]) -> None:
    """Make instances of `cls` pytree nodes: `flatten(obj) -> (children, aux)` (aux hashable, the
    rest of the object), `unflatten(aux, children) -> obj`, as `jax.tree_util.register_pytree_node`."""
    registered[cls] = NodeType(flatten, unflatten)


def node_type(kind: type) -> NodeType | None:
    """The registered NodeType of `kind`, or one made for a dataclass or an attrs class (its fields)."""
    found = registered.get(kind)
    if found is None and (dataclasses.is_dataclass(kind) or attrs.has(kind)):
        if dataclasses.is_dataclass(kind):
            names = arguments = tuple(f.name for f in dataclasses.fields(kind))
        else:  # an attrs field `_x` is the argument `x`
            names = tuple(f.name for f in attrs.fields(kind))
            arguments = tuple(getattr(f, "alias", None) or f.name.lstrip("_") for f in attrs.fields(kind))
        found = registered[kind] = NodeType(lambda obj: ([getattr(obj, name) for name in names], None),
                                            lambda aux, children: kind(**dict(zip(arguments, children))))
    return found


def flatten_into(node, leaves: list, describe_leaf: Callable = lambda leaf: LEAF):
    """Append the leaves of `node` to `leaves`; return its structure, each leaf marked by `describe_leaf`."""
    kind = type(node)
    if kind is float or kind is np.ndarray:  # the common leaves first: this runs on every call
        leaves.append(node)
        return describe_leaf(node)
    if kind is tuple or kind is list or (isinstance(node, tuple) and hasattr(node, "_fields")):
        return kind, None, tuple([flatten_into(child, leaves, describe_leaf) for child in node])
    if kind is dict:
        keys = dict_keys(node)
        return kind, keys, tuple([flatten_into(node[k], leaves, describe_leaf) for k in keys])
    if node is None:
        return kind, None, ()
    custom = node_type(kind) if kind not in LEAF_TYPES else None
    if custom is not None:
        children, aux = custom.flatten(node)
        return kind, ("node", aux), tuple([flatten_into(child, leaves, describe_leaf) for child in children])
    leaves.append(node)
    return describe_leaf(node)


LEAF_TYPES = frozenset({int, bool, np.float64, np.int64, np.bool_})


def tree_flatten(tree) -> tuple[list, TreeDef]:
    """The leaves of `tree` in order, and its structure."""
    leaves: list = []
    structure = flatten_into(tree, leaves)
    return leaves, TreeDef(structure, len(leaves))


def build(structure, leaves):
    if structure is LEAF:
        return next(leaves)
    kind, keys, children = structure
    if kind is type(None):
        return None
    values = [build(child, leaves) for child in children]
    if kind is dict:
        return dict(zip(keys, values))
    if kind is tuple or kind is list:
        return kind(values)
    if keys is not None:  # ("node", aux): a registered class, a dataclass or an attrs class
        return node_type(kind).unflatten(keys[1], values)
    return kind(*values)  # a namedtuple


def tree_unflatten(treedef: TreeDef, leaves) -> Any:
    """The pytree of structure `treedef` holding `leaves`."""
    leaves = list(leaves)
    if len(leaves) != treedef.num_leaves:
        raise ValueError(f"{treedef} has {treedef.num_leaves} leaves, got {len(leaves)}")
    return build(treedef.structure, iter(leaves))


def tree_leaves(tree) -> list:
    return tree_flatten(tree)[0]


def tree_map(f: Callable, tree, *rest) -> Any:
    """Apply `f` leafwise over pytrees of the same structure, giving a pytree of that structure."""
    leaves, treedef = tree_flatten(tree)
    others = [tree_flatten(r) for r in rest]
    for _, other_def in others:
        if other_def != treedef:
            raise TreeStructureError(f"tree_map: pytree structures differ: {treedef} and {other_def} "
                                     f"(at {where_text(user_source())}); map over trees of one structure")
    return tree_unflatten(treedef, [f(*xs) for xs in zip(leaves, *(o[0] for o in others))])


def unflattener(treedef: TreeDef) -> Callable[[tuple], Any]:
    """A fast `leaves -> pytree` for one structure, generated as a Python expression."""
    if treedef.structure is LEAF:
        return lambda leaves: leaves[0]
    if treedef.structure == (tuple, None, (LEAF,) * treedef.num_leaves):
        return tuple  # compiled code already returns a tuple
    found = unflatten_expression(treedef, "leaves")
    if found is not None:
        text, namespace = found
        return eval(f"lambda leaves: {text}", namespace)
    return lambda leaves: tree_unflatten(treedef, leaves)


def unflatten_expression(treedef: TreeDef, leaves: str) -> tuple[str, dict] | None:
    """A Python expression building the pytree of `treedef` from the tuple named `leaves`, and the
    names it uses (namedtuple classes); None if a dict key would not read back as itself."""
    if treedef.structure == (tuple, None, (LEAF,) * treedef.num_leaves):
        return leaves, {}
    if not all(key_text_is_literal(treedef.structure)):
        return None
    namespace: dict = {}
    counter = iter(range(treedef.num_leaves))

    def expression(structure) -> str:
        if structure is LEAF:
            return f"{leaves}[{next(counter)}]"
        kind, keys, children = structure
        if kind is type(None):
            return "None"
        parts = [expression(child) for child in children]
        if kind is dict:
            return "{" + ", ".join(f"{k!r}: {p}" for k, p in zip(keys, parts)) + "}"
        if kind is list:
            return "[" + ", ".join(parts) + "]"
        if kind is tuple:
            return "(" + "".join(p + ", " for p in parts) + ")"
        namespace[f"kind{len(namespace)}"] = kind
        return f"kind{len(namespace) - 1}(" + ", ".join(parts) + ")"

    return expression(treedef.structure), namespace


def key_text_is_literal(structure):
    """Whether every dict key prints as a Python literal that reads back as itself."""
    if structure is LEAF:
        return
    kind, keys, children = structure
    for key in keys or ():
        yield type(key) in (str, int, float, bool) and eval(repr(key)) == key
    for child in children:
        yield from key_text_is_literal(child)

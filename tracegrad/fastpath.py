"""The call path's fast lane: a caller generated for one known signature.

On a cache hit, most of a call's Python time used to go into walking the argument pytrees
and building their cache key. For a signature already seen, tracegrad generates
straight-line Python that checks the arguments still have that structure, shapes and
dtypes, and calls the compiled code with their leaves; any difference returns `MISS`, and
the call goes down the general path.
"""
from __future__ import annotations

import itertools
from typing import Callable

import numpy as np

MISSING = object()  # what a dict lookup gives for a key the dict lacks
MISS = object()  # what the fast lane returns for arguments of another signature


def known_signature_call(key: tuple, entry) -> Callable | None:
    """`args -> result` of `entry` (an api.Compiled) for arguments whose cache key is `key`, else `MISS`.

    `key` holds one flattened structure per argument, each leaf described by `api.leaf_key`.
    Returns None (no fast lane) when a leaf is neither a float (Python's or np.float32) nor an array, or
    a container is not a tuple, list, dict with str/int keys, or None.
    """
    names = (f"v{i}" for i in itertools.count())
    namespace: dict = {"ndarray": np.ndarray, "float32": np.float32, "MISSING": MISSING, "MISS": MISS,
                       "entry": entry, "finish": entry.finish, "consts": entry.consts}
    lines: list[str] = []
    leaves: list[str] = []

    def visit(name: str, node) -> bool:
        if node is float or node is np.float32:
            lines.append(f"if type({name}) is not {node.__name__}: return MISS")
            leaves.append(name)
            return True
        if type(node) is tuple and len(node) == 2:  # an array: (shape, dtype)
            shape, dtype = node
            dtype_name = f"dtype{len(namespace)}"
            namespace[dtype_name] = dtype
            lines.append(f"if type({name}) is not ndarray or {name}.shape != {shape!r} "
                         f"or {name}.dtype is not {dtype_name}: return MISS")
            leaves.append(name)
            return True
        if type(node) is not tuple or len(node) != 3:
            return False
        kind, keys, children = node
        children_names = [next(names) for _ in children]
        if kind is type(None):
            lines.append(f"if {name} is not None: return MISS")
        elif kind is dict and all(type(k) in (str, int) for k in keys):
            lines.append(f"if type({name}) is not dict or len({name}) != {len(keys)}: return MISS")
            lines.extend(f"{child} = {name}.get({k!r}, MISSING)" for child, k in zip(children_names, keys))
        elif kind is list or kind is tuple:
            lines.append(f"if type({name}) is not {kind.__name__} or len({name}) != {len(children)}: return MISS")
            if children:
                lines.append(f"{''.join(c + ', ' for c in children_names)}= {name}")
        else:
            return False
        return all(visit(child, structure) for child, structure in zip(children_names, children))

    arguments = [next(names) for _ in key]
    lines.append(f"if len(args) != {len(key)}: return MISS")
    if arguments:
        lines.append(f"{''.join(a + ', ' for a in arguments)}= args")
    if not all(visit(argument, structure) for argument, structure in zip(arguments, key)):
        return None
    consts = "*consts, " if entry.consts else ""
    call = f"entry.function({consts}{', '.join(leaves)})"  # the function changes once numba is done
    if entry.finish_expression is None:
        lines.append(f"return finish({call})")
    else:  # the results' tree built here, not by a call of `finish`
        text, kinds = entry.finish_expression
        namespace.update(kinds)
        lines += [f"outputs = {call}", f"return {text}"]
    exec("def call_known(args):\n" + "".join(f"    {line}\n" for line in lines), namespace)
    return namespace["call_known"]

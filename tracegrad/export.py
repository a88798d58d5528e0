"""Export: a compiled function as one standalone Python module that needs only NumPy and numba.

    tg.export(tg.value_and_grad(loss), params, x, y, path="grad_model.py")
    tg.jit(step).lower(params, x, y).export("step_model.py")

The module holds the source tracegrad generated for the function at those arguments' signature
(the forward and, for a gradient, the adjoint, in the IR's names, commented with the user's
lines), the program's constants, and an entry point named after the function that takes the
same pytrees of arrays and returns the same structure. It compiles itself with numba on first
use (and caches the machine code next to itself, as numba's `cache=True` does). Matrix products
call BLAS (`np.dot`), where tracegrad may use its own kernel, so results agree with tracegrad's
to rounding. `python the_module.py` runs a self-check: the stored example arguments give the
stored results.
"""
from __future__ import annotations

import base64
import datetime
import os
import zlib

import numpy as np

from . import errors
from .api import Lowered, Transformed, jit
from .ir import Aval
from .tree import LEAF, TreeDef, tree_flatten, unflatten_expression
from .version import __version__

GEMM_HELPERS = '''
# Matrix products by BLAS (tracegrad's own kernel is not copied: results agree to rounding)
@numba.njit(cache=True, error_model="numpy", nogil=True)
def tg_matmul(a, b):
    return np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b))


@numba.njit(cache=True, error_model="numpy", nogil=True)
def tg_matmul_into(a, b, c):
    return np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b), c)


tg_parallel_matmul, tg_parallel_matmul_into = tg_matmul, tg_matmul_into
'''

NUMPY_NAMES = {"f64": "np.float64", "i64": "np.int64", "bool": "np.bool_"}


def export(fun, *example_args, path: str | os.PathLike) -> str:
    """Write `fun`, compiled for the signature of `example_args`, as a standalone module at `path`.

    `fun` is jitted first unless it is a transformed function already (`tg.grad(loss)`,
    `tg.value_and_grad(loss)`, `tg.jit(step)`...): export `tg.value_and_grad(loss)` to take a
    gradient away. The module imports only numpy and numba; its entry point has `fun`'s name
    and parameters and a docstring giving their shapes and dtypes. Returns the path written.
    """
    transformed = fun if isinstance(fun, Transformed) else jit(fun)
    return export_lowered(transformed.lower(*example_args), path, example_args)


def export_lowered(lowered: Lowered, path: str | os.PathLike, example_args: tuple | None = None) -> str:
    """`Lowered.export(path)`: the lowered function as a standalone module (see `export`)."""
    transformed = lowered.transformed
    if transformed.static_argnums:
        raise errors.UnsupportedLeafError(
            "export takes a function without static arguments: close over them instead "
            "(functools.partial(fun, n=3)), so they are part of the exported program")
    if example_args is None:
        raise TypeError("export needs example arguments: call tg.export(fun, *args, path=...), or "
                        "lowered.export(path, *args)")
    arg_trees = [tree_flatten(arg)[1] for arg in example_args]
    example_leaves = tree_flatten(tuple(example_args))[0]
    expected = tree_flatten(lowered(*example_args))[0]
    text = module_text(lowered, arg_trees, example_leaves, expected)
    path = os.fspath(path)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        file.write(text)
    os.replace(temporary, path)
    return path


def module_text(lowered: Lowered, arg_trees: list[TreeDef], example_leaves: list, expected: list) -> str:
    compiled = lowered.compiled
    name = compiled.name[len("jit_"):] if compiled.name.startswith("jit_") else compiled.name  # loss, grad_loss...
    parameters = parameter_names(lowered.transformed.fun, len(arg_trees))
    source = compiled.source
    core = compiled.name
    inputs = compiled.ir.inputs
    lines = ['"""' + docstring(name, parameters, arg_trees, inputs, compiled) + '"""',
             f"# Exported by tracegrad {__version__} on {datetime.date.today().isoformat()}. The program, as",
             "# tracegrad printed it (`.lower(...).optimized_ir`):"]
    lines += ["#   " + line for line in str(compiled.optimized.program).splitlines()]
    lines += ["import base64", "import zlib", "", "import numba", "import numpy as np", ""]
    if "tg_matmul" in source or "tg_parallel_matmul" in source:
        lines.append(GEMM_HELPERS)
    lines += ["", source, "", jit_lines(source), "", ""]
    lines.append(unpack_function())
    lines.append(f"CONSTS = ({''.join(packed(c) + ', ' for c in compiled.consts)})")
    lines.append(f"PROGRAM = {core}")
    lines += ["", "", entry_point(name, parameters, arg_trees, inputs, compiled), "", ""]
    lines.append(self_check(name, arg_trees, example_leaves, expected, compiled))
    return "\n".join(lines) + "\n"


def parameter_names(fun, count: int) -> list[str]:
    code = getattr(fun, "__code__", None)
    names = list(code.co_varnames[:code.co_argcount]) if code else []
    names = names[:count] + [f"arg{k}" for k in range(len(names), count)]
    return [n if n.isidentifier() and n not in ("np", "numba", "CONSTS") else f"arg{k}" for k, n in enumerate(names)]


def leaf_paths(structure, base: str) -> list[str]:
    """The Python expression reading each leaf of a pytree named `base`, in tracegrad's leaf order."""
    if structure is LEAF:
        return [base]
    kind, keys, children = structure
    if kind is type(None):
        return []
    if kind is dict:
        return [p for key, child in zip(keys, children) for p in leaf_paths(child, f"{base}[{key!r}]")]
    if kind in (list, tuple) or (isinstance(kind, type) and issubclass(kind, tuple)):
        return [p for i, child in enumerate(children) for p in leaf_paths(child, f"{base}[{i}]")]
    raise errors.UnsupportedLeafError(f"export takes pytrees of dicts, lists and tuples; a {kind.__name__} "
                                      "node has no standalone form: pass its fields as a dict")


def aval_text(aval: Aval) -> str:
    return f"{NUMPY_NAMES[aval.dtype][3:]}[{', '.join(map(str, aval.shape))}]" if aval.shape else (
        {"f64": "float", "i64": "int", "bool": "bool"}[aval.dtype])


def docstring(name: str, parameters: list[str], arg_trees: list[TreeDef], inputs, compiled) -> str:
    position, described = 0, []
    for parameter, tree in zip(parameters, arg_trees):
        avals = [v.aval for v in inputs[position:position + tree.num_leaves]]
        position += tree.num_leaves
        paths = leaf_paths(tree.structure, parameter)
        described += [f"    {path}: {aval_text(aval)}" for path, aval in zip(paths, avals)]
    return (f"{name}: exported by tracegrad; needs only numpy and numba.\n\n"
            f"    {name}({', '.join(parameters)})\n\n"
            "takes arguments of exactly these shapes and dtypes (the signature it was compiled for):\n\n"
            + "\n".join(described) + "\n\n"
            f"and returns a result of structure {compiled.result_tree}. Running this file checks that the\n"
            "stored example arguments give the stored results.\n")


def jit_lines(source: str) -> str:
    """numba's settings for each generated function, as tracegrad's `numba_jit.jit_compile` gives them."""
    namespace: dict = {}
    exec(compile(source, "<exported>", "exec"), {"np": np, "__name__": "exported"}, namespace)
    run_in_python = set(namespace.get("RUN_IN_PYTHON", ()))
    lines = []
    for function_name, value in namespace.items():
        if not callable(value) or not hasattr(value, "__code__") or function_name in run_in_python:
            continue
        names = value.__code__.co_names
        lines.append(f"{function_name} = numba.njit({function_name}, cache=True, error_model='numpy', "
                     f"nogil={'objmode' not in names}, parallel={'prange' in names})")
    return "\n".join(lines)


def packed(value) -> str:
    array = np.ascontiguousarray(value)
    data = base64.b64encode(zlib.compress(array.tobytes(), 6)).decode()
    return f"unpack({data!r}, {array.dtype.str!r}, {array.shape})"


def unpack_function() -> str:
    return ("def unpack(data, dtype, shape):\n"
            '    """An array stored in this file: compressed bytes, dtype and shape."""\n'
            "    return np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype).reshape(shape).copy()\n\n")


def entry_point(name: str, parameters: list[str], arg_trees: list[TreeDef], inputs, compiled) -> str:
    reads, position = [], 0
    for parameter, tree in zip(parameters, arg_trees):
        for path in leaf_paths(tree.structure, parameter):
            aval = inputs[position].aval
            position += 1
            if aval.shape:
                reads.append(f"leaf({path}, {NUMPY_NAMES[aval.dtype]}, {aval.shape}, {path!r})")
            else:
                reads.append(f"{ {'f64': 'float', 'i64': 'int', 'bool': 'bool'}[aval.dtype] }({path})")
    result = unflatten_expression(compiled.result_tree, "outputs")
    if result is None or result[1]:
        raise errors.UnsupportedLeafError("export returns dicts, lists and tuples; the function's result "
                                          f"{compiled.result_tree} has another kind of node")
    return (f"def leaf(value, dtype, shape, where):\n"
            f"    array = np.ascontiguousarray(value, dtype)\n"
            f"    if array.shape != shape:\n"
            f"        raise ValueError(f\"{{where}} must have shape {{shape}}, not {{array.shape}}\")\n"
            f"    return array\n\n\n"
            f"def {name}({', '.join(parameters)}):\n"
            f'    """See the module\'s docstring."""\n'
            f"    leaves = ({''.join(r + ', ' for r in reads)})\n"
            f"    outputs = PROGRAM(*CONSTS, *leaves)\n"
            f"    return {result[0]}\n")


def self_check(name: str, arg_trees: list[TreeDef], example_leaves: list, expected: list, compiled) -> str:
    lines = ["def self_check():",
             '    """The stored example arguments against the results tracegrad computed for them."""',
             f"    leaves = ({''.join(packed(x) + ', ' for x in example_leaves)})",
             f"    expected = ({''.join(packed(x) + ', ' for x in expected)})"]
    position, args = 0, []
    for k, tree in enumerate(arg_trees):
        expression, _ = unflatten_expression(tree, f"leaves[{position}:{position + tree.num_leaves}]") or (None, None)
        scalars = [i for i in range(tree.num_leaves) if np.ndim(example_leaves[position + i]) == 0]
        lines.append(f"    part{k} = leaves[{position}:{position + tree.num_leaves}]")
        if scalars:
            lines.append(f"    part{k} = tuple(x.item() if i in {tuple(scalars)} else x for i, x in enumerate(part{k}))")
        lines.append(f"    arg{k} = {unflatten_expression(tree, f'part{k}')[0]}")
        args.append(f"arg{k}")
        position += tree.num_leaves
    paths = leaf_paths(compiled.result_tree.structure, "result")
    lines += [f"    result = {name}({', '.join(args)})",
              f"    got = ({''.join(p + ', ' for p in paths)})",
              "    for k, (a, b) in enumerate(zip(got, expected)):",
              "        if not np.allclose(a, b, rtol=1e-12, atol=1e-12):",
              "            raise SystemExit(f'self-check failed at result leaf {k}: {a} against {b}')",
              f"    print('self-check passed: {name} gives the stored results ({len(expected)} arrays)')",
              "", "", 'if __name__ == "__main__":', "    self_check()"]
    return "\n".join(lines)


Lowered.export = lambda self, path, *example_args: export_lowered(self, path, example_args or None)

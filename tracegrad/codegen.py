"""Code generation: Program → readable Python source → a compiled function.

One statement (or one small loop) per op, written from the op's entry in tracegrad.lowering
and named as the printed program names it; adjoint code is grouped in blocks, each commented
with the user's expression it differentiates (`# Grad of: a**0.5`). Under numba, runs of
elementwise ops become loops, large transcendentals NumPy's SIMD calls, float products
tracegrad.gemm's kernels, and long scalar programs a tape (tracegrad.tape). The source is
registered in `linecache` so tracebacks and pdb show it.
"""
from __future__ import annotations

import collections
import hashlib
import linecache
import math
import os
import types

import numpy as np

from . import concurrency, disk_cache, tape
from .config import config
from .ir import FLOAT_DTYPES, Literal, Namer, Op, Program, Var
from .lowering import numpy_dtype, rule_for
from .numba_jit import jit_compile

MAX_OPS_PER_FUNCTION = 1000  # numba compiles ~1 ms per statement and chokes past ~2,000 loads/stores
# From this many elements, tanh/exp/log run in NumPy's SIMD loops: entering object mode costs ~1 µs,
# and NumPy saves ~14 ns (tanh) or ~2 ns (exp, log) per element over numba's libm calls.
SIMD_UFUNC_MIN_SIZE = 512
# with tg.config.parallel, a loop runs on all cores when it makes at least this many libm calls
# (sin, exp, pow, ...): waking the threads costs ~70 µs, and loops of plain arithmetic are bound by
# memory, which two cores share (measured: they did not pay even at 2M elements in an MLP step)
PARALLEL_MIN_LIBM_CALLS = 32768
# with tg.config.parallel, a product of at least this many multiply-adds (m·k·n) has its rows shared
# out among the threads (measured: 0.57-0.65 of the serial time at 34-67M, 1.5-1.9 at 2-4M)
PARALLEL_MIN_PRODUCT = 1 << 24
GEMM_FUNCTIONS = ("tg_matmul", "tg_matmul_into", "tg_parallel_matmul", "tg_parallel_matmul_into")  # tracegrad.gemm
# From this many elements, a temporary array is kept from call to call (one set per thread): malloc hands
# big blocks back to the system when they are freed, and touching fresh pages costs more than computing
# on them (measured: one step of an MLP at batch 4,096, 18.6 ms with fresh arrays, 11.9 ms without)
WORKSPACE_MIN_SIZE = 32768
INDENT = "    "

compile_count = 0  # how many distinct sources were compiled; the tests count them


def literal_text(value) -> str:
    if isinstance(value, np.float32):  # numba types `0.5 * x` as float64 for a float32 x: a float32 literal
        return f"np.float32({str(value) if np.isfinite(value) else literal_text(float(value))})"
    if isinstance(value, float):
        if math.isnan(value):
            return "np.nan"
        if math.isinf(value):
            return "np.inf" if value > 0 else "(-np.inf)"
        return repr(value) if value >= 0 else f"({value!r})"
    return repr(value) if not isinstance(value, int) or value >= 0 else f"({value!r})"


class SourceWriter:
    """Names the Vars of one program (as its printer does) and writes its statements."""

    def __init__(self, program: Program, name: str, check_finite: bool = False, numba: bool = False,
                 parallel: bool = False, enclosing: SourceWriter | None = None, step: tuple[str, str] | None = None):
        self.program = program
        self.function_name = name
        self.check_finite = check_finite
        self.numba = numba
        self.fuse = numba and not check_finite
        self.parallel = parallel and self.fuse and enclosing is None
        # a loop's body is written inside the function that runs it, named by that function's namer
        # the enclosing loops' step counters and where each loop is: (`_t0`, "file.py:12"), outermost first
        self.steps: tuple[tuple[str, str], ...] = () if enclosing is None else enclosing.steps + ((step,) if step else ())
        self.loop_functions: list[str] = []  # parallel loops, written before the function that calls them
        self.users: dict[Var, list[Op]] = {}
        for op in program.ops:
            for x in op.inputs:
                if isinstance(x, Var):
                    self.users.setdefault(x, []).append(op)
        self.outputs = {x for x in program.outputs if isinstance(x, Var)}
        # the printer's names: the source and the printed program agree
        self.name = Namer.of(program) if enclosing is None else enclosing.name
        self.maker = {out: op for op in program.ops for out in op.outs}
        self.defined_here = self.maker.keys()
        self.workspace: dict[Var, int] = {}  # large temporaries kept between calls: their index in `_workspace`
        self.copied_outputs = self.outputs_to_copy() if enclosing is None else set()
        # the program's groups, when it is one function (a longer one is split, and grouped part by part)
        self.program_groups = self.groups(program.ops) if len(program.ops) <= MAX_OPS_PER_FUNCTION else None
        # a fused loop's value written into the array of one of its inputs that dies there: {value: input}
        self.reused: dict[Var, Var] = {}
        if self.fuse and self.program_groups is not None and enclosing is None:  # a body's arrays live one step
            returned = set().union(*(self.array_bases(x) for x in self.outputs))  # never kept between calls
            for group in self.program_groups:
                if not self.uses_simd_ufunc(group[0]) and (len(group) > 1 or self.fusible(group[0])):
                    self.reuse_dying_inputs(group, returned)
            for group in self.program_groups:
                for var in self.allocated(group):
                    if var.aval.size >= WORKSPACE_MIN_SIZE and var not in returned:
                        self.workspace[var] = len(self.workspace)

    def reuse_dying_inputs(self, group: list[Op], returned: set) -> None:
        """Let each value a fused loop stores take over the array of an input of the same type that the
        loop reads last (a product's result, a temporary of an earlier loop), read nowhere else, and read
        in the loop only up to where the value is stored, element by element: the bias add after a
        product runs in the product's array. Fewer arrays are touched (measured, in one process, steps
        built with and without it sampled in turn: 0.89-0.94 of the time of W5's and W6's steps, in float32
        and in float64)."""
        position = {op: k for k, op in enumerate(group)}
        taken = set()
        for var in self.kept(group):
            if var in returned:
                continue
            stored_at = position[self.maker[var]]
            read = (x for op in group for x in op.inputs if isinstance(x, Var) and self.maker.get(x) not in position)
            for x in dict.fromkeys(read):
                users = self.users.get(x, ())
                if (x not in taken and x.aval == var.aval and x not in self.reused and self.is_fresh_temporary(x)
                        and all(user in position and position[user] <= stored_at for user in users)):
                    self.reused[var] = x
                    taken.add(x)
                    break

    def allocated(self, group: list[Op]) -> list[Var]:
        """The Vars that get a new array (to be filled in) in the code of a group from `groups`."""
        allocates = rule_for(group[0].primitive).allocates
        if allocates is not None:
            return [var for var in allocates(group[0]) if var.aval.ndim > 0]
        if self.uses_simd_ufunc(group[0]):
            return [] if self.simd_in_place(group[0]) else [group[0].out]
        if len(group) > 1 or self.fusible(group[0]):
            return [var for var in self.kept(group) if var not in self.reused]
        return [group[0].out] if self.is_product(group[0]) else []

    def allocate(self, var: Var) -> str:
        """The expression that gives `var` its array, to be filled in."""
        if var in self.reused:
            return self.name(self.reused[var])
        if var in self.workspace:
            return f"_workspace[{self.workspace[var]}]"
        return f"np.empty({var.aval.shape}, {numpy_dtype(var.aval.dtype)})"

    def is_product(self, op: Op) -> bool:
        """A matrix product of float64 or of float32 matrices: numba's code calls tracegrad.gemm for it."""
        if not rule_for(op.primitive).product:
            return False
        dtype = op.out.aval.dtype
        return dtype in FLOAT_DTYPES and all(x.aval.dtype == dtype for x in op.inputs)

    def atom(self, atom) -> str:
        return literal_text(atom.value) if isinstance(atom, Literal) else self.name(atom)

    def statement(self, op: Op) -> list[str]:
        rule = rule_for(op.primitive)
        if rule.control_flow is not None:
            return rule.control_flow(self, op)
        emit = rule.statement if self.numba or rule.numpy_statement is None else rule.numpy_statement
        out, inputs = self.name(op.out), [self.atom(x) for x in op.inputs]
        if self.numba and self.is_product(op):
            parallel = self.parallel and op.out.aval.dtype == "f64" and multiply_adds(op) >= PARALLEL_MIN_PRODUCT
            name = "tg_parallel_matmul" if parallel else "tg_matmul"
            if op.out in self.workspace:  # into its kept array
                return [f"{out} = {name}_into({inputs[0]}, {inputs[1]}, {self.allocate(op.out)})"]
            return [f"{out} = {name}({inputs[0]}, {inputs[1]})"]
        if isinstance(emit, str):
            return [f"{out} = {emit.format(*inputs, **op.param)}"]
        lines = emit(out, inputs, op)
        return [f"{out} = {lines}"] if isinstance(lines, str) else lines

    def step_counter(self) -> str:
        """The name of the step counter of a loop written here: `_t0`, and `_t1` in its body."""
        return f"_t{len(self.steps)}"

    def sub_program_lines(self, program: Program, step: tuple[str, str] | None = None) -> list[str]:
        """The statements of a sub-program inside this function, in its names: a loop's body (its
        `step`: the counter and where the loop is, for debug_nans' messages) or a branch."""
        inner = SourceWriter(program, self.function_name, self.check_finite, self.numba, enclosing=self, step=step)
        lines = inner.body(inner.program_groups if inner.program_groups is not None else inner.groups(program.ops))
        self.loop_functions.extend(inner.loop_functions)
        return lines or ["pass"]

    def comment(self, op: Op) -> str:
        """The user's line that made `op`; for an adjoint op, Tangent's `# Grad of:` and the user's
        expression it differentiates (captured when the adjoint was built)."""
        where = f"{os.path.basename(op.source.file)}:{op.source.line}" if op.source else "?"
        if op.adjoint_of is None:
            return f"# {where}"
        if op.source and op.source.expression:
            return f"# Grad of: {op.source.expression}  ({op.adjoint_of}, {where})"
        return f"# Grad of: {op.adjoint_of}  ({where})"

    def body(self, groups: list[list[Op]]) -> list[str]:
        lines, last_comment = [], None
        for group in groups:
            if self.uses_simd_ufunc(group[0]):
                lines.extend(self.simd_ufunc_call(group[0]))
                last_comment = None
                continue
            if len(group) > 1 or self.fusible(group[0]):
                lines.extend(self.fused_loop(group))
                last_comment = None
                continue
            op = group[0]
            comment = self.comment(op)
            if comment != last_comment:
                lines.append(comment)
                last_comment = comment
            lines.extend(self.statement(op))
            if self.check_finite and not op.primitive.multiple_results and op.out.aval.dtype in FLOAT_DTYPES:
                lines.extend(self.finiteness_check(op))
        return lines

    # -- elementwise fusion (numba only: a loop in plain Python would be slow) -----------

    def fusible(self, op: Op) -> bool:
        return (self.fuse and op.primitive.elementwise and op.out.aval.ndim > 0
                and not self.uses_simd_ufunc(op))

    def uses_simd_ufunc(self, op: Op) -> bool:
        return (self.fuse and rule_for(op.primitive).simd_ufunc is not None
                and op.out.aval.size >= SIMD_UFUNC_MIN_SIZE)

    def simd_ufunc_call(self, op: Op) -> list[str]:
        """NumPy's vectorised loop for a large array, in place when the input dies here."""
        (x,), out = op.inputs, self.name(op.out)
        ufunc = rule_for(op.primitive).simd_ufunc
        if self.simd_in_place(op):
            allocate = f"{out} = {self.name(x)}"
        else:
            allocate = f"{out} = {self.allocate(op.out)}"
        return [self.comment(op), allocate,
                "with numba.objmode():  # NumPy's SIMD loop: many times faster than numba's per-element call",
                f"{INDENT}{ufunc}({self.atom(x)}, out={out})"]

    def simd_in_place(self, op: Op) -> bool:
        return self.is_fresh_temporary(op.inputs[0]) and self.users[op.inputs[0]] == [op]

    def is_fresh_temporary(self, x) -> bool:
        """A float array made by this function's own code, which nothing else refers to."""
        if (not isinstance(x, Var) or x in self.outputs or x not in self.defined_here
                or x.aval.dtype not in FLOAT_DTYPES):
            return False
        maker = self.maker[x]
        return maker.primitive.elementwise or self.is_product(maker)

    def groups(self, ops) -> list[list[Op]]:
        """Runs of consecutive elementwise ops with one output shape, perhaps ending in a sum of
        all of a run's value; every other op alone."""
        groups: list[list[Op]] = []
        for op in ops:
            last = groups[-1][-1] if groups else None
            if last is not None and self.fusible(last) and (
                    (self.fusible(op) and op.out.aval.shape == last.out.aval.shape)
                    or self.sums_within(op, groups[-1])):
                groups[-1].append(op)
            else:
                groups.append([op])
        return groups

    def sums_within(self, op: Op, group: list[Op]) -> bool:
        """A sum of a value the run computes over every axis, or over its leading axes (a bias's gradient,
        summed over the batch): an accumulator in its loop, so the value is not read again to be summed.
        A sum to an array is not one in a parallel loop, whose threads would add into it at once.
        (Measured on W5's and W6's steps, steps built with and without sums to arrays sampled in turn in
        one process: 0.97-0.99 of the time in float32, 0.97-1.00 in float64.)"""
        if not (rule_for(op.primitive).accumulator and isinstance(op.inputs[0], Var)
                and self.maker.get(op.inputs[0]) in group):
            return False
        axes = op.param["axes"]
        return op.out.aval.shape == () or (axes == tuple(range(len(axes))) and not self.parallel)

    def kept(self, group: list[Op]) -> list[Var]:
        """The values of a fused run that are read after it: stored in arrays."""
        return [op.out for op in group if not rule_for(op.primitive).accumulator and (
                op.out in self.outputs or any(user not in group for user in self.users.get(op.out, ())))]

    def fused_loop(self, group: list[Op]) -> list[str]:
        """One loop nest computing a run of elementwise ops element by element.

        numba compiles a loop in a fraction of the time of the array statements it replaces,
        and no temporary arrays are made. Values read after the run are stored in arrays.
        """
        shape = group[0].out.aval.shape
        inside = {op.out for op in group}
        sums = [op for op in group if rule_for(op.primitive).accumulator]
        kept = self.kept(group)
        index = ", ".join(f"_i{d}" for d in range(len(shape)))

        def element(atom) -> str:
            if isinstance(atom, Literal):
                return literal_text(atom.value)
            if atom in inside:
                return f"_{self.name(atom)}"
            if atom.aval.shape == ():
                return self.name(atom)
            offset = len(shape) - atom.aval.ndim  # broadcasting aligns shapes on the right
            at = ", ".join(f"_i{offset + k}" if n == shape[offset + k] else "0" for k, n in enumerate(atom.aval.shape))
            return f"{self.name(atom)}[{at}]"

        lines = [f"{self.name(v)} = {self.allocate(v)}" for v in kept]
        zero = {"f64": "0.0", "f32": "np.float32(0.0)"}
        lines += [f"{self.name(op.out)} = {zero.get(op.out.aval.dtype, '0')}" if op.out.aval.shape == () else
                  f"{self.name(op.out)} = np.zeros({op.out.aval.shape}, {numpy_dtype(op.out.aval.dtype)})"
                  for op in sums]
        libm_calls = math.prod(shape) * sum(rule_for(op.primitive).libm_call for op in group)
        parallel = self.parallel and libm_calls >= PARALLEL_MIN_LIBM_CALLS
        outer = "numba.prange" if parallel else "range"
        lines += [INDENT * d + f"for _i{d} in {outer if d == 0 else 'range'}({n}):" for d, n in enumerate(shape)]
        depth, last_comment = INDENT * len(shape), None
        for op in group:
            comment = self.comment(op)
            if comment != last_comment:
                lines.append(depth + comment)
                last_comment = comment
            if op in sums:  # into the element of the sum that this element belongs to
                kept_axes = range(len(shape) - op.out.aval.ndim, len(shape))
                at = f"[{', '.join(f'_i{d}' for d in kept_axes)}]" if op.out.aval.ndim else ""
                lines.append(depth + f"{self.name(op.out)}{at} += {element(op.inputs[0])}")
                continue
            lines.append(depth + f"_{self.name(op.out)} = {element_text(op, list(map(element, op.inputs)))}")
            if op.out in kept:
                lines.append(depth + f"{self.name(op.out)}[{index}] = _{self.name(op.out)}")
        if parallel:
            return self.loop_function(group, kept + [op.out for op in sums], lines)
        return lines

    def loop_function(self, group: list[Op], kept: list[Var], lines: list[str]) -> list[str]:
        """A parallel loop as a function of its own: numba's parallel passes then touch nothing else."""
        inside = {op.out for op in group}
        reads = {x: None for op in group for x in op.inputs if isinstance(x, Var) and x not in inside}
        name = f"{self.function_name}_loop{len(self.loop_functions)}"
        params, results = [self.name(x) for x in reads], [self.name(v) for v in kept]
        if any(v in self.workspace for v in kept):
            params.append("_workspace")
        self.loop_functions.append("\n".join(function_text(name, params, lines, results)))
        return [f"{''.join(r + ', ' for r in results)}= {name}({', '.join(params)})"]

    def finiteness_check(self, op: Op) -> list[str]:
        """tg.config.debug_nans: stop at the first op whose value is nan or inf, naming it."""
        out = self.name(op.out)
        where = f"{op.source.file}:{op.source.line}" if op.source else "an unknown line"
        phase = f"the adjoint of {op.adjoint_of}" if op.adjoint_of else "the forward pass"
        message = repr(f"{op.primitive.name} produced nan or inf in {phase}, at {where}")
        for counter, loop in self.steps:  # which step of each enclosing loop
            message += f' + " (step " + str({counter}) + " of the loop at {loop})"'
        test = f"np.isfinite({out})" if op.out.aval.shape == () else f"np.isfinite({out}).all()"
        return [f"if not {test}:", f"    raise FloatingPointError({message})"]

    def result(self, atom) -> str:
        text = self.atom(atom)
        return f"{text}.copy()" if atom in self.copied_outputs else text

    def outputs_to_copy(self) -> set:
        """The outputs whose array may be an argument's, a constant's or an earlier output's, or a view of one.

        Outputs never share memory with the caller's arrays or with each other: a user who
        changes one in place changes nothing else.
        """
        copied, claimed = set(), set()
        arguments = set(self.program.constvars + self.program.inputs)
        for atom in self.program.outputs:
            if not isinstance(atom, Var) or atom.aval.shape == ():
                continue
            bases = self.array_bases(atom)
            if bases & (arguments | claimed):
                copied.add(atom)
            else:
                claimed |= bases
        return copied

    def array_bases(self, var: Var) -> set:
        """The Vars whose arrays `var`'s array may be, or be a view of."""
        op = self.maker.get(var)
        if op is None or not self.may_share_input(op, var):
            return {var}
        return set().union(*(self.array_bases(x) for x in op.inputs if isinstance(x, Var) and x.aval.shape))

    def may_share_input(self, op: Op, result: Var) -> bool:
        """Whether the code of `op` may hand back its input's array or a view of it as `result`."""
        view = rule_for(op.primitive).view
        if callable(view):
            return view(op, result)
        return view or (self.uses_simd_ufunc(op) and self.simd_in_place(op))


def element_text(op: Op, inputs: list[str]) -> str:
    """One element of an elementwise op, from its lowering's element template (or function)."""
    template = rule_for(op.primitive).element
    return template(inputs, op) if callable(template) else template.format(*inputs, **op.param)


def function_text(name: str, params: list[str], body: list[str], results: list[str]) -> list[str]:
    lines = [f"def {name}({', '.join(params)}):"]
    lines += [INDENT + line for line in body]
    lines.append(f"{INDENT}return ({''.join(r + ', ' for r in results)})")
    return lines


def generate_source(program: Program, name: str, check_finite: bool = False, numba: bool = False,
                    parallel: bool = False) -> str:
    """The Python source of `program` as a function `name(*constvars, *inputs)`.

    With `check_finite`, each float value is checked as soon as it is computed. For `numba`,
    runs of elementwise ops on arrays become single loops (with `parallel`, large ones run
    their outer index on all cores); otherwise ops are written as NumPy calls.
    """
    writer = SourceWriter(program, name, check_finite, numba, parallel)
    params = [writer.name(v) for v in program.constvars + program.inputs]
    if writer.fuse and tape.fits_tape(program):
        return tape.tape_source(program, name, lambda op: writer.statement(op)[0], writer.atom)
    if writer.program_groups is not None:
        body = writer.body(writer.program_groups)
        results = [writer.result(x) for x in program.outputs]
        if writer.workspace:
            text = "\n".join(function_text(f"{name}_core", params + ["_workspace"], body, results)) + "\n"
            text = "import threading\n\n\n" + text + workspace_caller(writer, name, params)
        else:
            text = "\n".join(function_text(name, params, body, results)) + "\n"
    else:
        text = split_source(writer, name, params)
    return "".join(loop + "\n\n" for loop in writer.loop_functions) + text


def multiply_adds(product: Op) -> int:
    (m, k), n = product.inputs[0].aval.shape, product.inputs[1].aval.shape[1]
    return m * k * n


def workspace_caller(writer: SourceWriter, name: str, params: list[str]) -> str:
    """`name`, run in Python: it passes this thread's kept arrays to the compiled `name_core`."""
    arrays = "".join(f"\n{INDENT * 3}np.empty({v.aval.shape}, {numpy_dtype(v.aval.dtype)}),  # {writer.name(v)}"
                     for v in writer.workspace)
    return f"""

RUN_IN_PYTHON = ({name!r},)
{name}_kept = threading.local()


def {name}({', '.join(params)}):
    # the large temporaries of {name}_core, made once per thread and reused by each call
    workspace = getattr({name}_kept, "arrays", None)
    if workspace is None:
        workspace = {name}_kept.arrays = ({arrays}
        )
    return {name}_core({''.join(p + ', ' for p in params)}workspace)
"""


def split_source(writer: SourceWriter, name: str, params: list[str]) -> str:
    """A long program as a chain of part functions, each under MAX_OPS_PER_FUNCTION ops."""
    ops = writer.program.ops
    chunks = [ops[i:i + MAX_OPS_PER_FUNCTION] for i in range(0, len(ops), MAX_OPS_PER_FUNCTION)]
    used_later: list[set] = [set() for _ in chunks]  # Vars read by later chunks or the outputs
    needed = {x for x in writer.program.outputs if isinstance(x, Var)}
    for index in reversed(range(len(chunks))):
        used_later[index] = set(needed)
        for op in chunks[index]:
            needed.update(x for x in op.inputs if isinstance(x, Var))
    texts, main_body, available = [], [], list(writer.program.constvars + writer.program.inputs)
    for index, chunk in enumerate(chunks):
        reads = {x for op in chunk for x in op.inputs if isinstance(x, Var)}
        part_params = [writer.name(v) for v in available if v in reads]
        defined = [out for op in chunk for out in op.outs if out in used_later[index]]
        part_results = [writer.name(v) for v in defined]
        part_name = f"{name}_part{index}"
        texts += function_text(part_name, part_params, writer.body(writer.groups(chunk)), part_results) + [""]
        main_body.append(f"{''.join(r + ', ' for r in part_results)}= {part_name}({', '.join(part_params)})"
                         if part_results else f"{part_name}({', '.join(part_params)})")
        available += defined
    texts += function_text(name, params, main_body, [writer.result(x) for x in writer.program.outputs])
    return "\n".join(texts) + "\n"


MAX_PYTHON_PROGRAMS = 1024  # NumPy-run programs kept loaded (with their linecache entries), least recent dropped

_load_lock = concurrency.new_lock()
_numba_loaded: dict[str, object] = {}  # never dropped: numba does not free machine code
_python_loaded: collections.OrderedDict[str, tuple[object, str]] = collections.OrderedDict()


def load(source: str, name: str, backend: str):
    """Execute generated `source` and return its function `name`, compiled for `backend`.

    Loaded once per distinct source and process, by one thread while others wait for it: a
    retrace that produces the same code, or another function with the same code, compiles
    nothing. numba compiles a function at its first call.
    """
    global compile_count
    with _load_lock:
        if backend == "numba":
            function = _numba_loaded.get(source)
            if function is None:
                function = _numba_loaded[source] = load_for_numba(source, name)
            return function
        loaded = _python_loaded.get(source)
        if loaded is None:
            filename, namespace = execute(source, name)
            loaded = _python_loaded[source] = (python_backend(namespace[name]), filename)
            compile_count += 1
            if len(_python_loaded) > MAX_PYTHON_PROGRAMS:
                _, (_, dropped) = _python_loaded.popitem(last=False)
                linecache.cache.pop(dropped, None)
        else:
            _python_loaded.move_to_end(source)
        return loaded[0]


def load_for_numba(source: str, name: str):
    global compile_count
    module = disk_cache.load_module(source)
    namespace = module.__dict__ if module else execute(source, name)[1]
    cache_directory = module.CACHE_DIRECTORY if module and not uses_threads(source) else None
    functions = [key for key, value in namespace.items()
                 if isinstance(value, types.FunctionType) and value.__module__ == namespace.get("__name__")]
    for function_name in set(functions) - set(namespace.get("RUN_IN_PYTHON", ())):
        namespace[function_name] = jit_compile(namespace[function_name], cache_directory)
    compile_count += 1
    return namespace[name]


def numba_has_room(source: str) -> bool:
    """Whether numba may compile `source`: it is loaded already, or fewer than `max_compiled_programs` are."""
    return source in _numba_loaded or len(_numba_loaded) < config.max_compiled_programs


def uses_threads(source: str) -> bool:
    """Code with numba's parallel loops, which numba must not cache: a cached function that calls a
    parallel one can crash a later process that loads it (numba issues 4807 and 10128)."""
    return "numba.prange" in source or "tg_parallel_matmul" in source


def is_ready(source: str, backend: str) -> bool:
    """Whether `load` and a first call would not need to compile: loaded in this process, or numba's code on disk."""
    if backend == "python":
        return True
    return source in _numba_loaded or (disk_cache.is_compiled(source) and not uses_threads(source))


def mark_compiled(source: str) -> None:
    """numba has compiled `source` and saved its code: later processes load it instead of compiling."""
    if not uses_threads(source):
        disk_cache.mark_compiled_source(source)


def execute(source: str, name: str) -> tuple[str, dict]:
    """Run generated source in a fresh namespace, registered in linecache for tracebacks and pdb."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    filename = f"<tracegrad {name} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"np": np, "math": math, "__name__": f"tracegrad_generated_{digest}"}  # math: erf
    if "numba." in source:
        import numba

        namespace["numba"] = numba
    if disk_cache.calls_gemm(source):
        from . import gemm  # here: importing it imports numba, which the python backend never needs

        namespace.update({name: getattr(gemm, name) for name in GEMM_FUNCTIONS})
    exec(compile(source, filename, "exec"), namespace)
    return filename, namespace


def python_backend(function):
    """Run generated code with plain NumPy: scalars as float64, so 1/0 is inf as under numba."""

    def run(*args):
        with np.errstate(all="ignore"):
            return function(*(np.float64(a) if type(a) is float else a for a in args))

    run.__wrapped__ = function
    return run

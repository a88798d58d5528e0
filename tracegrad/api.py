"""The public transformations: grad, value_and_grad, vjp, jit, make_ir.

Each transformation is a function of a signature's flat leaves, run under the current
interpreter. Called at the top level, a transformed function stages that into a Program once
per signature (reverse mode, if any, staged with it), and data flows one way: flatten the
arguments → trace → Program → optimization passes → generated source → compiled function →
call → unflatten the results. Called inside another transformation (`tg.grad` inside `tg.jit`,
`tg.grad` of `tg.grad`), it runs in that transformation's interpreter instead, so its ops
join the enclosing trace: nothing is compiled or inlined.
"""
from __future__ import annotations

import collections
import functools
import inspect
import re
import threading
import weakref
from typing import Any, Callable

import attrs
import numpy as np

from . import ad, batching, codegen, concurrency, core, errors, forward, primitives, trace
from .config import Config, config
from .fastpath import MISS, known_signature_call
from .errors import NonScalarOutputError
from .core import Tracer, as_traceable_array, aval_of, dtype_name, tracing
from .ir import FLOAT_DTYPES, Aval, ClosedProgram, Program
from .passes import optimize
from .reroll import reroll_loops
from .source_info import user_source, where_text
from .warn import warn
from .tree import LEAF, TreeDef, flatten_into, tree_flatten, tree_unflatten, unflatten_expression, unflattener

trace_count = 0  # how many times a user function was traced; the tests count them


# -- arguments ---------------------------------------------------------------------------

def leaf_aval(leaf) -> Aval:
    kind = type(leaf)
    if kind is float:
        return Aval(())
    if kind is int:  # traced as an integer, as jax.jit traces a Python int: x[i] indexes
        return Aval((), "i64")
    if kind is np.ndarray:
        return Aval(leaf.shape, dtype_name(leaf.dtype))
    if isinstance(leaf, Tracer):
        return leaf.aval
    if kind is bool or kind is np.bool_:
        return Aval((), "bool")
    if isinstance(leaf, np.integer):  # a NumPy integer (labels[i]) stays an integer, as in JAX
        return Aval((), "i64")
    if kind is np.float32:
        return Aval((), "f32")
    if isinstance(leaf, np.floating):
        return Aval(())
    raise errors.UnsupportedLeafError(
        f"tracegrad cannot take an argument leaf of type {kind.__name__} ({leaf!r:.60}) "
        f"(at {where_text(user_source())}); leaves must be floats, ints or NumPy arrays, "
        "nested in tuples, lists and dicts (pass other values as static arguments of tg.jit)")


def leaf_key(leaf):
    """What the cache needs to know of a leaf: its type, and shape and dtype for arrays."""
    kind = type(leaf)
    if kind is float:
        return float
    if kind is np.ndarray:
        return leaf.shape, leaf.dtype
    if isinstance(leaf, Tracer):  # outside any transformation: kept from one that ended
        raise errors.LeakedTracerError(
            f"a traced value {leaf.aval} was passed to a transformed function after its trace ended "
            f"(at {where_text(user_source())}); return values from the traced function instead of storing them")
    leaf_aval(leaf)  # raises for leaves tracegrad cannot take
    return kind


def prepare_leaf(leaf):
    """A leaf as the compiled code takes it: Python float for scalars (np.float32 for float32 ones),
    float64/float32/int64/bool arrays, and a 0-d array as the number it holds (numba's array functions
    take no 0-d arrays)."""
    kind = type(leaf)
    if kind is float or kind is np.float32:
        return leaf
    if kind is np.ndarray:
        if leaf.ndim:
            return as_traceable_array(leaf)
        value = as_traceable_array(leaf)
        return value[()] if value.dtype == np.float32 else value.item()
    if kind is bool or kind is np.bool_:
        return bool(leaf)
    if kind is int or isinstance(leaf, np.integer):
        return int(leaf)
    return float(leaf)


COMPILED_DTYPES = frozenset({np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.bool_)})


def needs_preparing(leaf) -> bool:
    if type(leaf) is np.ndarray:
        return leaf.dtype not in COMPILED_DTYPES or leaf.ndim == 0
    return type(leaf) is not float and type(leaf) is not np.float32


def python_value(value):
    """Results as users expect them: Python scalars for 0-d values (np.float32 for float32 ones, which
    a Python float would make float64), arrays otherwise."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic) and type(value) is not np.float32:
        return value.item()
    return value


def function_text(fun: Callable) -> str:
    """`name (file:line)` of a Python function, for error messages."""
    code = getattr(inspect.unwrap(fun), "__code__", None)
    where = f" (defined at {code.co_filename}:{code.co_firstlineno})" if code else ""
    return f"{getattr(fun, '__name__', 'the function')}{where}"


def generated_name(transformation: str, fun: Callable) -> str:
    """The generated function's name, `jit_step` or `grad_loss`: its underscore keeps it apart from the
    program's variable names (a, b, ..., ba, ...), so no local is named like its function."""
    name = re.sub(r"\W", "_", getattr(fun, "__name__", "fun").replace("<lambda>", "fun"))
    return f"{transformation}_{name}"


def converted_at(positions: tuple[int, ...], convert: Callable, unflatten: Callable) -> Callable:
    """`unflatten`, after converting the outputs at `positions` by `convert` (numba gives Python
    floats: 0-d array gradients become `np.array`s, float32 scalars `np.float32`s)."""
    def run(outputs):
        outputs = list(outputs)
        for position in positions:
            outputs[position] = convert(outputs[position])
        return unflatten(outputs)

    return run


FLOAT32_SCALAR = Aval((), "f32")


def without_last(count: int, unflatten: Callable) -> Callable:
    return lambda outputs: unflatten(outputs[:-count])


def numba_like_outputs(run: Callable) -> Callable:
    """The python backend's `run`, returning a tuple of Python scalars and arrays as numba does."""
    return lambda *args: tuple([python_value(x) for x in run(*args)])


_warned_numba_is_full = False


def warn_numba_is_full() -> None:
    global _warned_numba_is_full
    if not _warned_numba_is_full:
        _warned_numba_is_full = True
        warn(f"tracegrad: numba has compiled {config.max_compiled_programs} programs in this process "
             "(tg.config.max_compiled_programs) and never frees their machine code, so new programs run "
             "as NumPy code; calls with fewer distinct shapes (pad or bucket them) compile fewer programs")


def raising(error: BaseException) -> Callable:
    def run(*args):
        raise error

    return run


def release_thread_workspace(function: Callable) -> None:
    """Free the large temporaries that `function`'s generated module keeps for the calling thread (a
    `threading.local`, see codegen.workspace_caller): the compile thread runs each program once, and
    would otherwise keep them as long as the process lives."""
    namespace = getattr(function, "py_func", function).__globals__
    for value in list(namespace.values()):
        if isinstance(value, threading.local):
            vars(value).clear()


def check_result_leaf(leaf):
    if not isinstance(leaf, (Tracer, float, int, bool, np.ndarray, np.generic)):
        raise errors.UnsupportedLeafError(
            f"a traced function returned a leaf of type {type(leaf).__name__} "
            f"(called at {where_text(user_source())}); "
            "return floats, arrays and traced values (in tuples, lists and dicts)")
    return leaf


def tuple_tree(*treedefs: TreeDef) -> TreeDef:
    return TreeDef((tuple, None, tuple(t.structure for t in treedefs)), sum(t.num_leaves for t in treedefs))


LEAF_TREE = TreeDef(LEAF, 1)


@attrs.frozen(eq=False)
class Signature:
    """The arguments of one call: static values apart, dynamic ones flattened."""

    static: tuple
    treedefs: tuple[TreeDef, ...]  # one per dynamic argument
    leaves: list

    @classmethod
    def of(cls, args, static_argnums=()) -> Signature:
        static = tuple(args[i] for i in static_argnums if i < len(args))
        treedefs, leaves = [], []
        for position, arg in enumerate(args):
            if position not in static_argnums:
                arg_leaves, treedef = tree_flatten(arg)
                treedefs.append(treedef)
                leaves += arg_leaves
        return cls(static, tuple(treedefs), leaves)

    def leaf_range(self, argnum: int) -> range:
        start = sum(t.num_leaves for t in self.treedefs[:argnum])
        return range(start, start + self.treedefs[argnum].num_leaves)


class Flattened:
    """`fun` as a function of a signature's leaves, giving its result's leaves; `.tree` is the
    result's structure once it has run. Each run counts as a trace of `fun`."""

    def __init__(self, fun: Callable, static_argnums: tuple[int, ...], signature: Signature):
        self.fun = fun
        self.static = dict(zip(static_argnums, signature.static))
        self.signature = signature
        self.tree: TreeDef | None = None

    def __call__(self, *leaves) -> list:
        global trace_count
        trace_count += 1
        args, position = [], 0
        for treedef in self.signature.treedefs:
            while len(args) in self.static:
                args.append(self.static[len(args)])
            args.append(tree_unflatten(treedef, leaves[position:position + treedef.num_leaves]))
            position += treedef.num_leaves
        while len(args) in self.static:
            args.append(self.static[len(args)])
        out_leaves, self.tree = tree_flatten(self.fun(*args))
        return [check_result_leaf(x) for x in out_leaves]


def trace_function(fun: Callable, static_argnums: tuple[int, ...], signature: Signature) -> tuple[ClosedProgram, TreeDef]:
    """Trace `fun` on tracers shaped like the signature's leaves; the result tree comes back too."""
    flat = Flattened(fun, static_argnums, signature)
    closed = trace.trace_flat(flat, [leaf_aval(x) for x in signature.leaves])
    return closed, flat.tree


@attrs.frozen(eq=False)
class FlatResult:
    """What a transformed function gives for one signature's leaves: its result's leaves and tree."""

    leaves: list
    tree: TreeDef
    checked: int = 0  # the last leaves are computed only for debug_nans to check, not returned
    array_outputs: tuple[int, ...] = ()  # the leaves that are gradients of 0-d arrays


FlatFunction = Callable[..., FlatResult]  # (*leaves) -> FlatResult, in the current interpreter


def interpreted_leaves(leaves: list) -> list:
    """The leaves a transformation run inside another one takes: tracers as they are, Python and
    NumPy ints as Python ints (a static `n` of an enclosing jit stays a number `range(n)` can
    take, as in JAX), other values as compiled code would take them."""
    return [leaf if isinstance(leaf, Tracer) else int(leaf) if is_int(leaf) else prepare_leaf(leaf)
            for leaf in map(checked_leaf, leaves)]


def is_int(leaf) -> bool:
    return isinstance(leaf, (int, np.integer)) and not isinstance(leaf, (bool, np.bool_))


def as_differentiable(leaves, wrt: list[int]) -> list:
    """The leaves with each differentiated Python int (traced as an int64, or a concrete int inside
    another transformation) made a float, so micrograd's `grad(f)(2, 3, 4)` differentiates."""
    leaves = list(leaves)
    for i in wrt:
        if type(leaves[i]) is int:
            leaves[i] = float(leaves[i])
        elif isinstance(leaves[i], Tracer) and leaves[i].aval.dtype == "i64":
            leaves[i] = leaves[i] * 1.0
    return leaves


def checked_leaf(leaf):
    leaf_aval(leaf)  # raises for leaves tracegrad cannot take
    return leaf


class cached_attribute:
    """An attribute computed on first use and stored in the instance, like functools.cached_property
    without its lock: up to Python 3.11 that lock is one per attribute for all instances, so threads
    computing it for different instances wait for each other, and a child forked while a thread holds
    it hangs at its first use. Threads that compute it at once for one instance all get the value
    stored first."""

    def __init__(self, compute: Callable):
        self.compute = compute
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner, name: str):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return instance.__dict__.setdefault(self.name, self.compute(instance))


class Compiled:
    """A traced program, its compiled code (made on first use), and the tree of its results."""

    def __init__(self, traced: ClosedProgram, result_tree: TreeDef, name: str, settings: Config, array_outputs=(),
                 checked_outputs: int = 0):
        self.traced = traced
        self.result_tree = result_tree
        self.name = name
        self.settings = settings
        self.unflatten = unflattener(result_tree)
        if array_outputs:  # the gradients of 0-d array arguments
            self.unflatten = converted_at(array_outputs, np.array, self.unflatten)
        if checked_outputs:  # the last outputs are computed for debug_nans to check, not returned
            self.unflatten = without_last(checked_outputs, self.unflatten)
        float32_scalars = tuple(i for i, x in enumerate(traced.program.outputs) if x.aval == FLOAT32_SCALAR)
        if float32_scalars:  # numba returns a float32 number as a Python float
            self.unflatten = converted_at(float32_scalars, np.float32, self.unflatten)
        self.lock = concurrency.new_lock()
        self.finish_expression = None  # the fast lane's expression of the results from numba's tuple `outputs`
        if settings.backend != "python":
            self.finish = self.unflatten  # numba already returns Python scalars
            if not array_outputs and not checked_outputs and not float32_scalars:
                self.finish_expression = unflatten_expression(result_tree, "outputs")

    @property
    def ir(self) -> Program:
        return self.traced.program

    @cached_attribute
    def optimized(self) -> ClosedProgram:
        """The program after the passes that run before code generation."""
        return optimize(reroll_loops(self.traced) if self.settings.reroll_loops else self.traced)

    @cached_attribute
    def consts(self) -> tuple:
        return self.optimized.consts

    @cached_attribute
    def source(self) -> str:
        numba = self.settings.backend == "numba"
        return codegen.generate_source(self.optimized.program, self.name, check_finite=self.settings.debug_nans,
                                       numba=numba, parallel=numba and self.settings.parallel)

    def compiled_code(self) -> Callable:
        return codegen.load(self.source, self.name, self.settings.backend)

    function = None  # the code each call runs: set by `start` on the first call
    compile_job = None  # the background compile last asked for, pending until it has run (concurrency.is_pending)
    dropped = False  # evicted from its function's signatures: a queued compile is skipped, none is asked for

    def start(self, leaves) -> Callable:
        """Choose the code of the first call: numba's, or NumPy's while numba compiles in the background."""
        with self.lock:
            if self.function is not None:
                return self.function
            settings = self.settings
            if settings.backend == "python":
                self.function = self.compiled_code()
            elif not codegen.numba_has_room(self.source):
                warn_numba_is_full()
                self.function = self.numpy_code()
            elif settings.compile_in_background and not codegen.is_ready(self.source, "numba"):
                self.function = self.numpy_stand_in
                self.request_compile(leaves)
            else:
                self.function = self.compile_on_first_call
            return self.function

    def numpy_code(self) -> Callable:
        """The program as NumPy calls, returning what numba's code returns."""
        source = codegen.generate_source(self.optimized.program, self.name, check_finite=self.settings.debug_nans)
        return numba_like_outputs(codegen.load(source, self.name, "python"))

    def numpy_stand_in(self, *args):
        """NumPy's run of the program while numba compiles it; asks again if the compile is not pending
        (pushed out of the queue, or never queued because Ctrl-C interrupted the request)."""
        if not self.dropped and not concurrency.is_pending(self.compile_job):
            self.request_compile(args[len(self.consts):])
        return self.numpy_function(*args)

    @cached_attribute
    def numpy_function(self) -> Callable:
        return self.numpy_code()

    def request_compile(self, leaves) -> None:
        self.compile_job = lambda: self.finish_compiling(leaves)
        concurrency.submit(self.compile_job)

    def compile_on_first_call(self, *args):
        """Load numba's code, which compiles (or loads from the disk cache) as it runs first."""
        function = self.compiled_code()
        outputs = function(*args)
        self.function = function
        self.mark_compiled()
        return outputs

    def finish_compiling(self, leaves) -> None:
        """On the compile thread: compile numba's code for the first call's arguments, then switch to it."""
        if self.dropped:
            return
        try:
            function = self.compiled_code()
            try:
                function(*self.consts, *leaves)  # numba compiles for these argument types
            except (FloatingPointError, IndexError):
                pass  # compiled; these arguments fail at run time (debug_nans, an index out of range), as in NumPy
            finally:
                release_thread_workspace(function)
        except BaseException as error:  # raised by the next call, and said now
            self.function = raising(error)
            warn(f"tracegrad: numba could not compile {self.name} ({type(error).__name__}: {error}); "
                 "the next call raises the error")
            return
        self.function = function
        self.mark_compiled()

    def mark_compiled(self) -> None:
        """Note in the disk cache that numba's code is saved, for later processes. The code is in place
        already: a failure here is said, never raised by the function's calls."""
        try:
            codegen.mark_compiled(self.source)
        except Exception as error:
            warn(f"tracegrad: could not note {self.name} as compiled in the disk cache "
                 f"({type(error).__name__}: {error}); it runs, and later processes may compile it again")

    def finish(self, outputs):
        if self.settings.backend == "python":
            outputs = [python_value(x) for x in outputs]
        return self.unflatten(outputs)

    def __call__(self, leaves):
        if self.prepare_arguments:
            leaves = [prepare_leaf(x) for x in leaves]
        function = self.function or self.start(leaves)
        return self.finish(function(*self.consts, *leaves))

    def for_signature(self, leaves) -> Compiled:
        """Note how arguments of this signature reach the code (same for every call with it)."""
        self.prepare_arguments = any(needs_preparing(x) for x in leaves)
        return self


# -- the staged-function machinery -------------------------------------------------------


def no_fast_lane(args):
    return MISS


class Transformed:
    """A function with a transformation: traced and compiled once per signature when called at
    the top level, run in the enclosing transformation's interpreter when called inside one."""

    def __init__(self, fun: Callable, transform: Callable[[Signature], FlatFunction], name: str, settings: Config,
                 static_argnums=()):
        self.fun = fun
        self.transform = transform  # signature -> the transformation of `fun` on its flat leaves
        self.name = name  # of the generated function
        self.settings = settings
        self.static_argnums = static_argnums
        self.cache: collections.OrderedDict = collections.OrderedDict()  # least recently called first
        self.fast_calls: dict = {}  # per cache key: its fast-lane caller, or None
        self.fast_call = no_fast_lane  # the fast lane: the caller of the last signature that worked
        self.fast_key = None  # the key of the fast lane's signature
        # held while a signature is traced; reentrant, as that trace may ask for another signature of this
        # very function (`.lower` of another shape)
        self.lock = concurrency.new_rlock()
        self.__wrapped__ = fun
        self.__doc__ = getattr(fun, "__doc__", None)
        self.__name__ = getattr(fun, "__name__", "fun")

    def key(self, args, leaves: list):
        if not self.static_argnums:
            return tuple([flatten_into(arg, leaves, leaf_key) for arg in args])
        return tuple([("static", arg) if i in self.static_argnums else flatten_into(arg, leaves, leaf_key)
                      for i, arg in enumerate(args)])

    def compiled(self, args, key) -> Compiled:
        with self.lock:
            entry = self.cache.get(key)
            if entry is None:
                signature = Signature.of(args, self.static_argnums)
                entry = self.build(signature).for_signature(signature.leaves)
                self.cache[key] = entry
                self.fast_calls[key] = None if self.static_argnums else known_signature_call(key, entry)
                self.drop_least_recent(key)
        return entry

    def build(self, signature: Signature) -> Compiled:
        """The transformation staged into a program for this signature, compiled on first use."""
        run = self.transform(signature)
        results: list[FlatResult] = []

        def staged(*leaves) -> list:
            results.append(run(*leaves))
            return results[0].leaves

        closed = trace.trace_flat(staged, [leaf_aval(x) for x in signature.leaves])
        result = results[0]
        return Compiled(closed, result.tree, self.name, self.settings, result.array_outputs, result.checked)

    def interpret(self, args):
        """The transformation run in the current interpreter: inside another transformation, its ops
        join the enclosing trace."""
        signature = Signature.of(args, self.static_argnums)
        result = self.transform(signature)(*interpreted_leaves(signature.leaves))
        return tree_unflatten(result.tree, result.leaves[:len(result.leaves) - result.checked])

    def drop_least_recent(self, newest) -> None:
        """Keep at most `tg.config.max_signatures` signatures, the least recently called dropped first (numba's
        code of a dropped one stays loaded); `newest`, the key just added, is the most recent. Calls through
        the fast lane do not reorder the cache, so its signature comes just before the newest."""
        limit, fast_key = max(config.max_signatures, 1), self.fast_key
        if len(self.cache) > limit and fast_key in self.cache:
            self.cache.move_to_end(fast_key)
            self.cache.move_to_end(newest)
        while len(self.cache) > limit:
            key, dropped = self.cache.popitem(last=False)
            dropped.dropped = True
            self.fast_calls.pop(key, None)
            if key == fast_key:  # its calls take the general path again, which traces it again
                self.fast_call, self.fast_key = no_fast_lane, None

    def entry(self, args, key) -> Compiled:
        entry = self.cache.get(key)
        if entry is None:
            return self.compiled(args, key)
        try:
            self.cache.move_to_end(key)
        except KeyError:  # dropped by another thread meanwhile
            pass
        return entry

    def __call__(self, *args, **kwargs):
        if kwargs:
            args = self.positional(args, kwargs)
        if core.transforming and tracing():  # inside another transformation (the first test is the cheap one)
            return self.interpret(args)
        result = self.fast_call(args)
        if result is not MISS:  # the arguments have the signature of the last call: no key to build
            return result
        leaves: list = []
        key = self.key(args, leaves)
        entry = self.entry(args, key)
        result = entry(leaves)
        fast_call = self.fast_calls.get(key)
        if fast_call is not None and not entry.prepare_arguments:  # after a call that worked
            self.fast_call, self.fast_key = fast_call, key
        return result

    def positional(self, args: tuple, kwargs: dict) -> tuple:
        """Keyword arguments in their parameters' positions (the signature is `fun`'s); a parameter
        skipped before one given by keyword takes its default, as an argument like the others."""
        try:
            signature = inspect.signature(self.fun)
            bound = signature.bind(*args, **kwargs)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{function_text(self.fun)}: {error} (at {where_text(user_source())})") from None
        if bound.kwargs:  # a parameter after a skipped default: fill the defaults in
            names = list(signature.parameters)
            last = max(names.index(name) if name in names else len(names) for name in kwargs)
            bound.apply_defaults()
            if bound.kwargs or len(bound.args) <= last:
                raise TypeError(f"{function_text(self.fun)} takes {sorted(bound.kwargs)} as **kwargs, which "
                                "tracegrad's transformations cannot pass; give them names and positions "
                                f"or close over them (at {where_text(user_source())})")
            return bound.args[:last + 1]
        return bound.args

    def lower(self, *args, **kwargs) -> Lowered:
        """The traced program (`.ir`) and generated `.source` for these arguments; callable like the function."""
        if kwargs:
            args = self.positional(args, kwargs)
        key = self.key(args, [])
        return Lowered(self, self.entry(args, key), key)


@attrs.frozen(eq=False)
class Lowered:
    """A transformed function specialised to one signature: its program, its source, its code."""

    transformed: Transformed
    compiled: Compiled
    key: tuple

    ir = property(lambda self: self.compiled.ir)
    optimized_ir = property(lambda self: self.compiled.optimized.program)  # what .source is generated from
    source = property(lambda self: self.compiled.source)
    function = property(lambda self: self.compiled.compiled_code())  # the compiled function of the source

    def __call__(self, *args):
        if tracing():  # inside another transformation, as the function itself
            return self.transformed.interpret(args)
        leaves: list = []
        if self.transformed.key(args, leaves) != self.key:
            raise TypeError(f"a lowered function takes arguments of the signature it was lowered for "
                            f"(at {where_text(user_source())}); call the function itself "
                            "for other shapes and types")
        return self.compiled(leaves)


_transforms: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


_positional_forms: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def positional_form(fun: Callable) -> Callable:
    """`fun` with its keyword-only parameters made positional ones after the others, so that the
    transformations, which pass arguments by position, can pass them (by keyword too): `fun`
    itself when it has none. One form per function, so its transformations are shared."""
    try:
        form = _positional_forms.get(fun)
    except TypeError:  # not weakly referenceable
        form = None
    if form is not None:
        return form
    try:
        signature = inspect.signature(fun)
    except (TypeError, ValueError):  # a builtin without a signature: positional only
        return fun
    kinds = [p.kind for p in signature.parameters.values()]
    if inspect.Parameter.KEYWORD_ONLY not in kinds:
        return fun
    if inspect.Parameter.VAR_POSITIONAL in kinds or inspect.Parameter.VAR_KEYWORD in kinds:
        raise TypeError(f"{function_text(fun)} has keyword-only parameters and *args or **kwargs, which "
                        "tracegrad's transformations cannot pass; give its parameters names and positions "
                        f"(at {where_text(user_source())})")
    positional = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    keyword_only = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in signature.parameters.values()
                    if p.kind is inspect.Parameter.KEYWORD_ONLY]
    try:
        form_signature = signature.replace(parameters=positional + keyword_only)
    except ValueError:  # a keyword-only parameter without a default after a positional one with a default
        raise TypeError(f"{function_text(fun)} has a keyword-only parameter without a default after a "
                        "parameter with one, which tracegrad's transformations cannot pass by position; "
                        f"give it a default or a position (at {where_text(user_source())})") from None
    names = [p.name for p in keyword_only]

    @functools.wraps(fun)
    def form(*args):
        bound = form_signature.bind(*args)
        bound.apply_defaults()
        values = bound.args
        return fun(*values[:len(positional)], **dict(zip(names, values[len(positional):])))

    form.__signature__ = form_signature
    try:
        _positional_forms[fun] = form
    except TypeError:
        pass
    return form


def transformed(fun: Callable, options: tuple, make: Callable[[Config], Transformed]) -> Transformed:
    """One Transformed per (function, options, settings), so `tg.grad(f)(x)` in a loop traces once."""
    try:
        per_function = _transforms.setdefault(fun, {})
    except TypeError:  # not weakly referenceable: no sharing
        return make(config.snapshot())
    key = options + config.transformation_settings()
    if key not in per_function:
        per_function[key] = make(config.snapshot())
    return per_function[key]


# -- grad and value_and_grad -------------------------------------------------------------


def normalize_argnums(argnums, n_args: int) -> tuple[int, ...]:
    numbers = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in numbers:
        if not -n_args <= n < n_args:
            raise errors.ArgnumsError(f"argnums {argnums} is out of range for a call with {n_args} positional "
                                      f"arguments (at {where_text(user_source())})")
    return tuple(n % n_args for n in numbers)


def differentiable_leaves(signature: Signature, argnums: tuple[int, ...]) -> list[int]:
    wrt = []
    for argnum in argnums:
        for index in signature.leaf_range(argnum):
            leaf = signature.leaves[index]
            aval = leaf_aval(leaf)
            if aval.dtype not in FLOAT_DTYPES and type(leaf) is not int:  # a Python int is differentiated as a float
                raise errors.NonDifferentiableArgumentError(
                    f"argument {argnum} holds a leaf of type {aval} (at {where_text(user_source())}); "
                    "gradients are taken only with respect to float values: pass integer arrays such as labels "
                    "as an argument that argnums does not name")
            wrt.append(index)
    return wrt


def gradient_transformation(fun, argnums, has_aux: bool, with_value: bool, settings: Config):
    """signature -> `fun`'s gradient (and value) as a function of the signature's leaves, by reverse mode."""

    def transform(signature: Signature) -> FlatFunction:
        numbers = normalize_argnums(argnums, len(signature.treedefs))
        wrt = differentiable_leaves(signature, numbers)
        grads_trees = [signature.treedefs[n] for n in numbers]
        grads_tree = grads_trees[0] if isinstance(argnums, int) else tuple_tree(*grads_trees)
        zero_d = tuple(j for j, index in enumerate(wrt)
                       if type(signature.leaves[index]) is np.ndarray and signature.leaves[index].ndim == 0)
        flat = Flattened(fun, (), signature)

        def run(*leaves) -> FlatResult:
            leaves = as_differentiable(leaves, wrt)
            function = flat
            if settings.reroll_loops and all(isinstance(leaf, Tracer) for leaf in leaves):
                # staged: `fun` becomes a program first, whose unrolled Python loops are rolled back
                # into scans, so reverse mode and numba see one loop, not a thousand copies of its body
                closed = reroll_loops(trace.trace_flat(flat, [leaf.aval for leaf in leaves]))
                function = lambda *values: ad.evaluated_outputs(closed, values)
            outputs, pullback = ad.vjp(function, list(leaves), wrt)
            value_tree, aux_tree = value_and_aux_trees(fun, flat.tree, has_aux)
            if value_tree.structure is not LEAF or aval_of(outputs[0]).size != 1 or (
                    aval_of(outputs[0]).dtype not in FLOAT_DTYPES):
                shown = aval_of(outputs[0]) if value_tree.structure is LEAF else value_tree
                raise NonScalarOutputError(
                    f"grad requires {function_text(fun)} to return a float scalar (or an array of one "
                    f"element), it returned {shown} (called at {where_text(user_source())}); for a vector "
                    "output, sum it or use tg.vjp")
            grads = pullback([1.0] + [None] * (len(outputs) - 1))
            n_aux = aux_tree.num_leaves
            if with_value:
                value_part = tuple_tree(value_tree, aux_tree) if has_aux else value_tree
                return FlatResult(outputs + grads, tuple_tree(value_part, grads_tree),
                                  array_outputs=tuple(1 + n_aux + j for j in zero_d))
            # under debug_nans the value is computed too (and dropped), so a nan in it is caught as JAX catches it
            checked = outputs[:1] if settings.debug_nans else []
            result = tuple_tree(grads_tree, aux_tree) if has_aux else grads_tree
            return FlatResult(grads + outputs[1:] + checked, result, len(checked), zero_d)

        return run

    return transform


def value_and_aux_trees(fun, out_tree: TreeDef, has_aux: bool) -> tuple[TreeDef, TreeDef]:
    if not has_aux:
        return out_tree, TreeDef((tuple, None, ()), 0)
    if not (out_tree.structure is not LEAF and out_tree.structure[0] is tuple and len(out_tree.structure[2]) == 2):
        raise TypeError(f"with has_aux=True, {function_text(fun)} must return a pair (output, aux); "
                        f"it returned {out_tree} (called at {where_text(user_source())})")
    return TreeDef(out_tree.structure[2][0], 1), TreeDef(out_tree.structure[2][1], out_tree.num_leaves - 1)


def grad(fun: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The gradient of a scalar-valued `fun` with respect to the arguments at `argnums`.

    The gradient has the structure of those arguments: a float for a float, an array of the
    same shape for an array, nested tuples/lists/dicts alike. With `has_aux`, `fun` returns
    `(output, aux)` and the result is `(gradient, aux)`.
    """
    fun = positional_form(fun)
    options = ("grad", argnums, has_aux)
    return transformed(fun, options, lambda settings: Transformed(
        fun, gradient_transformation(fun, argnums, has_aux, False, settings), generated_name("grad", fun), settings))


def value_and_grad(fun: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """Like `grad`, but returns `(value, gradient)`, or `((value, aux), gradient)` with `has_aux`."""
    fun = positional_form(fun)
    options = ("value_and_grad", argnums, has_aux)
    return transformed(fun, options, lambda settings: Transformed(
        fun, gradient_transformation(fun, argnums, has_aux, True, settings), generated_name("value_and_grad", fun),
        settings))


# -- jit, make_ir ------------------------------------------------------------------------


def jit(fun: Callable, static_argnums: int | tuple[int, ...] = (), static_argnames: str | tuple[str, ...] = ()
        ) -> Transformed:
    """`fun` traced once per signature and compiled; it may call tg.grad inside.

    Arguments at `static_argnums` (or named in `static_argnames`) are passed to `fun` as Python
    values (they must be hashable) and are part of the cache key. Arguments may be passed by
    keyword. `jit(fun).lower(*args)` gives the program (`.ir`) and its generated `.source`.
    Inside another transformation, `jit(fun)` is `fun`.
    """
    fun = positional_form(fun)
    static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    names = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    if names:
        parameters = list(inspect.signature(fun).parameters)
        unknown = [name for name in names if name not in parameters]
        if unknown:
            raise ValueError(f"static_argnames {unknown} are not parameters of {function_text(fun)} "
                             f"(at {where_text(user_source())})")
        static = tuple(sorted(set(static) | {parameters.index(name) for name in names}))
    return transformed(fun, ("jit", static), lambda settings: Transformed(
        fun, jit_transform(fun, static), generated_name("jit", fun), settings, static))


def jit_transform(fun: Callable, static: tuple[int, ...]) -> Callable[[Signature], FlatFunction]:
    """signature -> `fun` itself as a function of the signature's leaves: what jit stages and compiles."""

    def transform(signature: Signature) -> FlatFunction:
        flat = Flattened(fun, static, signature)
        return lambda *leaves: FlatResult(flat(*leaves), flat.tree)

    return transform


def make_ir(fun: Callable, static_argnums: int | tuple[int, ...] = ()) -> Callable[..., Program]:
    """A function that traces `fun` on the given arguments and returns its Program."""
    static = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)

    def make(*args) -> Program:
        signature = Signature.of(args, static)
        return trace_function(fun, static, signature)[0].program

    return make


# -- jvp ---------------------------------------------------------------------------------


def jvp(fun: Callable, primals, tangents) -> tuple[Any, Any]:
    """`(fun(*primals), the directional derivative of fun at primals along tangents)`, as `jax.jvp`.

    `primals` and `tangents` are tuples (one entry per argument of `fun`) of the same structure
    and shapes; the tangent out has the structure of `fun`'s output. Forward mode: one pass,
    whatever the number of outputs. Traced and compiled once per signature at the top level, as
    `tg.jit` is; inside another transformation it runs in that one's interpreter, so
    `tg.jvp(tg.grad(f), (x,), (v,))` is a Hessian-vector product.
    """
    primals, tangents = tuple(primals), tuple(tangents)
    primal_leaves, primal_tree = tree_flatten(primals)
    tangent_leaves, tangent_tree = tree_flatten(tangents)
    if primal_tree != tangent_tree:
        raise errors.TreeStructureError(f"jvp: primals {primal_tree} and tangents {tangent_tree} differ in structure "
                                        f"(at {where_text(user_source())}); give one tangent per primal leaf")
    for primal, tangent in zip(primal_leaves, tangent_leaves):
        if np.shape(primal) != np.shape(tangent):
            raise errors.ShapeError(f"jvp: a tangent of shape {np.shape(tangent)} for a primal of shape "
                                    f"{np.shape(primal)} (at {where_text(user_source())})")

    def pushforward(primals, tangents):
        leaves, tree = tree_flatten(primals)
        found = {}

        def flat_fun(*values):
            out_leaves, found["tree"] = tree_flatten(fun(*tree_unflatten(tree, values)))
            return out_leaves

        outputs, out_tangents = forward.jvp(flat_fun, leaves, tree_flatten(tangents)[0])
        return tree_unflatten(found["tree"], outputs), tree_unflatten(found["tree"], out_tangents)

    return transformed(fun, ("jvp",), lambda settings: Transformed(
        fun, jit_transform(pushforward, ()), generated_name("jvp", fun), settings))(primals, tangents)


# -- vmap --------------------------------------------------------------------------------


def vmap(fun: Callable, in_axes=0, out_axes=0) -> Callable:
    """`fun` mapped over an axis of its arguments, as `jax.vmap`: one program for the whole batch.

    `in_axes` is an int (every argument's leaves along that axis), None (not mapped), or a tuple
    with one entry per positional argument, each an int, None, or a pytree of them matching that
    argument. Every output has the batch along `out_axes` (an int); an output that does not
    depend on the mapped arguments is repeated. Each op runs once on the whole batch (its
    batching rule), so `tg.vmap(tg.grad(loss), in_axes=(None, 0, 0))` gives per-example gradients
    in one compiled program. Traced and compiled once per signature, as `tg.jit`.
    """
    fun = positional_form(fun)
    if not isinstance(out_axes, int):
        raise TypeError(f"vmap's out_axes must be an int (at {where_text(user_source())})")

    def mapped(*args):
        leaves, treedef = tree_flatten(args)
        axes = leaf_axes(in_axes, args)
        sizes = {np.shape(leaf)[axis] if axis is not None and np.ndim(leaf) > axis % max(np.ndim(leaf), 1) else None
                 for leaf, axis in zip(leaves, axes) if axis is not None}
        if None in sizes or len(sizes) != 1:
            raise errors.ShapeError(f"vmap needs every mapped leaf to have the mapped axis, all of one length: "
                                    f"in_axes {in_axes} on shapes {[np.shape(x) for x in leaves]} "
                                    f"(at {where_text(user_source())})")
        (size,) = sizes
        values = [leaf if axis is None else moved_axis(leaf, axis, 0) for leaf, axis in zip(leaves, axes)]
        found = {}

        def flat_fun(*flat):
            out_leaves, found["tree"] = tree_flatten(fun(*tree_unflatten(treedef, flat)))
            return out_leaves

        outputs, batched = batching.batch(flat_fun, values, [axis is not None for axis in axes], size)
        results = [moved_axis(out if b else repeated(out, size), 0, out_axes) for out, b in zip(outputs, batched)]
        return tree_unflatten(found["tree"], results)

    options = ("vmap", axes_key(in_axes), out_axes)
    return transformed(fun, options, lambda settings: Transformed(
        fun, jit_transform(mapped, ()), generated_name("vmap", fun), settings))


def axes_key(in_axes):
    """in_axes as a hashable key (its leaves and structure)."""
    leaves, treedef = tree_flatten(in_axes)
    return tuple(leaves), treedef


def leaf_axes(in_axes, args: tuple) -> list:
    """One mapped axis (or None) per leaf of `args`, from `in_axes`: an int or None for everything, or
    one entry per positional argument, each an int, None, or a tree of them over that argument's
    structure (an int or None standing for a whole subtree), as JAX reads it."""
    if in_axes is None or isinstance(in_axes, int):
        return [in_axes] * len(tree_flatten(args)[0])
    if not isinstance(in_axes, (tuple, list)) or len(in_axes) != len(args):
        raise ValueError(f"vmap's in_axes must be an int, None, or one entry per argument ({len(args)}, "
                         "keyword arguments and defaults before the last one given counted in their positions), "
                         f"got {in_axes!r} (at {where_text(user_source())})")
    return [axis for arg, axes in zip(args, in_axes) for axis in axes_over(arg, axes)]


def axes_over(arg, axes) -> list:
    if axes is None or isinstance(axes, int):
        return [axes] * len(tree_flatten(arg)[0])
    if isinstance(axes, dict) and isinstance(arg, dict) and set(axes) == set(arg):
        return [axis for key in tree_flatten(arg)[1].structure[1] for axis in axes_over(arg[key], axes[key])]
    if isinstance(axes, (tuple, list)) and isinstance(arg, (tuple, list)) and len(axes) == len(arg):
        return [axis for child, child_axes in zip(arg, axes) for axis in axes_over(child, child_axes)]
    raise errors.TreeStructureError(f"vmap's in_axes entry {axes!r} does not match its argument's structure "
                                    f"{tree_flatten(arg)[1]} (at {where_text(user_source())})")


def moved_axis(value, source: int, destination: int):
    rank = np.ndim(value) if not isinstance(value, Tracer) else value.ndim
    source, destination = source % max(rank, 1), destination % max(rank, 1)
    if source == destination:
        return value
    from . import numpy as tnp
    return tnp.moveaxis(value, source, destination)


def repeated(value, size: int):
    """An output the same for every example, repeated along a new leading axis."""
    shape = (size,) + tuple(aval_of(value).shape)
    return core.bind(primitives.broadcast_to_p, value, shape=shape)


def linearize(fun: Callable, *primals) -> tuple[Any, Callable]:
    """`(fun(*primals), f_jvp)` with `f_jvp(*tangents)` the JVP of `fun` at `primals`, as `jax.linearize`.

    The forward-mode program is split in two, as `vjp` splits reverse mode's: the part that does
    not read the tangents runs now, once, and keeps the values the other part needs; each `f_jvp`
    call runs only that other part, linear in the tangents (both compiled; `f_jvp.ir` prints
    it). Tangents have the primals' structure; those of integer leaves are ignored.
    """
    if tracing():  # inside another transformation, all of it is staged there anyway
        return jit(fun)(*primals), lambda *tangents: jvp(fun, primals, tangents)[1]
    signature = Signature.of(primals)
    leaves, n = signature.leaves, len(signature.leaves)
    wrt = [i for i, x in enumerate(leaves) if leaf_aval(x).dtype in FLOAT_DTYPES]
    flat = Flattened(fun, (), signature)

    def joint(*values):  # (primals, tangents of the float leaves) -> (outputs, output tangents)
        tangents = [None] * n
        for index, tangent in zip(wrt, values[n:]):
            tangents[index] = tangent
        outputs, out_tangents = forward.jvp(flat, list(values[:n]), tangents)
        return list(outputs) + list(out_tangents)

    settings = config.snapshot()
    closed = trace.trace_flat(joint, [leaf_aval(x) for x in leaves] + [leaf_aval(leaves[i]) for i in wrt])
    n_outputs = len(closed.program.outputs) // 2
    now, linear = ad.split_forward_backward(closed, n, n_outputs)
    flat_list = lambda count: TreeDef((list, None, (LEAF,) * count), count)
    results = Compiled(now, flat_list(len(now.program.outputs)), generated_name("linearize", flat.fun),
                       settings).for_signature(leaves)(leaves)
    outputs, residuals = results[:n_outputs], results[n_outputs:]
    pushforward = Compiled(linear, flat_list(n_outputs), generated_name("linearized", flat.fun), settings)
    primal_tree = tuple_tree(*signature.treedefs)

    def f_jvp(*tangents):
        tangent_leaves, tree = tree_flatten(tangents)
        if tree != primal_tree:
            raise errors.TreeStructureError(f"linearize: tangents {tree} differ in structure from the primals "
                                            f"{primal_tree} (at {where_text(user_source())})")
        for index in wrt:
            if np.shape(tangent_leaves[index]) != np.shape(leaves[index]):
                raise errors.ShapeError(f"linearize: a tangent of shape {np.shape(tangent_leaves[index])} for a "
                                        f"primal of shape {np.shape(leaves[index])} (at {where_text(user_source())})")
        values = list(residuals) + [in_traced_dtype(tangent_leaves[i], leaf_aval(leaves[i])) for i in wrt]
        return tree_unflatten(flat.tree, pushforward.for_signature(values)(values))

    f_jvp.ir = pushforward.ir  # the linear program: (kept values, tangents) -> output tangents
    return tree_unflatten(flat.tree, outputs), f_jvp


# -- vjp ---------------------------------------------------------------------------------


def vjp(fun: Callable, *primals) -> tuple[Any, Callable]:
    """`(fun(*primals), pullback)`, where `pullback(cotangent)` gives one cotangent per primal.

    At the top level, the forward and the adjoint are two compiled programs; the values the
    adjoint needs (residuals) pass from one to the other. Inside another transformation both
    run in its interpreter.
    """
    signature = Signature.of(primals)
    wrt = [i for i, x in enumerate(signature.leaves) if leaf_aval(x).dtype in FLOAT_DTYPES]
    cotangent_tree = tuple_tree(*signature.treedefs)
    flat = Flattened(fun, (), signature)
    if tracing():
        outputs, flat_pullback = ad.vjp(flat, interpreted_leaves(signature.leaves), wrt)
    else:
        outputs, flat_pullback = compiled_vjp(flat, signature, wrt)
    out_tree = flat.tree

    def pullback(cotangent):
        leaves, tree = tree_flatten(cotangent)
        if tree != out_tree:
            raise ValueError(f"the cotangent must have the structure of the output, {out_tree}; got {tree}")
        cotangents = [None] * len(signature.leaves)
        for index, value in zip(wrt, flat_pullback(leaves)):
            cotangents[index] = value
        return tree_unflatten(cotangent_tree, cotangents)

    return tree_unflatten(out_tree, outputs), pullback


def compiled_vjp(flat: Flattened, signature: Signature, wrt: list[int]) -> tuple[list, Callable]:
    """`fun`'s outputs and flat pullback as two compiled programs: the reverse-mode pass makes the
    joint program of `fun`'s, which is split into a forward and an adjoint."""
    settings = config.snapshot()
    closed = trace.trace_flat(flat, [leaf_aval(x) for x in signature.leaves])
    closed = reroll_loops(closed) if settings.reroll_loops else closed
    n_outputs = len(closed.program.outputs)
    forward, backward = ad.split_forward_backward(ad.vjp_program(closed, wrt), len(signature.leaves), n_outputs)
    flat_list = lambda n: TreeDef((list, None, (LEAF,) * n), n)
    results = Compiled(forward, flat_list(len(forward.program.outputs)), generated_name("vjp_forward", flat.fun),
                       settings).for_signature(signature.leaves)(signature.leaves)
    outputs, residuals = results[:n_outputs], results[n_outputs:]
    adjoint = Compiled(backward, flat_list(len(wrt)), generated_name("vjp_backward", flat.fun), settings)

    cotangent_avals = [v.aval for v in backward.program.inputs[len(residuals):]]

    def flat_pullback(cotangents):
        leaves = list(residuals) + [in_traced_dtype(c, aval) for c, aval in zip(cotangents, cotangent_avals)]
        return adjoint.for_signature(leaves)(leaves)

    return outputs, flat_pullback


def in_traced_dtype(value, aval: Aval):
    """A tangent or cotangent given for a value traced as `aval`, in its dtype (a float64 cotangent of a
    float32 output is made float32, as the program was traced for), as compiled code takes it."""
    array = np.asarray(value, dtype=core.NUMPY_DTYPES[aval.dtype])
    return prepare_leaf(array) if array.ndim == 0 else array


def cache_info() -> dict:
    """How many times functions were traced, distinct programs compiled by numba in this process, and
    background compiles queued or running."""
    return {"traces": trace_count, "compiles": codegen.compile_count, "pending_compiles": concurrency.pending_count()}

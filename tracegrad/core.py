"""The core: one table of rules per transformation, keyed by primitive, and the interpreters that read them.

The tables (as in Autodidax), which `tracegrad/primitives.py` fills, one paragraph per primitive:

    abstract_eval_rules  (*input avals, **params) -> output aval        tracing, typecheck
    impl_rules           (*NumPy values, **params) -> NumPy value       evaluation, constant folding
    vjp_rules            (g, out, *inputs, **params) -> one cotangent   reverse mode (tracegrad.ad)
                         per input, None where none flows
    forward_vjp_rules    (primals, differentiated, **params) ->         reverse mode of a primitive whose
                         (outputs, backward)                            VJP needs values computed inside
                                                                        it (a loop's per-step values)
    jvp_rules            (primals, tangents, **params) ->               forward mode (tracegrad.forward);
                         (output, its tangent)                          a tangent is None where zero
    batch_rules          (values, batched, size, **params) ->           vmap (tracegrad.batching); a
                         (output, whether it is batched)                batched value has its examples
                                                                        along axis 0

A transformation is an Interpreter plus its table. `bind(primitive, *args)` hands the op to the
current interpreter: evaluation (`impl_rules` on NumPy values) unless a transformation has set
another with `set_interpreter`. The code generator's table, how each primitive is written as
code, is `tracegrad.lowering.rules`.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Callable

import numpy as np

from . import concurrency, errors
from .ir import SCALAR_AVALS, Aval, ClosedProgram, IRTypeError, Literal, Primitive, Program, Var
from .source_info import annotate, user_source, where_text

abstract_eval_rules: dict[Primitive, Callable[..., Aval]] = {}
impl_rules: dict[Primitive, Callable] = {}
vjp_rules: dict[Primitive, Callable] = {}
# (primals, differentiated: one bool per input, **params) -> (outputs, backward), backward(output
# cotangents, None for none) -> one cotangent per input: the forward computation keeps what the
# backward one needs (a scan stacks its body's residuals), both bound in the interpreter current
forward_vjp_rules: dict[Primitive, Callable] = {}
# (primals, tangents, **params) -> (primal out, tangent out), a tangent None where it is zero: forward mode
jvp_rules: dict[Primitive, Callable] = {}
# (values, batched: one bool per input, size, **params) -> (value, whether batched): vmap, examples on axis 0
batch_rules: dict[Primitive, Callable] = {}


# -- interpreters ------------------------------------------------------------------------


class Interpreter:
    """What `bind` does with an op: evaluate it, stage it into a program, differentiate it..."""

    active = True  # False once its trace has ended: a tracer of it met later was leaked

    def interpret_op(self, primitive: Primitive, args: tuple, params: dict):
        raise NotImplementedError


class EvalInterpreter(Interpreter):
    """Computes each op at once with its NumPy impl: the interpreter when no transformation runs."""

    def interpret_op(self, primitive: Primitive, args: tuple, params: dict):
        if any(isinstance(arg, Tracer) for arg in args):
            raise errors.LeakedTracerError(
                f"{primitive.name} was applied to a traced value outside any trace "
                f"(at {where_text(user_source())}); return values from the traced function instead "
                "of storing them in globals")
        return impl_rules[primitive](*args, **params)


EVALUATION = EvalInterpreter()


class InterpreterState(threading.local):
    interpreter: Interpreter = EVALUATION  # each thread starts evaluating


_state = InterpreterState()
# how many threads run a transformation's interpreter: while none does, a call of a transformed
# function knows it is at the top level without reading its thread's state (7 ns against 40)
transforming = 0
_transforming_lock = concurrency.new_lock()


def current_interpreter() -> Interpreter:
    return _state.interpreter


@contextlib.contextmanager
def set_interpreter(interpreter: Interpreter):
    """Make `interpreter` the one `bind` hands ops to, until the block ends."""
    global transforming
    previous = _state.interpreter
    starts = previous is EVALUATION and interpreter is not EVALUATION
    if starts:
        with _transforming_lock:
            transforming += 1
    _state.interpreter = interpreter
    try:
        yield interpreter
    finally:
        _state.interpreter = previous
        if starts:
            with _transforming_lock:
                transforming -= 1


def tracing() -> bool:
    """Whether a transformation's interpreter is current (staging, reverse mode...), not evaluation."""
    return transforming != 0 and _state.interpreter is not EVALUATION


def bind(primitive: Primitive, *args, **params):
    """Apply `primitive` to `args`, as the current interpreter does it."""
    return _state.interpreter.interpret_op(primitive, args, params)


def eval_program(closed: ClosedProgram, args) -> dict[Var, object]:
    """Bind each op of a program on `args` in the current interpreter; the value of every Var.

    So a program is interpreted like the function it was traced from: evaluated, staged into
    another program, or differentiated. The ops bound keep the source (and adjoint_of) of
    those they stand for.
    """
    program = closed.program
    env = dict(zip(program.constvars, closed.consts))
    env.update(zip(program.inputs, args))
    for op in program.ops:
        with annotate(op.source, op.adjoint_of):
            result = bind(op.primitive, *[read(env, x) for x in op.inputs], **op.param)
        if op.primitive.multiple_results:
            env.update(zip(op.outs, result))
        else:
            env[op.out] = result
    return env


def read(env: dict, atom):
    return atom.value if isinstance(atom, Literal) else env[atom]


# -- traced values -----------------------------------------------------------------------


def conversion_error(aval: Aval, wanted: str) -> errors.TracerConversionError:
    where = where_text(user_source())
    if wanted == "array":
        advice = ("NumPy needs concrete numbers to build an array. To build one from traced values use "
                  "tnp.stack([...]); for functions of arrays use tracegrad.numpy (tnp) or NumPy's supported "
                  "functions, which dispatch to it.")
    elif wanted == "bool":
        advice = ("Python `if`, `while`, `and`, `or` and `not` cannot branch on a traced value. "
                  "Use tnp.where(condition, x, y) to choose between values, or make the value a static "
                  "argument with tg.jit(fun, static_argnums=...).")
    elif wanted == "int" and aval.dtype == "i64":
        advice = ("An int argument of a transformed function is traced, as in jax.jit: it can index an "
                  "array (x[i]) and take part in arithmetic, but `range(n)` and int() need a concrete "
                  "number. Make it static (tg.jit(fun, static_argnums=...) or static_argnames=...), "
                  "close over it (functools.partial(fun, n=n)), or loop with tg.fori_loop.")
    else:
        advice = (f"{wanted}() and the functions of Python's `math` module need a concrete number. "
                  "Use tracegrad.numpy instead: tnp.sin(x) for math.sin(x), tnp.exp(x) for math.exp(x), "
                  "and so on; or make the value a static argument with tg.jit(fun, static_argnums=...).")
    return errors.TracerConversionError(
        f"a traced value {aval} was used as a Python {wanted} at {where}. {advice}")


NUMPY_DTYPES = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "bool": np.bool_}


class Tracer:
    """A value an interpreter is tracing: it has a shape and a dtype but no numbers.

    Each interpreter has its own kind (its `interpreter` attribute says whose it is). The
    arithmetic operators and NumPy-style methods are tracegrad.numpy's functions (`x + y` is
    `tnp.add(x, y)`), set on this class by that module, which builds on this one.
    """

    __slots__ = ()
    __array_priority__ = 1000
    interpreter: Interpreter
    aval: Aval

    shape = property(lambda self: self.aval.shape)
    ndim = property(lambda self: self.aval.ndim)
    size = property(lambda self: self.aval.size)
    dtype = property(lambda self: np.dtype(NUMPY_DTYPES[self.aval.dtype]))

    def __repr__(self) -> str:
        return f"Tracer<{self.aval}>"

    __hash__ = object.__hash__

    def __setitem__(self, index, value):
        raise errors.ImmutableValueError(
            f"traced values are immutable: item assignment at {where_text(user_source())}. "
            "Build a new value instead, e.g. tnp.where(mask, new_values, x) to replace elements.")

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError(f"len() of a 0-d traced value (at {where_text(user_source())})")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError(f"iteration over a 0-d traced value (at {where_text(user_source())})")
        return (self[i] for i in range(self.shape[0]))

    # Python needs concrete values here: fail clearly
    def __bool__(self):
        raise conversion_error(self.aval, "bool")

    def __float__(self):
        raise conversion_error(self.aval, "float")

    def __int__(self):
        raise conversion_error(self.aval, "int")

    def __index__(self):
        raise conversion_error(self.aval, "int")

    def __complex__(self):
        raise conversion_error(self.aval, "complex")

    def __array__(self, dtype=None, copy=None):
        raise conversion_error(self.aval, "array")


def check_alive(value) -> None:
    """Raise if `value` is a tracer of an interpreter whose trace has ended (kept in a global, say)."""
    if isinstance(value, Tracer) and not value.interpreter.active:
        raise errors.LeakedTracerError(
            f"a traced value {value.aval} was used after its trace ended (at {where_text(user_source())}); "
            "return values from the traced function instead of storing them in globals")


# -- concrete values ---------------------------------------------------------------------


def aval_of(value) -> Aval:
    """The shape and dtype of a value: a tracer's, a Python number's, a NumPy value's."""
    if isinstance(value, Tracer):
        return value.aval
    aval = SCALAR_AVALS.get(type(value))
    if aval is not None:
        return aval
    array = np.asarray(value)
    return Aval(array.shape, dtype_name(array.dtype))


def dtype_name(dtype) -> str:
    """The IR's name of a NumPy dtype: float32 stays f32, other floats are f64, integers i64."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return "f32"
    return "bool" if dtype.kind == "b" else "i64" if dtype.kind in "iu" else "f64"


INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def integer_overflow(value, kind: str) -> errors.IntegerOverflowError:
    return errors.IntegerOverflowError(
        f"the {kind} {value} does not fit in int64, the integer type of tracegrad's programs "
        f"(at {where_text(user_source())}); pass integers in [-2**63, 2**63), as every valid label or "
        "index is, or convert quantities this large to float64 yourself")


def as_traceable_array(value) -> np.ndarray:
    """NumPy values as tracegrad sees them: float64, float32, int64 or bool (refusing uint64 values int64
    cannot hold; float16 becomes float64)."""
    array = np.asarray(value)
    wanted = NUMPY_DTYPES[dtype_name(array.dtype)]
    if array.dtype != wanted:
        if array.dtype.kind not in "biuf":
            raise TypeError(f"tracegrad cannot trace an array of dtype {array.dtype} "
                            f"(at {where_text(user_source())}); use float, int or bool arrays")
        if array.dtype == np.uint64 and array.size and array.max() > np.uint64(INT64_MAX):
            raise integer_overflow(array.max(), "uint64 value")
        array = array.astype(wanted)
    return array


# -- the type checker --------------------------------------------------------------------


def typecheck(program: Program) -> None:
    """Check that every Var is defined once before use and every op's type is what its rule gives."""
    defined: set[Var] = set()

    def define(var: Var, where: str) -> None:
        if not isinstance(var, Var):
            raise IRTypeError(f"{where}: {var!r} is not a Var")
        if var in defined:
            raise IRTypeError(f"{where}: a Var is defined twice")
        defined.add(var)

    def check_use(atom, where: str) -> None:
        if isinstance(atom, Var) and atom not in defined:
            raise IRTypeError(f"{where}: a Var is used before it is defined")

    for var in program.constvars + program.inputs:
        define(var, "binders")
    for index, op in enumerate(program.ops):
        where = f"op {index} ({op.primitive.name})"
        if op.primitive not in abstract_eval_rules:
            raise IRTypeError(f"{where}: unknown primitive")
        for atom in op.inputs:
            check_use(atom, where)
        expected = abstract_eval_rules[op.primitive](*(x.aval for x in op.inputs), **op.param)
        if not op.primitive.multiple_results:
            expected = (expected,)
        if tuple(expected) != tuple(out.aval for out in op.outs):
            raise IRTypeError(f"{where}: outputs are {[str(out.aval) for out in op.outs]}, "
                              f"its rule gives {[str(aval) for aval in expected]}")
        for _, sub_program in op.sub_programs():
            typecheck(sub_program)
        for out in op.outs:
            define(out, where)
    for atom in program.outputs:
        check_use(atom, "outputs")

"""Tracing: run a Python function on Tracers and record the ops it applies as a Program.

One staging context (a Builder) is active per trace; `bind` appends an op to it when a
Tracer is among the arguments, and simply computes with NumPy when none is.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

import attrs
import numpy as np

from . import errors
from .ir import Aval, Literal, Op, Program, SourceLine, Var

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep


def user_source_line() -> SourceLine | None:
    """The innermost frame outside tracegrad and NumPy: the user's line that is running."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_PACKAGE_DIR) or filename.startswith(_NUMPY_DIR)):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def where_text(source: SourceLine | None) -> str:
    return f"{source[0]}:{source[1]}" if source else "an unknown line"


@attrs.frozen(eq=False)
class Traced:
    """A Program and the values of its constvars (arrays, or tracers of an enclosing trace)."""

    program: Program
    consts: tuple


class Builder:
    """The staging context of one trace: it appends one Op per primitive applied to its tracers."""

    def __init__(self):
        self.inputs: list[Var] = []
        self.ops: list[Op] = []
        self.constvars: list[Var] = []
        self.consts: list = []
        self.const_of: dict[int, Var] = {}  # id(value) -> its constvar
        self.captured: list = []
        self.source: SourceLine | None = None  # set while replaying a program, to keep its lines
        self.adjoint_of: Op | None = None
        self.active = True

    def new_input(self, aval: Aval) -> Tracer:
        var = Var(aval)
        self.inputs.append(var)
        return Tracer(var, self)

    def atom(self, value) -> Var | Literal:
        """The IR atom for a value met in this trace: a Var for tracers and arrays, else a Literal."""
        if isinstance(value, Tracer):
            if value.builder is self:
                return value.var
            check_alive(value)
            return self.constvar(value, value.aval)  # a value of an enclosing trace, captured
        if isinstance(value, (bool, int, float)):
            return Literal(value if type(value) in (bool, int, float) else float(value))  # np.float64 too
        if isinstance(value, (np.generic, np.ndarray)):
            array = as_traceable_array(value)
            if array.ndim == 0:
                return Literal(array.item())
            # a copy: closed-over arrays are constants, fixed when the function is traced
            return self.constvar(value, Aval(array.shape, dtype_name(array.dtype)), stored=array.copy())
        raise TypeError(f"tracegrad cannot trace a value of type {type(value).__name__} "
                        f"(at {where_text(user_source_line())}); use floats, ints and NumPy arrays")

    def constvar(self, value, aval: Aval, stored=None) -> Var:
        """The Var of a value captured by this trace; `stored` (default: the value) is what the program keeps."""
        var = self.const_of.get(id(value))
        if var is None:
            var = self.const_of[id(value)] = Var(aval)
            self.constvars.append(var)
            self.consts.append(value if stored is None else stored)
            self.captured.append(value)  # alive while the trace is, so its id is not reused
        return var

    def add_op(self, primitive: str, inputs, aval: Aval, params: dict) -> Tracer:
        out = Var(aval)
        source = self.source or user_source_line()
        self.ops.append(Op(primitive, tuple(inputs), out, tuple(params.items()), source, self.adjoint_of))
        return Tracer(out, self)

    @contextlib.contextmanager
    def annotations(self, source: SourceLine | None, adjoint_of: Op | None):
        """Ops bound inside keep `source` and `adjoint_of` instead of the running line."""
        saved = self.source, self.adjoint_of
        self.source, self.adjoint_of = source, adjoint_of
        try:
            yield
        finally:
            self.source, self.adjoint_of = saved


_state = threading.local()


def builder_stack() -> list[Builder]:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def current_builder() -> Builder | None:
    stack = builder_stack()
    return stack[-1] if stack else None


def check_alive(tracer: Tracer) -> None:
    if not tracer.builder.active:
        raise errors.LeakedTracerError(
            f"a traced value {tracer.aval} was used after its trace ended (at {where_text(user_source_line())}); "
            "return values from the traced function instead of storing them in globals")


def dtype_name(dtype) -> str:
    kind = np.dtype(dtype).kind
    return "bool" if kind == "b" else "i64" if kind in "iu" else "f64"


INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def integer_overflow(value, kind: str) -> errors.IntegerOverflowError:
    return errors.IntegerOverflowError(
        f"the {kind} {value} does not fit in int64, the integer type of tracegrad's programs "
        f"(at {where_text(user_source_line())}); pass integers in [-2**63, 2**63), as every valid label or "
        "index is, or convert quantities this large to float64 yourself")


def as_traceable_array(value) -> np.ndarray:
    """NumPy values as tracegrad sees them: float64, int64 or bool (refusing uint64 values int64 cannot hold)."""
    array = np.asarray(value)
    wanted = {"bool": np.bool_, "i64": np.int64, "f64": np.float64}[dtype_name(array.dtype)]
    if array.dtype != wanted:
        if array.dtype.kind not in "biuf":
            raise TypeError(f"tracegrad cannot trace an array of dtype {array.dtype} "
                            f"(at {where_text(user_source_line())}); use float, int or bool arrays")
        if array.dtype == np.uint64 and array.size and array.max() > np.uint64(INT64_MAX):
            raise integer_overflow(array.max(), "uint64 value")
        array = array.astype(wanted)
    return array


def bind(primitive: str, *args, **params):
    """Apply a primitive: stage it if a Tracer is among `args`, else compute it with NumPy.

    Computed inside a trace, the value is a constant of the program being traced: like the
    program's compiled code, NumPy then gives inf and nan without a warning (`tnp.log(0.0)`).
    """
    builder = current_builder()
    if not any(isinstance(a, Tracer) for a in args):
        if builder is None:
            return PRIMITIVES[primitive].impl(*args, **params)
        with np.errstate(all="ignore"):
            return PRIMITIVES[primitive].impl(*args, **params)
    if builder is None:
        raise errors.LeakedTracerError(
            f"{primitive} was applied to a traced value outside any trace (at {where_text(user_source_line())}); "
            "return values from the traced function instead of storing them in globals")
    inputs = [builder.atom(a) for a in args]
    if any(x.aval.dtype == "f64" for x in inputs):  # ints next to floats are floats: `a**3` is `pow a 3.0`
        inputs = [Literal(float(x.value)) if isinstance(x, Literal) and type(x.value) is int else x for x in inputs]
    else:  # an int literal stays an int64 in the generated code
        for x in inputs:
            if isinstance(x, Literal) and type(x.value) is int and not INT64_MIN <= x.value <= INT64_MAX:
                raise integer_overflow(x.value, "integer")
    rule = PRIMITIVES[primitive]
    try:
        aval = rule.shape_rule(*(x.aval for x in inputs), **params)
    except errors.ShapeError as error:
        raise errors.ShapeError(f"{error} (at {where_text(builder.source or user_source_line())})") from None
    if rule.neutral is not None:  # `x * 1.0` is x
        value, positions = rule.neutral
        for position in positions:
            other = 1 - position
            if (isinstance(inputs[position], Literal) and inputs[position].value == value
                    and inputs[other].aval == aval and isinstance(args[other], Tracer)):
                return args[other]
    return builder.add_op(primitive, inputs, aval, params)


@contextlib.contextmanager
def new_trace():
    builder = Builder()
    builder_stack().append(builder)
    try:
        yield builder
    finally:
        builder_stack().pop()
        builder.active = False


def trace_flat(fun, in_avals) -> Traced:
    """Trace `fun(*tracers) -> list of leaves` into a Traced program, dead code removed."""
    from .passes import eliminate_dead_code

    with new_trace() as builder:
        args = [builder.new_input(aval) for aval in in_avals]
        outputs = [builder.atom(leaf) for leaf in fun(*args)]
    program = Program(tuple(builder.constvars), tuple(builder.inputs), tuple(builder.ops), tuple(outputs))
    return eliminate_dead_code(Traced(program, tuple(builder.consts)))


def replay(program: Program, consts, args) -> tuple[dict, dict]:
    """Bind every op of `program` again, on `args`, in the current trace (or with NumPy).

    Returns the new value of every Var and the new op of every op; the new ops keep the
    old ones' source lines.
    """
    env = dict(zip(program.constvars, consts))
    env.update(zip(program.inputs, args))
    new_op: dict[Op, Op] = {}
    builder = current_builder()
    if builder is None:
        for op in program.ops:
            env[op.out] = bind(op.primitive, *[read(env, x) for x in op.inputs], **op.param)
        return env, new_op
    with builder.annotations(None, None):
        for op in program.ops:
            builder.source, builder.adjoint_of = op.source, new_op.get(op.adjoint_of, op.adjoint_of)
            env[op.out] = out = bind(op.primitive, *[read(env, x) for x in op.inputs], **op.param)
            if isinstance(out, Tracer) and builder.ops and builder.ops[-1].out is out.var:
                new_op[op] = builder.ops[-1]
    return env, new_op


def read(env: dict, atom):
    return atom.value if isinstance(atom, Literal) else env[atom]


def inline(traced: Traced, args) -> list:
    """The outputs of `traced` applied to `args`: staged in the current trace, or computed."""
    env, _ = replay(traced.program, traced.consts, args)
    return [read(env, x) for x in traced.program.outputs]


# -- the Tracer --------------------------------------------------------------------------


def conversion_error(aval: Aval, wanted: str) -> errors.TracerConversionError:
    where = where_text(user_source_line())
    if wanted == "array":
        advice = ("NumPy needs concrete numbers to build an array. To build one from traced values use "
                  "tnp.stack([...]); for functions of arrays use tracegrad.numpy (tnp) or NumPy's supported "
                  "functions, which dispatch to it.")
    elif wanted == "bool":
        advice = ("Python `if`, `while`, `and`, `or` and `not` cannot branch on a traced value. "
                  "Use tnp.where(condition, x, y) to choose between values, or make the value a static "
                  "argument with tg.jit(fun, static_argnums=...).")
    else:
        advice = (f"{wanted}() and the functions of Python's `math` module need a concrete number. "
                  "Use tracegrad.numpy instead: tnp.sin(x) for math.sin(x), tnp.exp(x) for math.exp(x), "
                  "and so on; or make the value a static argument with tg.jit(fun, static_argnums=...).")
    return errors.TracerConversionError(
        f"a traced value {aval} was used as a Python {wanted} at {where}. {advice}")


class Tracer:
    """A value being traced: it has a shape and a dtype but no numbers yet."""

    __slots__ = ("var", "builder")
    __array_priority__ = 1000

    def __init__(self, var: Var, builder: Builder):
        self.var = var
        self.builder = builder

    aval = property(lambda self: self.var.aval)
    shape = property(lambda self: self.var.aval.shape)
    ndim = property(lambda self: self.var.aval.ndim)
    size = property(lambda self: self.var.aval.size)
    dtype = property(lambda self: np.dtype({"f64": np.float64, "i64": np.int64, "bool": np.bool_}[self.aval.dtype]))
    T = property(lambda self: tnp.transpose(self))

    def __repr__(self) -> str:
        return f"Tracer<{self.aval}>"

    __hash__ = object.__hash__

    # arithmetic, as in micrograd's Value
    __add__ = lambda self, other: bind("add", self, other)
    __radd__ = lambda self, other: bind("add", other, self)
    __sub__ = lambda self, other: bind("sub", self, other)
    __rsub__ = lambda self, other: bind("sub", other, self)
    __mul__ = lambda self, other: bind("mul", self, other)
    __rmul__ = lambda self, other: bind("mul", other, self)
    __truediv__ = lambda self, other: bind("div", self, other)
    __rtruediv__ = lambda self, other: bind("div", other, self)
    __pow__ = lambda self, other: bind("pow", self, other)
    __rpow__ = lambda self, other: bind("pow", other, self)
    __matmul__ = lambda self, other: tnp.matmul(self, other)
    __rmatmul__ = lambda self, other: tnp.matmul(other, self)
    __neg__ = lambda self: bind("neg", self)
    __pos__ = lambda self: self
    __abs__ = lambda self: bind("abs", self)

    # comparisons give boolean values, usable in tnp.where
    __gt__ = lambda self, other: bind("gt", self, other)
    __lt__ = lambda self, other: bind("lt", self, other)
    __ge__ = lambda self, other: bind("ge", self, other)
    __le__ = lambda self, other: bind("le", self, other)
    __eq__ = lambda self, other: bind("eq", self, other)
    __ne__ = lambda self, other: bind("ne", self, other)

    # micrograd's methods
    exp = lambda self: bind("exp", self)
    log = lambda self: bind("log", self)
    tanh = lambda self: bind("tanh", self)
    relu = lambda self: tnp.where(self > 0.0, self, 0.0)

    # NumPy's array methods
    sum = lambda self, axis=None, keepdims=False: tnp.sum(self, axis, keepdims=keepdims)
    mean = lambda self, axis=None, keepdims=False: tnp.mean(self, axis, keepdims=keepdims)
    max = lambda self, axis=None, keepdims=False: tnp.max(self, axis, keepdims=keepdims)
    min = lambda self, axis=None, keepdims=False: tnp.min(self, axis, keepdims=keepdims)
    transpose = lambda self, *axes: tnp.transpose(self, axes[0] if len(axes) == 1 else (axes or None))
    dot = lambda self, other: tnp.dot(self, other)

    def reshape(self, *shape):
        return tnp.reshape(self, shape[0] if len(shape) == 1 else shape)

    def __getitem__(self, index):
        return tnp.getitem(self, index)

    def __setitem__(self, index, value):
        raise errors.ImmutableValueError(
            f"traced values are immutable: item assignment at {where_text(user_source_line())}. "
            "Build a new value instead, e.g. tnp.where(mask, new_values, x) to replace elements.")

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError(f"len() of a 0-d traced value (at {where_text(user_source_line())})")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError(f"iteration over a 0-d traced value (at {where_text(user_source_line())})")
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

    # NumPy's own functions called on tracers
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return tnp.dispatch_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return tnp.dispatch_function(func, args, kwargs)


from . import numpy as tnp  # noqa: E402  (tnp and the registry build on Tracer and bind, defined above)
from .primitives import PRIMITIVES  # noqa: E402

"""tracegrad.numpy (`import tracegrad.numpy as tnp`): NumPy's API on traced values.

Each function binds primitives, so it does what the current interpreter does: outside any
transformation it computes with NumPy, so a loss function written with tnp can be called
directly. NumPy's own functions called on tracers (`np.tanh(t)`, `np.dot(x, W)`) come here
too, and so do a tracer's operators and methods (`x + y`, `x.sum()`), set at the end of this
module.
"""
from __future__ import annotations

import builtins

import numpy as np

from . import primitives as prims
from .core import NUMPY_DTYPES, Tracer, as_traceable_array, bind, dtype_name
from .errors import IndexingError, ShapeError, UnsupportedNumpyFunctionError
from .ir import Primitive
from .source_info import user_source, where_text

# array constants: these build concrete NumPy arrays, which traced code uses as constants
array, asarray, zeros, ones, full, arange, eye, linspace = (
    np.array, np.asarray, np.zeros, np.ones, np.full, np.arange, np.eye, np.linspace)
pi, e, inf, nan, newaxis = np.pi, np.e, np.inf, np.nan, np.newaxis
float64, int64 = np.float64, np.int64


def shape(x) -> tuple[int, ...]:
    return x.shape if isinstance(x, Tracer) else np.shape(x)


def ndim(x) -> int:
    return len(shape(x))


# -- elementwise -------------------------------------------------------------------------

def exp(x): return bind(prims.exp_p, x)
def log(x): return bind(prims.log_p, x)
def tanh(x): return bind(prims.tanh_p, x)
def sin(x): return bind(prims.sin_p, x)
def cos(x): return bind(prims.cos_p, x)
def sqrt(x): return bind(prims.sqrt_p, x)
def abs(x): return bind(prims.abs_p, x)
def sign(x): return bind(prims.sign_p, x)
def negative(x): return bind(prims.neg_p, x)
def add(x, y): return bind(prims.add_p, x, y)
def subtract(x, y): return bind(prims.sub_p, x, y)
def multiply(x, y): return bind(prims.mul_p, x, y)
def divide(x, y): return bind(prims.div_p, x, y)
def power(x, y): return bind(prims.pow_p, x, y)
def maximum(x, y): return bind(prims.maximum_p, x, y)
def minimum(x, y): return bind(prims.minimum_p, x, y)
def greater(x, y): return bind(prims.gt_p, x, y)
def less(x, y): return bind(prims.lt_p, x, y)
def greater_equal(x, y): return bind(prims.ge_p, x, y)
def less_equal(x, y): return bind(prims.le_p, x, y)
def equal(x, y): return bind(prims.eq_p, x, y)
def not_equal(x, y): return bind(prims.ne_p, x, y)


def stop_gradient(x):
    """x, as a constant to differentiation: no gradient flows back through it (JAX's lax.stop_gradient)."""
    return bind(prims.stop_gradient_p, x)


def square(x):
    return bind(prims.mul_p, x, x)


def where(condition, x, y):
    """Elementwise `x if condition else y`; the cotangent goes only to the branch taken."""
    if isinstance(condition, Tracer) and condition.aval.dtype != "bool":
        condition = condition != 0
    return bind(prims.where_p, condition, x, y)


def zeros_like(x):
    return bind(prims.broadcast_to_p, float_like(x, 0.0), shape=shape(x))


def ones_like(x):
    return bind(prims.broadcast_to_p, float_like(x, 1.0), shape=shape(x))


# -- reductions --------------------------------------------------------------------------

def normalize_axes(axis, rank: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"axis {a} is out of range for a value of rank {rank} "
                             f"(at {where_text(user_source())})")
    return tuple(sorted(int(a) % rank for a in axes))


def reduce(primitive: Primitive, x, axis, keepdims: bool):
    in_shape = shape(x)
    axes = normalize_axes(axis, len(in_shape))
    if not axes:
        return x
    out = bind(primitive, x, axes=axes)
    if keepdims:
        out = reshape(out, tuple(1 if i in axes else n for i, n in enumerate(in_shape)))
    return out


def sum(x, axis=None, keepdims=False):
    return reduce(prims.reduce_sum_p, x, axis, keepdims)


def max(x, axis=None, keepdims=False):
    return reduce(prims.reduce_max_p, x, axis, keepdims)


def min(x, axis=None, keepdims=False):
    return -reduce(prims.reduce_max_p, -x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    in_shape = shape(x)
    count = int(np.prod([in_shape[a] for a in normalize_axes(axis, len(in_shape))]))
    return sum(x, axis, keepdims) / float(count)


# -- shapes ------------------------------------------------------------------------------

def reshape(x, new_shape):
    in_shape = shape(x)
    new_shape = (new_shape,) if isinstance(new_shape, (int, np.integer)) else tuple(int(n) for n in new_shape)
    if new_shape.count(-1) == 1:
        known = int(np.prod([n for n in new_shape if n != -1]))
        size = int(np.prod(in_shape))
        if known == 0 or size % known:
            raise ShapeError(f"reshape: cannot reshape {in_shape} into {new_shape} "
                             f"(at {where_text(user_source())})")
        new_shape = tuple(size // known if n == -1 else n for n in new_shape)
    if new_shape == tuple(in_shape):
        return x
    return bind(prims.reshape_p, x, shape=new_shape)


def transpose(x, axes=None):
    rank = ndim(x)
    perm = tuple(reversed(range(rank))) if axes is None else tuple(int(a) % rank for a in axes)
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"transpose: {axes} is not a permutation of the axes of a value of rank {rank} "
                         f"(at {where_text(user_source())}); give each axis 0..{rank - 1} once")
    if perm == tuple(range(rank)):
        return x
    return bind(prims.transpose_p, x, perm=perm)


def broadcast_to(x, new_shape):
    new_shape = tuple(new_shape)
    return x if shape(x) == new_shape else bind(prims.broadcast_to_p, x, shape=new_shape)


def expand_dims(x, axis: int):
    in_shape = list(shape(x))
    in_shape.insert(axis % (len(in_shape) + 1), 1)
    return reshape(x, tuple(in_shape))


def stack(values, axis=0):
    """Stack equal-shape values along a new axis (each is padded into place and summed)."""
    values = list(values)
    item_shape = shape(values[0])
    if builtins.any(shape(v) != item_shape for v in values):
        raise ShapeError(f"stack: values of different shapes {[shape(v) for v in values]} "
                         f"(at {where_text(user_source())}); stack needs values of one shape")
    if not builtins.any(isinstance(v, Tracer) for v in values):
        return np.stack(values, axis)
    out_shape = (len(values),) + tuple(item_shape)
    total = 0.0
    for i, v in enumerate(values):
        index = ((i, i + 1, 1),) + tuple((0, n, 1) for n in item_shape)
        total = total + bind(prims.pad_p, reshape(v, (1,) + tuple(item_shape)), shape=out_shape, index=index)
    return moveaxis(total, 0, axis)


def moveaxis(x, source: int, destination: int):
    order = list(range(ndim(x)))
    order.insert(destination % len(order), order.pop(source % len(order)))
    return transpose(x, order)


# -- linear algebra ----------------------------------------------------------------------

def matmul(x, y):
    """x @ y for 1-d and 2-d operands (1-d ones are treated as a row or a column, as in NumPy)."""
    x_shape, y_shape = shape(x), shape(y)
    if not (1 <= len(x_shape) <= 2 and 1 <= len(y_shape) <= 2):
        raise ShapeError(f"matmul: supports 1-d and 2-d operands, got shapes {x_shape} and {y_shape} "
                         f"(at {where_text(user_source())})")
    x2 = reshape(x, (1, x_shape[0])) if len(x_shape) == 1 else x
    y2 = reshape(y, (y_shape[0], 1)) if len(y_shape) == 1 else y
    out = bind(prims.matmul_p, x2, y2)
    out_shape = x_shape[:-1] + y_shape[1:]
    return reshape(out, out_shape)


def dot(x, y):
    if ndim(x) == 0 or ndim(y) == 0:
        return multiply(x, y)
    return matmul(x, y)


# -- indexing ----------------------------------------------------------------------------

def is_index_array(item) -> bool:
    if isinstance(item, Tracer):
        return item.ndim > 0 or item.aval.dtype != "f64"
    return isinstance(item, (list, np.ndarray))


def getitem(x, index):
    """x[index] for integers, slices, None, Ellipsis, and integer arrays on the leading axes."""
    index = index if isinstance(index, tuple) else (index,)
    traced = [item for item in index if isinstance(item, Tracer) and item.ndim == 0]
    if traced:  # x[i] with a traced integer: a gather of one row
        if builtins.any(item.aval.dtype != "i64" for item in traced):
            raise IndexingError(
                f"an index must be an integer, not a traced {traced[0].aval} (at {where_text(user_source())}); "
                "pass an int (a Python int or an int64 array) or a static argument (static_argnums)")
        if not builtins.all(isinstance(item, Tracer) and item.ndim == 0 for item in index[:len(traced)]):
            raise IndexingError(f"tracegrad indexes with traced integers on the leading axes only "
                                f"(at {where_text(user_source())})")
        rows = gather(x, tuple(reshape(item, (1,)) for item in index[:len(traced)]))
        return getitem(reshape(rows, shape(rows)[1:]), index[len(traced):]) if index[len(traced):] else reshape(
            rows, shape(rows)[1:])
    if builtins.any(is_index_array(item) for item in index):
        return gather(x, index)
    return basic_index(x, index)


def expand_ellipsis(index: tuple, rank: int) -> tuple:
    used = builtins.sum(1 for item in index if item is not None and item is not Ellipsis)
    ellipses = [at for at, item in enumerate(index) if item is Ellipsis]  # `is`: a traced item compares as an op
    if len(ellipses) > 1:
        raise IndexingError(f"an index can only have a single ellipsis ('...') (at {where_text(user_source())})")
    if ellipses:
        at = ellipses[0]
        return index[:at] + (slice(None),) * (rank - used) + index[at + 1:]
    return index + (slice(None),) * (rank - used)


def basic_index(x, index):
    in_shape = shape(x)
    index = expand_ellipsis(index, len(in_shape))
    if builtins.sum(1 for item in index if item is not None) > len(in_shape):
        raise IndexingError(f"too many indices for a value of shape {in_shape} (at {where_text(user_source())})")
    triples, out_shape, axis = [], [], 0
    for item in index:
        if item is None:
            out_shape.append(1)
            continue
        n = in_shape[axis]
        if isinstance(item, slice):
            triple = item.indices(n)
            triples.append(triple)
            out_shape.append(len(range(*triple)))
        elif isinstance(item, (int, np.integer)):
            if not -n <= item < n:
                raise IndexingError(f"index {item} is out of bounds for axis {axis} of size {n} "
                                 f"(at {where_text(user_source())})")
            triples.append((int(item) % n, int(item) % n + 1, 1))
        else:
            raise IndexingError(f"tracegrad cannot index with {item!r} (at {where_text(user_source())})")
        axis += 1
    if builtins.any(t != (0, n, 1) for t, n in zip(triples, in_shape)):
        x = bind(prims.slice_p, x, index=tuple(triples))
    return reshape(x, tuple(out_shape))


def gather(x, index):
    in_shape = shape(x)
    k = len(index)
    while k and isinstance(index[k - 1], slice) and index[k - 1] == slice(None):
        k -= 1
    arrays = [np.asarray(item) if isinstance(item, list) else item for item in index[:k]]
    if k > len(in_shape) or not builtins.all(isinstance(a, (Tracer, np.ndarray, int, np.integer)) for a in arrays):
        raise IndexingError(f"tracegrad supports integer-array indexing only on the leading axes, "
                         f"followed by ':' (got {index!r} at {where_text(user_source())})")
    for a in arrays:
        if isinstance(a, (Tracer, np.ndarray)) and a.dtype.kind not in "iu":
            raise IndexingError(f"index arrays must be integers, got {a.dtype} (at {where_text(user_source())}); "
                             "for a boolean mask use tnp.where(mask, x, 0.0)")
    indices = [as_index(a) for a in arrays]
    for axis, index in enumerate(indices):
        if not isinstance(index, Tracer):  # known now: checked now (the gather's code checks traced ones)
            check_in_bounds(index, in_shape[axis], axis)
    index_shape = tuple(np.broadcast_shapes(*(shape(i) for i in indices)))
    size = int(np.prod(index_shape))
    flat = [reshape(broadcast_to(i, index_shape), (size,)) for i in indices]
    out = bind(prims.gather_p, x, *flat)
    return reshape(out, index_shape + tuple(in_shape[k:]))


def as_index(a):
    return a if isinstance(a, Tracer) else as_traceable_array(a)


def check_in_bounds(index: np.ndarray, size: int, axis: int) -> None:
    """NumPy's rule for an integer index: -size <= i < size, negative ones counting from the end."""
    outside = index[(index < -size) | (index >= size)]
    if outside.size:
        raise IndexingError(f"index {outside.flat[0]} is out of bounds for axis {axis} of size {size} "
                            f"(at {where_text(user_source())})")


# -- dtypes (the float32 work's block) ---------------------------------------------------------

float32 = np.float32


def astype(x, dtype):
    """x as `dtype` (float32, float64, int64 or bool; a Python type or a NumPy dtype), as NumPy's
    `x.astype(dtype)`: a float made an integer is truncated toward zero."""
    if not isinstance(x, Tracer):
        return np.asarray(x).astype(NUMPY_DTYPES[dtype_name(dtype)])
    return prims.convert(x, dtype_name(dtype))


def float_like(x, value: float):
    """`value` as a float32 number for a float32 x, else as a Python float."""
    dtype = x.dtype if isinstance(x, Tracer) else np.asarray(x).dtype
    return np.float32(value) if dtype == np.float32 else value


# -- NumPy's dispatch protocols ----------------------------------------------------------

UFUNCS = {
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.true_divide: divide, np.power: power,
    np.negative: negative, np.positive: lambda x: x, np.exp: exp, np.log: log, np.tanh: tanh, np.sin: sin,
    np.cos: cos, np.sqrt: sqrt, np.absolute: abs, np.sign: sign, np.maximum: maximum, np.minimum: minimum,
    np.greater: greater, np.less: less, np.greater_equal: greater_equal, np.less_equal: less_equal,
    np.equal: equal, np.not_equal: not_equal, np.matmul: matmul, np.square: square,
}

FUNCTIONS = {
    np.sum: sum, np.mean: mean, np.max: max, np.amax: max, np.min: min, np.amin: min, np.dot: dot,
    np.reshape: reshape, np.transpose: transpose, np.where: where, np.broadcast_to: broadcast_to,
    np.zeros_like: zeros_like, np.ones_like: ones_like, np.shape: shape, np.ndim: ndim,
    np.expand_dims: expand_dims, np.stack: stack, np.moveaxis: moveaxis,
}


def unsupported(name: str) -> UnsupportedNumpyFunctionError:
    return UnsupportedNumpyFunctionError(
        f"NumPy's {name} is not supported on traced values (at {where_text(user_source())}). "
        f"tracegrad.numpy supports: {', '.join(sorted(f.__name__ for f in FUNCTIONS))}, and the ufuncs "
        f"{', '.join(sorted(u.__name__ for u in UFUNCS))}.")


def dispatch_ufunc(ufunc, method, inputs, kwargs):
    if method != "__call__" or kwargs or ufunc not in UFUNCS:
        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        raise unsupported(name + (" with out= or where=" if kwargs and ufunc in UFUNCS else ""))
    return UFUNCS[ufunc](*inputs)


def dispatch_function(func, args, kwargs):
    if func not in FUNCTIONS:
        raise unsupported(f"np.{func.__name__}")
    return FUNCTIONS[func](*args, **kwargs)



# -- a tracer's operators and methods --------------------------------------------------------
# core.Tracer, below this module, has no arithmetic of its own: its operators and NumPy-style
# methods are this module's functions, set on it here (as JAX sets its array methods on its Tracer).

def _reshape_method(x, *new_shape):
    return reshape(x, new_shape[0] if len(new_shape) == 1 else new_shape)


def _transpose_method(x, *axes):
    return transpose(x, axes[0] if len(axes) == 1 else (axes or None))


TRACER_METHODS = {
    # arithmetic, as in micrograd's Value
    "__add__": add, "__radd__": lambda x, y: add(y, x),
    "__sub__": subtract, "__rsub__": lambda x, y: subtract(y, x),
    "__mul__": multiply, "__rmul__": lambda x, y: multiply(y, x),
    "__truediv__": divide, "__rtruediv__": lambda x, y: divide(y, x),
    "__pow__": power, "__rpow__": lambda x, y: power(y, x),
    "__matmul__": matmul, "__rmatmul__": lambda x, y: matmul(y, x),
    "__neg__": negative, "__pos__": lambda x: x, "__abs__": abs,
    # comparisons give boolean values, usable in tnp.where
    "__gt__": greater, "__lt__": less, "__ge__": greater_equal, "__le__": less_equal,
    "__eq__": equal, "__ne__": not_equal,
    # micrograd's methods
    "exp": exp, "log": log, "tanh": tanh, "relu": lambda x: where(x > 0.0, x, 0.0),
    # NumPy's array methods
    "sum": lambda x, axis=None, keepdims=False: sum(x, axis, keepdims=keepdims),
    "mean": lambda x, axis=None, keepdims=False: mean(x, axis, keepdims=keepdims),
    "max": lambda x, axis=None, keepdims=False: max(x, axis, keepdims=keepdims),
    "min": lambda x, axis=None, keepdims=False: min(x, axis, keepdims=keepdims),
    "transpose": _transpose_method, "reshape": _reshape_method, "dot": dot, "astype": astype,
    "T": property(transpose), "__getitem__": getitem,
    # NumPy's own functions called on tracers
    "__array_ufunc__": lambda x, ufunc, method, *inputs, **kwargs: dispatch_ufunc(ufunc, method, inputs, kwargs),
    "__array_function__": lambda x, func, types, args, kwargs: dispatch_function(func, args, kwargs),
}
for _name, _method in TRACER_METHODS.items():
    setattr(Tracer, _name, _method)

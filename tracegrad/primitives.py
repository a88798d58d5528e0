"""The primitives: one paragraph each, filling the rule tables of tracegrad.core.

A paragraph makes the Primitive (its name and traits) and gives its entry in each table:

    abstract_eval_rules  input avals (and static params) -> output aval
    impl_rules           NumPy on concrete values
    vjp_rules            (g, out, *inputs, **params) -> one cotangent per input, None where none
                         flows; a primitive with `differentiable=False` has no entry
    jvp_rules            (primals, tangents, **params) -> (output, its tangent); a tangent is
                         None where it is zero. An elementwise primitive gives its partial
                         derivatives (`elementwise_jvp`), one linear in its first operand
                         applies itself to the tangent (`linear_jvp`)
    batch_rules          (values, batched, size, **params) -> (output, whether it is batched):
                         a batched value holds `size` examples along axis 0; the rule computes
                         them all with array ops (`elementwise_batch`, or the op with its params
                         shifted past the batch axis)

VJP rules build IR by binding primitives, never strings: under reverse mode `g`, `out` and the
inputs are the values of the enclosing interpreter (traced values, or numbers), so the adjoint
is a program like any other. A cotangent may have the broadcast shape of the output; the AD
pass sums it back to its input's shape. How the code generator writes each primitive is its
entry in `tracegrad.lowering.rules`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .core import NUMPY_DTYPES, abstract_eval_rules, aval_of, batch_rules, bind, impl_rules, jvp_rules, vjp_rules
from .errors import ShapeError
from .ir import DTYPES, FLOAT_DTYPES, Aval, Neutral, Primitive

# -- shared shape rules ------------------------------------------------------------------


def promote(*avals: Aval) -> str:
    """NumPy 2's result dtype of arrays of these dtypes: the widest, except int64 with float32 is float64."""
    dtypes = {a.dtype for a in avals}
    if len(dtypes) == 1:
        return dtypes.pop()
    widest = max(dtypes, key=DTYPES.index)
    return "f64" if widest == "f32" and "i64" in dtypes else widest


def float_dtype(dtype: str) -> str:
    """The dtype of a float function of a value of `dtype` (exp, a division): itself if float, else f64."""
    return dtype if dtype in FLOAT_DTYPES else "f64"


def float_numpy_dtype(x):
    """np.float32 for a float32 value, else np.float64 (a float function's result type in NumPy)."""
    return np.float32 if np.asarray(x).dtype == np.float32 else np.float64


def broadcast_shapes(name: str, *avals: Aval) -> tuple[int, ...]:
    shapes = {a.shape for a in avals} - {()}
    if len(shapes) <= 1:  # the common case: equal shapes, or scalars with one shape
        return shapes.pop() if shapes else ()
    try:
        return tuple(np.broadcast_shapes(*(a.shape for a in avals)))
    except ValueError:
        shown = " and ".join(str(a) for a in avals)
        raise ShapeError(f"{name}: shapes {shown} do not broadcast together") from None


def float_unary(x: Aval) -> Aval:
    return Aval(x.shape, float_dtype(x.dtype))


def arithmetic(name):
    return lambda *avals: Aval(broadcast_shapes(name, *avals), promote(*avals))


def float_binary(name):
    return lambda x, y: Aval(broadcast_shapes(name, x, y), float_dtype(promote(x, y)))


def tangent_sum(terms: list, shape: tuple[int, ...]):
    """The sum of the nonzero tangent terms, broadcast to the output's shape; None if there are none."""
    if not terms:
        return None
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total if aval_of(total).shape == shape else bind(broadcast_to_p, total, shape=shape)


def elementwise_jvp(primitive: Primitive, *partials):
    """The JVP of an elementwise primitive: the sum of each input's tangent times its partial
    derivative, given as a function of (out, *inputs)."""
    def rule(primals, tangents, **params):
        out = bind(primitive, *primals, **params)
        terms = [t * partial(out, *primals) for t, partial in zip(tangents, partials) if t is not None]
        return out, tangent_sum(terms, aval_of(out).shape)
    return rule


def linear_jvp(primitive: Primitive):
    """The JVP of a primitive linear in its first operand (a reshape, a slice, a sum): itself, on the tangent."""
    def rule(primals, tangents, **params):
        tangent = tangents[0] if tangents[0] is None else bind(primitive, tangents[0], *primals[1:], **params)
        return bind(primitive, *primals, **params), tangent
    return rule


def with_batch_rank(value, rank: int):
    """A batched value (size, *shape) with ones inserted after the batch axis up to `rank` example
    axes, so NumPy's broadcasting lines its example axes up with the others' (and with unbatched values)."""
    shape = aval_of(value).shape
    missing = rank - (len(shape) - 1)
    return value if missing <= 0 else bind(reshape_p, value, shape=shape[:1] + (1,) * missing + shape[1:])


def elementwise_batch(primitive: Primitive):
    """An elementwise primitive batches as itself, once each batched operand's axes line up."""
    def rule(values, batched, size, **params):
        rank = max(aval_of(v).ndim - b for v, b in zip(values, batched))
        return bind(primitive, *[with_batch_rank(v, rank) if b else v for v, b in zip(values, batched)],
                    **params), True
    return rule


def shifted_batch(primitive: Primitive, shift: Callable[[int, dict], dict]):
    """A primitive of one batched operand, applied with params moved past the batch axis by `shift`."""
    def rule(values, batched, size, **params):
        return bind(primitive, *values, **shift(size, params)), True
    return rule


# -- elementwise arithmetic --------------------------------------------------------------

# neg: -x
neg_p = Primitive("neg", elementwise=True)
abstract_eval_rules[neg_p] = arithmetic("neg")
impl_rules[neg_p] = np.negative
vjp_rules[neg_p] = lambda g, out, x: (-g,)
jvp_rules[neg_p] = linear_jvp(neg_p)
batch_rules[neg_p] = elementwise_batch(neg_p)

# add: x + y
add_p = Primitive("add", elementwise=True, neutral=Neutral(0.0, (0, 1)))
abstract_eval_rules[add_p] = arithmetic("add")
impl_rules[add_p] = np.add
vjp_rules[add_p] = lambda g, out, x, y: (g, g)
jvp_rules[add_p] = elementwise_jvp(add_p, lambda out, x, y: 1.0, lambda out, x, y: 1.0)
batch_rules[add_p] = elementwise_batch(add_p)

# sub: x - y
sub_p = Primitive("sub", elementwise=True, neutral=Neutral(0.0, (1,)))
abstract_eval_rules[sub_p] = arithmetic("sub")
impl_rules[sub_p] = np.subtract
vjp_rules[sub_p] = lambda g, out, x, y: (g, -g)
jvp_rules[sub_p] = elementwise_jvp(sub_p, lambda out, x, y: 1.0, lambda out, x, y: -1.0)
batch_rules[sub_p] = elementwise_batch(sub_p)

# mul: x * y
mul_p = Primitive("mul", elementwise=True, neutral=Neutral(1.0, (0, 1)))
abstract_eval_rules[mul_p] = arithmetic("mul")
impl_rules[mul_p] = np.multiply
vjp_rules[mul_p] = lambda g, out, x, y: (g * y, g * x)
jvp_rules[mul_p] = elementwise_jvp(mul_p, lambda out, x, y: y, lambda out, x, y: x)
batch_rules[mul_p] = elementwise_batch(mul_p)

# div: x / y (true division, always float)
div_p = Primitive("div", elementwise=True, neutral=Neutral(1.0, (1,)))
abstract_eval_rules[div_p] = float_binary("div")
impl_rules[div_p] = np.true_divide
vjp_rules[div_p] = lambda g, out, x, y: (g / y, -g * out / y)
jvp_rules[div_p] = elementwise_jvp(div_p, lambda out, x, y: 1.0 / y, lambda out, x, y: -out / y)
batch_rules[div_p] = elementwise_batch(div_p)


def pow_terms(gx, gy, out, x, y) -> tuple:
    """gx * d/dx and gy * d/dy of x ** y (None where the factor is None): the cotangents of a VJP,
    or the terms of a JVP's tangent.

    d/dx = y x^(y-1), and 0 where y == 0 (x^0 is constant): the exponent is taken as 0 there, so
    x^-1 = inf at x = 0 never meets the factor y = 0 (JAX does this for integer exponents only, and
    gives nan for 0.0 ** 0.0). d/dy = log(x) x^y with log(1) = 0 where x == 0, as in JAX. For a
    literal exponent the compare and the where are folded while tracing, so the adjoint of
    `x ** 2.5` is two ops (pow, mul); the cotangent of an operand that needs none is dead code.
    """
    x_term = None if gx is None else gx * y * x ** (bind(where_p, bind(eq_p, y, 0.0), 1.0, y) - 1.0)
    y_term = None if gy is None else gy * bind(log_p, bind(where_p, bind(eq_p, x, 0.0), 1.0, x)) * out
    return x_term, y_term


def pow_jvp(primals, tangents):
    out = bind(pow_p, *primals)
    terms = [term for term in pow_terms(*tangents, out, *primals) if term is not None]
    return out, tangent_sum(terms, aval_of(out).shape)


# pow: x ** y; d/dx = y x^(y-1) (0 where y == 0), d/dy = log(x) x^y (0 where x == 0)
pow_p = Primitive("pow", elementwise=True, neutral=Neutral(1.0, (1,)))
abstract_eval_rules[pow_p] = float_binary("pow")
impl_rules[pow_p] = np.power
vjp_rules[pow_p] = lambda g, out, x, y: pow_terms(g, g, out, x, y)
jvp_rules[pow_p] = pow_jvp
batch_rules[pow_p] = elementwise_batch(pow_p)

# maximum: ties split the cotangent evenly, as in JAX
maximum_p = Primitive("maximum", elementwise=True)
abstract_eval_rules[maximum_p] = arithmetic("maximum")
impl_rules[maximum_p] = np.maximum
vjp_rules[maximum_p] = lambda g, out, x, y: (g * ((x > y) + 0.5 * (x == y)), g * ((y > x) + 0.5 * (x == y)))
jvp_rules[maximum_p] = elementwise_jvp(maximum_p, lambda out, x, y: (x > y) + 0.5 * (x == y),
                                       lambda out, x, y: (y > x) + 0.5 * (x == y))
batch_rules[maximum_p] = elementwise_batch(maximum_p)

# minimum: ties split the cotangent evenly
minimum_p = Primitive("minimum", elementwise=True)
abstract_eval_rules[minimum_p] = arithmetic("minimum")
impl_rules[minimum_p] = np.minimum
vjp_rules[minimum_p] = lambda g, out, x, y: (g * ((x < y) + 0.5 * (x == y)), g * ((y < x) + 0.5 * (x == y)))
jvp_rules[minimum_p] = elementwise_jvp(minimum_p, lambda out, x, y: (x < y) + 0.5 * (x == y),
                                       lambda out, x, y: (y < x) + 0.5 * (x == y))
batch_rules[minimum_p] = elementwise_batch(minimum_p)

# -- elementwise functions ---------------------------------------------------------------

# exp: d/dx e^x = e^x
exp_p = Primitive("exp", elementwise=True)
abstract_eval_rules[exp_p] = float_unary
impl_rules[exp_p] = np.exp
vjp_rules[exp_p] = lambda g, out, x: (g * out,)
jvp_rules[exp_p] = elementwise_jvp(exp_p, lambda out, x: out)
batch_rules[exp_p] = elementwise_batch(exp_p)

# log: d/dx log x = 1/x
log_p = Primitive("log", elementwise=True)
abstract_eval_rules[log_p] = float_unary
impl_rules[log_p] = np.log
vjp_rules[log_p] = lambda g, out, x: (g / x,)
jvp_rules[log_p] = elementwise_jvp(log_p, lambda out, x: 1.0 / x)
batch_rules[log_p] = elementwise_batch(log_p)

# tanh: d/dx tanh x = 1 - tanh^2 x
tanh_p = Primitive("tanh", elementwise=True)
abstract_eval_rules[tanh_p] = float_unary
impl_rules[tanh_p] = np.tanh
vjp_rules[tanh_p] = lambda g, out, x: (g * (1.0 - out * out),)
jvp_rules[tanh_p] = elementwise_jvp(tanh_p, lambda out, x: 1.0 - out * out)
batch_rules[tanh_p] = elementwise_batch(tanh_p)

# sin: d/dx sin x = cos x
sin_p = Primitive("sin", elementwise=True)
abstract_eval_rules[sin_p] = float_unary
impl_rules[sin_p] = np.sin
vjp_rules[sin_p] = lambda g, out, x: (g * bind(cos_p, x),)
jvp_rules[sin_p] = elementwise_jvp(sin_p, lambda out, x: bind(cos_p, x))
batch_rules[sin_p] = elementwise_batch(sin_p)

# cos: d/dx cos x = -sin x
cos_p = Primitive("cos", elementwise=True)
abstract_eval_rules[cos_p] = float_unary
impl_rules[cos_p] = np.cos
vjp_rules[cos_p] = lambda g, out, x: (-g * bind(sin_p, x),)
jvp_rules[cos_p] = elementwise_jvp(cos_p, lambda out, x: -bind(sin_p, x))
batch_rules[cos_p] = elementwise_batch(cos_p)

# sqrt: d/dx sqrt x = 1 / (2 sqrt x)
sqrt_p = Primitive("sqrt", elementwise=True)
abstract_eval_rules[sqrt_p] = float_unary
impl_rules[sqrt_p] = np.sqrt
vjp_rules[sqrt_p] = lambda g, out, x: (g * 0.5 / out,)
jvp_rules[sqrt_p] = elementwise_jvp(sqrt_p, lambda out, x: 0.5 / out)
batch_rules[sqrt_p] = elementwise_batch(sqrt_p)

# abs: d/dx |x| = sign x
abs_p = Primitive("abs", elementwise=True)
abstract_eval_rules[abs_p] = arithmetic("abs")
impl_rules[abs_p] = np.abs
vjp_rules[abs_p] = lambda g, out, x: (g * bind(sign_p, x),)
jvp_rules[abs_p] = elementwise_jvp(abs_p, lambda out, x: bind(sign_p, x))
batch_rules[abs_p] = elementwise_batch(abs_p)

# sign: -1, 0 or 1; piecewise constant, so no cotangent flows through it
sign_p = Primitive("sign", elementwise=True, differentiable=False)
abstract_eval_rules[sign_p] = arithmetic("sign")
impl_rules[sign_p] = np.sign
batch_rules[sign_p] = elementwise_batch(sign_p)

# stop_gradient: x itself, but no cotangent flows back through it
stop_gradient_p = Primitive("stop_gradient", elementwise=True, differentiable=False)
abstract_eval_rules[stop_gradient_p] = float_unary
impl_rules[stop_gradient_p] = lambda x: (np.asarray(x, float_numpy_dtype(x)) if np.ndim(x)
                                         else float_numpy_dtype(x)(x))
batch_rules[stop_gradient_p] = elementwise_batch(stop_gradient_p)

# optimization_barrier: x itself, which no pass looks through: ops on it are never merged with
# ops on x (tg.checkpoint's recomputation stays a recomputation)
optimization_barrier_p = Primitive("optimization_barrier")
abstract_eval_rules[optimization_barrier_p] = lambda x: x
impl_rules[optimization_barrier_p] = lambda x: x
vjp_rules[optimization_barrier_p] = lambda g, out, x: (g,)
jvp_rules[optimization_barrier_p] = linear_jvp(optimization_barrier_p)
batch_rules[optimization_barrier_p] = lambda values, batched, size: (bind(optimization_barrier_p, values[0]), True)

# -- more elementwise functions (NumPy's ufuncs of one and two operands) -------------------------

# log1p: log(1 + x), exact for tiny x; d/dx = 1 / (1 + x)
log1p_p = Primitive("log1p", elementwise=True)
abstract_eval_rules[log1p_p] = float_unary
impl_rules[log1p_p] = np.log1p
vjp_rules[log1p_p] = lambda g, out, x: (g / (1.0 + x),)
jvp_rules[log1p_p] = elementwise_jvp(log1p_p, lambda out, x: 1.0 / (1.0 + x))
batch_rules[log1p_p] = elementwise_batch(log1p_p)

# expm1: e^x - 1, exact for tiny x; d/dx = e^x = out + 1
expm1_p = Primitive("expm1", elementwise=True)
abstract_eval_rules[expm1_p] = float_unary
impl_rules[expm1_p] = np.expm1
vjp_rules[expm1_p] = lambda g, out, x: (g * (out + 1.0),)
jvp_rules[expm1_p] = elementwise_jvp(expm1_p, lambda out, x: out + 1.0)
batch_rules[expm1_p] = elementwise_batch(expm1_p)

# log2: d/dx = 1 / (x log 2)
log2_p = Primitive("log2", elementwise=True)
abstract_eval_rules[log2_p] = float_unary
impl_rules[log2_p] = np.log2
vjp_rules[log2_p] = lambda g, out, x: (g / (x * np.log(2.0)),)
jvp_rules[log2_p] = elementwise_jvp(log2_p, lambda out, x: 1.0 / (x * np.log(2.0)))
batch_rules[log2_p] = elementwise_batch(log2_p)

# log10: d/dx = 1 / (x log 10)
log10_p = Primitive("log10", elementwise=True)
abstract_eval_rules[log10_p] = float_unary
impl_rules[log10_p] = np.log10
vjp_rules[log10_p] = lambda g, out, x: (g / (x * np.log(10.0)),)
jvp_rules[log10_p] = elementwise_jvp(log10_p, lambda out, x: 1.0 / (x * np.log(10.0)))
batch_rules[log10_p] = elementwise_batch(log10_p)

# exp2: 2^x; d/dx = 2^x log 2
exp2_p = Primitive("exp2", elementwise=True)
abstract_eval_rules[exp2_p] = float_unary
impl_rules[exp2_p] = np.exp2
vjp_rules[exp2_p] = lambda g, out, x: (g * out * np.log(2.0),)
jvp_rules[exp2_p] = elementwise_jvp(exp2_p, lambda out, x: out * np.log(2.0))
batch_rules[exp2_p] = elementwise_batch(exp2_p)

# tan: d/dx tan x = 1 + tan^2 x
tan_p = Primitive("tan", elementwise=True)
abstract_eval_rules[tan_p] = float_unary
impl_rules[tan_p] = np.tan
vjp_rules[tan_p] = lambda g, out, x: (g * (1.0 + out * out),)
jvp_rules[tan_p] = elementwise_jvp(tan_p, lambda out, x: 1.0 + out * out)
batch_rules[tan_p] = elementwise_batch(tan_p)

# arcsin: d/dx = 1 / sqrt(1 - x^2)
arcsin_p = Primitive("arcsin", elementwise=True)
abstract_eval_rules[arcsin_p] = float_unary
impl_rules[arcsin_p] = np.arcsin
vjp_rules[arcsin_p] = lambda g, out, x: (g / bind(sqrt_p, 1.0 - x * x),)
jvp_rules[arcsin_p] = elementwise_jvp(arcsin_p, lambda out, x: 1.0 / bind(sqrt_p, 1.0 - x * x))
batch_rules[arcsin_p] = elementwise_batch(arcsin_p)

# arccos: d/dx = -1 / sqrt(1 - x^2)
arccos_p = Primitive("arccos", elementwise=True)
abstract_eval_rules[arccos_p] = float_unary
impl_rules[arccos_p] = np.arccos
vjp_rules[arccos_p] = lambda g, out, x: (-g / bind(sqrt_p, 1.0 - x * x),)
jvp_rules[arccos_p] = elementwise_jvp(arccos_p, lambda out, x: -1.0 / bind(sqrt_p, 1.0 - x * x))
batch_rules[arccos_p] = elementwise_batch(arccos_p)

# arctan: d/dx = 1 / (1 + x^2)
arctan_p = Primitive("arctan", elementwise=True)
abstract_eval_rules[arctan_p] = float_unary
impl_rules[arctan_p] = np.arctan
vjp_rules[arctan_p] = lambda g, out, x: (g / (1.0 + x * x),)
jvp_rules[arctan_p] = elementwise_jvp(arctan_p, lambda out, x: 1.0 / (1.0 + x * x))
batch_rules[arctan_p] = elementwise_batch(arctan_p)

# sinh: d/dx sinh x = cosh x
sinh_p = Primitive("sinh", elementwise=True)
abstract_eval_rules[sinh_p] = float_unary
impl_rules[sinh_p] = np.sinh
vjp_rules[sinh_p] = lambda g, out, x: (g * bind(cosh_p, x),)
jvp_rules[sinh_p] = elementwise_jvp(sinh_p, lambda out, x: bind(cosh_p, x))
batch_rules[sinh_p] = elementwise_batch(sinh_p)

# cosh: d/dx cosh x = sinh x
cosh_p = Primitive("cosh", elementwise=True)
abstract_eval_rules[cosh_p] = float_unary
impl_rules[cosh_p] = np.cosh
vjp_rules[cosh_p] = lambda g, out, x: (g * bind(sinh_p, x),)
jvp_rules[cosh_p] = elementwise_jvp(cosh_p, lambda out, x: bind(sinh_p, x))
batch_rules[cosh_p] = elementwise_batch(cosh_p)

# arcsinh: d/dx = 1 / sqrt(x^2 + 1)
arcsinh_p = Primitive("arcsinh", elementwise=True)
abstract_eval_rules[arcsinh_p] = float_unary
impl_rules[arcsinh_p] = np.arcsinh
vjp_rules[arcsinh_p] = lambda g, out, x: (g / bind(sqrt_p, x * x + 1.0),)
jvp_rules[arcsinh_p] = elementwise_jvp(arcsinh_p, lambda out, x: 1.0 / bind(sqrt_p, x * x + 1.0))
batch_rules[arcsinh_p] = elementwise_batch(arcsinh_p)

# arccosh: d/dx = 1 / (sqrt(x - 1) sqrt(x + 1)), which keeps its precision near x = 1
arccosh_p = Primitive("arccosh", elementwise=True)
abstract_eval_rules[arccosh_p] = float_unary
impl_rules[arccosh_p] = np.arccosh
vjp_rules[arccosh_p] = lambda g, out, x: (g / (bind(sqrt_p, x - 1.0) * bind(sqrt_p, x + 1.0)),)
jvp_rules[arccosh_p] = elementwise_jvp(arccosh_p, lambda out, x: 1.0 / (bind(sqrt_p, x - 1.0) * bind(sqrt_p, x + 1.0)))
batch_rules[arccosh_p] = elementwise_batch(arccosh_p)

# arctanh: d/dx = 1 / (1 - x^2)
arctanh_p = Primitive("arctanh", elementwise=True)
abstract_eval_rules[arctanh_p] = float_unary
impl_rules[arctanh_p] = np.arctanh
vjp_rules[arctanh_p] = lambda g, out, x: (g / (1.0 - x * x),)
jvp_rules[arctanh_p] = elementwise_jvp(arctanh_p, lambda out, x: 1.0 / (1.0 - x * x))
batch_rules[arctanh_p] = elementwise_batch(arctanh_p)

# erf: the error function (NumPy has none: math.erf per element); d/dx = 2/sqrt(pi) e^(-x^2)
TWO_OVER_SQRT_PI = 2.0 / np.sqrt(np.pi)
erf_p = Primitive("erf", elementwise=True)
abstract_eval_rules[erf_p] = float_unary
impl_rules[erf_p] = lambda x: np.float64(math.erf(x)) if np.ndim(x) == 0 else np.vectorize(math.erf, otypes=[np.float64])(x)
vjp_rules[erf_p] = lambda g, out, x: (g * TWO_OVER_SQRT_PI * bind(exp_p, -(x * x)),)
jvp_rules[erf_p] = elementwise_jvp(erf_p, lambda out, x: TWO_OVER_SQRT_PI * bind(exp_p, -(x * x)))
batch_rules[erf_p] = elementwise_batch(erf_p)

# cbrt: the real cube root (negative for negative x); d/dx = 1 / (3 cbrt(x)^2), inf at 0 as in JAX
cbrt_p = Primitive("cbrt", elementwise=True)
abstract_eval_rules[cbrt_p] = float_unary
impl_rules[cbrt_p] = np.cbrt
vjp_rules[cbrt_p] = lambda g, out, x: (g / (3.0 * out * out),)
jvp_rules[cbrt_p] = elementwise_jvp(cbrt_p, lambda out, x: 1.0 / (3.0 * out * out))
batch_rules[cbrt_p] = elementwise_batch(cbrt_p)

# arctan2: the angle of the point (x, y), as np.arctan2(y, x); d/dy = x / (x^2 + y^2), d/dx = -y / (x^2 + y^2)
arctan2_p = Primitive("arctan2", elementwise=True)
abstract_eval_rules[arctan2_p] = float_binary("arctan2")
impl_rules[arctan2_p] = np.arctan2
vjp_rules[arctan2_p] = lambda g, out, y, x: (g * x / (x * x + y * y), -g * y / (x * x + y * y))
jvp_rules[arctan2_p] = elementwise_jvp(arctan2_p, lambda out, y, x: x / (x * x + y * y),
                                       lambda out, y, x: -y / (x * x + y * y))
batch_rules[arctan2_p] = elementwise_batch(arctan2_p)

# hypot: sqrt(x^2 + y^2) without overflow; d/dx = x / out, d/dy = y / out
hypot_p = Primitive("hypot", elementwise=True)
abstract_eval_rules[hypot_p] = float_binary("hypot")
impl_rules[hypot_p] = np.hypot
vjp_rules[hypot_p] = lambda g, out, x, y: (g * x / out, g * y / out)
jvp_rules[hypot_p] = elementwise_jvp(hypot_p, lambda out, x, y: x / out, lambda out, x, y: y / out)
batch_rules[hypot_p] = elementwise_batch(hypot_p)

# mod: x % y with the sign of y, as NumPy's and Python's; d/dx = 1, d/dy = -floor(x / y), as in JAX
mod_p = Primitive("mod", elementwise=True)
abstract_eval_rules[mod_p] = arithmetic("mod")
impl_rules[mod_p] = np.mod
vjp_rules[mod_p] = lambda g, out, x, y: (g, -g * bind(floor_divide_p, x, y))
jvp_rules[mod_p] = elementwise_jvp(mod_p, lambda out, x, y: 1.0, lambda out, x, y: -bind(floor_divide_p, x, y))
batch_rules[mod_p] = elementwise_batch(mod_p)


def rounding(name: str, ufunc, dtype_rule=float_unary) -> Primitive:
    """A piecewise-constant function (floor, ceil, rint, x // y): zero gradient, so no cotangent flows back."""
    primitive = Primitive(name, elementwise=True, differentiable=False)
    abstract_eval_rules[primitive] = dtype_rule
    impl_rules[primitive] = ufunc
    batch_rules[primitive] = elementwise_batch(primitive)
    return primitive


floor_p = rounding("floor", np.floor)  # the largest integer <= x, as a float
ceil_p = rounding("ceil", np.ceil)  # the smallest integer >= x, as a float
rint_p = rounding("rint", np.rint)  # the nearest integer, halves to even (np.round's rule), as a float
floor_divide_p = rounding("floor_divide", np.floor_divide, arithmetic("floor_divide"))  # floor(x / y), NumPy's //


def bitwise(name: str, ufunc) -> Primitive:
    """A bitwise operation on booleans or integers (logical on booleans): no cotangent flows."""
    primitive = Primitive(name, elementwise=True, differentiable=False)
    abstract_eval_rules[primitive] = arithmetic(name)
    impl_rules[primitive] = ufunc
    batch_rules[primitive] = elementwise_batch(primitive)
    return primitive


and_p = bitwise("and", np.bitwise_and)  # x & y
or_p = bitwise("or", np.bitwise_or)  # x | y
xor_p = bitwise("xor", np.bitwise_xor)  # x ^ y
invert_p = bitwise("invert", np.invert)  # ~x: `not` for booleans


# -- comparisons and selection -----------------------------------------------------------


def comparison(name: str, ufunc) -> Primitive:
    """A comparison: booleans, which carry no cotangent."""
    primitive = Primitive(name, elementwise=True, differentiable=False)
    abstract_eval_rules[primitive] = lambda x, y: Aval(broadcast_shapes(name, x, y), "bool")
    impl_rules[primitive] = ufunc
    batch_rules[primitive] = elementwise_batch(primitive)
    return primitive


gt_p = comparison("gt", np.greater)  # x > y
lt_p = comparison("lt", np.less)  # x < y
ge_p = comparison("ge", np.greater_equal)  # x >= y
le_p = comparison("le", np.less_equal)  # x <= y
eq_p = comparison("eq", np.equal)  # x == y
ne_p = comparison("ne", np.not_equal)  # x != y

# where: cond ? x : y elementwise; the cotangent goes to the branch that was taken
where_p = Primitive("where", elementwise=True)
abstract_eval_rules[where_p] = lambda c, x, y: Aval(broadcast_shapes("where", c, x, y), promote(x, y))
impl_rules[where_p] = np.where
vjp_rules[where_p] = lambda g, out, c, x, y: (None, bind(where_p, c, g, 0.0), bind(where_p, c, 0.0, g))


def where_jvp(primals, tangents):
    out = bind(where_p, *primals)
    (_, tx, ty), shape = tangents, aval_of(out).shape
    if tx is None and ty is None:
        return out, None
    return out, tangent_sum([bind(where_p, primals[0], 0.0 if tx is None else tx, 0.0 if ty is None else ty)], shape)


jvp_rules[where_p] = where_jvp
batch_rules[where_p] = elementwise_batch(where_p)

# -- reductions and shapes ---------------------------------------------------------------


def keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def reduced(x: Aval, axes: tuple[int, ...]) -> Aval:
    return Aval(tuple(n for i, n in enumerate(x.shape) if i not in axes), x.dtype)


def broadcast_back(value, shape: tuple[int, ...], axes: tuple[int, ...]):
    """A value reduced over `axes`, broadcast back to the `shape` it was reduced from."""
    if len(axes) < len(shape):  # a number (reduced over every axis) broadcasts as it is
        value = bind(reshape_p, value, shape=keepdims_shape(shape, axes))
    return bind(broadcast_to_p, value, shape=shape)


# reduce_sum: sum over `axes` (removed from the shape); the cotangent is broadcast back over them
reduce_sum_p = Primitive("reduce_sum")
abstract_eval_rules[reduce_sum_p] = lambda x, axes: Aval(reduced(x, axes).shape, "i64" if x.dtype == "bool" else x.dtype)
impl_rules[reduce_sum_p] = lambda x, axes: np.sum(x, axis=axes)
vjp_rules[reduce_sum_p] = lambda g, out, x, axes: (broadcast_back(g, x.shape, axes),)
jvp_rules[reduce_sum_p] = linear_jvp(reduce_sum_p)
batch_rules[reduce_sum_p] = shifted_batch(reduce_sum_p, lambda size, p: {"axes": tuple(a + 1 for a in p["axes"])})


def reduce_max_vjp(g, out, x, axes):
    # the cotangent is shared among the elements that attain the maximum
    at_max = x == broadcast_back(out, x.shape, axes)
    share = g / bind(reduce_sum_p, at_max, axes=axes)
    return (at_max * broadcast_back(share, x.shape, axes),)


# reduce_max: maximum over `axes`
reduce_max_p = Primitive("reduce_max")
abstract_eval_rules[reduce_max_p] = reduced
impl_rules[reduce_max_p] = lambda x, axes: np.max(x, axis=axes)
vjp_rules[reduce_max_p] = reduce_max_vjp


def reduce_max_jvp(primals, tangents, axes):
    # the mean of the tangents of the elements that attain the maximum
    (x,), (t,) = primals, tangents
    out = bind(reduce_max_p, x, axes=axes)
    at_max = x == broadcast_back(out, aval_of(x).shape, axes)
    return out, bind(reduce_sum_p, t * at_max, axes=axes) / bind(reduce_sum_p, at_max, axes=axes)


jvp_rules[reduce_max_p] = reduce_max_jvp
batch_rules[reduce_max_p] = shifted_batch(reduce_max_p, lambda size, p: {"axes": tuple(a + 1 for a in p["axes"])})



def along_axis(x: Aval, axis: int) -> Aval:
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for {x}")
    return x


# argmax: the index of the first largest element along `axis` (removed from the shape); an integer,
# so no cotangent flows (tnp.argmin is argmax of -x)
argmax_p = Primitive("argmax", differentiable=False)
abstract_eval_rules[argmax_p] = lambda x, axis: Aval(reduced(along_axis(x, axis), (axis,)).shape, "i64")
impl_rules[argmax_p] = lambda x, axis: np.argmax(x, axis=axis)
batch_rules[argmax_p] = shifted_batch(argmax_p, lambda size, p: {"axis": p["axis"] + 1})

# argsort: the indices that sort x along `axis`, equal elements in their order (a stable sort);
# tnp.sort gathers x at them, so the cotangent of each sorted element goes to the element chosen
argsort_p = Primitive("argsort", differentiable=False)
abstract_eval_rules[argsort_p] = lambda x, axis: Aval(along_axis(x, axis).shape, "i64")
impl_rules[argsort_p] = lambda x, axis: np.argsort(x, axis=axis, kind="stable")
batch_rules[argsort_p] = shifted_batch(argsort_p, lambda size, p: {"axis": p["axis"] + 1})


def cumsum_impl(x, axis: int, reverse: bool):
    if reverse:
        return np.flip(np.cumsum(np.flip(x, axis), axis=axis), axis)
    return np.cumsum(x, axis=axis)


# cumsum: running sums along `axis`, from the last element back when `reverse`; linear, so its
# adjoint is the running sum of the cotangent the other way
cumsum_p = Primitive("cumsum")
abstract_eval_rules[cumsum_p] = lambda x, axis, reverse: Aval(along_axis(x, axis).shape,
                                                              "i64" if x.dtype == "bool" else x.dtype)
impl_rules[cumsum_p] = cumsum_impl
vjp_rules[cumsum_p] = lambda g, out, x, axis, reverse: (bind(cumsum_p, g, axis=axis, reverse=not reverse),)
jvp_rules[cumsum_p] = linear_jvp(cumsum_p)
batch_rules[cumsum_p] = shifted_batch(cumsum_p, lambda size, p: {**p, "axis": p["axis"] + 1})


def reshape_rule(x: Aval, shape):
    if x.size != int(np.prod(shape)):
        raise ShapeError(f"reshape: cannot reshape {x} into shape {shape}")
    return Aval(shape, x.dtype)


# reshape: same elements, new shape
reshape_p = Primitive("reshape")
abstract_eval_rules[reshape_p] = reshape_rule
impl_rules[reshape_p] = lambda x, shape: np.reshape(x, shape)
vjp_rules[reshape_p] = lambda g, out, x, shape: (bind(reshape_p, g, shape=x.shape),)
jvp_rules[reshape_p] = linear_jvp(reshape_p)
batch_rules[reshape_p] = shifted_batch(reshape_p, lambda size, p: {"shape": (size,) + tuple(p["shape"])})


def broadcast_to_rule(x: Aval, shape):
    if broadcast_shapes("broadcast_to", x, Aval(shape)) != shape:
        raise ShapeError(f"broadcast_to: cannot broadcast {x} to shape {shape}")
    return Aval(shape, x.dtype)


# broadcast_to: NumPy broadcasting to `shape` (elementwise: x is read at the broadcast index); the
# AD pass sums the cotangent back over the broadcast axes
broadcast_to_p = Primitive("broadcast_to", elementwise=True)
abstract_eval_rules[broadcast_to_p] = broadcast_to_rule
impl_rules[broadcast_to_p] = lambda x, shape: np.broadcast_to(x, shape).copy()
vjp_rules[broadcast_to_p] = lambda g, out, x, shape: (g,)
jvp_rules[broadcast_to_p] = linear_jvp(broadcast_to_p)
batch_rules[broadcast_to_p] = lambda values, batched, size, shape: (
    bind(broadcast_to_p, with_batch_rank(values[0], len(shape)), shape=(size,) + tuple(shape)), True)

# transpose: permute axes; the cotangent goes through the inverse permutation
transpose_p = Primitive("transpose")
abstract_eval_rules[transpose_p] = lambda x, perm: Aval(tuple(x.shape[i] for i in perm), x.dtype)
impl_rules[transpose_p] = lambda x, perm: np.transpose(x, perm)
vjp_rules[transpose_p] = lambda g, out, x, perm: (bind(transpose_p, g, perm=tuple(np.argsort(perm).tolist())),)
jvp_rules[transpose_p] = linear_jvp(transpose_p)
batch_rules[transpose_p] = shifted_batch(transpose_p, lambda size, p: {"perm": (0,) + tuple(a + 1 for a in p["perm"])})


def matmul_rule(x: Aval, y: Aval) -> Aval:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[0]:
        raise ShapeError(f"matmul: shapes {x} and {y} do not fit (need (n,k) @ (k,m))")
    return Aval((x.shape[0], y.shape[1]), promote(x, y))


# matmul: (n,k) @ (k,m); tnp.matmul reshapes 1-d operands to 2-d around it
matmul_p = Primitive("matmul")
abstract_eval_rules[matmul_p] = matmul_rule
impl_rules[matmul_p] = np.matmul
vjp_rules[matmul_p] = lambda g, out, x, y: (bind(matmul_p, g, bind(transpose_p, y, perm=(1, 0))),
                                            bind(matmul_p, bind(transpose_p, x, perm=(1, 0)), g))
jvp_rules[matmul_p] = lambda primals, tangents: (bind(matmul_p, *primals), tangent_sum(
    [bind(matmul_p, t, y) for t, y in [(tangents[0], primals[1])] if t is not None]
    + [bind(matmul_p, x, t) for x, t in [(primals[0], tangents[1])] if t is not None],
    (aval_of(primals[0]).shape[0], aval_of(primals[1]).shape[1])))


def matmul_batch(values, batched, size):
    # one operand batched: a single product on the batch folded into rows (or columns); both: the
    # products' sums as one broadcast multiply and a sum over k (no batched matmul primitive yet)
    (x, y), (x_batched, y_batched) = values, batched
    if x_batched and not y_batched:
        _, n, k = aval_of(x).shape
        product = bind(matmul_p, bind(reshape_p, x, shape=(size * n, k)), y)
        return bind(reshape_p, product, shape=(size, n, aval_of(y).shape[1])), True
    if y_batched and not x_batched:
        _, k, m = aval_of(y).shape
        columns = bind(reshape_p, bind(transpose_p, y, perm=(1, 0, 2)), shape=(k, size * m))
        product = bind(reshape_p, bind(matmul_p, x, columns), shape=(aval_of(x).shape[0], size, m))
        return bind(transpose_p, product, perm=(1, 0, 2)), True
    (_, n, k), m = aval_of(x).shape, aval_of(y).shape[2]
    terms = bind(reshape_p, x, shape=(size, n, k, 1)) * bind(reshape_p, y, shape=(size, 1, k, m))
    return bind(reduce_sum_p, terms, axes=(2,)), True


batch_rules[matmul_p] = matmul_batch


def batch_matmul_rule(x: Aval, y: Aval) -> Aval:
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0] or x.shape[2] != y.shape[1]:
        raise ShapeError(f"batch_matmul: shapes {x} and {y} do not fit (need (b,n,k) @ (b,k,m))")
    return Aval((x.shape[0], x.shape[1], y.shape[2]), promote(x, y))


def swap_last(x):
    return bind(transpose_p, x, perm=(0, 2, 1))


# batch_matmul: (b,n,k) @ (b,k,m), one product per leading index; tnp.matmul broadcasts the leading
# axes of operands of 3 or more axes and folds them into b
batch_matmul_p = Primitive("batch_matmul")
abstract_eval_rules[batch_matmul_p] = batch_matmul_rule
impl_rules[batch_matmul_p] = np.matmul
vjp_rules[batch_matmul_p] = lambda g, out, x, y: (bind(batch_matmul_p, g, swap_last(y)),
                                                  bind(batch_matmul_p, swap_last(x), g))
jvp_rules[batch_matmul_p] = lambda primals, tangents: (bind(batch_matmul_p, *primals), tangent_sum(
    [bind(batch_matmul_p, t, y) for t, y in [(tangents[0], primals[1])] if t is not None]
    + [bind(batch_matmul_p, x, t) for x, t in [(primals[0], tangents[1])] if t is not None],
    batch_matmul_rule(aval_of(primals[0]), aval_of(primals[1])).shape))


def batch_matmul_batch(values, batched, size):
    # the examples and the products' own leading axis fold into one leading axis
    b = next(aval_of(v).shape[1] if was else aval_of(v).shape[0] for v, was in zip(values, batched))
    folded = []
    for v, was in zip(values, batched):
        shape = aval_of(v).shape
        v = v if was else bind(broadcast_to_p, v, shape=(size,) + shape)
        folded.append(bind(reshape_p, v, shape=(size * b,) + aval_of(v).shape[2:]))
    out = bind(batch_matmul_p, *folded)
    return bind(reshape_p, out, shape=(size, b) + aval_of(out).shape[1:]), True


batch_rules[batch_matmul_p] = batch_matmul_batch

# -- indexing ----------------------------------------------------------------------------


def as_slices(index) -> tuple[slice, ...]:
    """One (start, stop, step) per axis as Python slices; a negative stop only ends a backward slice at 0."""
    return tuple(slice(start, stop if stop >= 0 else None, step) for start, stop, step in index)


def sliced_shape(index) -> tuple[int, ...]:
    return tuple(len(range(start, stop, step)) for start, stop, step in index)


# slice: basic slicing, one (start, stop, step) per axis; its adjoint pads the cotangent with zeros
slice_p = Primitive("slice")
abstract_eval_rules[slice_p] = lambda x, index: Aval(sliced_shape(index), x.dtype)
impl_rules[slice_p] = lambda x, index: x[as_slices(index)]
vjp_rules[slice_p] = lambda g, out, x, index: (bind(pad_p, g, shape=x.shape, index=index),)
jvp_rules[slice_p] = linear_jvp(slice_p)
batch_rules[slice_p] = shifted_batch(slice_p, lambda size, p: {"index": ((0, size, 1),) + tuple(p["index"])})


def pad_impl(x, shape, index):
    out = np.zeros(shape, x.dtype)
    out[as_slices(index)] = x
    return out


# pad: zeros of `shape` with x written at `index` (the adjoint of slice)
pad_p = Primitive("pad")
abstract_eval_rules[pad_p] = lambda x, shape, index: Aval(shape, x.dtype)
impl_rules[pad_p] = pad_impl
vjp_rules[pad_p] = lambda g, out, x, shape, index: (bind(slice_p, g, index=index),)
jvp_rules[pad_p] = linear_jvp(pad_p)
batch_rules[pad_p] = shifted_batch(pad_p, lambda size, p: {"shape": (size,) + tuple(p["shape"]),
                                                            "index": ((0, size, 1),) + tuple(p["index"])})


def gather_rule(x: Aval, *indices: Aval) -> Aval:
    if len(indices) > x.ndim or any(i.dtype != "i64" or i.shape != indices[0].shape or i.ndim != 1
                                    for i in indices):
        raise ShapeError(f"gather: cannot index {x} with {', '.join(map(str, indices))}")
    return Aval(indices[0].shape + x.shape[len(indices):], x.dtype)


# gather: x[i, j, ...] with equal-length 1-d integer index arrays on the leading axes; an index out
# of bounds raises IndexError naming the line (the code generator checks each one)
gather_p = Primitive("gather")
abstract_eval_rules[gather_p] = gather_rule
impl_rules[gather_p] = lambda x, *indices: x[tuple(indices)]
vjp_rules[gather_p] = lambda g, out, x, *indices: ((bind(scatter_add_p, g, *indices, shape=x.shape),)
                                                   + (None,) * len(indices))
jvp_rules[gather_p] = linear_jvp(gather_p)


def batched_indices(values, batched, size) -> tuple[list, int]:
    """Each index array as (size * N,), every example's indices after the previous example's, and N."""
    n = next(aval_of(i).shape[-1] for i in values)
    return [bind(reshape_p, i if b else bind(broadcast_to_p, i, shape=(size, n)), shape=(size * n,))
            for i, b in zip(values, batched)], n


def example_index(size: int, n: int):
    """For (size * N,) flattened indices: the example each belongs to (0 0 0 1 1 1 ...), as an index array."""
    return bind(reshape_p, bind(broadcast_to_p, np.arange(size).reshape(size, 1), shape=(size, n)), shape=(size * n,))


def gather_batch(values, batched, size):
    # the batch axis is one more leading axis to index when x is batched; the indices of every
    # example are read in one gather
    (x, *indices), (x_batched, *indices_batched) = values, batched
    if x_batched and not any(indices_batched):
        n = aval_of(indices[0]).shape[0]
        flat = [example_index(size, n)] + [bind(reshape_p, bind(broadcast_to_p, i, shape=(size, n)), shape=(size * n,))
                                           for i in indices]
    else:
        flat, n = batched_indices(indices, indices_batched, size)
        if x_batched:
            flat = [example_index(size, n)] + flat
    out = bind(gather_p, x, *flat)
    return bind(reshape_p, out, shape=(size, n) + aval_of(out).shape[1:]), True


batch_rules[gather_p] = gather_batch


def scatter_add_impl(x, *indices, shape):
    out = np.zeros(shape, x.dtype)
    np.add.at(out, tuple(indices), x)
    return out


# scatter_add: zeros of `shape`, each row of x added at its index (the adjoint of gather)
scatter_add_p = Primitive("scatter_add")
abstract_eval_rules[scatter_add_p] = lambda x, *indices, shape: Aval(shape, x.dtype)
impl_rules[scatter_add_p] = scatter_add_impl
vjp_rules[scatter_add_p] = lambda g, out, x, *indices, shape: (bind(gather_p, g, *indices),) + (None,) * len(indices)
jvp_rules[scatter_add_p] = linear_jvp(scatter_add_p)


def scatter_add_batch(values, batched, size, shape):
    # every example's rows added into its own slice of one (size, *shape) array
    (x, *indices), (x_batched, *indices_batched) = values, batched
    if any(indices_batched):
        flat, n = batched_indices(indices, indices_batched, size)
    else:
        n = aval_of(indices[0]).shape[0]
        flat = [bind(reshape_p, bind(broadcast_to_p, i, shape=(size, n)), shape=(size * n,)) for i in indices]
    rows = aval_of(x).shape[1:] if x_batched else aval_of(x).shape
    x = x if x_batched else bind(broadcast_to_p, x, shape=(size,) + rows)
    x = bind(reshape_p, x, shape=(size * n,) + tuple(rows[1:]))
    return bind(scatter_add_p, x, example_index(size, n), *flat, shape=(size,) + tuple(shape)), True


batch_rules[scatter_add_p] = scatter_add_batch


# -- convert: a value in another dtype ------------------------------------------------------
# (the float32 work's block: `astype`, and arithmetic that mixes dtypes where it needs a cast)


def convert(x, dtype: str):
    """x as `dtype` ("f32", "f64", "i64" or "bool"): x itself when it has that dtype already."""
    return x if aval_of(x).dtype == dtype else bind(convert_p, x, dtype=dtype)


def convert_impl(x, dtype: str):
    numpy_dtype = NUMPY_DTYPES[dtype]
    return np.asarray(x).astype(numpy_dtype) if np.ndim(x) else numpy_dtype(x)


def convert_vjp(g, out, x, dtype: str):
    # the cotangent goes back in x's dtype; none flows to an integer or boolean x
    x_dtype = aval_of(x).dtype
    return (convert(g, x_dtype) if x_dtype in FLOAT_DTYPES else None,)


def convert_jvp(primals, tangents, dtype: str):
    (x,), (t,) = primals, tangents
    return bind(convert_p, x, dtype=dtype), convert(t, dtype) if dtype in FLOAT_DTYPES else None


# convert: x in `dtype`, elementwise (NumPy's astype: a float made an int is truncated toward zero);
# the cotangent is converted back to x's dtype
convert_p = Primitive("convert", elementwise=True)
abstract_eval_rules[convert_p] = lambda x, dtype: Aval(x.shape, dtype)
impl_rules[convert_p] = convert_impl
vjp_rules[convert_p] = convert_vjp
jvp_rules[convert_p] = convert_jvp
batch_rules[convert_p] = elementwise_batch(convert_p)

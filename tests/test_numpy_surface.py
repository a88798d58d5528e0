"""NumPy's surface on traced values, one row per function: each row is written once as `fun(m, *args)` and run
with m = NumPy on concrete values (the reference), with m = tracegrad.numpy, and with m = NumPy on traced values
(NumPy's dispatch). Values must equal NumPy's on several shapes (0-d, empty and broadcasting ones where NumPy
takes them); gradients must equal central differences through tg.grad and tg.jit(tg.grad(...)), and second
derivatives too where the function is smooth. Breadth runs on the python backend; numba compiles two programs
that call most of the functions at once. The table of docs/numpy.md is generated from the registry here:
`python tests/test_numpy_surface.py` rewrites it.
"""
import math
import sys
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import errors

rng = np.random.default_rng(1)
normal = lambda *shape: rng.standard_normal(shape)
positive = lambda *shape: rng.uniform(0.5, 2.0, shape)
between = lambda low, high, *shape: rng.uniform(low, high, shape)
nonzero = lambda *shape: positive(*shape) * rng.choice([-1.0, 1.0], shape)
indices = lambda *values: np.array(values, dtype=np.int64)
DOCS = Path(__file__).parents[1] / "docs" / "numpy.md"
HERE = Path(__file__).name


def erf_reference(m, x):
    return np.vectorize(math.erf, otypes=[np.float64])(x) if m is np else m.erf(x)


@attrs.frozen
class Case:
    name: str
    fun: Callable  # fun(m, *args), m = np or tnp
    args: tuple  # argument tuples, one per shape tried
    grad: bool = True  # its float arguments have a gradient (zero counts) to check
    smooth: bool = False  # and a second derivative
    dispatch: bool = True  # NumPy's own function exists and dispatches here (not for erf)


def unary(name, make, smooth=True, **fields):
    """A row for an elementwise function of one operand, on 0-d, empty, 1-d and 2-d arguments."""
    return Case(name, lambda m, x: getattr(m, name)(x), ((make(),), (make(0),), (make(5),), (make(2, 3),)),
                smooth=smooth, **fields)


def binary(name, make_x, make_y, smooth=True, **fields):
    """A row for an elementwise function of two operands, with broadcasting."""
    return Case(name, lambda m, x, y: getattr(m, name)(x, y),
                ((make_x(), make_y()), (make_x(3, 4), make_y(4)), (make_x(2, 1), make_y(1, 3)), (make_x(0), make_y(0))),
                smooth=smooth, **fields)


with_specials = np.array([0.5, np.nan, np.inf, -np.inf, -2.0])
edge = np.array([-2.0, -0.5, 0.0, 0.5, 2.0])  # at the bounds of clip and at the kink of abs

CASES = [
    # -- elementwise
    unary("log1p", positive), unary("expm1", normal), unary("log2", positive), unary("log10", positive),
    unary("exp2", normal), unary("cbrt", nonzero), unary("reciprocal", nonzero), unary("tan", lambda *s: between(-1, 1, *s)),
    unary("sinh", normal), unary("cosh", normal), unary("arcsin", lambda *s: between(-0.9, 0.9, *s)),
    unary("arccos", lambda *s: between(-0.9, 0.9, *s)), unary("arctan", normal), unary("arcsinh", normal),
    unary("arccosh", lambda *s: 1.0 + positive(*s)), unary("arctanh", lambda *s: between(-0.9, 0.9, *s)),
    unary("sinc", nonzero), unary("deg2rad", normal), unary("rad2deg", normal), unary("radians", normal),
    unary("degrees", normal), unary("floor", lambda *s: 3 * normal(*s)), unary("ceil", lambda *s: 3 * normal(*s)),
    unary("rint", lambda *s: 3 * normal(*s)), unary("trunc", lambda *s: 3 * normal(*s)),
    unary("fix", lambda *s: 3 * normal(*s)), unary("round", lambda *s: 3 * normal(*s)),
    unary("around", lambda *s: 3 * normal(*s)), unary("abs", nonzero), unary("square", normal),
    Case("erf", erf_reference, ((normal(),), (normal(0),), (normal(5),), (normal(2, 3),)), smooth=True, dispatch=False),
    Case("sinc at 0", lambda m, x: m.sinc(x), ((np.array([0.0, 0.5, -1.5]),),)),
    Case("rounding integers", lambda m, k: m.floor(k) + m.ceil(k) * m.trunc(k) + m.round(k) - m.rint(k) * m.fix(k),
         ((indices(3, -2, 0),),)),
    Case("round decimals", lambda m, x: m.round(x, 2) + m.round(x * 100.0, -1), ((3 * normal(6),),)),
    Case("clip", lambda m, x: m.clip(x, -0.5, 0.5), ((normal(),), (normal(0),), (normal(7),))),
    Case("clip at its bounds", lambda m, x: m.clip(x, -0.5, 0.5) + m.abs(x), ((edge,),), grad=False),  # kinks: below
    Case("nan_to_num", lambda m, x: m.nan_to_num(x) * x, ((normal(3),),)),
    Case("nan_to_num of specials", lambda m, x: m.nan_to_num(x) + m.nan_to_num(x, nan=1.0, posinf=2.0, neginf=-3.0),
         ((with_specials,),), grad=False),
    Case("isnan isinf isfinite", lambda m, x: m.where(m.isnan(x) | m.isinf(x), 1.0, x) + m.isfinite(x),
         ((with_specials,),), grad=False),
    binary("logaddexp", normal, normal), binary("logaddexp2", normal, normal),
    Case("logaddexp of infinities", lambda m, x, y: m.logaddexp(x, y),
         ((np.array([-np.inf, np.inf, 0.0, -np.inf]), np.array([-np.inf, np.inf, 0.0, 1.0])),), grad=False),
    binary("arctan2", normal, normal), binary("hypot", nonzero, nonzero),
    binary("mod", lambda *s: 3 * normal(*s), positive, smooth=False), binary("remainder", normal, nonzero, smooth=False),
    binary("floor_divide", lambda *s: 3 * normal(*s), nonzero, smooth=False),
    binary("maximum", normal, normal), binary("float_power", positive, normal),
    # -- operators and logic
    Case("% and //", lambda m, x, y: x % y + (x // y) * y + 2.0 % y + x % 0.7, ((3 * normal(4), positive(4)),)),
    Case("integer % and //", lambda m, k, j: k % j + k // j + m.mod(k, 3), ((indices(7, -7, 4, 0), indices(3, 3, -3, 5)),)),
    Case("& | ^ ~", lambda m, x, y: m.where(((x > 0) & (y > 0)) | ~(x > y) ^ (y > 1.0), x, y),
         ((normal(6), normal(6)),)),
    Case("integer & | ^ ~", lambda m, k, j: (k & j) + (k | j) + (k ^ j) + ~k, ((indices(5, 6, -3), indices(3, 12, 7)),)),
    Case("logical", lambda m, x, y: m.where(m.logical_and(x > 0, y) | m.logical_not(m.logical_or(x, y > 0))
                                            ^ m.logical_xor(x < 0, y > 0), x, y),
         ((normal(6), normal(6)),)),
    # -- reductions and scans
    Case("prod", lambda m, x: m.prod(x) + m.prod(x, axis=1).sum() + m.prod(x, axis=(0, 2), keepdims=True).sum(),
         ((normal(2, 3, 2),), (normal(2, 2, 0),)), smooth=True),
    Case("prod with zeros", lambda m, x: m.prod(x, axis=0), ((np.array([[0.0, 1.5], [2.0, 0.0], [3.0, 0.0]]),),)),
    Case("var std", lambda m, x: m.var(x) + m.std(x, axis=0) * m.var(x, axis=1, ddof=1, keepdims=True),
         ((normal(3, 4),),), smooth=True),
    Case("argmax argmin", lambda m, x: x * (m.argmax(x) + m.argmin(x, axis=0) - m.argmax(x, axis=1, keepdims=True)),
         ((normal(3, 4),),)),
    Case("argmax of integers", lambda m, k: m.argmax(k) + m.argmin(k, axis=0), ((indices(3, 9, 9, -2),),)),
    Case("cumsum", lambda m, x: m.cumsum(x) * 2.0 + m.cumsum(x, axis=0).sum(), ((normal(3, 4),), (normal(0, 2),))),
    Case("cumprod", lambda m, x: m.cumprod(x, axis=1) + m.cumprod(x)[-1], ((normal(3, 4),),), smooth=True),
    Case("cumprod with zeros", lambda m, x: m.cumprod(x), ((np.array([1.5, 0.0, 2.0, -1.0, 0.0, 3.0]),),)),
    Case("sort", lambda m, x: m.sort(x) * np.arange(5.0) + m.sort(x, axis=0) + m.sort(x, axis=None)[:5],
         ((normal(4, 5),),)),
    Case("sort with ties", lambda m, x: m.sort(x) * np.arange(5.0), ((np.array([1.0, 2.0, 1.0, 0.5, 2.0]),),), grad=False),
    Case("max with ties", lambda m, x: m.max(x) + m.min(x, axis=0), ((np.array([[1.0, 2.0], [2.0, -1.0]]),),), grad=False),
    Case("argsort", lambda m, x: x * m.argsort(x), ((normal(6),),)),
    Case("trace diag diagonal", lambda m, x: m.trace(x) + m.diag(x, 1).sum() + m.diag(m.diag(x)) + m.diagonal(x, -1).sum(),
         ((normal(3, 3),),)),
    Case("trace of a stack", lambda m, x: m.trace(x, axis1=1, axis2=2) + m.diagonal(x, 1, 0, 2).sum(),
         ((normal(2, 3, 3),),)),
    Case("diag of a vector", lambda m, v: m.diag(v, -1) + m.diag(v, 1), ((normal(3),),)),
    Case("any all", lambda m, x: m.where(m.any(x > 1.0, axis=0), 1.0, 2.0) + m.all(x > -2.0) + m.count_nonzero(x > 0),
         ((normal(3, 4),),)),
    # -- shapes
    Case("concatenate append", lambda m, x, y: m.concatenate([x, y, x], axis=1) * 2.0 + m.append(x, y).sum(),
         ((normal(2, 3), normal(2, 1)), (normal(2, 0), normal(2, 2)))),
    Case("concatenate axis=None", lambda m, x, y: m.concatenate([x, y], axis=None), ((normal(2, 2), normal(3)),)),
    Case("stack hstack vstack", lambda m, x, y: m.stack([x, y], axis=1) + m.vstack([x, y]).T
         + m.hstack([x, y]).reshape(2, 3).T[0], ((normal(3), normal(3)),)),
    Case("stack of scalars", lambda m, x, y: m.stack([x, y, x * y]) * np.array([1.0, 2.0, 3.0]), ((1.5, -0.5),)),
    Case("array of scalars", lambda m, x, y: (tnp.array([[x, y], [y, 2.0]]) if m is tnp else np.array([[x, y], [y, 2.0]]))
         @ np.array([1.0, 3.0]), ((1.5, -0.5),), dispatch=False),
    Case("split", lambda m, x: sum(p.sum() * (i + 1) for i, p in enumerate(m.split(x, 2, axis=1)))
         + sum(p.sum() * (i + 1) for i, p in enumerate(m.split(x, [1, 2]))) + m.array_split(x, 3, axis=1)[2].sum(),
         ((normal(3, 4),),)),
    Case("squeeze ravel", lambda m, x: m.squeeze(x) + m.ravel(x)[:4] + m.squeeze(x, axis=0)[1], ((normal(1, 4, 1),),)),
    Case("swapaxes flip", lambda m, x: m.swapaxes(x, 0, 2) + m.flip(x).T + m.flip(x, axis=1).T, ((normal(2, 3, 4),),)),
    Case("fliplr flipud rot90", lambda m, x: m.fliplr(x) + m.flipud(x) + m.rot90(x) + m.rot90(x, 2) + m.rot90(x, 3)
         + m.rot90(x, axes=(1, 0)), ((normal(3, 3),),)),
    Case("roll", lambda m, x: m.roll(x, 2) + m.roll(x, -1, axis=1) + m.roll(x, (1, 2), axis=(0, 1)), ((normal(3, 4),),)),
    Case("tile repeat", lambda m, x: m.tile(x, (2, 1)).sum(axis=0) * m.repeat(x, 2, axis=0)[::2].sum(axis=0)
         + m.repeat(x, [1, 0, 2], axis=0)[1] + m.repeat(x, 2)[:4], ((normal(3, 4),),)),
    Case("tile of a scalar", lambda m, x: m.tile(x, 3), ((1.5,),)),
    Case("pad", lambda m, x: m.pad(x, 1) + m.pad(x, ((1, 1), (0, 2)), mode="edge")
         + m.pad(x, 1, mode="reflect") * m.pad(x, 1, mode="wrap") + m.pad(x, 1, mode="symmetric")
         + m.pad(x, 1, constant_values=2.0), ((normal(3, 4),),)),
    Case("take", lambda m, x: m.take(x, indices(0, 3, 3)) + m.take(x, indices(2, 0), axis=1).sum()
         + m.take(x, [[1, 0]], axis=0).sum(), ((normal(3, 4),),)),
    Case("take_along_axis", lambda m, x: m.take_along_axis(x, indices(0, 2, 2, 1, 3, 0).reshape(3, 2), axis=1).sum()
         + m.take_along_axis(x, m.argsort(x, axis=0), axis=0)[:2, :2], ((normal(3, 4),),)),
    Case("triu tril", lambda m, x: m.triu(x) + m.tril(x, -1) * 3.0 + m.triu(x, 1), ((normal(3, 4),), (normal(2, 3, 3),))),
    Case("outer inner vdot", lambda m, x, y: m.outer(x, y) * m.inner(x, y) + m.vdot(x, y) + m.inner(2.0, x).sum(),
         ((normal(3), normal(3)),)),
    Case("inner of matrices", lambda m, x, y: m.inner(x, y), ((normal(2, 3), normal(4, 3)),)),
    Case("tensordot", lambda m, x, y: m.tensordot(x, y) + m.tensordot(x, y, axes=([1, 0], [1, 0])).sum()
         + m.tensordot(x, y, axes=0).sum(), ((normal(2, 3), normal(2, 3)),)),
    Case("convolve correlate", lambda m, a, v: m.convolve(a, v) + m.correlate(a, v, "full")
         + m.convolve(v, a, "same").sum() + m.correlate(v, a, "same")[0] + m.convolve(a, v, "valid").sum()
         + m.correlate(a, v).sum(), ((normal(5), normal(3)), (normal(2), normal(6)), (normal(4), normal(4)))),
    Case("dot of stacks", lambda m, x, y: m.dot(x, y), ((normal(2, 3, 4), normal(4, 2)),)),
    Case("einsum", lambda m, a, b, c: m.einsum("ij,jk->ik", a, b) + m.einsum("ij,jk", a, b) + m.einsum("ii->i", c).sum()
         + m.einsum("i,i", c[0], c[1]) + m.einsum("ij->", a) + m.einsum("bij,bjk->bik", a[None], b[None])[0]
         + m.einsum("...ij->...ji", c)[0, 0] + m.einsum("ij,ij,jk->ik", a, a, b),
         ((normal(2, 3), normal(3, 2), normal(3, 3)),)),
    Case("einsum batched and broadcast", lambda m, a, b: m.einsum("bij,jk->bki", a, b[0]) + m.einsum("bij,bjk->bki", a, b),
         ((normal(2, 3, 4), normal(2, 4, 3)),)),
    Case("batched matmul", lambda m, x, y, z: (x @ y) + m.matmul(x, z) @ np.eye(2) + (y.transpose(0, 2, 1) @ z).sum(),
         ((normal(2, 3, 4), normal(2, 4, 2), normal(4, 2)),)),
    Case("broadcast batched matmul", lambda m, x, y: (x @ y) + (x[0] @ y) + (x @ y[0, 0]),
         ((normal(2, 1, 3, 4), normal(1, 5, 4, 3)),)),
    Case("matmul of a vector and a stack", lambda m, v, x: v @ x + (x @ v)[:, None, :], ((normal(3), normal(2, 3, 3)),)),
    # -- indexing
    Case("array index after a slice", lambda m, x: x[:, indices(2, 0, 2)].T @ x[1:, [0, 3, 1]].T + x[:, [1]].sum()
         + x[::2, indices(-1, 0)].sum(), ((normal(3, 4),),)),
    Case("array indices apart", lambda m, x: x[indices(0, 1), :, indices(3, 2)]
         + x[:, 1, indices(0, 0, 2)].T.sum(axis=0)[:2, None],
         ((normal(2, 3, 4),),)),
    Case("boolean mask", lambda m, x: x[np.array([True, False, True])] * 2.0, ((normal(3, 2),),)),
    # -- methods
    Case("methods", lambda m, x: (x.astype(np.int64) + x.flatten() @ x.ravel() + x.squeeze().sum(axis=0).mean()
                                  + x.prod() + x.reshape(-1)[2] + x.T.max() * x.min() + x.sum(axis=0).mean()
                                  + x.var() + x.std(axis=0).sum() + x.cumsum()[-1] + x.clip(-1.0, 1.0).sum()
                                  + x.argmax() + x.trace() + x.copy().sum()).sum(), ((normal(3, 3),),), smooth=True),
    Case("astype", lambda m, x: x.astype(np.int64) * x + x.astype(bool) + x.astype(np.float64)
         + (x > 0).astype(np.float64) + (x > 0).astype(int) * 2, ((3 * normal(5),), (np.float64(1.7),))),
]


def numpy_function(case: Case) -> Callable:
    return lambda *args: case.fun(np, *args)


def tnp_function(case: Case) -> Callable:
    return lambda *args: case.fun(tnp, *args)


def reference(case: Case, args):
    with np.errstate(all="ignore"):
        return case.fun(np, *args)


def float_args(args) -> tuple[int, ...]:
    return tuple(i for i, a in enumerate(args) if np.asarray(a).dtype == np.float64)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_value_equals_numpy(case, python_backend):
    for args in case.args:
        expected = reference(case, args)
        np.testing.assert_allclose(case.fun(tnp, *args), expected, rtol=1e-12, atol=1e-12)  # NumPy-stage, untraced
        got = tg.jit(tnp_function(case))(*args)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert np.shape(got) == np.shape(expected) and np.asarray(got).dtype == np.asarray(expected).dtype, case.name
        if case.dispatch:
            np.testing.assert_allclose(tg.jit(numpy_function(case))(*args), expected, rtol=1e-12, atol=1e-12)


FLOAT32_DTYPE_DIFFERS = {
    "erf": "the reference is math.erf per element, in float64; tnp.erf keeps float32",
    "outer inner vdot": "np.inner(2.0, x) makes the Python float a float64 array; tracegrad keeps Python "
                        "numbers weak (as JAX), so the result stays float32",
}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_value_in_float32_equals_numpys_float32(case, python_backend):
    """The float arguments as float32: the result has NumPy's dtype (float32 where NumPy keeps it) and
    NumPy's float32 value."""
    for args in case.args:
        args32 = tuple(np.asarray(a).astype(np.float32) if i in float_args(args) else a for i, a in enumerate(args))
        expected = reference(case, args32)
        got = tg.jit(tnp_function(case))(*args32)
        if case.name not in FLOAT32_DTYPE_DIFFERS:
            assert np.asarray(got).dtype == np.asarray(expected).dtype, case.name
        finite = np.asarray(expected)[np.isfinite(expected)] if np.asarray(expected).dtype.kind == "f" else ()
        scale = np.max(np.abs(finite), initial=1.0)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=2e-6 * scale)


def projected(case: Case, args, weights):
    """The case reduced to a scalar by a fixed weighted sum of its output, for m = tnp or np."""
    return lambda m: lambda *xs: (case.fun(m, *xs) * weights).sum()


def directional(fun, args, wrt, directions, h=1e-6) -> float:
    shifted = lambda step: fun(*(a + step * d if i in wrt else a for i, (a, d) in enumerate(zip(args, directions))))
    with np.errstate(all="ignore"):
        return (shifted(h) - shifted(-h)) / (2 * h)


GRADIENT_CASES = [case for case in CASES if case.grad and float_args(case.args[0])]


@pytest.mark.parametrize("case", GRADIENT_CASES, ids=lambda case: case.name)
def test_gradient_equals_central_differences(case, python_backend):
    for args in case.args:
        wrt = float_args(args)
        if not wrt or all(np.size(args[i]) == 0 for i in wrt):
            continue
        weights = rng.standard_normal(np.shape(reference(case, args)))
        loss = projected(case, args, weights)
        directions = [rng.standard_normal(np.shape(a)) for a in args]
        expected = directional(lambda *xs: reference(case, xs).__mul__(weights).sum(), args, wrt, directions)
        for gradient in (tg.grad(loss(tnp), argnums=wrt), tg.jit(tg.grad(loss(np if case.dispatch else tnp), argnums=wrt))):
            by_adjoint = sum(float(np.sum(g * directions[i])) for g, i in zip(gradient(*args), wrt))
            assert by_adjoint == pytest.approx(expected, rel=1e-6, abs=1e-8), case.name


@pytest.mark.parametrize("case", [case for case in GRADIENT_CASES if case.smooth], ids=lambda case: case.name)
def test_second_derivative_equals_central_differences(case, python_backend):
    """v' H v by grad of grad, against central differences of the gradient along v."""
    args = next(a for a in case.args if all(np.size(a[i]) for i in float_args(a)))
    wrt = float_args(args)
    weights = rng.standard_normal(np.shape(reference(case, args)))
    loss = projected(case, args, weights)(tnp)
    directions = [rng.standard_normal(np.shape(a)) for a in args]
    along = lambda *xs: sum(tnp.sum(g * directions[i]) for g, i in zip(tg.grad(loss, argnums=wrt)(*xs), wrt))
    second = sum(float(np.sum(g * directions[i])) for g, i in zip(tg.grad(along, argnums=wrt)(*args), wrt))
    assert second == pytest.approx(directional(tg.jit(along), args, wrt, directions, h=1e-5), rel=1e-6, abs=1e-7)


def test_kinks_follow_jax(python_backend):
    """abs'(0) = 0; sort and max send the cotangent to the chosen element (max shares ties); floor, round and
    sign have zero gradient; x % y has gradient 1 in x; clip at a bound shares, as JAX's maximum/minimum."""
    assert tg.grad(lambda x: tnp.abs(x))(0.0) == 0.0
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sort(x)[0])(np.array([3.0, 1.0, 2.0])), [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sort(x)[1])(np.array([1.0, 5.0, 1.0])), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.max(x))(np.array([1.0, 2.0, 2.0])), [0.0, 0.5, 0.5])
    for f in (tnp.floor, tnp.ceil, tnp.round, tnp.sign, tnp.rint, tnp.trunc):
        assert tg.grad(lambda x: f(x) * 1.0)(1.3) == 0.0
    assert tg.grad(lambda x: x % 0.7)(2.0) == 1.0
    assert tg.grad(lambda y: 2.0 % y)(0.7) == pytest.approx(-2.0)
    assert tg.grad(lambda x: tnp.clip(x, 0.0, 1.0))(1.0) == 0.5


def test_integer_results_refuse_a_gradient(python_backend):
    for f in (lambda x: tnp.argmax(x), lambda x: tnp.argsort(x)[0], lambda x: x.astype(np.int64).sum(),
              lambda x: (x > 0).sum(), lambda x: tnp.floor_divide(x.astype(np.int64), 2).sum()):
        with pytest.raises(errors.NonScalarOutputError, match=rf"float scalar.*{HERE}:\d+"):
            tg.grad(f)(np.array([1.5, -0.5]))


def test_bitwise_operators_on_floats_name_the_line():
    with pytest.raises(TypeError, match=rf"& takes booleans or integers.*{HERE}:\d+"):
        tg.jit(lambda x: x & x)(np.ones(2))


@pytest.mark.parametrize("call", [lambda t: np.median(t), lambda t: np.unique(t), lambda t: np.fft.fft(t),
                                  lambda t: np.pad(t, 1, mode="mean"), lambda t: np.sum(t, out=np.zeros(())),
                                  lambda t: np.add.reduce(t), lambda t: np.nonzero(t),
                                  lambda t: np.take(t, [0, 5], mode="clip")])
def test_functions_outside_the_set_are_refused_naming_the_function_and_the_line(call):
    with pytest.raises(errors.UnsupportedNumpyFunctionError, match=rf"np\.[\w.]+.*(\(at|at ).*{HERE}:\d+"):
        tg.jit(call)(np.ones(3))


def test_refusals_give_the_reason():
    with pytest.raises(errors.UnsupportedNumpyFunctionError, match=r"np\.unique .*shape depends on the values"):
        tg.jit(lambda t: np.unique(t))(np.ones(3))


# -- functional updates: x.at[index] ------------------------------------------------------------

AT_INDICES = [1, -1, slice(1, 4), (slice(None), 2), indices(0, 2, 0), [3, 1], (indices(1, 0), indices(2, 2)),
              np.array([True, False, True, False, True]), Ellipsis]


def at_reference(x, index, kind, v):
    out = x.copy()
    if kind == "set":
        out[index] = v
    elif kind == "add":
        np.add.at(out, index, v)
    elif kind == "multiply":
        np.multiply.at(out, index, v)
    else:
        getattr(np, kind + "imum").at(out, index, v)
    return out


@pytest.mark.parametrize("kind", ["set", "add", "multiply", "min", "max"])
def test_at_updates_equal_numpy_and_differentiate(kind, python_backend):
    for index in AT_INDICES:
        x = normal(5, 3) if isinstance(index, tuple) else normal(5)
        v = normal(*np.shape(x[index]))
        update = lambda x, v: getattr(x.at[index], kind)(v)
        expected = at_reference(x, index, kind, v)
        np.testing.assert_allclose(tg.jit(update)(x, v), expected, rtol=1e-12)
        np.testing.assert_allclose(tg.jit(lambda x, v: x.at[index].get())(x, v), x[index])
        weights = normal(*x.shape)
        loss = lambda x, v: tnp.sum(update(x, v) * weights)
        directions = [normal(*x.shape), normal(*np.shape(v))]
        by_differences = directional(lambda x, v: np.sum(at_reference(x, index, kind, v) * weights), (x, v), (0, 1),
                                     directions)
        gx, gv = tg.grad(loss, argnums=(0, 1))(x, v)
        assert np.sum(gx * directions[0]) + np.sum(gv * directions[1]) == pytest.approx(by_differences, rel=1e-6, abs=1e-8)


def test_at_with_repeated_and_traced_indices(python_backend):
    x, v = normal(4), normal(3)
    repeated = indices(1, 3, 1)
    np.testing.assert_allclose(tg.jit(lambda x, v: x.at[repeated].set(v))(x, v), at_reference(x, repeated, "set", v))
    np.testing.assert_allclose(tg.jit(lambda x, v: x.at[repeated].add(v))(x, v), at_reference(x, repeated, "add", v))
    np.testing.assert_allclose(tg.jit(lambda x, v: x.at[repeated].multiply(v))(x, v),
                               at_reference(x, repeated, "multiply", v))
    distinct = indices(2, 0, 3)
    for kind in ("set", "add", "multiply", "min", "max"):  # a traced index (an argument) must hold no repeats
        np.testing.assert_allclose(tg.jit(lambda x, v, i: getattr(x.at[i], kind)(v))(x, v, distinct),
                                   at_reference(x, distinct, kind, v))
    np.testing.assert_allclose(tg.jit(lambda x, i: x.at[i].set(0.0))(x, 2), at_reference(x, 2, "set", 0.0))
    assert tg.jit(lambda x: x.at[1].set(7).at[0].add(True))(indices(1, 2)).tolist() == [2, 7]


# -- numba: two compiled programs that call most of the functions ------------------------------------


def many_elementwise(x, y, k):
    total = (tnp.log1p(x * x) + tnp.expm1(y) + tnp.log2(x * x + 1.0) + tnp.log10(y * y + 1.0) + tnp.exp2(x)
             + tnp.tan(0.5 * x) + tnp.arcsin(0.5 * tnp.tanh(y)) + tnp.arccos(0.5 * tnp.tanh(x)) + tnp.arctan(y)
             + tnp.sinh(x) + tnp.cosh(y) + tnp.arcsinh(x) + tnp.arccosh(2.0 + x * x) + tnp.arctanh(0.5 * tnp.tanh(y))
             + tnp.erf(x) + tnp.cbrt(y) + tnp.arctan2(y, x) + tnp.hypot(x, y) + x % 0.7 + (x // 0.3) * y
             + tnp.floor(x) * y + tnp.ceil(y) * x + tnp.round(x) + tnp.sinc(y) + tnp.clip(x, -0.5, 0.5)
             + tnp.logaddexp(x, y) + tnp.nan_to_num(x / y) + x.astype(np.int64) * y
             + tnp.where((x > 0) & ~(y > 0) | (x > y) ^ (y < 0.5), x, y) + ((k & 3) | (k ^ 5)) % 4)
    return tnp.sum(total * total)


def many_arrays(x, m):
    # the primitives' own rows in tests/test_primitives.py compile sort, matmuls and einsum's products with numba
    total = (tnp.prod(x) + tnp.var(m, axis=0, ddof=1).sum() + tnp.std(m) + tnp.cumsum(m, axis=1).sum()
             + tnp.cumprod(x)[-1] + m.argmax() + tnp.argmin(m, axis=1).sum() + tnp.trace(m) + tnp.diag(x).sum()
             + tnp.concatenate([x, x * 2.0]).sum() + tnp.stack([x, x]).sum() + tnp.flip(m, 0)[0, 1]
             + tnp.rot90(m)[0, 2] + tnp.roll(x, 1)[0] + tnp.tile(x, 2)[4] + tnp.repeat(x, 2)[5]
             + tnp.pad(m, 1, mode="reflect").sum() + tnp.take(m, indices(2, 0), axis=1).sum() + tnp.triu(m).sum()
             + m[:, indices(2, 0)].sum() + m.at[indices(1, 1)].add(x[:2, None]).sum() + m.at[0].set(x).sum())
    return total * total


def test_numba_compiles_the_surface(backend):
    x, y, k = normal(3, 4), positive(3, 4), indices(1, 6, 3, 8)
    a, m = normal(3), normal(3, 3)
    tg.config.backend = "python"
    expected = [tg.jit(tg.value_and_grad(many_elementwise, argnums=(0, 1)))(x, y, k),
                tg.jit(tg.value_and_grad(many_arrays, argnums=(0, 1)))(a, m)]
    tg.config.backend = backend
    if backend == "python":  # the python backend's gradients, against central differences
        for fun, args, wrt in ((many_elementwise, (x, y, k), (0, 1)), (many_arrays, (a, m), (0, 1))):
            tg.check_grads(lambda *floats: fun(*floats, *args[len(wrt):]), args[:len(wrt)], rtol=1e-6)
        return
    got = [tg.jit(tg.value_and_grad(many_elementwise, argnums=(0, 1)))(x, y, k),
           tg.jit(tg.value_and_grad(many_arrays, argnums=(0, 1)))(a, m)]
    for (value, grads), (expected_value, expected_grads) in zip(got, expected):
        assert value == pytest.approx(expected_value, rel=1e-12)
        for g, e in zip(grads, expected_grads):
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


# -- docs/numpy.md: the registry's table --------------------------------------------------------

HEADER = """# NumPy functions on traced values

<!-- Generated from tracegrad.numpy's registry by tests/test_numpy_surface.py; do not edit.
     Rewrite it with: python tests/test_numpy_surface.py -->

Inside a traced function (`tg.jit`, `tg.grad`, `tg.vmap`, ...) each NumPy function below, called on a
traced value, runs as the tracegrad.numpy (`tnp`) function beside it, with NumPy's semantics and, where
there is one, a gradient (JAX's conventions at kinks: `abs'(0) = 0`; `sort` and `max` send the cotangent to
the chosen element, `max` sharing it among ties; `floor`, `round` and `sign` have zero gradient). Integer and
boolean results (`argmax`, comparisons) carry no gradient: `tg.grad` of one raises. Any other NumPy function
raises `tg.errors.UnsupportedNumpyFunctionError` naming it and your line. Other modules add to the table
with `tracegrad.numpy.implements(np.some_function)`.

Traced values also have the operators `+ - * / // % ** @ & | ^ ~`, comparisons, NumPy's indexing
(integers, slices, `None`, `...`, integer arrays anywhere, concrete boolean masks), JAX's functional
updates `x.at[index].set(v)` (and `.add`, `.multiply`, `.min`, `.max`, `.get`), and the methods
{methods}.
"""


def first_line(function) -> str:
    doc = (function.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split()).replace("|", "\\|")


def numpy_table() -> str:
    """docs/numpy.md, from tracegrad.numpy's registry."""
    methods = ", ".join(f"`.{name}`" for name in sorted(tnp.TRACER_METHODS) if not name.startswith("_"))
    lines = [HEADER.format(methods=methods), "## Supported", "", "| NumPy | tracegrad.numpy | notes |",
             "| --- | --- | --- |"]
    entries = [(tnp.numpy_name(f), f"`tnp.{impl.__name__}`" if impl.__name__ != "<lambda>" else "(itself)",
                first_line(impl)) for f, impl in list(tnp.UFUNCS.items()) + list(tnp.FUNCTIONS.items())]
    for name, impl, notes in sorted(entries):
        lines.append(f"| `{name}` | {impl} | {notes} |")
    lines += ["", "## Refused, and why", "", "| NumPy | why |", "| --- | --- |"]
    lines += [f"| `{tnp.numpy_name(f)}` | {why} |" for f, why in sorted(tnp.REFUSED.items(),
                                                                         key=lambda item: tnp.numpy_name(item[0]))]
    return "\n".join(lines) + "\n"


def test_docs_numpy_md_is_the_registry_table():
    assert DOCS.read_text() == numpy_table(), "docs/numpy.md is stale: run python tests/test_numpy_surface.py"


if __name__ == "__main__":
    DOCS.write_text(numpy_table())
    print(f"wrote {DOCS}", file=sys.stderr)

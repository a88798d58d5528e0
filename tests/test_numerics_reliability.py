"""Numerics at the edges: division by a literal zero in the adjoint, safe powers, index bounds,
unsigned integers too large for int64. Expected values are JAX's, written out as constants."""
import math
import warnings

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


@pytest.fixture
def no_runtime_warnings():
    """NumPy's RuntimeWarnings (divide by zero, invalid value) become errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


# -- the adjoint computes on concrete numbers as NumPy does --------------------------------


@pytest.mark.usefixtures("no_runtime_warnings")
def test_the_adjoint_of_a_division_by_a_literal_zero_is_infinite(backend):
    """The seed 1.0 divided by the literal 0.0 in div's rule: inf, as in JAX, not ZeroDivisionError."""
    assert tg.grad(lambda x: x / 0.0)(1.0) == math.inf
    assert tg.value_and_grad(lambda x: x / -0.0)(1.0) == (-math.inf, -math.inf)
    assert tg.grad(lambda x: (x / 0.0) * 2.0 + 1.0)(1.0) == math.inf  # a concrete cotangent carried along
    assert math.isnan(tg.grad(lambda x: 0.0 * (x / 0.0))(1.0))  # 0 * inf, as in JAX
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sum(x / 0.0))(np.ones(3)), np.full(3, math.inf))


@pytest.mark.usefixtures("no_runtime_warnings")
def test_constants_computed_while_tracing_are_inf_and_nan_without_a_warning(backend):
    assert tg.grad(lambda x: x * tnp.log(0.0))(1.0) == -math.inf
    assert tg.grad(lambda x: x * tnp.power(0.0, -1.0))(1.0) == math.inf
    assert math.isnan(tg.jit(lambda x: x + tnp.sqrt(-1.0))(1.0))


# -- pow's safe adjoint ----------------------------------------------------------------------
# The expected values are JAX 0.10.2's (float64), except d/dx where y == 0: x**0 is the constant 1,
# so it is 0, which JAX gives for an integer exponent and not for a float one (nan at x = 0).

LOG2 = 0.6931471805599453


@pytest.mark.parametrize("x, y, expected", [
    (0.0, 0.0, (0.0, 0.0)),  # d/dx: 0 * 0**-1 was nan (JAX: nan); d/dy: log(0) * 1 was -inf
    (0.0, 2.0, (0.0, 0.0)),  # d/dy: log(0) * 0 was nan
    (2.0, 0.0, (0.0, LOG2)),
    (2.0, 3.0, (12.0, 8 * LOG2)),  # the common case, unchanged
    (0.0, 0.5, (math.inf, 0.0)),
    (0.0, -1.0, (-math.inf, math.nan)),  # d/dy: log(1) * 0**-1 is 0 * inf in JAX too
], ids=str)
def test_pow_gradients(backend, x, y, expected):
    assert tg.grad(lambda x, y: x ** y, argnums=(0, 1))(x, y) == pytest.approx(expected, rel=1e-15, nan_ok=True)


@pytest.mark.usefixtures("no_runtime_warnings")
def test_pow_gradients_with_a_literal_operand(backend):
    assert tg.grad(lambda x: x ** 0.0)(0.0) == 0.0
    assert tg.grad(lambda y: 0.0 ** y)(2.0) == 0.0
    assert tg.grad(lambda y: 0.0 ** y)(0.0) == 0.0
    assert tg.grad(lambda x: x ** 2.5)(2.0) == pytest.approx(2.5 * 2.0 ** 1.5, rel=1e-15)
    assert tg.grad(lambda y: 2.0 ** y)(3.0) == pytest.approx(8 * LOG2, rel=1e-15)


def test_pow_gradients_on_arrays(backend):
    x = np.array([0.0, 2.0, 3.0])
    power_sum = lambda x, y: tnp.sum(x ** y)
    dx, dy = tg.grad(power_sum, argnums=(0, 1))(x, 0.0)
    np.testing.assert_array_equal(dx, [0.0, 0.0, 0.0])
    assert dy == pytest.approx(LOG2 + math.log(3.0), rel=1e-15)
    dx, dy = tg.grad(power_sum, argnums=(0, 1))(x, 2.0)
    np.testing.assert_allclose(dx, [0.0, 4.0, 6.0], rtol=1e-15)
    assert dy == pytest.approx(4 * LOG2 + 9 * math.log(3.0), rel=1e-15)
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sum(x ** 0.0))(x), [0.0, 0.0, 0.0])
    assert tg.grad(lambda y: tnp.sum(np.array([0.0, 2.0]) ** y))(2.0) == pytest.approx(4 * LOG2, rel=1e-15)
    exponents = np.array([0.0, 1.0, 2.0])  # a constant exponent array with a zero in it
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sum(x ** exponents))(np.zeros(3)), [0.0, 1.0, 0.0])


def test_pow_second_derivatives(backend):
    assert tg.grad(tg.grad(lambda x: x ** 0.0))(0.0) == 0.0  # x**0 is the constant 1 (JAX: nan)
    assert tg.grad(tg.grad(lambda x: x ** 0.0 + x * x))(0.0) == 2.0
    assert tg.grad(tg.grad(lambda x, y: x ** y))(0.0, 0.0) == 0.0
    assert tg.grad(tg.grad(lambda x: x ** 2.5))(2.0) == pytest.approx(2.5 * 1.5 * 2.0 ** 0.5, rel=1e-15)
    assert tg.grad(tg.grad(lambda y: 0.0 ** y))(2.0) == 0.0
    assert tg.grad(tg.grad(lambda x, y: x ** y, argnums=1), argnums=1)(2.0, 3.0) == pytest.approx(
        8 * LOG2 ** 2, rel=1e-14)


def adjoint_primitives(fun, *args):
    return [op.primitive for op in tg.make_ir(tg.grad(fun))(*args).ops]


def test_a_literal_exponent_keeps_the_adjoint_cheap():
    """Only a traced exponent or base needs the compare and the where."""
    assert adjoint_primitives(lambda x: x ** 2.5, 2.0) == ["pow", "mul"]
    assert adjoint_primitives(lambda x: tnp.sum(x ** 2.5), np.ones(3)) == ["pow", "mul"]
    assert adjoint_primitives(lambda y: 2.0 ** y, 3.0) == ["pow", "mul"]
    assert {"eq", "where"} <= set(adjoint_primitives(lambda x, y: x ** y, 2.0, 3.0))


# -- integers too large for int64 ----------------------------------------------------------

HERE = r"test_numerics_reliability\.py:\d+"
TOO_LARGE = np.array([1, 2**64 - 1], dtype=np.uint64)  # wrapped to int64, 2**64 - 1 would be the index -1


def test_uint64_arguments_too_large_for_int64_are_refused(backend):
    x = np.array([1.0, 2.0, 3.0])
    with pytest.raises(tg.errors.IntegerOverflowError, match=rf"uint64 value 18446744073709551615.*{HERE}.*2\*\*63"):
        tg.jit(lambda x, i: x[i] * 1.0)(x, TOO_LARGE)
    with pytest.raises(OverflowError, match=HERE):
        tg.grad(tg.nn.softmax_cross_entropy)(np.zeros((2, 3)), TOO_LARGE)


def test_uint64_arguments_that_fit_still_work(backend):
    x = np.array([1.0, 2.0, 3.0])
    labels = np.array([2, 0], dtype=np.uint64)
    np.testing.assert_array_equal(tg.jit(lambda x, i: x[i] * 1.0)(x, labels), [3.0, 1.0])
    largest = np.array([2**63 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(tg.jit(lambda i: i - 1)(largest), [2**63 - 2])
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    reference = tg.grad(tg.nn.softmax_cross_entropy)(logits, labels.astype(np.int64))
    np.testing.assert_array_equal(tg.grad(tg.nn.softmax_cross_entropy)(logits, labels), reference)


def test_closed_over_integers_too_large_for_int64_are_refused(backend):
    big = np.array([2**63], dtype=np.uint64)
    with pytest.raises(tg.errors.IntegerOverflowError, match=rf"uint64 value 9223372036854775808.*{HERE}"):
        tg.jit(lambda i: i + big)(np.array([1]))
    with pytest.raises(tg.errors.IntegerOverflowError, match=HERE):
        tg.jit(lambda i: i + np.uint64(2**64 - 1))(np.array([1]))
    with pytest.raises(tg.errors.IntegerOverflowError, match=HERE):
        tg.jit(lambda x: x[TOO_LARGE])(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(tg.errors.IntegerOverflowError, match=rf"integer 9223372036854775808.*{HERE}"):
        tg.jit(lambda i: i + 2**63)(np.array([1]))
    np.testing.assert_array_equal(tg.jit(lambda i: i + np.uint64(5))(np.array([1])), [6])
    assert tg.jit(lambda x: x * 2**64)(1.0) == 2.0**64  # next to a float, a large int is a float

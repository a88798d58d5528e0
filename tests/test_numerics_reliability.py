"""Numerics at the edges: division by a literal zero in the adjoint, safe powers, index bounds,
unsigned integers too large for int64. Where JAX is the reference, its values are written out."""
import math
import re
import warnings

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.core import bind
from tracegrad.primitives import scatter_add_p


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
    return [op.primitive.name for op in tg.make_ir(tg.grad(fun))(*args).ops]


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


# -- integer indices out of bounds ---------------------------------------------------------


def scaled_gather(x, i):
    return x[i] * 1.0


GATHER_LINE = scaled_gather.__code__.co_firstlineno + 1
X3 = np.array([1.0, 2.0, 3.0])


def out_of_bounds(axis: int, size: int, line: int) -> str:
    return rf"out of bounds for axis {axis} of size {size} \(at [^)]*test_numerics_reliability\.py:{line}\)"


@pytest.mark.parametrize("index", [3, 5, -4, 10**9, -10**9], ids=str)
def test_an_index_out_of_bounds_raises_naming_the_line(backend, index):
    with pytest.raises(IndexError, match=out_of_bounds(0, 3, GATHER_LINE)):
        tg.jit(scaled_gather)(X3, np.array([0, index]))
    with pytest.raises(IndexError, match=out_of_bounds(0, 3, GATHER_LINE)):  # rows of a matrix
        tg.jit(scaled_gather)(np.ones((3, 2)), np.array([index, 1]))
    with pytest.raises(IndexError, match=out_of_bounds(0, 3, GATHER_LINE)):  # the adjoint's scatter_add alone
        tg.grad(lambda x, i: tnp.sum(scaled_gather(x, i)))(X3, np.array([index]))


def pick(x, i, j):
    return x[i, j] * 1.0


def cross_entropy(logits, labels):
    return tg.nn.softmax_cross_entropy(logits, labels)


def scatter(g, i):
    return bind(scatter_add_p, g, i, shape=(3, 2))


PICK_LINE, CROSS_ENTROPY_LINE, SCATTER_LINE = (f.__code__.co_firstlineno + 1 for f in (pick, cross_entropy, scatter))


def test_negative_indices_count_from_the_end(backend):
    np.testing.assert_array_equal(tg.jit(scaled_gather)(X3, np.array([-1, -3, 0, 2])), [3.0, 1.0, 1.0, 3.0])
    matrix = np.arange(12.0).reshape(3, 4)
    rows = np.array([-1, 0, -3])
    np.testing.assert_array_equal(tg.jit(scaled_gather)(matrix, rows), matrix[rows])
    columns = np.array([-4, 3, -1])
    np.testing.assert_array_equal(tg.jit(pick)(matrix, rows, columns), matrix[rows, columns])
    weights = np.array([1.0, 10.0, 100.0])
    gradient = tg.grad(lambda x, i, j: tnp.sum(pick(x, i, j) * weights))(matrix, rows, columns)
    expected = np.zeros((3, 4))
    np.add.at(expected, (rows, columns), weights)
    np.testing.assert_array_equal(gradient, expected)
    with pytest.raises(IndexError, match=out_of_bounds(1, 4, PICK_LINE)):
        tg.jit(pick)(matrix, rows, np.array([0, -5, 0]))


def test_softmax_cross_entropy_checks_its_labels(backend):
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    for labels in (np.array([0, 3]), np.array([-4, 0])):
        with pytest.raises(IndexError, match=out_of_bounds(1, 3, CROSS_ENTROPY_LINE)):
            tg.jit(cross_entropy)(logits, labels)
        with pytest.raises(IndexError, match=out_of_bounds(1, 3, CROSS_ENTROPY_LINE)):
            tg.grad(cross_entropy)(logits, labels)
    log_probabilities = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    expected = -(log_probabilities[0, 2] + log_probabilities[1, 0]) / 2
    assert tg.jit(cross_entropy)(logits, np.array([-1, 0])) == pytest.approx(expected, rel=1e-15)


def test_scatter_add_checks_its_indices(backend):
    with pytest.raises(IndexError, match=out_of_bounds(0, 3, SCATTER_LINE)):
        tg.jit(scatter)(np.ones((2, 2)), np.array([0, 3]))
    np.testing.assert_array_equal(tg.jit(scatter)(np.ones((2, 2)), np.array([-1, 2])), [[0, 0], [0, 0], [2, 2]])


def test_concrete_indices_are_checked_while_tracing(backend):
    with pytest.raises(tg.errors.IndexingError, match=rf"index 3 is out of bounds for axis 0 of size 3.*{HERE}"):
        tg.jit(lambda x: x[np.array([0, 3])])(X3)
    with pytest.raises(tg.errors.IndexingError, match=rf"index -4 is out of bounds for axis 1 of size 3.*{HERE}"):
        tg.jit(lambda x, i: x[i, [0, -4]])(np.ones((2, 3)), np.array([0, 1]))
    np.testing.assert_array_equal(tg.jit(lambda x: x[[-3, 2]])(X3), [1.0, 3.0])


def test_both_backends_raise_the_same_error():
    """The python backend's code (also NumPy's stand-in while numba compiles) names the index numba's
    loop meets first: by position, then by axis."""
    matrix = np.zeros((3, 4))
    messages = {"python": [], "numba": []}
    saved = tg.config.backend
    try:
        for backend, found in messages.items():
            tg.config.backend = backend
            with pytest.raises(IndexError) as raised:
                tg.value_and_grad(lambda x, i: tnp.sum(scaled_gather(x, i)))(X3, np.array([1, 7]))
            found.append(str(raised.value))
            with pytest.raises(IndexError) as raised:
                tg.jit(pick)(matrix, np.array([0, 0, 9]), np.array([0, 9, 0]))
            found.append(str(raised.value))
    finally:
        tg.config.backend = saved
    assert messages["python"] == messages["numba"]
    assert re.search(out_of_bounds(0, 3, GATHER_LINE), messages["numba"][0])
    assert re.search(out_of_bounds(1, 4, PICK_LINE), messages["numba"][1])


def test_a_first_call_out_of_bounds_does_not_break_later_calls_while_compiling_in_background():
    saved = tg.config.backend, tg.config.compile_in_background
    tg.config.backend, tg.config.compile_in_background = "numba", True
    try:
        double = tg.jit(lambda x, i: x[i] * 2.0)
        with pytest.raises(IndexError, match=HERE):  # from NumPy's stand-in
            double(X3, np.array([5]))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "numba could not compile" would fail the test
            tg.wait_for_compiles()
        np.testing.assert_array_equal(double(X3, np.array([1])), [4.0])
        assert hasattr(double.lower(X3, np.array([1])).compiled.function, "py_func")  # numba's code
    finally:
        tg.config.backend, tg.config.compile_in_background = saved

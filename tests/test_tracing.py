"""Tracing: operators, micrograd's methods, indexing, tracegrad.numpy, NumPy dispatch, clear errors."""
import math

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import errors

pytestmark = pytest.mark.usefixtures("python_backend")
HERE = "test_tracing.py"


def test_operators_and_reflected_forms():
    def f(x, y):
        return (x + y) * (x - y) / y + 2.0 - x + 1.0 / x + 2.0 ** x + x ** 3 - (-x) + 3.0 * y

    x, y = 1.3, 0.7
    expected = (x + y) * (x - y) / y + 2.0 - x + 1.0 / x + 2.0 ** x + x ** 3 + x + 3.0 * y
    assert tg.jit(f)(x, y) == pytest.approx(expected, rel=1e-14)
    dfdx = 2 * x / y - 1 - 1 / x**2 + math.log(2) * 2**x + 3 * x**2 + 1
    assert tg.grad(f)(x, y) == pytest.approx(dfdx, rel=1e-12)


def test_micrograd_methods():
    def f(x):
        return x.exp() + (x * x + 1.0).log() + x.tanh() + x.relu() + (-x).relu()

    for x in (0.8, -0.6):
        expected = math.exp(x) + math.log(x * x + 1) + math.tanh(x) + abs(x)
        assert tg.jit(f)(x) == pytest.approx(expected, rel=1e-14)
        slope = math.exp(x) + 2 * x / (x * x + 1) + 1 - math.tanh(x) ** 2 + (1 if x > 0 else -1)
        assert tg.grad(f)(x) == pytest.approx(slope, rel=1e-12)


def test_array_methods_and_attributes():
    x = np.arange(1.0, 7.0).reshape(2, 3)

    def f(a):
        assert a.shape == (2, 3) and a.ndim == 2 and a.size == 6 and len(a) == 2
        return a.sum() + a.mean(axis=0).max() + a.T.reshape(6)[1] + a.reshape(3, 2)[2, 0] + a.min()

    expected = x.sum() + x.mean(axis=0).max() + x.T.reshape(6)[1] + x.reshape(3, 2)[2, 0] + x.min()
    assert tg.jit(f)(x) == pytest.approx(expected)
    grad = tg.grad(f)(x)
    manual = np.ones((2, 3))
    manual[:, 2] += 0.5  # mean over axis 0, then the max picks column 2
    manual[1, 0] += 1  # a.T.reshape(6)[1] is a[1, 0]
    manual[1, 1] += 1  # a.reshape(3, 2)[2, 0] is a[1, 1]
    manual[0, 0] += 1  # the min
    np.testing.assert_allclose(grad, manual)


@pytest.mark.parametrize("index", [1, -1, np.s_[1:], np.s_[::-2], np.s_[None, 1], np.s_[..., 1], np.s_[1, ::2],
                                   np.s_[:, None, 1:3], np.s_[-2:, -1]])
def test_basic_indexing_forward_and_gradient(index):
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(tg.jit(lambda a: a[index])(x), x[index])
    grad = tg.grad(lambda a: tnp.sum(a[index] * 2.0))(x)
    expected = np.zeros_like(x)
    expected[index] += 2.0
    np.testing.assert_array_equal(grad, expected)


def test_integer_array_indexing_scatters_back_and_accumulates():
    logp = np.log(np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]]))
    labels = np.array([1, 0, 1])

    def nll(logp, labels):
        return -tnp.mean(logp[np.arange(3), labels])

    assert tg.jit(nll)(logp, labels) == pytest.approx(-np.mean(logp[[0, 1, 2], labels]))
    expected = np.zeros((3, 2))
    expected[[0, 1, 2], labels] = -1 / 3
    np.testing.assert_allclose(tg.grad(nll)(logp, labels), expected)
    repeated = tg.grad(lambda v: tnp.sum(v[np.array([0, 0, 2, 0])]))(np.ones(3))
    np.testing.assert_array_equal(repeated, [3.0, 0.0, 1.0])
    rows = tg.grad(lambda m: tnp.sum(m[np.array([1, 1])] * np.array([[1.0, 2.0]])))(np.ones((2, 2)))
    np.testing.assert_array_equal(rows, [[0.0, 0.0], [2.0, 4.0]])


def test_tnp_reductions_and_shapes_match_numpy():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    cases = [
        (lambda a: tnp.sum(a, axis=-1), lambda a: np.sum(a, axis=-1)),
        (lambda a: tnp.sum(a, axis=(0, 2), keepdims=True), lambda a: np.sum(a, axis=(0, 2), keepdims=True)),
        (lambda a: tnp.mean(a, axis=1), lambda a: np.mean(a, axis=1)),
        (lambda a: tnp.max(a, axis=0, keepdims=True), lambda a: np.max(a, axis=0, keepdims=True)),
        (lambda a: tnp.min(a, axis=2), lambda a: np.min(a, axis=2)),
        (lambda a: tnp.reshape(a, (4, -1)), lambda a: np.reshape(a, (4, -1))),
        (lambda a: tnp.transpose(a), lambda a: np.transpose(a)),
        (lambda a: tnp.transpose(a, (1, 0, 2)), lambda a: np.transpose(a, (1, 0, 2))),
        (lambda a: tnp.maximum(a, 0.1) + tnp.minimum(a, -0.1), lambda a: np.maximum(a, 0.1) + np.minimum(a, -0.1)),
        (lambda a: tnp.where(a > 0, tnp.sqrt(tnp.abs(a)), tnp.cos(a)),
         lambda a: np.where(a > 0, np.sqrt(np.abs(a)), np.cos(a))),
        (lambda a: tnp.exp(a) + tnp.log(tnp.abs(a) + 1) + tnp.sin(a) + tnp.tanh(a),
         lambda a: np.exp(a) + np.log(np.abs(a) + 1) + np.sin(a) + np.tanh(a)),
    ]
    for traced, reference in cases:
        np.testing.assert_allclose(tg.jit(traced)(x), reference(x), rtol=1e-13)
        np.testing.assert_allclose(traced(x), reference(x), rtol=1e-13)  # outside tracing, tnp just computes


@pytest.mark.parametrize("shapes", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((2, 3), (3, 4))])
def test_matmul_and_dot_for_1d_and_2d(shapes):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    np.testing.assert_allclose(tg.jit(lambda a, b: a @ b)(a, b), a @ b, rtol=1e-13)
    np.testing.assert_allclose(tg.jit(tnp.dot)(a, b), np.dot(a, b), rtol=1e-13)
    tg.check_grads(lambda a, b: a @ b, (a, b))  # a random projection of the output, coordinate by coordinate


def test_numpy_functions_on_tracers_dispatch_to_tnp():
    x, w = np.array([[0.5, -1.0], [2.0, 0.1]]), np.array([1.0, -2.0])

    def with_numpy(x):
        return np.mean(np.tanh(np.dot(x, w)) + np.exp(x).sum(axis=1)) + np.sum(np.maximum(x, 0.0)) + np.sum(w * x)

    def with_tnp(x):
        return tnp.mean(tnp.tanh(tnp.dot(x, w)) + tnp.exp(x).sum(axis=1)) + tnp.sum(tnp.maximum(x, 0.0)) \
            + tnp.sum(w * x)

    assert tg.jit(with_numpy)(x) == pytest.approx(with_tnp(x))
    np.testing.assert_allclose(tg.grad(with_numpy)(x), tg.grad(with_tnp)(x))


@pytest.mark.parametrize("call", [lambda t: np.cumsum(t), lambda t: np.linalg.svd(t), lambda t: np.fft.fft(t),
                                  lambda t: np.sort(t)])
def test_unsupported_numpy_functions_are_named(call):
    with pytest.raises(errors.UnsupportedNumpyFunctionError, match=r"NumPy's np\.\w+ is not supported"):
        tg.jit(call)(np.eye(2))


def test_python_if_on_a_traced_value_names_the_line_and_tnp_where():
    def f(x):
        if x > 0:
            return x
        return -x

    line = f.__code__.co_firstlineno + 1
    with pytest.raises(errors.TracerConversionError, match=rf"{HERE}:{line}.*tnp\.where") as caught:
        tg.grad(f)(1.0)
    assert isinstance(caught.value, TypeError)


def test_float_and_math_on_a_traced_value_name_the_line_and_tnp():
    def with_float(x):
        return float(x) * 2.0

    def with_math(x):
        return math.sin(x)

    for f in (with_float, with_math):
        line = f.__code__.co_firstlineno + 1
        with pytest.raises(errors.TracerConversionError, match=rf"{HERE}:{line}.*tnp\.sin"):
            tg.jit(f)(1.0)


def test_item_assignment_explains_immutability():
    def f(x):
        x[0] = 1.0
        return x

    with pytest.raises(errors.ImmutableValueError, match="immutable.*tnp.where"):
        tg.jit(f)(np.zeros(3))


def test_shape_mismatch_names_both_shapes_and_the_line():
    def f(x, y):
        return x + y

    line = f.__code__.co_firstlineno + 1
    with pytest.raises(errors.ShapeError, match=rf"add: shapes f64\[3\] and f64\[4\].*{HERE}:{line}"):
        tg.jit(f)(np.ones(3), np.ones(4))
    with pytest.raises(errors.ShapeError, match=r"matmul: shapes f64\[2,3\] and f64\[2,3\]"):
        tg.jit(lambda a: a @ a)(np.ones((2, 3)))
    with pytest.raises(errors.ShapeError, match="cannot reshape"):
        tg.jit(lambda a: a.reshape(4))(np.ones(3))


def test_broadcasting_adjoint_sums_over_broadcast_axes():
    x, y = np.array([[1.0], [2.0], [3.0]]), np.array([1.0, -1.0, 0.5, 2.0])
    dx, dy = tg.grad(lambda x, y: tnp.sum(x * y), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(dx, np.full((3, 1), y.sum()))
    np.testing.assert_allclose(dy, np.full(4, x.sum()))
    assert tg.grad(lambda s, a: tnp.sum(s + a))(2.0, np.ones(5)) == 5.0


def test_values_used_twice_get_both_cotangents():
    assert tg.grad(lambda a: a + a)(3.0) == 2.0
    assert tg.grad(lambda a: a * a + a)(3.0) == 7.0


def test_concrete_python_control_flow_runs_at_trace_time():
    def f(x):
        total = 0.0
        for i in range(x.shape[0]):  # shapes are concrete
            if x.shape[0] > 2:
                total = total + x[i] * i
        return total

    assert tg.grad(f)(np.ones(3)).tolist() == [0.0, 1.0, 2.0]


def test_python_ints_are_float_scalars():
    grad = tg.grad(lambda x: x * x)(3)
    assert type(grad) is float and grad == 6.0


def test_a_leaked_tracer_is_reported():
    leaked = []
    tg.jit(lambda x: leaked.append(x) or x)(1.0)
    with pytest.raises(errors.LeakedTracerError, match="outside any trace"):
        leaked[0] + 1.0


def test_stack_builds_arrays_from_traced_values():
    def f(a, b):
        return tnp.stack([a * b, a + b, b]) ** 2

    assert tg.jit(f)(2.0, 3.0).tolist() == [36.0, 25.0, 9.0]
    assert tg.grad(lambda a, b: tnp.sum(f(a, b)), argnums=(0, 1))(2.0, 3.0) == (2 * 6 * 3 + 2 * 5, 2 * 6 * 2 + 2 * 5 + 6)
    with pytest.raises(errors.TracerConversionError, match=r"tnp\.stack"):
        tg.jit(lambda a: np.array([a, a]))(1.0)

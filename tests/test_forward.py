"""Forward mode (tg.jvp): against reverse mode, central differences and the unrolled loop."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp

X = np.linspace(0.2, 1.4, 5)


def loss(x):
    return tnp.sum(tnp.tanh(x * 1.5) ** 2 + tnp.sin(x) * x)


def test_jvp_is_the_gradient_along_the_tangent(python_backend):
    v = np.linspace(-1.0, 1.0, 5)
    value, tangent = tg.jvp(loss, (X,), (v,))
    assert value == pytest.approx(float(loss(X)), rel=1e-14)
    assert tangent == pytest.approx(float(tg.grad(loss)(X) @ v), rel=1e-13)


def test_hessian_vector_products_both_ways(backend):
    v = np.linspace(1.0, 2.0, 5)
    forward_over_reverse = tg.jvp(tg.grad(loss), (X,), (v,))[1]
    reverse_over_forward = tg.grad(lambda x: tg.jvp(loss, (x,), (v,))[1])(X)
    np.testing.assert_allclose(forward_over_reverse, reverse_over_forward, rtol=1e-13)
    h = 1e-6  # central differences of the gradient along v
    np.testing.assert_allclose(forward_over_reverse, (tg.grad(loss)(X + h * v) - tg.grad(loss)(X - h * v)) / (2 * h),
                               rtol=1e-6)
    np.testing.assert_allclose(tg.jit(lambda x: tg.jvp(tg.grad(loss), (x,), (v,))[1])(X), forward_over_reverse,
                               rtol=1e-14)


def test_pytrees_in_and_out_and_a_zero_tangent_output(python_backend):
    def f(params, scale):
        return {"y": tnp.tanh(params["w"] * scale) + params["b"], "constant": np.ones(2) * 3.0}

    params = {"w": np.array([0.5, -0.5]), "b": np.array([1.0, 2.0])}
    tangents = {"w": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    out, tangent = tg.jvp(f, (params, 2.0), (tangents, 0.5))
    expected = (1.0 - np.tanh(1.0) ** 2) * (np.array([1.0, 0.0]) * 2.0 + params["w"] * 0.5) + np.array([0.0, 1.0])
    np.testing.assert_allclose(tangent["y"], expected, rtol=1e-14)
    np.testing.assert_array_equal(tangent["constant"], np.zeros(2))
    with pytest.raises(tg.errors.TreeStructureError, match="structure"):
        tg.jvp(f, (params, 2.0), (tangents,))
    with pytest.raises(tg.errors.ShapeError, match="tangent of shape"):
        tg.jvp(f, (params, 2.0), ({"w": np.ones(3), "b": np.ones(2)}, 0.5))


def test_forward_mode_through_scan_while_and_cond(backend):
    xs = np.linspace(-1.0, 1.0, 7)

    def rnn(w, xs):
        h, ys = tg.scan(lambda h, x: (tnp.tanh(h * w + x), h * x), 0.3, xs)
        return h + tnp.sum(ys * ys)

    def rnn_unrolled(w, xs):
        h, total = 0.3, 0.0
        for t in range(xs.shape[0]):
            total = total + (h * xs[t]) ** 2
            h = tnp.tanh(h * w + xs[t])
        return h + total

    v = np.linspace(0.5, 1.5, 7)
    got = tg.jvp(rnn, (0.8, xs), (0.3, v))
    want = tg.jvp(rnn_unrolled, (0.8, xs), (0.3, v))
    assert got == pytest.approx(want, rel=1e-13)
    assert tg.jvp(tg.grad(rnn), (0.8, xs), (1.0, np.zeros(7)))[1] == pytest.approx(
        tg.grad(tg.grad(rnn))(0.8, xs), rel=1e-12)

    def newton_sqrt(a):
        return tg.while_loop(lambda s: tnp.abs(s * s - a) > 1e-12, lambda s: (s + a / s) / 2, a)

    assert tg.jvp(newton_sqrt, (2.0,), (1.0,))[1] == pytest.approx(0.5 / np.sqrt(2.0), rel=1e-12)

    def branch(x, y):
        return tg.cond(x > 0.0, lambda a, b: tnp.sin(a) * b, lambda a, b: a * a - b, x, y)

    for x in (0.7, -0.7):
        grads = tg.grad(branch, argnums=(0, 1))(x, 3.0)
        assert tg.jvp(branch, (x, 3.0), (1.0, 0.5))[1] == pytest.approx(grads[0] + 0.5 * grads[1], rel=1e-14)


def test_jvp_is_traced_once_per_signature():
    calls = []

    def f(x):
        calls.append(1)
        return tnp.sin(x) * 2.0

    for v in (1.0, 2.0, 3.0):
        assert tg.jvp(f, (0.5,), (v,))[1] == pytest.approx(2.0 * np.cos(0.5) * v, rel=1e-15)
    assert len(calls) == 1


def test_linearize_gives_the_value_and_its_jvp(python_backend):
    value, f_jvp = tg.linearize(loss, X)
    assert value == pytest.approx(float(loss(X)), rel=1e-14)
    v = np.linspace(-1.0, 1.0, 5)
    assert f_jvp(v) == pytest.approx(float(tg.grad(loss)(X) @ v), rel=1e-13)
    assert f_jvp(2 * v) == pytest.approx(2 * f_jvp(v), rel=1e-14)


def test_linearize_computes_the_primal_once_and_keeps_what_the_jvp_needs(backend):
    def f(x, scale):
        return {"wave": tnp.sin(x) * scale, "energy": tnp.sum(tnp.exp(x))}

    x = np.linspace(0.0, 1.0, 4)
    out, f_jvp = tg.linearize(f, x, 2.0)
    np.testing.assert_allclose(out["wave"], np.sin(x) * 2.0, rtol=1e-15)
    linear_primitives = {op.primitive.name for op in f_jvp.ir.ops}
    assert not linear_primitives & {"sin", "cos", "exp"}, f_jvp.ir  # those were computed once, by linearize
    v = np.array([1.0, -1.0, 0.5, 2.0])
    tangent = f_jvp(v, 0.25)
    expected = tg.jvp(f, (x, 2.0), (v, 0.25))[1]
    np.testing.assert_allclose(tangent["wave"], expected["wave"], rtol=1e-14)
    assert tangent["energy"] == pytest.approx(expected["energy"], rel=1e-14)
    with pytest.raises(tg.errors.ShapeError, match="tangent of shape"):
        f_jvp(np.ones(3), 0.25)

"""float32 end to end: the dtype of every result and gradient, values against NumPy's float32 and
against tracegrad's own float64, and NumPy 2's promotion with weak Python scalars."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import nn, optim

from test_primitives import ROWS

rng = np.random.default_rng(1)


def f32(value):
    """Float arguments as float32 (index arrays as they are)."""
    value = np.asarray(value)
    return value.astype(np.float32) if value.dtype == np.float64 else value


def output_dtype(fun, *args) -> str:
    return str(tg.make_ir(fun)(*args).outputs[0].aval.dtype)


x32, x64 = np.ones(3, np.float32), np.ones(3)
i64, flags = np.arange(1, 4), np.array([True, False, True])


@pytest.mark.parametrize("fun, args", [
    (lambda x: x * 0.5, (x32,)),  # a Python float does not promote a float32 array
    (lambda x: 2 * x + 1, (x32,)),
    (lambda x: x ** 2.0 / 3.0, (x32,)),
    (lambda x, y: x + y, (x32, x64)),  # float32 with float64 is float64
    (lambda x, y: x * y, (x32, i64)),  # int64 with float32 is float64, as np.result_type says
    (lambda x, y: x - y, (x32, flags)),
    (lambda x, y: x / y, (i64, i64)),
    (lambda x: x * 0.5, (i64,)),
    (lambda x: tnp.where(x > 0.0, x, 0.0), (x32,)),
    (lambda x, y: tnp.maximum(x, y), (x32, np.float32(2.0))),  # an np.float32 number is a float32
    (lambda x, y: x * y, (x32, np.float64(2.0))),
    (lambda x: tnp.exp(x) + tnp.sum(x), (x32,)),
    (lambda x: tnp.exp(x), (i64,)),
    (lambda x: tnp.mean(x) * x, (x32,)),
])
def test_promotion_is_numpy_2s_with_weak_python_scalars(fun, args):
    expected = fun(*args).dtype  # NumPy 2 (NEP 50): Python scalars weak, NumPy scalars and arrays not
    assert output_dtype(fun, *args) == {np.float32: "f32", np.float64: "f64"}[expected.type]


def test_the_printer_and_the_generated_code_keep_float32():
    fun = lambda x, w: tnp.sum(tnp.tanh(x @ w) * 0.5 + 1.0)
    x, w = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    program = str(tg.make_ir(fun)(x, w))
    assert "a:f32[3,4] b:f32[4,2]" in program and "mul d 0.5:f32" in program and "f64" not in program
    lowered = tg.jit(fun).lower(x, w)
    source = lowered.source
    assert "np.float32(0.5)" in source and "np.float32(0.0)" in source and " 0.5" not in source
    assert str(lowered.ir) == program


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.primitive)
def test_every_primitive_in_float32_against_numpy(row, python_backend):
    """Forward against NumPy on float32 arguments (dtype and value); the VJP's cotangents come back
    float32 and agree with the float64 VJP."""
    args = tuple(f32(a) for a in row.args)
    expected = np.asarray(row.reference(*args))
    out = tg.jit(row.fun)(*args)
    # pad's and scatter_add's references start from np.zeros' float64; NumPy's own ops keep float32
    assert np.asarray(out).dtype == (np.float32 if row.primitive in ("pad", "scatter_add") else expected.dtype)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    floats = [i for i, a in enumerate(args) if a.dtype == np.float32]
    out32, pullback32 = tg.vjp(row.fun, *args)
    out64, pullback64 = tg.vjp(row.fun, *row.args)
    cotangent = rng.standard_normal(np.shape(out64))
    grads32 = pullback32(cotangent.astype(np.asarray(out32).dtype))
    grads64 = pullback64(cotangent)
    for i in floats:
        assert np.asarray(grads32[i]).dtype == np.float32, i
        scale = np.max(np.abs(grads64[i])) + 1.0
        np.testing.assert_allclose(grads32[i], grads64[i], rtol=1e-4, atol=1e-5 * scale)


def mlp_loss(params, x, labels):
    return nn.softmax_cross_entropy(nn.mlp(params, x), labels)


def sgd_step(params, x, labels):
    value, grads = tg.value_and_grad(mlp_loss)(params, x, labels)
    return value, tg.tree_map(lambda p, g: p - 0.1 * g, params, grads)


@pytest.fixture(scope="module")
def w5():
    """W5: MLP 64-128-128-10, batch 256, float32 and float64 from the same numbers."""
    data = np.random.default_rng(0)
    x, labels = data.standard_normal((256, 64)), data.integers(0, 10, 256)
    params = nn.init_mlp([64, 128, 128, 10], seed=0)
    params32 = nn.init_mlp([64, 128, 128, 10], seed=0, dtype=np.float32)
    return params, params32, x, x.astype(np.float32), labels


def test_the_w5_step_in_float32_stays_float32_and_agrees_with_float64(w5, python_backend):
    params, params32, x, x32, labels = w5
    value, updated = tg.jit(sgd_step)(params32, x32, labels)
    value64, updated64 = tg.jit(sgd_step)(params, x, labels)
    assert type(value) is np.float32 and value == pytest.approx(value64, rel=1e-5)
    for layer, layer64 in zip(updated, updated64):
        for key in ("W", "b"):
            assert layer[key].dtype == np.float32
            np.testing.assert_allclose(layer[key], layer64[key], rtol=1e-4, atol=1e-6)
    grads = tg.grad(mlp_loss)(params32, x32, labels)
    grads64 = tg.grad(mlp_loss)(params, x, labels)
    for layer, layer64 in zip(grads, grads64):
        for key in ("W", "b"):
            assert layer[key].dtype == np.float32
            np.testing.assert_allclose(layer[key], layer64[key], rtol=1e-4, atol=1e-4 * np.abs(layer64[key]).max())


def test_the_w5_step_in_float32_under_numba_is_the_python_backends(w5):
    _, params32, _, x32, labels = w5
    value, updated = tg.jit(sgd_step)(params32, x32, labels)  # numba, the default backend
    saved, tg.config.backend = tg.config.backend, "python"
    try:
        expected_value, expected = tg.jit(sgd_step)(params32, x32, labels)
    finally:
        tg.config.backend = saved
    assert type(value) is np.float32 and value == pytest.approx(expected_value, rel=1e-5)
    for layer, expected_layer in zip(updated, expected):
        for key in ("W", "b"):
            assert layer[key].dtype == np.float32
            np.testing.assert_allclose(layer[key], expected_layer[key], rtol=1e-5, atol=1e-6)


def test_large_float32_arrays_use_numpys_simd_loops_and_sgemm():
    """At W6's batch the tanh runs in NumPy's float32 loop and the products call tg_matmul's sgemm."""
    x, w = rng.standard_normal((4096, 64)).astype(np.float32), rng.standard_normal((64, 128)).astype(np.float32)
    fun = lambda x, w: tnp.sum(tnp.tanh(x @ w), axis=0)
    source = tg.jit(fun).lower(x, w).source
    assert "np.tanh(" in source and "numba.objmode" in source and "tg_matmul" in source
    out = tg.jit(fun)(x, w)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.sum(np.tanh(x @ w), axis=0), rtol=1e-4, atol=1e-3)
    grad = tg.grad(lambda w: tnp.sum(fun(x, w)))(w)
    assert grad.dtype == np.float32
    expected = x.astype(np.float64).T @ (1.0 - np.tanh(x.astype(np.float64) @ w) ** 2)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-3)


def test_mixed_products_and_casts_give_gradients_in_each_arguments_dtype():
    x, w = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 2))

    def loss(x, w, scale):
        return tnp.sum((x @ w) ** 2) * scale + tnp.sum(w.astype(np.float32) * 2.0)

    value, (gx, gw, gscale) = tg.value_and_grad(loss, argnums=(0, 1, 2))(x, w, np.float32(0.5))
    assert type(value) is float and gx.dtype == np.float32 and gw.dtype == np.float64
    assert type(gscale) is np.float32
    wide = x.astype(np.float64)
    np.testing.assert_allclose(gx, 0.5 * 2 * (wide @ w) @ w.T, rtol=1e-5)
    np.testing.assert_allclose(gw, 0.5 * 2 * wide.T @ (wide @ w) + 2.0, rtol=1e-5)


def test_transformations_keep_float32(python_backend):
    x = np.linspace(0.1, 1.0, 4, dtype=np.float32)
    fun = lambda x: tnp.sin(x) * x
    _, tangent = tg.jvp(fun, (x,), (np.ones(4, np.float32),))
    assert tangent.dtype == np.float32
    for jacobian in (tg.jacfwd(fun)(x), tg.jacrev(fun)(x)):
        assert jacobian.dtype == np.float32
        np.testing.assert_allclose(jacobian, np.diag(np.cos(x) * x + np.sin(x)), rtol=1e-5, atol=1e-7)
    hessian = tg.hessian(lambda x: tnp.sum(x ** 3.0))(x)
    assert hessian.dtype == np.float32
    per_example = tg.vmap(tg.grad(lambda w, x: tnp.sum(tnp.tanh(w * x))), in_axes=(None, 0))(x, np.ones((3, 4), np.float32))
    assert per_example.dtype == np.float32 and per_example.shape == (3, 4)
    grad = tg.grad(lambda s: s * s * 3.0)(np.float32(2.0))
    assert type(grad) is np.float32 and grad == 12.0
    out, pullback = tg.vjp(fun, x)  # a float64 cotangent of a float32 output is taken as float32
    assert out.dtype == np.float32 and pullback(np.ones(4))[0].dtype == np.float32
    value, f_jvp = tg.linearize(fun, x)
    assert value.dtype == np.float32 and f_jvp(np.ones(4)).dtype == np.float32
    tg.check_grads(lambda x: tnp.exp(x) * tnp.tanh(x), (x,))


def test_scan_carries_float32_and_its_gradient_is_float32(python_backend):
    def rnn(w, xs):
        final, hs = tg.scan(lambda h, x: (tnp.tanh(h * w + x), h), np.zeros(2, xs.dtype), xs)
        return tnp.sum(final) + tnp.sum(hs)

    w, xs = np.float32(0.5), rng.standard_normal((6, 2)).astype(np.float32)
    assert "f64" not in str(tg.make_ir(tg.grad(rnn, argnums=(0, 1)))(w, xs))
    gw, gxs = tg.grad(rnn, argnums=(0, 1))(w, xs)
    gw64, gxs64 = tg.grad(rnn, argnums=(0, 1))(0.5, xs.astype(np.float64))
    assert type(gw) is np.float32 and gxs.dtype == np.float32
    assert gw == pytest.approx(gw64, rel=1e-4)
    np.testing.assert_allclose(gxs, gxs64, rtol=1e-4, atol=1e-6)
    power = lambda x: tg.fori_loop(0, 3, lambda i, y: y * x, tnp.ones(2, dtype=tnp.float32))
    assert tg.jit(power)(np.float32(2.0)).dtype == np.float32
    assert type(tg.grad(lambda x: tnp.sum(power(x)))(np.float32(2.0))) is np.float32


def test_optimizers_and_initialisers_keep_the_parameters_dtype(python_backend):
    params = nn.init_mlp([3, 4, 1], seed=0, dtype=np.float32)
    x, y = np.ones((5, 3), np.float32), np.zeros((5, 1), np.float32)
    loss = lambda p: nn.mse(nn.mlp(p, x), y)
    for optimizer in (optim.adam(1e-2), optim.sgd(optim.exponential_decay(0.1, 0.5), momentum=0.9)):
        state = optimizer.init(params)

        @tg.jit
        def step(params, state):
            return optimizer.update(tg.grad(loss)(params), state, params)

        new_params, state = step(params, state)
        new_params, state = step(new_params, state)
        assert all(leaf.dtype == np.float32 for leaf in tg.tree_leaves(new_params))
        assert loss(new_params) < loss(params)

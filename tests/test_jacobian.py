"""tg.jacfwd, tg.jacrev, tg.jacobian and tg.hessian against central differences and each other."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.control_flow import scan_p


def numeric_jacobian(f, x, h=1e-6):
    x = np.asarray(x, float)
    columns = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        columns.append((np.asarray(f(x + e.reshape(x.shape))) - np.asarray(f(x - e.reshape(x.shape)))) / (2 * h))
    return np.stack(columns, axis=-1).reshape(np.shape(f(x)) + x.shape)


def residuals(x):
    return tnp.stack([x[0] ** 2 - x[1], tnp.sin(x[1] * x[2]), x[0] * x[1] * x[2] - 1.0, tnp.exp(x[2])])


X = np.array([0.3, -1.2, 0.8])


def test_forward_and_reverse_jacobians_agree_with_central_differences(backend):
    expected = numeric_jacobian(lambda x: np.array(residuals(x)), X)
    for jacobian in (tg.jacfwd(residuals), tg.jacrev(residuals), tg.jacobian(residuals)):
        got = jacobian(X)
        assert got.shape == (4, 3)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tg.jacfwd(residuals)(X), tg.jacrev(residuals)(X), rtol=1e-14)


def test_the_program_is_one_batch_whatever_the_size():
    for jacobian in (tg.jacfwd, tg.jacrev):
        program = tg.jit(jacobian(lambda x: tnp.tanh(x) * 2.0)).lower(np.ones(500)).ir
        assert len(program.ops) < 20
        assert all(v.aval.dtype == "i64" and v.aval.size <= 500 for v in program.constvars)  # ranges, no identity
        assert not any(op.primitive is scan_p for op in program.ops)


def test_shapes_structures_and_argnums_as_jax_gives_them(python_backend):
    def f(params, x):
        return {"out": tnp.tanh(params["w"] @ x + params["b"]), "norm": tnp.sum(x * x)}

    params = {"w": np.arange(6.0).reshape(2, 3) / 10, "b": np.array([0.1, -0.1])}
    x = np.array([0.5, -0.5, 1.0])
    by_params = tg.jacrev(f)(params, x)
    assert by_params["out"]["w"].shape == (2, 2, 3) and by_params["out"]["b"].shape == (2, 2)
    assert by_params["norm"]["w"].shape == (2, 3)
    np.testing.assert_array_equal(by_params["norm"]["w"], np.zeros((2, 3)))
    both = tg.jacfwd(f, argnums=(0, 1))(params, x)
    assert isinstance(both["out"], tuple) and both["out"][1].shape == (2, 3)
    np.testing.assert_allclose(both["norm"][1], 2 * x, rtol=1e-15)
    np.testing.assert_allclose(both["out"][0]["b"], by_params["out"]["b"], rtol=1e-14)
    expected = numeric_jacobian(lambda x: np.tanh(params["w"] @ x + params["b"]), x)
    np.testing.assert_allclose(both["out"][1], expected, rtol=1e-6, atol=1e-9)


def test_hessian_is_forward_over_reverse(backend):
    def f(x):
        return tnp.sum(tnp.sin(x) * x ** 2) + x[0] * x[1]

    x = np.array([0.2, 0.9, -0.4])
    expected = np.diag(2 * np.sin(x) + 4 * x * np.cos(x) - x ** 2 * np.sin(x))
    expected[0, 1] = expected[1, 0] = 1.0
    np.testing.assert_allclose(tg.hessian(f)(x), expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(tg.jit(tg.hessian(f))(x), expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(f))(x), expected, rtol=1e-13, atol=1e-15)


def test_has_aux_and_scalars(python_backend):
    jac, aux = tg.jacrev(lambda x: (tnp.sin(x) * 2.0, tnp.sum(x)), has_aux=True)(np.array([0.0, 1.0]))
    np.testing.assert_allclose(jac, np.diag(2 * np.cos([0.0, 1.0])), rtol=1e-15)
    assert aux == 1.0
    assert tg.jacfwd(lambda a: a ** 3)(2.0) == pytest.approx(12.0, rel=1e-15)
    assert tg.hessian(lambda a: a ** 3)(2.0) == pytest.approx(12.0, rel=1e-15)


def test_integer_arguments_are_refused():
    with pytest.raises(tg.errors.NonDifferentiableArgumentError, match="float"):
        tg.jacrev(lambda i: i * 2.0)(np.array([1, 2]))

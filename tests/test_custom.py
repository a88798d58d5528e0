"""tg.custom_vjp and tg.custom_jvp: the user's rule in every derivative, under vmap too; the function
itself for values."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


@tg.custom_vjp
def log1pexp(x):
    return tnp.log(1.0 + tnp.exp(x))


def log1pexp_fwd(x):
    return log1pexp(x), x


def log1pexp_bwd(x, g):
    return (g * (1.0 - 1.0 / (1.0 + tnp.exp(x))),)  # finite where the function's own adjoint is inf / inf


log1pexp.defvjp(log1pexp_fwd, log1pexp_bwd)


@tg.custom_vjp
def clip_gradient(lo, hi, x):
    return x * 1.0


clip_gradient.defvjp(lambda lo, hi, x: (x * 1.0, (lo, hi)),
                     lambda bounds, g: (0.0, 0.0, tnp.minimum(tnp.maximum(g, bounds[0]), bounds[1])))


def test_reverse_mode_uses_the_rule(backend):
    x = np.array([0.0, 3.0, 1000.0])
    grads = tg.grad(lambda x: tnp.sum(log1pexp(x)))(x)
    np.testing.assert_allclose(grads, [0.5, 1 / (1 + np.exp(-3.0)), 1.0], rtol=1e-15)
    plain = tg.grad(lambda x: tnp.sum(tnp.log(1.0 + tnp.exp(x))))(x)
    assert np.isnan(plain[2])  # what the rule is for
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sum(clip_gradient(-1.0, 1.0, x) * 5.0))(x), [1.0] * 3)
    value, grads = tg.value_and_grad(lambda x: tnp.sum(log1pexp(x)))(np.array([0.0, 1.0]))
    assert value == pytest.approx(np.log(2.0) + np.log(1 + np.e), rel=1e-15)


def test_values_come_from_the_function_and_every_derivative_from_the_rule(backend):
    x = np.array([0.0, 1.0])
    np.testing.assert_allclose(tg.jit(lambda x: log1pexp(x))(x), np.log1p(np.exp(x)), rtol=1e-15)
    np.testing.assert_allclose(tg.vmap(log1pexp)(x), np.log1p(np.exp(x)), rtol=1e-15)
    assert "custom_vjp_call[" in str(tg.make_ir(log1pexp)(0.3))
    assert tg.jvp(log1pexp, (0.3,), (2.0,))[1] == pytest.approx(2.0 / (1.0 + np.exp(-0.3)), rel=1e-14)
    big = np.array([0.0, 1000.0])  # the function's own derivative is nan at 1000; the rule's is 1
    np.testing.assert_allclose(tg.jvp(log1pexp, (big,), (np.ones(2),))[1], [0.5, 1.0], rtol=1e-15)  # bwd transposed
    np.testing.assert_allclose(tg.jacfwd(log1pexp)(big), np.diag([0.5, 1.0]), rtol=1e-15)
    np.testing.assert_allclose(tg.vmap(tg.grad(log1pexp))(big), [0.5, 1.0], rtol=1e-15)
    np.testing.assert_allclose(tg.grad(lambda x: tnp.sum(tg.vmap(log1pexp)(x)))(big), [0.5, 1.0], rtol=1e-15)
    # an argument the batch shares gets the sum of the examples' cotangents, by the rule
    shared = tg.grad(lambda hi, x: tnp.sum(tg.vmap(clip_gradient, in_axes=(None, None, 0))(-hi, hi, x) * 5.0))
    assert shared(1.0, np.arange(3.0)) == 0.0
    per_row = tg.grad(lambda x: tnp.sum(tg.vmap(clip_gradient, in_axes=(None, None, 0))(-1.0, 1.0, x) * 5.0))
    np.testing.assert_array_equal(per_row(np.ones((2, 3))), np.ones((2, 3)))


def test_grad_of_grad_differentiates_the_rule(python_backend):
    second = tg.grad(tg.grad(log1pexp))(0.3)
    assert second == pytest.approx(np.exp(0.3) / (1 + np.exp(0.3)) ** 2, rel=1e-13)


def test_a_rule_of_the_wrong_shape_is_refused_clearly():
    @tg.custom_vjp
    def f(x, y):
        return x * y

    with pytest.raises(TypeError, match="without its rule"):
        f(1.0, 2.0)
    f.defvjp(lambda x, y: (x * y, None), lambda res, g: (g,))
    with pytest.raises(TypeError, match="one cotangent per argument"):
        tg.grad(f)(1.0, 2.0)


@tg.custom_jvp
def softplus(x):
    return tnp.log(1.0 + tnp.exp(x))


@softplus.defjvp
def softplus_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return softplus(x), t * (1.0 - 1.0 / (1.0 + tnp.exp(x)))


def test_custom_jvp_in_forward_and_reverse_mode(backend):
    x = np.array([0.0, 3.0, 1000.0])
    expected = [0.5, 1 / (1 + np.exp(-3.0)), 1.0]
    np.testing.assert_allclose(tg.jvp(softplus, (x,), (np.ones(3),))[1], expected, rtol=1e-15)
    np.testing.assert_allclose(tg.grad(lambda x: tnp.sum(softplus(x)))(x), expected, rtol=1e-15)  # the JVP transposed
    np.testing.assert_allclose(tg.jacrev(softplus)(x[:2]), np.diag(expected[:2]), rtol=1e-15)
    np.testing.assert_allclose(tg.vmap(tg.grad(softplus))(x), expected, rtol=1e-15)
    np.testing.assert_allclose(tg.grad(lambda x: tnp.sum(tg.vmap(softplus)(x)))(x), expected, rtol=1e-15)
    assert tg.grad(tg.grad(softplus))(0.3) == pytest.approx(np.exp(0.3) / (1 + np.exp(0.3)) ** 2, rel=1e-13)


def test_checkpoint_recomputes_in_the_backward_pass(python_backend):
    def block(w, x):
        return tnp.tanh(x @ w) * 2.0

    w, x = np.full((3, 2), 0.1), np.linspace(0, 1, 12).reshape(4, 3)
    plain = tg.grad(lambda w, x: tnp.sum(block(w, x) ** 2))(w, x)
    recomputed = tg.grad(lambda w, x: tnp.sum(tg.checkpoint(block)(w, x) ** 2))
    np.testing.assert_allclose(recomputed(w, x), plain, rtol=1e-15)
    program = tg.jit(recomputed).lower(w, x).optimized_ir
    assert sum(op.primitive.name == "tanh" for op in program.ops) == 2  # forward, and again in the backward pass
    assert tg.jvp(tg.checkpoint(block), (w, x), (np.ones((3, 2)), np.zeros((4, 3))))[1].shape == (4, 2)

"""tracegrad.nn and tracegrad.optim: values against NumPy, stability, use inside tg.jit."""
import numpy as np
import pytest

import tracegrad as tg
from tracegrad import nn, optim

pytestmark = pytest.mark.usefixtures("python_backend")


def test_initialisers_are_seeded_and_shaped():
    params = nn.init_mlp([3, 5, 2], seed=7, init="he")
    assert [(p["W"].shape, p["b"].shape) for p in params] == [((3, 5), (5,)), ((5, 2), (2,))]
    again = nn.init_mlp([3, 5, 2], seed=7, init="he")
    np.testing.assert_array_equal(params[1]["W"], again[1]["W"])
    uniform = nn.init_mlp([3, 4], init="uniform")
    assert np.all(np.abs(uniform[0]["W"]) <= 1) and np.any(uniform[0]["b"] != 0)
    with pytest.raises(ValueError, match="unknown initialiser"):
        nn.init_mlp([2, 2], init="zeros")


def test_activations_match_numpy_and_are_stable():
    x = np.array([[-1000.0, 0.0, 3.0], [1000.0, 999.0, -5.0]])
    reference = np.log(np.sum(np.exp(x - x.max(axis=1, keepdims=True)), axis=1)) + x.max(axis=1)
    np.testing.assert_allclose(nn.logsumexp(x), reference)
    np.testing.assert_allclose(tg.jit(nn.softmax)(x).sum(axis=1), [1.0, 1.0])
    assert np.all(np.isfinite(tg.jit(nn.log_softmax)(x)))
    z = np.array([-800.0, -1.0, 0.0, 2.0, 800.0])
    np.testing.assert_allclose(tg.jit(nn.sigmoid)(z), [0.0, 1 / (1 + np.e), 0.5, 1 / (1 + np.exp(-2)), 1.0])
    np.testing.assert_allclose(tg.jit(nn.relu)(z), np.maximum(z, 0))


def test_softmax_cross_entropy_gradient_is_softmax_minus_one_hot():
    logits = np.array([[1000.0, -1000.0, 0.0], [0.5, 1.5, -0.5]])
    labels = np.array([1, 2])
    value, grad = tg.value_and_grad(nn.softmax_cross_entropy)(logits, labels)
    row_max = logits.max(axis=1, keepdims=True)
    log_probabilities = logits - row_max - np.log(np.exp(logits - row_max).sum(axis=1, keepdims=True))
    assert value == pytest.approx(-np.mean(log_probabilities[[0, 1], labels]), rel=1e-12)  # 1000.0... finite
    one_hot = np.eye(3)[labels]
    np.testing.assert_allclose(grad, (np.exp(log_probabilities) - one_hot) / 2, atol=1e-12)


def test_losses():
    assert nn.mse(np.array([1.0, 3.0]), np.array([0.0, 1.0])) == pytest.approx(2.5)
    assert nn.hinge(np.array([2.0, 0.5, -1.0]), np.array([1.0, 1.0, 1.0])) == pytest.approx((0 + 0.5 + 2) / 3)
    assert nn.accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5


def test_sgd_with_momentum_matches_the_recurrence():
    optimizer = optim.sgd(0.1, momentum=0.9)
    params = {"w": np.array([1.0, -2.0]), "s": 3.0}
    state = optimizer.init(params)
    grads = {"w": np.array([0.5, 0.5]), "s": 1.0}
    params1, state = optimizer.update(grads, state, params)
    params2, state = optimizer.update(grads, state, params1)
    np.testing.assert_allclose(params2["w"], params["w"] - 0.1 * 0.5 - 0.1 * (0.9 * 0.5 + 0.5))
    assert params2["s"] == pytest.approx(3.0 - 0.1 - 0.1 * 1.9) and state["step"] == 2.0


def test_adam_first_step_moves_each_parameter_by_the_learning_rate():
    optimizer = optim.adam(0.01)
    params = [np.array([1.0, 2.0]), 0.5]
    state = optimizer.init(params)
    new_params, state = optimizer.update([np.array([3.0, -0.2]), -4.0], state, params)
    np.testing.assert_allclose(new_params[0], [0.99, 2.01], rtol=1e-6)
    assert new_params[1] == pytest.approx(0.51, rel=1e-6)


def test_optimizer_state_goes_through_jit_and_a_schedule_is_traced():
    schedule = optim.linear_decay(0.2, 0.02, steps=50)
    optimizer = optim.sgd(schedule)
    target = np.array([1.0, -1.0, 2.0])

    @tg.jit
    def step(params, state):
        grads = tg.grad(lambda p: nn.mse(p, target))(params)
        return optimizer.update(grads, state, params)

    params, state = np.zeros(3), optimizer.init(np.zeros(3))
    expected = np.zeros(3)
    for k in range(80):
        params, state = step(params, state)
        expected = expected - (0.2 - 0.18 * min(k / 50, 1.0)) * 2 * (expected - target) / 3
    np.testing.assert_allclose(params, expected, rtol=1e-12)
    assert schedule(0.0) == pytest.approx(0.2) and schedule(100.0) == pytest.approx(0.02)
    assert optim.exponential_decay(1.0, 0.5, every=10)(20.0) == pytest.approx(0.25)


def test_logsumexp_shift_is_not_differentiated_and_second_order_holds():
    logits, labels = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]), np.array([2, 0])
    lowered = tg.grad(nn.softmax_cross_entropy).lower(logits, labels)
    assert "reduce_max" in str(lowered.ir) and "eq" not in [op.primitive.name for op in lowered.ir.ops]
    tg.check_grads(lambda x: nn.logsumexp(x), (logits,), order=2)

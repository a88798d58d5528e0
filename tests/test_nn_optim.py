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


def conv2d_by_loops(x, kernel, bias, stride, padding):
    """The definition, one output element at a time (zeros around for SAME, split as JAX splits them)."""
    n, height, width, c_in = x.shape
    kh, kw, _, c_out = kernel.shape
    if padding == "SAME":
        out_h, out_w = -(-height // stride), -(-width // stride)
        pad_h, pad_w = max((out_h - 1) * stride + kh - height, 0), max((out_w - 1) * stride + kw - width, 0)
        x = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    else:
        out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
    out = np.empty((n, out_h, out_w, c_out))
    for r in range(out_h):
        for c in range(out_w):
            patch = x[:, r * stride:r * stride + kh, c * stride:c * stride + kw, :]
            out[:, r, c, :] = np.einsum("nijc,ijco->no", patch, kernel)
    return out + bias


@pytest.mark.parametrize("stride, padding", [(1, "SAME"), (1, "VALID"), (2, "SAME"), (2, "VALID")])
def test_conv2d_is_the_definition_and_differentiates(stride, padding):
    rng = np.random.default_rng(stride)
    x, kernel, bias = rng.standard_normal((2, 5, 6, 3)), rng.standard_normal((3, 2, 3, 4)), rng.standard_normal(4)
    np.testing.assert_allclose(nn.conv2d(x, kernel, bias, stride, padding),
                               conv2d_by_loops(x, kernel, bias, stride, padding), rtol=1e-12, atol=1e-12)
    tg.check_grads(lambda x, kernel, bias: tg.numpy.tanh(nn.conv2d(x, kernel, bias, stride, padding)),
                   (x, kernel, bias), rtol=1e-6)
    with pytest.raises(ValueError, match="padding"):
        nn.conv2d(x, kernel, padding="FULL")
    with pytest.raises(ValueError, match="3 channels"):
        nn.conv2d(x, kernel[:, :, :2])


def test_max_pool2d_picks_each_patch_maximum_and_routes_its_gradient():
    image = np.array([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 8.0, 1.0], [0.0, 2.0, 7.0, 6.0], [9.0, 1.0, 3.0, 2.0]])
    x = image.reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(nn.max_pool2d(x)[0, :, :, 0], [[5.0, 8.0], [9.0, 7.0]])
    routed = tg.grad(lambda x: tg.numpy.sum(nn.max_pool2d(x) * np.array([1.0, 2.0]).reshape(1, 1, 2, 1)))(x)
    np.testing.assert_array_equal(routed[0, :, :, 0], [[0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 2, 0], [1, 0, 0, 0]])
    overlapping = nn.max_pool2d(np.arange(25.0).reshape(1, 5, 5, 1), window=3, stride=2)  # patches overlap
    np.testing.assert_array_equal(overlapping[0, :, :, 0], [[12.0, 14.0], [22.0, 24.0]])


def test_layer_norm_gelu_embedding_one_hot():
    x = np.random.default_rng(3).standard_normal((4, 5))
    normalised = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(nn.layer_norm(x, 2.0, 0.5), normalised * 2.0 + 0.5, rtol=1e-12)
    tg.check_grads(lambda x: nn.layer_norm(x, 2.0, 0.5), (x,), rtol=1e-6)
    gelu = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(nn.gelu(x), gelu, rtol=1e-14)
    table, ids = np.arange(12.0).reshape(4, 3), np.array([[0, 3], [3, 1]])
    np.testing.assert_array_equal(nn.embedding(table, ids), table[ids])
    counts = tg.grad(lambda t: tg.numpy.sum(nn.embedding(t, ids)))(table)  # each row looked up adds its count
    np.testing.assert_array_equal(counts[:, 0], [1.0, 1.0, 0.0, 2.0])
    np.testing.assert_array_equal(nn.one_hot(np.array([2, 0]), 3), [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    assert tg.jit(lambda labels: nn.one_hot(labels, 3))(np.array([1])).tolist() == [[0.0, 1.0, 0.0]]


def test_a_small_convolutional_net_compiles_and_its_gradient_matches_the_python_backend():
    rng = np.random.default_rng(4)
    params = {"conv": nn.init_conv(rng, 3, 1, 4), "dense": nn.init_dense(rng, 4 * 4 * 4, 3)}
    images, labels = rng.standard_normal((6, 8, 8, 1)), np.array([0, 1, 2, 0, 1, 2])

    def loss(params, images, labels):
        hidden = nn.max_pool2d(nn.relu(nn.conv2d(images, params["conv"]["W"], params["conv"]["b"])))
        return nn.softmax_cross_entropy(nn.dense(params["dense"], tg.numpy.reshape(hidden, (6, -1))), labels)

    expected = tg.grad(loss)(params, images, labels)
    tg.config.backend = "numba"  # the fixture restores the python backend
    compiled = tg.jit(tg.grad(loss))(params, images, labels)
    for got, want in zip(tg.tree_leaves(compiled), tg.tree_leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)

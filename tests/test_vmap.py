"""tg.vmap: one program for the whole batch, checked against a Python loop over the examples."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp

rng = np.random.default_rng(3)


def one_row_loss(params, x, labels):
    """An MLP's loss on one example (x: features, labels: its label as an array of one)."""
    hidden = tnp.tanh(x @ params["w1"] + params["b1"])
    return tg.nn.softmax_cross_entropy((hidden @ params["w2"])[None, :], labels)


def mlp_loss(params, x, label):
    return one_row_loss(params, x, label[None])


PARAMS = {"w1": rng.standard_normal((4, 5)) * 0.5, "b1": np.zeros(5), "w2": rng.standard_normal((5, 3)) * 0.5}
X = rng.standard_normal((6, 4))
LABELS = np.array([0, 2, 1, 1, 0, 2])


def test_per_example_gradients_in_one_program(backend):
    per_example = tg.vmap(tg.grad(mlp_loss), in_axes=(None, 0, 0))
    got = per_example(PARAMS, X, LABELS)
    for i in range(len(X)):
        one = tg.grad(one_row_loss)(PARAMS, X[i], LABELS[i:i + 1])
        for name in PARAMS:
            np.testing.assert_allclose(got[name][i], one[name], rtol=1e-13, atol=1e-15)
    assert got["w1"].shape == (6, 4, 5)
    program = per_example.lower(PARAMS, X, LABELS).ir
    assert "scan" not in str(program) and len(program.ops) < 120  # batched array ops, no loop over examples


def test_in_axes_pytrees_out_axes_and_unbatched_outputs(python_backend):
    def f(params, x):
        return params["a"] * x + params["b"], tnp.sum(params["b"])

    params = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([0.5, 0.5])}
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out, total = tg.vmap(f, in_axes=({"a": 0, "b": None}, 0))(params, x)
    np.testing.assert_allclose(out, params["a"][:, None] * x + params["b"], rtol=1e-15)
    np.testing.assert_array_equal(total, [1.0, 1.0, 1.0])  # the same for every example: repeated
    transposed, _ = tg.vmap(f, in_axes=({"a": 0, "b": None}, 0), out_axes=1)(params, x)
    np.testing.assert_allclose(transposed, out.T, rtol=1e-15)
    by_columns = tg.vmap(lambda v: tnp.sum(v * v), in_axes=1)(x)
    np.testing.assert_allclose(by_columns, np.sum(x * x, axis=0), rtol=1e-15)


def test_batched_indices_and_labels(python_backend):
    table = np.arange(12.0).reshape(4, 3)
    rows = tg.vmap(lambda t, i: t[i], in_axes=(None, 0))(table, np.array([[0, 3], [2, 2], [1, 0]]))
    np.testing.assert_array_equal(rows, table[np.array([[0, 3], [2, 2], [1, 0]])])
    logits = rng.standard_normal((5, 2, 3))
    labels = np.array([[0, 1], [2, 2], [1, 0], [0, 0], [2, 1]])
    losses = tg.vmap(tg.nn.softmax_cross_entropy)(logits, labels)
    expected = [tg.nn.softmax_cross_entropy(logits[i], labels[i]) for i in range(5)]
    np.testing.assert_allclose(losses, expected, rtol=1e-13)


def test_vmap_composes_with_jit_jvp_and_loops(backend):
    xs = np.linspace(-1, 1, 12).reshape(3, 4)

    def rnn(w, xs):
        h, ys = tg.scan(lambda h, x: (tnp.tanh(h * w + x), h * x), 0.3, xs)
        return h + tnp.sum(ys * ys)

    expected = np.array([tg.grad(rnn)(0.8, row) for row in xs])
    np.testing.assert_allclose(tg.jit(tg.vmap(tg.grad(rnn), in_axes=(None, 0)))(0.8, xs), expected, rtol=1e-13)
    np.testing.assert_allclose(tg.vmap(tg.jit(tg.grad(rnn)), in_axes=(None, 0))(0.8, xs), expected, rtol=1e-13)
    slopes = tg.vmap(lambda v: tg.jvp(lambda w: rnn(w, xs[0]), (0.8,), (v,))[1])(np.array([1.0, 2.0]))
    np.testing.assert_allclose(slopes, np.array([1.0, 2.0]) * expected[0], rtol=1e-13)

    def newton_sqrt(a):  # each example stops after its own number of steps
        return tg.while_loop(lambda s: tnp.abs(s * s - a) > 1e-12, lambda s: (s + a / s) / 2, a)

    np.testing.assert_allclose(tg.vmap(newton_sqrt)(np.array([2.0, 9.0, 1e4])), np.sqrt([2.0, 9.0, 1e4]), rtol=1e-15)
    branch = lambda x: tg.cond(x > 0.0, tnp.sin, lambda v: v * v, x)
    np.testing.assert_allclose(tg.vmap(branch)(np.array([0.5, -2.0])), [np.sin(0.5), 4.0], rtol=1e-15)


def test_mapped_axes_must_agree():
    with pytest.raises(tg.errors.ShapeError, match="all of one length"):
        tg.vmap(lambda a, b: a + b)(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="one entry per argument"):
        tg.vmap(lambda a, b: a + b, in_axes=(0,))(np.ones(3), np.ones(3))

"""tg.random: the cipher's known answers, determinism, independent streams, the distributions' statistics,
the same numbers in NumPy, the python backend and numba, gradients through what is done with the numbers,
vmap over keys, traced seeds, np.random's warning, and nn.dropout. One program is compiled with numba."""
import warnings

import numpy as np
import pytest
from scipy import stats

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import random as tgr
from tracegrad.core import bind


@pytest.fixture(autouse=True)
def python_backend_here(python_backend):
    """Breadth on the python backend; `test_numba_gives_the_same_numbers` compiles one program with numba."""


def test_threefry_known_answers():
    """Random123's test vectors for Threefry-2x32 with 20 rounds (key, counter words) -> words."""
    vectors = [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
               ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
               ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]
    for key, (high, low), expected in vectors:
        counter = np.array((high << 32) | low, np.uint64).astype(np.int64)  # the counter's 64 bits
        assert tuple(tgr.threefry2x32_impl(np.array(key), counter, ())) == expected
        blocks = tg.jit(lambda k, c: bind(tgr.threefry2x32_p, k, c, shape=()))
        assert tuple(blocks(np.array(key), counter)) == expected


def test_same_key_same_numbers_and_different_keys_differ():
    key = tg.random.key(42)
    assert key.dtype == np.int64 and key.shape == (2,) and np.all((key >= 0) & (key < 2 ** 32))
    np.testing.assert_array_equal(tg.random.normal(key, (5,)), tg.random.normal(key, (5,)))
    np.testing.assert_array_equal(tg.random.key(42), key)
    assert not np.array_equal(tg.random.key(43), key)
    jitted = tg.jit(lambda k: tg.random.uniform(k, (5,)))
    np.testing.assert_array_equal(jitted(key), jitted(key))
    np.testing.assert_array_equal(jitted(key), tg.random.uniform(key, (5,)))
    assert not np.array_equal(jitted(tg.random.key(43)), jitted(key))


def test_split_and_fold_in_give_distinct_independent_streams():
    key = tg.random.key(0)
    children = tg.random.split(key, 4)
    folded = np.stack([tg.random.fold_in(key, i) for i in range(4)])
    every_key = np.concatenate([key[None], children, folded])
    assert len({tuple(k) for k in every_key}) == 9  # no two alike
    np.testing.assert_array_equal(tg.random.split(key)[1], children[1])  # split(key)[i] does not depend on num
    draws = np.stack([tg.random.normal(k, (100_000,)) for k in np.concatenate([children[:2], folded[:2]])])
    correlations = np.corrcoef(draws)[np.triu_indices(4, 1)]
    assert np.max(np.abs(correlations)) < 0.015  # 1/sqrt(1e5) = 0.0032 is one standard deviation


def test_uniform_statistics():
    u = tg.random.uniform(tg.random.key(1), (100_000,))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    scaled = tg.random.uniform(tg.random.key(2), (50_000, 2), minval=-3.0, maxval=np.array([1.0, 5.0]))
    assert scaled.min() >= -3.0 and scaled[:, 0].max() < 1.0 and scaled[:, 1].max() < 5.0
    np.testing.assert_allclose(scaled.mean(axis=0), [-1.0, 1.0], atol=0.03)


def test_normal_statistics():
    z = tg.random.normal(tg.random.key(3), (100_000,))
    assert abs(z.mean()) < 0.015 and abs(z.var() - 1.0) < 0.02
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_bernoulli_categorical_and_permutation_statistics():
    assert abs(tg.random.bernoulli(tg.random.key(4), 0.3, (100_000,)).mean() - 0.3) < 0.007
    p = np.array([0.5, 0.5])
    coins = tg.random.bernoulli(tg.random.key(4), p, (50_000, 2))
    assert coins.dtype == np.bool_ and abs(coins.mean() - 0.5) < 0.01

    probabilities = np.array([0.1, 0.2, 0.3, 0.4])
    draws = tg.random.categorical(tg.random.key(5), np.log(probabilities), shape=(100_000,))
    assert draws.dtype == np.int64
    assert stats.chisquare(np.bincount(draws, minlength=4), 100_000 * probabilities).pvalue > 1e-3
    # along axis 0, a batch of two distributions, two leading axes added
    logits = np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))
    draws = tg.random.categorical(tg.random.key(6), logits, axis=0, shape=(3, 20_000, 2))
    assert draws.shape == (3, 20_000, 2)
    np.testing.assert_allclose(draws.mean(axis=(0, 1)), [0.1, 0.9], atol=0.01)

    orders = tg.vmap(lambda k: tg.random.permutation(k, 4))(tg.random.split(tg.random.key(7), 24_000))
    np.testing.assert_array_equal(np.sort(orders, axis=1), np.broadcast_to(np.arange(4), (24_000, 4)))
    arrangements = np.unique(orders @ 4 ** np.arange(4), return_counts=True)[1]
    assert len(arrangements) == 24 and stats.chisquare(arrangements).pvalue > 1e-3  # all 24, equally often


def test_permutation_of_an_array_along_an_axis():
    x = np.arange(12.0).reshape(3, 4)
    shuffled = tg.random.permutation(tg.random.key(8), x, axis=1)
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), x)
    order = shuffled[0].astype(np.int64)  # row 0 is 0 1 2 3, shuffled
    np.testing.assert_array_equal(shuffled, x[:, order])  # the same order in every row
    assert not np.array_equal(shuffled, x)
    key = tg.random.key(8)
    np.testing.assert_array_equal(tg.random.permutation(key, x[0]), x[0][tg.random.permutation(key, 4)])


def test_numba_gives_the_same_numbers(backend):
    """NumPy's evaluation, the python backend and numba's code give the same numbers from the same keys
    (exactly for integers and bits, to rounding for floats made by log, cos and the like). categorical is made
    of comparisons and reductions, whose lowerings tests/test_primitives.py compiles: here the python backend's."""
    logits = np.log(np.array([0.2, 0.3, 0.5]))

    def draws(seed, step, x):
        key = tg.random.fold_in(tg.random.key(seed), step)
        a, b, c = tg.random.split(key, 3)
        return {"keys": tg.random.split(a, 5), "uniform": tg.random.uniform(a, (6,), -2.0, 3.0),
                "normal": tg.random.normal(b, (2, 3)), "bernoulli": tg.random.bernoulli(c, 0.3, (7,)),
                "permutation": tg.random.permutation(b, 8),
                "dropout": tg.nn.dropout(c, x, 0.5),
                "batched": tg.vmap(lambda k: tg.random.normal(k, (3,)))(tg.random.split(c, 4)),
                "folded": tg.vmap(lambda i: tg.random.fold_in(a, i))(np.arange(3))}

    expected = draws(3, 11, np.ones((2, 5)))
    got = tg.jit(draws)(3, 11, np.ones((2, 5)))
    if backend == "python":
        categorical = lambda key: tg.random.categorical(key, logits, shape=(9,))
        np.testing.assert_array_equal(tg.jit(categorical)(tg.random.key(1)), categorical(tg.random.key(1)))
    for name, value in expected.items():
        if value.dtype == np.float64:
            np.testing.assert_allclose(got[name], value, rtol=1e-13, atol=1e-15, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_traced_seed_and_step_change_the_numbers_without_retracing():
    step = tg.jit(lambda seed, i: tg.random.uniform(tg.random.fold_in(tg.random.key(seed), i), (3,)))
    first, second = step(0, 1), step(0, 2)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, tg.random.uniform(tg.random.fold_in(tg.random.key(0), 1), (3,)))
    program = tg.make_ir(lambda seed, i: tg.random.fold_in(tg.random.key(seed), i))(0, 1)
    assert [str(x.aval) for x in program.inputs] == ["i64[]", "i64[]"]  # traced, as jax.jit traces ints
    assert [op.primitive.name for op in program.ops] == ["threefry2x32"] * 3


def test_vmap_over_keys_draws_each_keys_numbers():
    keys = tg.random.split(tg.random.key(9), 5)
    batched = tg.vmap(lambda k: tg.random.uniform(k, (2, 3), maxval=2.0))(keys)
    np.testing.assert_array_equal(batched, np.stack([tg.random.uniform(k, (2, 3), maxval=2.0) for k in keys]))
    # a batch of keys and of parameters together, and keys split inside the mapped function
    scales = np.arange(1.0, 6.0)
    scaled = tg.vmap(lambda k, s: s * tg.random.normal(tg.random.split(k)[1], (4,)))(keys, scales)
    np.testing.assert_array_equal(scaled, np.stack([s * tg.random.normal(tg.random.split(k)[1], (4,))
                                                    for k, s in zip(keys, scales)]))


def test_gradients_flow_through_the_arithmetic_not_the_key():
    key = tg.random.key(10)
    u, z = tg.random.uniform(key, (4,)), tg.random.normal(key, (4,))

    def loss(low, high, mean, scale):
        scaled = mean + scale * tg.random.normal(key, (4,))
        return tnp.sum(tg.random.uniform(key, (4,), low, high) ** 2) + tnp.sum(scaled)

    low, high = -1.0, 2.0
    value = low + (high - low) * u
    grads = tg.grad(loss, argnums=(0, 1, 2, 3))(low, high, 0.5, 3.0)
    np.testing.assert_allclose(grads, (np.sum(2 * value * (1 - u)), np.sum(2 * value * u), 4.0, np.sum(z)), rtol=1e-12)
    tg.check_grads(loss, (low, high, 0.5, 3.0), order=2)
    assert tg.jvp(lambda s: s * tg.random.normal(key, (4,)), (2.0,), (1.0,))[1] == pytest.approx(z)
    with pytest.raises(tg.errors.NonDifferentiableArgumentError):
        tg.grad(lambda k, x: x * tnp.sum(tg.random.uniform(k, (3,))))(key, 1.0)


def test_nn_dropout():
    key, x = tg.random.key(11), np.full((200, 500), 3.0)
    assert tg.nn.dropout(key, x, 0.0) is x
    np.testing.assert_array_equal(tg.nn.dropout(key, x, 1.0), np.zeros_like(x))
    dropped = tg.jit(tg.nn.dropout)(key, x, 0.25)
    kept = dropped != 0.0
    assert abs(kept.mean() - 0.75) < 0.005 and np.all(dropped[kept] == 4.0) and abs(dropped.mean() - 3.0) < 0.02
    gradient = tg.grad(lambda x: tnp.sum(tg.nn.dropout(key, x, 0.25)))(x)
    np.testing.assert_array_equal(gradient, np.where(kept, 4.0 / 3.0, 0.0))
    # a new key each step: a different mask each step from the same compiled program
    step = tg.jit(lambda key, i, x: tg.nn.dropout(tg.random.fold_in(key, i), x, 0.5))
    assert not np.array_equal(step(key, 0, x) != 0, step(key, 1, x) != 0)
    with pytest.raises(ValueError, match="rate"):
        tg.nn.dropout(key, x, 1.5)


def test_numpy_random_warns_while_tracing_at_the_users_line():
    @tg.jit
    def noisy(x):
        return x + np.random.normal(size=3)  # the warning's line

    with pytest.warns(tgr.FrozenRandomnessWarning, match="tg.random") as caught:
        noisy(np.zeros(3))
    assert caught[0].filename == __file__ and "np.random.normal" in str(caught[0].message)
    with pytest.warns(tgr.FrozenRandomnessWarning, match="np.random.default_rng"):
        tg.grad(lambda x: x * np.random.default_rng().normal())(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.random.normal(size=3)  # outside any trace: silent
        np.random.seed(0)  # seeding is not a draw
        rng = np.random.default_rng(0)
        tg.jit(lambda x: x + rng.normal())(1.0)  # a Generator's methods are not caught (see docs/api.md)


def test_errors_name_the_users_line():
    with pytest.raises(TypeError, match=r"int64 array of shape \(2,\).*test_random.py"):
        tg.random.normal(np.array([1.0, 2.0]))
    with pytest.raises(TypeError, match="tg.vmap"):
        tg.random.uniform(tg.random.split(tg.random.key(0), 3))
    with pytest.raises(TypeError, match="seed must be an integer"):
        tg.random.key(1.5)
    with pytest.raises(TypeError, match="concrete int"):
        tg.jit(lambda k, n: tg.random.permutation(k, n))(tg.random.key(0), 5)
    with pytest.raises(tg.errors.ShapeError, match="broadcast to the shape"):
        tg.random.uniform(tg.random.key(0), (3,), minval=np.zeros(4))

"""Outputs never share memory with the arguments, the program's constants or each other."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


def assert_own_memory(outputs, *others):
    arrays = [x for x in outputs if isinstance(x, np.ndarray)]
    for i, array in enumerate(arrays):
        for other in list(others) + arrays[i + 1:]:
            assert not np.shares_memory(array, other)


def test_a_gradient_that_is_an_argument_seen_through_a_transpose_is_a_copy(backend):
    x, y = np.ones((2, 3)), np.arange(6.0).reshape(3, 2)
    g = tg.grad(lambda x, y: tnp.sum(x * y.T))(x, y)
    np.testing.assert_array_equal(g, y.T)
    g *= 0
    np.testing.assert_array_equal(y, np.arange(6.0).reshape(3, 2))  # the caller's y is untouched


@pytest.mark.parametrize("view", [lambda m: m.T, lambda m: m.reshape(6), lambda m: m[1:], lambda m: m,
                                  lambda m: tg.stop_gradient(m), lambda m: m.T.reshape(3, 2)[::2]])
def test_jit_outputs_that_view_an_argument_are_copies(backend, view):
    m = np.arange(6.0).reshape(2, 3)
    out = tg.jit(view)(m)
    np.testing.assert_array_equal(out, view(m))
    assert_own_memory([out], m)


def test_outputs_that_are_one_array_are_separate_arrays(backend):
    y = np.arange(3.0)
    first, second = tg.jit(lambda y: (y * 2.0, y * 2.0))(y)  # one Var, returned twice
    assert_own_memory([first, second], y)
    both = tg.jit(lambda m: (m.T, m.reshape(6), m * 1.0, m[0]))(np.ones((2, 3)))
    assert_own_memory(both)
    t = tg.jit(lambda m: (tnp.exp(m), tnp.exp(m).T))(np.ones((2, 3)))  # a value and a view of it
    assert_own_memory(t)


def test_a_closed_over_constant_returned_is_a_copy(backend):
    constant = np.arange(3.0)
    f = tg.jit(lambda x: (constant, x + 1.0))
    out, _ = f(np.zeros(3))
    out[:] = -1.0  # changes neither the program's constant nor the next result
    np.testing.assert_array_equal(f(np.zeros(3))[0], np.arange(3.0))


def test_vjp_outputs_and_cotangents_own_their_memory(backend):
    m = np.arange(6.0).reshape(2, 3)
    out, pullback = tg.vjp(lambda m: m.T, m)
    assert_own_memory([out], m)
    cotangent = np.ones((3, 2))
    (back,) = pullback(cotangent)
    np.testing.assert_array_equal(back, cotangent.T)
    assert_own_memory([back], cotangent, m, out)


def test_a_large_program_keeps_its_temporaries_out_of_its_outputs(backend):
    # arrays of 32,768+ elements are kept between calls under numba: an output is never one of them
    x = np.linspace(0.0, 1.0, 256 * 256).reshape(256, 256)
    f = tg.jit(lambda x: (tnp.tanh(x * 2.0), tnp.tanh(x * 2.0).T, tnp.sum(tnp.tanh(x * 2.0) ** 2)))
    first = f(x)
    second = f(x)
    assert_own_memory(list(first[:2]) + list(second[:2]), x)

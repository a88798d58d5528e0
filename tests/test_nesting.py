"""Transformations inside others: Python numbers stay numbers, traced integers index."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


def test_a_static_int_stays_a_number_for_an_inner_grad(backend):
    def f(x, n):
        for _ in range(n):  # needs a Python int
            x = tnp.sin(x)
        return x

    expected = np.cos(0.5) * np.cos(np.sin(0.5)) * np.cos(np.sin(np.sin(0.5)))
    assert tg.jit(tg.grad(f), static_argnums=1)(0.5, 3) == pytest.approx(expected, rel=1e-14)
    assert tg.jit(lambda x: tg.grad(lambda a, b: a * b, argnums=1)(x, 2))(3.0) == 3.0  # a differentiated int: a float


def test_indexing_with_a_traced_integer(backend):
    x = np.arange(12.0).reshape(4, 3)
    assert tg.jit(lambda x, i: x[i, 2])(x, np.array(1)) == 5.0
    np.testing.assert_array_equal(tg.jit(lambda x, i: x[i, 1:])(x, np.array(2)), [7.0, 8.0])
    np.testing.assert_array_equal(tg.grad(lambda x, i: tnp.sum(x[i]) * 2.0)(x, np.array(3))[3], [2.0] * 3)
    with pytest.raises(IndexError, match="out of bounds"):
        tg.jit(lambda x, i: x[i])(x, np.array(7))
    with pytest.raises(tg.errors.IndexingError, match="np.array"):  # a Python int argument is traced as a float
        tg.jit(lambda x, i: x[i])(x, 3)


def test_keyword_arguments_and_static_argnames(python_backend):
    def f(x, scale=2.0, n=3):
        for _ in range(n):
            x = tnp.sin(x) * scale
        return x

    assert tg.jit(f, static_argnames="n")(0.5, n=2) == pytest.approx(f(0.5, n=2), rel=1e-15)
    assert tg.jit(f, static_argnames=("n",))(0.5, scale=1.0, n=1) == pytest.approx(np.sin(0.5), rel=1e-15)
    assert tg.grad(f)(0.5, scale=1.5) == pytest.approx(tg.grad(lambda x: f(x, 1.5))(0.5), rel=1e-15)
    with pytest.raises(ValueError, match="not parameters"):
        tg.jit(f, static_argnames="m")

    def keyword_only(x, *, k):
        return x * k

    with pytest.raises(TypeError, match="keyword-only"):
        tg.jit(keyword_only)(1.0, k=2.0)

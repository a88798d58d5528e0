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
    np.testing.assert_array_equal(tg.jit(lambda x, i: x[i])(x, 3), x[3])  # a Python int is traced as an int64
    assert tg.jit(lambda x, i: x[i, 2] * i)(x, 2) == 16.0
    np.testing.assert_array_equal(tg.grad(lambda x, i: x[i, 0] * i)(x, 2)[2], [2.0, 0.0, 0.0])
    with pytest.raises(tg.errors.IndexingError, match="an integer"):
        tg.jit(lambda x, i: x[i])(x, 1.0)


def test_a_python_int_argument_is_traced_as_an_integer(backend):
    assert tg.jit(lambda i: i * 2)(3) == 6 and type(tg.jit(lambda i: i * 2)(3)) is int
    assert tg.jit(lambda x, i: x * i)(2.0, 3) == 6.0
    assert tg.jit(lambda i: i / 2)(3) == 1.5
    assert tg.jit(lambda i: i + 1)(2**40) == 2**40 + 1

    def repeat(x, n):
        for _ in range(n):
            x = x * 1.1
        return x

    with pytest.raises(tg.errors.TracerConversionError, match="static_argnames"):  # as under jax.jit
        tg.jit(repeat)(2.0, 3)
    with pytest.raises(tg.errors.TracerConversionError, match="static_argnums"):
        tg.grad(repeat)(2.0, 3)
    grad = tg.grad(lambda x, n: x * x * n, argnums=(0, 1))(3, 2)  # differentiated, an int is a float (micrograd's f(2, 3, 4))
    assert grad == (12.0, 9.0) and all(type(g) is float for g in grad)


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

    def keyword_only(x, *, k, power=2):
        return x ** power * k

    assert tg.jit(keyword_only)(3.0, k=2.0) == 18.0
    assert tg.jit(keyword_only, static_argnames="power")(3.0, k=2.0, power=3) == 54.0
    assert tg.grad(keyword_only)(3.0, k=2.0) == 12.0
    assert tg.value_and_grad(keyword_only, argnums=1)(3.0, k=2.0, power=1) == (6.0, 3.0)
    np.testing.assert_allclose(tg.vmap(keyword_only, in_axes=(0, None))(np.arange(3.0), k=2.0),
                               [0.0, 2.0, 8.0])
    assert tg.hessian(keyword_only)(3.0, k=2.0) == 4.0
    with pytest.raises(TypeError, match="missing a required argument: 'k'"):
        tg.jit(keyword_only)(3.0)

    def with_kwargs(x, **options):
        return x

    with pytest.raises(TypeError, match=r"\*\*kwargs"):
        tg.jit(with_kwargs)(1.0, scale=2.0)

    def with_varargs_and_keyword_only(x, *rest, k=1.0):
        return x

    with pytest.raises(TypeError, match=r"\*args"):
        tg.jit(with_varargs_and_keyword_only)

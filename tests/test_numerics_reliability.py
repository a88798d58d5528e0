"""Numerics at the edges: division by a literal zero in the adjoint, safe powers, index bounds,
unsigned integers too large for int64. Expected values are JAX's, written out as constants."""
import math
import warnings

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


@pytest.fixture
def no_runtime_warnings():
    """NumPy's RuntimeWarnings (divide by zero, invalid value) become errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


# -- the adjoint computes on concrete numbers as NumPy does --------------------------------


@pytest.mark.usefixtures("no_runtime_warnings")
def test_the_adjoint_of_a_division_by_a_literal_zero_is_infinite(backend):
    """The seed 1.0 divided by the literal 0.0 in div's rule: inf, as in JAX, not ZeroDivisionError."""
    assert tg.grad(lambda x: x / 0.0)(1.0) == math.inf
    assert tg.value_and_grad(lambda x: x / -0.0)(1.0) == (-math.inf, -math.inf)
    assert tg.grad(lambda x: (x / 0.0) * 2.0 + 1.0)(1.0) == math.inf  # a concrete cotangent carried along
    assert math.isnan(tg.grad(lambda x: 0.0 * (x / 0.0))(1.0))  # 0 * inf, as in JAX
    np.testing.assert_array_equal(tg.grad(lambda x: tnp.sum(x / 0.0))(np.ones(3)), np.full(3, math.inf))


@pytest.mark.usefixtures("no_runtime_warnings")
def test_constants_computed_while_tracing_are_inf_and_nan_without_a_warning(backend):
    assert tg.grad(lambda x: x * tnp.log(0.0))(1.0) == -math.inf
    assert tg.grad(lambda x: x * tnp.power(0.0, -1.0))(1.0) == math.inf
    assert math.isnan(tg.jit(lambda x: x + tnp.sqrt(-1.0))(1.0))

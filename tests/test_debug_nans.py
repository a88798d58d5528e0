"""tg.config.debug_nans: the first nan or inf stops the program, naming the op, the pass and the line."""
import math

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


@pytest.fixture
def debug_nans(backend):
    tg.config.debug_nans = True
    yield
    tg.config.debug_nans = False


def log_of(x):
    return tnp.sum(tnp.log(x))


LOG_LINE = log_of.__code__.co_firstlineno + 1


def root_of(x):
    return tnp.sqrt(x) * 2.0


ROOT_LINE = root_of.__code__.co_firstlineno + 1


def test_a_nan_in_the_forward_pass_names_the_primitive_and_line(debug_nans):
    with pytest.raises(FloatingPointError, match=rf"log produced nan or inf in the forward pass, at .*test_debug_nans.py:{LOG_LINE}"):
        tg.jit(log_of)(np.array([1.0, -1.0]))
    assert tg.jit(log_of)(np.array([1.0, 2.0])) == pytest.approx(math.log(2.0))


def test_an_inf_in_the_adjoint_names_the_op_it_differentiates(debug_nans):
    with pytest.raises(FloatingPointError, match=rf"in the adjoint of sqrt, at .*test_debug_nans.py:{ROOT_LINE}"):
        tg.grad(root_of)(0.0)
    assert tg.grad(root_of)(4.0) == pytest.approx(0.5)


def test_off_by_default_and_the_generated_code_has_no_checks(python_backend):
    assert not tg.config.debug_nans
    assert math.isnan(tg.jit(log_of)(np.array([-1.0])))
    assert "isfinite" not in tg.grad(root_of).lower(4.0).source

"""tg.config.debug_nans: the first nan or inf stops the program, naming the op, the pass and the line."""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


def test_a_nan_value_whose_gradient_is_finite_is_caught_by_grad(debug_nans):
    def loss(x):  # its gradient, 1.0, does not need the nan value
        return x + tnp.log(-1.0 * tnp.abs(x) - 1.0)

    with pytest.raises(FloatingPointError, match="log produced nan or inf in the forward pass"):
        tg.grad(loss)(2.0)
    with pytest.raises(FloatingPointError, match="log produced nan or inf in the forward pass"):
        tg.grad(lambda x: tnp.sum(tnp.log(x - 2.0)) * 0.0 + tnp.sum(x))(np.array([1.0, 3.0]))


def test_a_nan_under_background_compile_does_not_poison_the_function(tmp_path):
    # the background compile runs the first call's arguments again: their nan is theirs, not a failed compile
    script = textwrap.dedent("""
        import warnings
        import numpy as np
        import tracegrad as tg
        import tracegrad.numpy as tnp
        tg.config.debug_nans = True
        warnings.simplefilter("error")  # "numba could not compile" would be an error
        f = tg.jit(lambda x: tnp.sum(tnp.log(x)))
        try:
            f(np.array([1.0, -1.0]))
        except FloatingPointError:
            pass
        tg.wait_for_compiles()
        assert hasattr(f.lower(np.ones(2)).compiled.function, "py_func"), "numba's code is in place"
        print(f(np.array([1.0, np.e])))
        try:
            f(np.array([-1.0, 1.0]))
        except FloatingPointError as error:
            print("raised", "log produced nan" in str(error))
    """)
    environment = dict(os.environ, TRACEGRAD_CACHE_DIR=str(tmp_path), TRACEGRAD_BACKEND="numba",
                       TRACEGRAD_BACKGROUND_COMPILE="1", PYTHONPATH=str(Path(__file__).parents[1]))
    run = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[:2] == ["1.0", "raised True"]

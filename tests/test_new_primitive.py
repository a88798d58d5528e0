"""A primitive added at run time (docs/primitives.md's `log1p`) works in every path.

Its rules are entries in the tables of tracegrad.core and tracegrad.lowering, added by the
test and removed after it: tracing, grad, grad of grad, jit on numba (statements, fused loops
and the tape of a long scalar program), the python backend, and the NumPy code a new program
runs while numba compiles it.
"""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import lowering
from tracegrad.core import abstract_eval_rules, batch_rules, bind, impl_rules, jvp_rules, vjp_rules
from tracegrad.ir import Primitive
from tracegrad.primitives import elementwise_batch, elementwise_jvp, float_unary

log1p_p = Primitive("log1p", elementwise=True)


@pytest.fixture(autouse=True)
def log1p_registered():
    abstract_eval_rules[log1p_p] = float_unary
    impl_rules[log1p_p] = np.log1p
    vjp_rules[log1p_p] = lambda g, out, x: (g / (1.0 + x),)
    jvp_rules[log1p_p] = elementwise_jvp(log1p_p, lambda out, x: 1.0 / (1.0 + x))
    batch_rules[log1p_p] = elementwise_batch(log1p_p)
    lowering.rules[log1p_p] = lowering.elementwise("np.log1p({0})", simd_ufunc="np.log1p", libm_call=True)
    yield
    for table in (abstract_eval_rules, impl_rules, vjp_rules, jvp_rules, batch_rules, lowering.rules):
        del table[log1p_p]


def log1p(x):
    return bind(log1p_p, x)


def loss(x):
    return tnp.sum(log1p(x * x) * 2.0)


X = np.linspace(0.1, 1.0, 5)


def test_tracing_and_evaluation():
    assert str(tg.make_ir(log1p)(0.5)) == "{ lambda a:f64[] . let\n    b:f64[] = log1p a\n  in ( b ) }"
    assert log1p(1e-10) == np.log1p(1e-10)  # outside any transformation: NumPy


def test_grad_and_grad_of_grad(backend):
    np.testing.assert_allclose(tg.grad(loss)(X), 4.0 * X / (1.0 + X * X), rtol=1e-14)
    x = 0.3
    assert tg.grad(tg.grad(log1p))(x) == pytest.approx(-1.0 / (1.0 + x) ** 2, rel=1e-14)
    tg.check_grads(loss, (X,), order=2)


def test_forward_mode_and_vmap(backend):
    assert tg.jvp(log1p, (0.3,), (2.0,))[1] == pytest.approx(2.0 / 1.3, rel=1e-15)
    np.testing.assert_allclose(tg.vmap(tg.grad(log1p))(X), 1.0 / (1.0 + X), rtol=1e-15)
    np.testing.assert_allclose(tg.hessian(loss)(X), np.diag(4.0 * (1.0 - X * X) / (1.0 + X * X) ** 2), rtol=1e-13)


def test_jit_on_numba_writes_its_statement_and_element():
    tg.config.backend, saved = "numba", tg.config.backend
    try:
        scalar = tg.jit(log1p).lower(1e-10)
        assert "b = np.log1p(a)" in scalar.source
        assert scalar(1e-10) == np.log1p(1e-10)
        fused = tg.jit(lambda x: log1p(x) * 3.0).lower(X)
        assert "= np.log1p(a[_i0])" in fused.source  # its element template, in a fused loop
        np.testing.assert_allclose(fused(X), np.log1p(X) * 3.0, rtol=1e-15)
        large = np.linspace(0.0, 1.0, 1024)
        assert "np.log1p(a, out=b)" in tg.jit(log1p).lower(large).source  # NumPy's SIMD loop
        np.testing.assert_allclose(tg.jit(log1p)(large), np.log1p(large), rtol=1e-15)
    finally:
        tg.config.backend = saved


def long_scalar_program(x):
    for i in range(1, 2001):  # 6,000 scalar ops
        x = log1p(x) * 0.5 + 0.001 * i
    return x


def reference(x):
    for i in range(1, 2001):
        x = np.log1p(x) * 0.5 + 0.001 * i
    return x


def test_a_long_scalar_program_runs_on_the_tape():
    tg.config.backend, saved = "numba", tg.config.backend
    tg.config.reroll_loops = False  # kept unrolled (else it is a scan of log1p steps, tested below)
    try:
        lowered = tg.jit(long_scalar_program).lower(0.5)
        assert len(lowered.optimized_ir.ops) == 6000
        assert "_run_tape(" in lowered.source and "# log1p" in lowered.source
        assert lowered(0.5) == pytest.approx(reference(0.5), rel=1e-13)
    finally:
        tg.config.backend, tg.config.reroll_loops = saved, True


def test_a_long_loop_rolled_into_a_scan():
    tg.config.backend, saved = "numba", tg.config.backend
    try:
        lowered = tg.jit(long_scalar_program).lower(0.5)
        assert "scan[" in str(lowered.optimized_ir) and "np.log1p(" in lowered.source
        assert lowered(0.5) == pytest.approx(reference(0.5), rel=1e-13)
        assert tg.grad(long_scalar_program)(0.5) == pytest.approx(
            derivative(0.5), rel=1e-12)
    finally:
        tg.config.backend = saved


def derivative(x):
    """d/dx of long_scalar_program by the chain rule, step by step in NumPy."""
    slope = 1.0
    for i in range(1, 2001):
        slope *= 0.5 / (1.0 + x)
        x = np.log1p(x) * 0.5 + 0.001 * i
    return slope


def test_the_python_backend(python_backend):
    lowered = tg.jit(loss).lower(X)
    assert "np.log1p(" in lowered.source
    assert lowered(X) == pytest.approx(np.sum(np.log1p(X * X) * 2.0), rel=1e-15)


def test_the_numpy_code_run_while_numba_compiles():
    tg.config.backend, saved = "numba", tg.config.backend
    tg.config.compile_in_background = True
    try:
        gradient = tg.grad(lambda x: tnp.sum(log1p(x) * x * 7.0))
        first = gradient(X)  # a new program: NumPy's code runs while numba compiles it
        assert "numpy_function" in vars(gradient.lower(X).compiled)  # the NumPy stage ran
        tg.wait_for_compiles()
        expected = 7.0 * (np.log1p(X) + X / (1.0 + X))
        np.testing.assert_allclose(first, expected, rtol=1e-14)
        np.testing.assert_allclose(gradient(X), expected, rtol=1e-14)
        assert hasattr(gradient.lower(X).compiled.function, "py_func")  # numba's code now
    finally:
        tg.config.backend, tg.config.compile_in_background = saved, False

"""Numerics users meet: where with an infinite untaken branch, and a long run that must not leak."""
import resource

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


def test_where_with_a_nan_branch_needs_the_double_where(python_backend):
    """As in JAX: the untaken branch's cotangent is 0, but 0 * inf in its own adjoint is nan.

    The fix (docs/api.md, "where and nan gradients") is to make the untaken branch's input safe too.
    """
    naive = lambda x: tnp.where(x > 0.0, tnp.sqrt(x), 0.0)
    with np.errstate(invalid="ignore"):  # called directly, NumPy computes sqrt(-1) and says so
        assert naive(-1.0) == 0.0
    assert np.isnan(tg.grad(naive)(-1.0))

    def double_where(x):
        safe = tnp.where(x > 0.0, x, 1.0)
        return tnp.where(x > 0.0, tnp.sqrt(safe), 0.0)

    assert tg.grad(double_where)(-1.0) == 0.0
    assert tg.grad(double_where)(4.0) == pytest.approx(0.25)


def test_a_hundred_thousand_calls_do_not_grow_memory():
    grad = tg.grad(lambda w, x: tnp.sum(tnp.tanh(x * w)), argnums=(0, 1))
    x = np.linspace(-1, 1, 8)
    for _ in range(2000):  # warm up: compile, caches, allocator pools
        grad(0.5, x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for i in range(100_000):
        grad(0.5 + i * 1e-6, x)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 8 * 1024, f"max RSS grew by {grown} KiB over 100,000 calls"


def test_a_hundred_thousand_op_program_compiles_and_runs_under_numba():
    """Scalar ops run from a tape: numba compiles its interpreter in about a second, where the
    statements split into 100 functions of 1,000 took 390 s."""
    saved = tg.config.backend
    tg.config.backend, tg.config.reroll_loops = "numba", False  # the loop kept unrolled: the tape's test
    try:
        def deep(x):
            for _ in range(50_000):
                x = x * 0.99999 + 1e-6  # two ops per step
            return x

        lowered = tg.jit(deep).lower(1.0)
        assert len(lowered.optimized_ir.ops) == 100_000
        assert "jit_deep_run_tape(jit_deep_TAPE, values)" in lowered.source
        expected = 0.99999 ** 50_000 + 1e-6 * (1 - 0.99999 ** 50_000) / (1 - 0.99999)
        assert lowered(1.0) == pytest.approx(expected, rel=1e-9)
        assert tg.grad(deep)(1.0) == pytest.approx(0.99999 ** 50_000, rel=1e-9)
    finally:
        tg.config.backend, tg.config.reroll_loops = saved, True


def test_the_tape_runs_every_elementwise_primitive_as_the_statements_do():
    def long(x, y):
        total = 0.0
        for i in range(300):
            a = x + 0.001 * i
            t = tnp.tanh(a) * tnp.exp(-a) + tnp.log(a) - tnp.sqrt(a) / (1.0 + tnp.abs(y)) + a ** 1.5
            t = t + tnp.sin(a * y) * tnp.cos(a) + tnp.maximum(a, y) - tnp.minimum(a, 2.0 * y) + tnp.sign(y - a)
            t = tnp.where(a > y, t, -t) + tnp.where(a < y, a, 0.5) + tnp.where(a >= 1.0, 0.25, a)
            t = t + tnp.where(a <= y * y, a * a, 1.0) + tnp.where(a == 1.0, 3.0, 0.0) + tnp.where(a != y, 0.0, a)
            total = total + t / (i + 1.0)
        return total

    args = (1.1, 0.7)
    with_statements = tg.value_and_grad(long, argnums=(0, 1))
    saved = tg.config.backend
    tg.config.backend, tg.config.reroll_loops = "numba", False  # the loop kept unrolled: the tape's test
    try:
        from_tape = tg.value_and_grad(long, argnums=(0, 1))
        assert "value_and_grad_long_run_tape(" in from_tape.lower(*args).source
        by_tape = from_tape(*args)
    finally:
        tg.config.backend, tg.config.reroll_loops = saved, True
    tg.config.backend, saved = "python", tg.config.backend
    try:
        by_statements = with_statements(*args)
    finally:
        tg.config.backend = saved
    for a, b in zip(tg.tree_leaves(by_tape), tg.tree_leaves(by_statements)):
        assert a == pytest.approx(b, rel=1e-12)

"""Numerics users meet: where with an infinite untaken branch, and a long run that must not leak."""
import os
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


@pytest.mark.skipif(os.environ.get("TRACEGRAD_LONG_TESTS", "") in ("", "0"),
                    reason="numba takes 4-7 minutes on two cores; TRACEGRAD_LONG_TESTS=1 runs it")
def test_a_hundred_thousand_op_program_compiles_split_and_runs_under_numba():
    """100 functions of 1,000 statements. (Its python-backend twin in test_api runs every time.)"""
    saved = tg.config.backend
    tg.config.backend = "numba"
    try:
        def deep(x):
            for _ in range(50_000):
                x = x * 0.99999 + 1e-6  # two ops per step
            return x

        lowered = tg.jit(deep).lower(1.0)
        assert len(lowered.optimized_ir.ops) == 100_000
        assert lowered.source.count("def deep_part") == 100
        expected = 0.99999 ** 50_000 + 1e-6 * (1 - 0.99999 ** 50_000) / (1 - 0.99999)
        assert lowered(1.0) == pytest.approx(expected, rel=1e-9)
    finally:
        tg.config.backend = saved

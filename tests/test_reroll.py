"""Unrolled Python loops are rolled back into scans (tracegrad.reroll), computing the same numbers."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.control_flow import scan_p

DT = 0.01
STEPS = 120  # about 9,000 ops unrolled: past REROLL_MIN_OPS
TARGET = np.sin(np.linspace(0.0, 3.0, STEPS))
P = np.array([0.3, 4.0, 0.1])


def deriv(a, v, p):
    return v, -p[0] * v - p[1] * tnp.sin(a) + p[2]


def rk4_step(a, v, p):
    k1a, k1v = deriv(a, v, p)
    k2a, k2v = deriv(a + 0.5 * DT * k1a, v + 0.5 * DT * k1v, p)
    k3a, k3v = deriv(a + 0.5 * DT * k2a, v + 0.5 * DT * k2v, p)
    k4a, k4v = deriv(a + DT * k3a, v + DT * k3v, p)
    return a + DT / 6 * (k1a + 2 * k2a + 2 * k3a + k4a), v + DT / 6 * (k1v + 2 * k2v + 2 * k3v + k4v)


def loss(p):
    """The pendulum fit as a new user writes it: a Python loop, NumPy's target read at t."""
    a, v, total = 1.0, 0.0, 0.0
    for t in range(STEPS):
        a, v = rk4_step(a, v, p)
        total = total + (a - TARGET[t]) ** 2
    return total / STEPS


def loss_scan(p):
    def step(state, target):
        a, v, total = state
        a, v = rk4_step(a, v, p)
        return (a, v, total + (a - target) ** 2), None
    return tg.scan(step, (1.0, 0.0, 0.0), TARGET)[0][2] / STEPS


def scans(program) -> list:
    return [op for op in program.ops if op.primitive is scan_p]


def test_an_unrolled_rk4_loop_becomes_one_scan_with_the_same_gradient(backend):
    lowered = tg.grad(loss).lower(P)
    assert len(tg.make_ir(loss)(P).ops) > 5000  # as traced
    assert len(lowered.ir.ops) < 1000 and len(scans(lowered.ir)) == 2  # forward and backward loops
    np.testing.assert_allclose(lowered(P), tg.grad(loss_scan)(P), rtol=1e-12)
    tg.check_grads(loss, (P,))


def test_its_value_is_numpys():
    a, v, total = 1.0, 0.0, 0.0
    for t in range(STEPS):  # NumPy, no tracing
        a, v = rk4_step(a, v, P)
        total += (a - TARGET[t]) ** 2
    value, _ = tg.value_and_grad(loss)(P)
    assert value == pytest.approx(total / STEPS, rel=1e-13)


def test_jit_of_an_unrolled_loop_compiles_a_loop(backend):
    def trajectory(p):
        a, v, total = 1.0, 0.0, 0.0
        for t in range(STEPS):
            a, v = rk4_step(a, v, p)
            total = total + a * TARGET[t]
        return total, a, v

    lowered = tg.jit(trajectory).lower(P)
    assert len(scans(lowered.optimized_ir)) == 1 and len(lowered.optimized_ir.ops) < 200
    a, v, total = 1.0, 0.0, 0.0
    for t in range(STEPS):  # NumPy, no tracing
        a, v = rk4_step(a, v, P)
        total += a * TARGET[t]
    np.testing.assert_allclose(lowered(P), (total, a, v), rtol=1e-13)


def test_loops_that_are_not_a_scans_steps_stay_unrolled_and_right(python_backend):
    def two_back(x):  # each step reads the last two: not a loop with one step's carry
        values = [x, x * 0.5]
        for _ in range(3000):
            values.append(tnp.sin(values[-1]) + values[-2] * 0.25)
        return values[-1]

    def every_value_kept(x):  # all steps' values are read after the loop
        values = [x]
        for _ in range(2500):
            values.append(tnp.cos(values[-1]) * 0.5)
        return tnp.sum(tnp.stack(values[::100]))

    for fun in (two_back, every_value_kept):
        reference = tg.jit(fun).lower(0.3)
        expected = fun(0.3)  # evaluated by NumPy, op by op
        assert reference(0.3) == pytest.approx(expected, rel=1e-13)
        tg.check_grads(fun, (0.3,))


def test_a_loop_whose_first_step_differs_rolls_the_rest():
    def f(x):
        total = 0.0  # the first step's `0.0 + ...` is no op at all
        for t in range(3000):
            total = total + tnp.sin(x * (t % 7)) * 0.5
        return total

    program = tg.jit(f).lower(0.2).optimized_ir
    assert len(program.ops) < 3000  # period 7: the numbers t % 7 repeat every 7 steps
    assert tg.jit(f)(0.2) == pytest.approx(sum(np.sin(0.2 * (t % 7)) * 0.5 for t in range(3000)), rel=1e-12)


def test_vjp_of_an_unrolled_loop_runs_a_rolled_forward_and_adjoint(python_backend):
    def trajectory(p):
        a, v = 1.0, 0.0
        for _ in range(STEPS):
            a, v = rk4_step(a, v, p)
        return a, v

    (a, v), pullback = tg.vjp(trajectory, P)
    expected_a, expected_v = 1.0, 0.0
    for _ in range(STEPS):
        expected_a, expected_v = rk4_step(expected_a, expected_v, P)
    assert (a, v) == pytest.approx((expected_a, expected_v), rel=1e-13)
    (cotangent,) = pullback((1.0, 0.0))
    np.testing.assert_allclose(cotangent, tg.grad(lambda p: trajectory(p)[0])(P), rtol=1e-12)

"""Proof by random programs: random compositions of primitives, random broadcasting shapes.

Each program's gradient must agree with central differences (first and second order), every
Program every pass makes must typecheck, and the numba and python backends must agree.
Inputs are kept inside each op's domain by construction (log(1 + a*a), a / (1 + b*b), ...);
kinked ops (abs, maximum, where) are left to the table-driven tests, whose inputs avoid kinks.
"""
import contextlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tracegrad as tg
import tracegrad.numpy as tnp

UNARY = {
    "exp_of_tanh": lambda a: tnp.exp(tnp.tanh(a)),
    "log_of_one_plus_square": lambda a: tnp.log(1.0 + a * a),
    "sqrt_of_one_plus_square": lambda a: tnp.sqrt(1.0 + a * a),
    "power": lambda a: (1.0 + a * a) ** 1.5,
    "tanh": tnp.tanh,
    "sin": tnp.sin,
    "cos": tnp.cos,
    "negate": lambda a: -a,
    "sum_last_axis": lambda a: tnp.sum(a, axis=-1, keepdims=True) if tnp.ndim(a) else a,
    "mean_first_axis": lambda a: tnp.mean(a, axis=0, keepdims=True) if tnp.ndim(a) else a,
    "reverse_first_axis": lambda a: a[::-1] if tnp.ndim(a) else a,
}
BINARY = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / (1.0 + b * b),
}
SHAPE_PAIRS = [((), (3,)), ((3, 1), (4,)), ((2, 3), (2, 3)), ((3,), (2, 1)), ((2, 1, 3), (4, 1))]


@st.composite
def programs(draw):
    """A random program as (function, inputs): a stack machine over the two inputs."""
    shape_x, shape_y = draw(st.sampled_from(SHAPE_PAIRS))
    values = st.floats(-1.5, 1.5, allow_nan=False, width=64)
    x = draw(hnp.arrays(np.float64, shape_x, elements=values))
    y = draw(hnp.arrays(np.float64, shape_y, elements=values))
    steps = []
    for step in range(draw(st.integers(1, 6))):
        available = 2 + step
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(sorted(UNARY))), draw(st.integers(0, available - 1))))
        else:
            steps.append((draw(st.sampled_from(sorted(BINARY))), draw(st.integers(0, available - 1)),
                          draw(st.integers(0, available - 1))))

    def program(x, y):
        stack = [x, y]
        for name, *operands in steps:
            table = UNARY if name in UNARY else BINARY
            stack.append(table[name](*(stack[i] for i in operands)))
        return tnp.sum(stack[-1] * 0.5 + stack[-2])

    program.__name__ = "random_program"
    return program, (x if shape_x else float(x), y), steps


@contextlib.contextmanager
def backend(name: str):
    """Hypothesis runs a test many times per fixture, so the backend is switched here instead."""
    saved, tg.config.backend = tg.config.backend, name
    try:
        yield
    finally:
        tg.config.backend = saved


def common(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True, database=None)


@common(100)
@given(programs())
def test_gradients_match_central_differences(case):
    program, args, steps = case
    with backend("python"):
        tg.check_grads(program, args, order=1, rtol=1e-5, atol=1e-6)


@common(30)
@given(programs())
def test_second_order_gradients_match(case):
    program, args, steps = case
    with backend("python"):
        tg.check_grads(program, args, order=2, eps=1e-5, rtol=1e-4, atol=1e-5)


@common(30)
@given(programs())
def test_every_pass_typechecks(case):
    program, args, steps = case
    tg.typecheck(tg.make_ir(program)(*args))
    tg.typecheck(tg.make_ir(tg.grad(program, argnums=(0, 1)))(*args))
    tg.typecheck(tg.make_ir(tg.grad(lambda x, y: tnp.sum(tg.grad(program)(x, y))))(*args))
    tg.typecheck(tg.value_and_grad(program, argnums=(0, 1)).lower(*args).optimized_ir)


@common(3)
@given(programs())
def test_numba_and_python_backends_agree(case):
    program, args, steps = case
    with backend("numba"):
        by_numba = tg.value_and_grad(program, argnums=(0, 1))(*args)
    with backend("python"):
        by_python = tg.value_and_grad(program, argnums=(0, 1))(*args)
    for a, b in zip(tg.tree_leaves(by_numba), tg.tree_leaves(by_python)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)

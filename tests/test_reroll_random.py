"""Rolling unrolled loops back into scans never changes a result: random loops, some with steps
that break the pattern, computed with tg.config.reroll_loops on and off (python backend: the same
ops in the same order give the same bits)."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp

TARGET = np.linspace(-1.0, 1.0, 400)


def random_loop(seed: int):
    """A loop of 200-400 steps over two carries, its step drawn at random; some steps differ."""
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(200, 400))
    body = [(int(rng.integers(6)), float(rng.uniform(0.1, 0.9))) for _ in range(int(rng.integers(3, 8)))]
    odd_steps = set(rng.choice(steps, size=int(rng.integers(0, 3)), replace=False).tolist())
    two_back = rng.random() < 0.2  # a step that reads two steps back: not a scan's step

    def f(p):
        a, b, previous = p[0], 0.5, p[1]
        for t in range(steps):
            for kind, c in body:
                if kind == 0:
                    a = tnp.sin(a) * c + b
                elif kind == 1:
                    b = b * c + a * p[1]
                elif kind == 2:
                    a = a + (b - TARGET[t]) ** 2 * c
                elif kind == 3:
                    b = tnp.tanh(b + c * p[0])
                elif kind == 4:
                    a = a * c + 0.01 * t
                else:
                    b = tnp.where(a > b, a * c, b)
            if t in odd_steps:
                a = tnp.cos(a) * 0.5
            if two_back:
                a, previous = a + 0.1 * previous, a
        return a * b

    return f


@pytest.mark.parametrize("seed", range(12))
def test_rolled_and_unrolled_agree_bit_for_bit(seed, python_backend):
    f = random_loop(seed)
    p = np.array([0.3, 0.7])
    results = []
    for reroll in (True, False):
        tg.config.reroll_loops = reroll
        try:
            results.append((tg.jit(f)(p), tg.grad(f)(p)))
        finally:
            tg.config.reroll_loops = True
    (value, grad), (value_unrolled, grad_unrolled) = results
    assert value == value_unrolled or (np.isnan(value) and np.isnan(value_unrolled))
    np.testing.assert_allclose(grad, grad_unrolled, rtol=1e-12, atol=0)


def test_most_of_these_loops_are_rolled(python_backend):
    """So the comparison above tests the pass: the loops with odd steps or two-step reads stay unrolled."""
    rolled = ["scan[" in str(tg.jit(random_loop(seed)).lower(np.array([0.3, 0.7])).optimized_ir) for seed in range(12)]
    assert 6 <= sum(rolled) < 12

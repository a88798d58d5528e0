"""Loops that stay loops: scan, fori_loop, while_loop and cond.

Each construct is checked against the same computation written as a Python loop (unrolled by
tracing) and against central differences, on both backends: the python backend runs the
generated loop with NumPy, numba compiles it.
"""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.control_flow import scan_p

XS = np.linspace(-0.5, 0.8, 6)


def rnn(w, xs):
    def step(h, x):
        h = tnp.tanh(h * w + x)
        return h, h * 2.0
    h, ys = tg.scan(step, 0.3, xs)
    return h + tnp.sum(ys * ys)


def rnn_unrolled(w, xs):
    h, total = 0.3, 0.0
    for t in range(xs.shape[0]):
        h = tnp.tanh(h * w + xs[t])
        total = total + (h * 2.0) ** 2
    return h + total


def test_scan_matches_the_unrolled_loop_and_central_differences(backend):
    value, grads = tg.value_and_grad(rnn, argnums=(0, 1))(0.7, XS)
    expected_value, expected_grads = tg.value_and_grad(rnn_unrolled, argnums=(0, 1))(0.7, XS)
    assert value == pytest.approx(expected_value, rel=1e-14)
    assert grads[0] == pytest.approx(expected_grads[0], rel=1e-13)
    np.testing.assert_allclose(grads[1], expected_grads[1], rtol=1e-13)
    tg.check_grads(rnn, (0.7, XS), order=2)


def test_the_body_is_traced_once_and_printed_once_nested():
    calls = []

    def step(c, x):
        calls.append(1)
        return c * x + 1.0, c

    program = tg.make_ir(lambda xs: tg.scan(step, 1.0, xs))(np.ones(1000))
    assert len(calls) == 1
    assert str(program) == """\
{ lambda a:f64[1000] . let
    b:f64[] c:f64[1000] = scan[num_consts=0,num_carry=1,length=1000,reverse=False] 1.0 a
      body={ lambda d:f64[] e:f64[] . let
          f:f64[] = mul d e
          g:f64[] = add f 1.0
        in ( g d ) }
  in ( b c ) }"""


def test_the_source_is_a_loop_in_the_programs_names():
    tg.config.backend, saved = "numba", tg.config.backend
    try:
        lowered = tg.jit(lambda w, xs: tg.scan(lambda c, x: (c * w + x, c), 0.0, xs)).lower(0.5, np.ones(4))
    finally:
        tg.config.backend = saved
    line = test_the_source_is_a_loop_in_the_programs_names.__code__.co_firstlineno + 3
    assert lowered.source == f"""\
def jit_fun(a, b):
    # test_loops.py:{line}
    e = a
    c = 0.0
    d = np.empty((4,), np.float64)
    for _t0 in range(4):
        f = c
        g = b[_t0]
        # test_loops.py:{line}
        h = f * e
        i = h + g
        c = i
        d[_t0] = f
    return (c, d, )
"""
    assert str(lowered.optimized_ir).count("scan[") == 1
    np.testing.assert_allclose(lowered(0.5, np.ones(4))[1], [0.0, 1.0, 1.5, 1.75])


def test_a_loops_results_never_share_memory_with_its_arguments(backend):
    init = np.ones(3)
    carry, ys = tg.jit(lambda c, xs: tg.scan(lambda c, x: (c, c * x), c, xs))(init, np.arange(2.0))
    carry[0] = 5.0
    assert init[0] == 1.0 and ys.tolist() == [[0.0] * 3, [1.0] * 3]
    same = tg.jit(lambda c, flag: tg.cond(flag, lambda c: c, lambda c: c * 2.0, c))(init, True)
    same[0] = 7.0
    assert init[0] == 1.0


def test_carries_of_several_leaves_and_xs_of_several_arrays(backend):
    def f(params, xs, ys):
        def step(carry, inputs):
            position, velocity = carry["position"], carry["velocity"]
            x, y = inputs
            velocity = velocity * params[0] + x * params[1]
            position = position + 0.1 * velocity
            return {"position": position, "velocity": velocity}, (position * y, tnp.sum(velocity))
        final, (outs, sums) = tg.scan(step, {"position": np.zeros(2), "velocity": np.ones(2)}, (xs, ys))
        return tnp.sum(final["position"] ** 2) + tnp.sum(outs) + tnp.sum(sums * sums)

    def unrolled(params, xs, ys):
        position, velocity, total = np.zeros(2), np.ones(2), 0.0
        for t in range(xs.shape[0]):
            velocity = velocity * params[0] + xs[t] * params[1]
            position = position + 0.1 * velocity
            total = total + tnp.sum(position * ys[t]) + tnp.sum(velocity) ** 2
        return tnp.sum(position ** 2) + total

    params, xs, ys = np.array([0.9, 0.3]), np.linspace(0, 1, 10).reshape(5, 2), np.linspace(1, 2, 10).reshape(5, 2)
    assert f(params, xs, ys) == pytest.approx(unrolled(params, xs, ys), rel=1e-13)
    got = tg.grad(f, argnums=(0, 1, 2))(params, xs, ys)
    want = tg.grad(unrolled, argnums=(0, 1, 2))(params, xs, ys)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    tg.check_grads(f, (params, xs, ys))


def test_reverse_scans_from_the_last_element(backend):
    def f(w, xs):
        carry, ys = tg.scan(lambda c, x: (c * w + x, c * x), 1.0, xs, reverse=True)
        return carry + tnp.sum(ys * tnp.sin(xs))

    def unrolled(w, xs):
        c, ys = 1.0, [None] * xs.shape[0]
        for t in reversed(range(xs.shape[0])):
            ys[t] = c * xs[t]
            c = c * w + xs[t]
        return c + tnp.sum(tnp.stack(ys) * tnp.sin(xs))

    assert tg.jit(f)(0.8, XS) == pytest.approx(unrolled(0.8, XS), rel=1e-14)
    carry, ys = tg.jit(lambda xs: tg.scan(lambda c, x: (c + x, c), 0.0, xs, reverse=True))(np.arange(4.0))
    np.testing.assert_array_equal(ys, [6.0, 5.0, 3.0, 0.0])
    got, want = tg.grad(f, argnums=(0, 1))(0.8, XS), tg.grad(unrolled, argnums=(0, 1))(0.8, XS)
    assert got[0] == pytest.approx(want[0], rel=1e-13)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-13)
    tg.check_grads(f, (0.8, XS))


def test_a_zero_length_loop_returns_its_initial_carry(backend):
    def f(w, xs):
        carry, ys = tg.scan(lambda c, x: (c * w + x, c), w * 2.0, xs)
        return carry + tnp.sum(ys)

    empty = np.zeros(0)
    assert tg.jit(f)(0.5, empty) == 1.0
    assert tg.grad(f)(0.5, empty) == 2.0
    assert tg.jit(lambda x: tg.fori_loop(3, 3, lambda i, v: v * x, x))(2.0) == 2.0
    assert tg.grad(lambda x: tg.fori_loop(5, 2, lambda i, v: v * x, x))(2.0) == 1.0
    carry, ys = tg.jit(lambda xs: tg.scan(lambda c, x: (c, x * 2.0), np.ones(3), xs))(np.zeros((0, 2)))
    assert ys.shape == (0, 2) and carry.tolist() == [1.0, 1.0, 1.0]


def test_fori_loop_matches_the_python_loop_and_reads_its_index(backend):
    def f(x):
        return tg.fori_loop(1, 6, lambda i, v: v * x + tnp.sin(v) * i, x)

    def unrolled(x):
        v = x
        for i in range(1, 6):
            v = v * x + tnp.sin(v) * float(i)
        return v

    assert tg.jit(f)(0.4) == pytest.approx(unrolled(0.4), rel=1e-14)
    assert tg.grad(f)(0.4) == pytest.approx(tg.grad(unrolled)(0.4), rel=1e-13)
    assert tg.grad(tg.grad(f))(0.4) == pytest.approx(tg.grad(tg.grad(unrolled))(0.4), rel=1e-12)


def test_grad_of_grad_through_a_scan(backend):
    tg.check_grads(rnn, (0.7, XS), order=2)
    second = tg.grad(tg.grad(rnn))(0.7, XS)
    assert second == pytest.approx(tg.grad(tg.grad(rnn_unrolled))(0.7, XS), rel=1e-11)


def test_nested_scans(backend):
    def f(w, xs):
        def outer(c, row):
            inner_carry, _ = tg.scan(lambda d, x: (tnp.tanh(d * w + x), None), c, row)
            return inner_carry, inner_carry * c
        c, ys = tg.scan(outer, 0.1, xs)
        return c + tnp.sum(ys)

    def unrolled(w, xs):
        c, total = 0.1, 0.0
        for t in range(xs.shape[0]):
            d = c
            for s in range(xs.shape[1]):
                d = tnp.tanh(d * w + xs[t, s])
            total = total + d * c
            c = d
        return c + total

    xs = np.linspace(-1, 1, 12).reshape(4, 3)
    assert tg.jit(f)(0.6, xs) == pytest.approx(unrolled(0.6, xs), rel=1e-14)
    got, want = tg.grad(f, argnums=(0, 1))(0.6, xs), tg.grad(unrolled, argnums=(0, 1))(0.6, xs)
    assert got[0] == pytest.approx(want[0], rel=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
    tg.check_grads(f, (0.6, xs), order=2)


def test_closed_over_values_are_inputs_of_the_loop_not_copies(backend):
    weights = np.linspace(0.1, 0.5, 3)

    def f(scale, xs):
        return tg.scan(lambda c, x: (c + tnp.sum(weights * x) * scale, None), 0.0, xs)[0]

    program = tg.make_ir(f)(2.0, np.ones((4, 3)))
    (loop,) = [op for op in program.ops if op.primitive is scan_p]
    assert loop.param["num_consts"] == 2 and loop.inputs[0] in program.constvars  # the array and `scale`
    assert loop.param["body"].constvars == ()
    xs = np.linspace(0, 1, 12).reshape(4, 3)
    assert tg.grad(f)(2.0, xs) == pytest.approx(float(np.sum(xs @ weights)), rel=1e-14)
    tg.check_grads(f, (2.0, xs))


def test_scan_inside_jit_and_grad_inside_scan_a_training_loop(backend):
    x = np.linspace(-1, 1, 8).reshape(4, 2)
    y = x @ np.array([1.5, -0.5])

    def loss(w):
        return tnp.mean((x @ w - y) ** 2)

    @tg.jit
    def train(w):
        return tg.fori_loop(0, 100, lambda i, w: w - 0.1 * tg.grad(loss)(w), w)

    w = np.zeros(2)
    for _ in range(100):
        w = w - 0.1 * tg.grad(loss)(w)
    np.testing.assert_allclose(train(np.zeros(2)), w, rtol=1e-12)
    assert str(train.lower(np.zeros(2)).ir).count("scan[") == 1


def test_cond_takes_each_branch_and_differentiates_the_one_taken(backend):
    def f(x, y):
        return tg.cond(x > 0.0, lambda a, b: tnp.sin(a) * b, lambda a, b: a * a - b, x, y)

    for x in (0.7, -0.7):
        expected = np.sin(x) * 3.0 if x > 0 else x * x - 3.0
        assert tg.jit(f)(x, 3.0) == pytest.approx(expected, rel=1e-15)
        want = (np.cos(x) * 3.0, np.sin(x)) if x > 0 else (2 * x, -1.0)
        assert tg.grad(f, argnums=(0, 1))(x, 3.0) == pytest.approx(want, rel=1e-14)
        tg.check_grads(f, (x, 3.0), order=2)


def test_cond_inside_a_scan_and_switch(backend):
    def f(w, xs):
        step = lambda c, x: (tg.cond(x > 0.0, lambda c: c * w + x, lambda c: c - x * w, c), None)
        return tg.scan(step, 1.0, xs)[0]

    def unrolled(w):
        c = 1.0
        for x in XS:  # Python floats: the branch is chosen while tracing
            c = c * w + x if x > 0 else c - x * w
        return c

    assert tg.jit(f)(0.9, XS) == pytest.approx(unrolled(0.9), rel=1e-14)
    assert tg.grad(f)(0.9, XS) == pytest.approx(tg.grad(unrolled)(0.9), rel=1e-13)
    branches = [lambda v: v + 1.0, lambda v: v * 2.0, lambda v: -v]
    for index, expected in ((-3, 4.0), (0, 4.0), (1, 6.0), (2, -3.0), (9, -3.0)):  # clamped, as in JAX
        assert tg.jit(lambda i, v: tg.switch(i, branches, v))(np.array(index), 3.0) == expected


def test_while_loop_runs_and_refuses_reverse_mode_clearly(backend):
    def newton_sqrt(a):
        return tg.while_loop(lambda s: tnp.abs(s[0] * s[0] - a) > 1e-12, lambda s: ((s[0] + a / s[0]) / 2, s[1] + 1),
                             (a, 0))

    root, steps = tg.jit(newton_sqrt)(2.0)
    assert root == pytest.approx(np.sqrt(2.0), rel=1e-15) and 3 <= steps <= 8
    with pytest.raises(tg.errors.NonDifferentiableLoopError, match="fori_loop"):
        tg.grad(lambda a: newton_sqrt(a)[0])(2.0)
    counted = tg.jit(lambda n, x: tg.fori_loop(0, n, lambda i, v: v + x, 0.0))  # traced bounds: a while loop
    assert counted(5, 1.5) == 7.5
    assert "while" in str(counted.lower(5, 1.5).ir)


def test_a_carry_that_changes_type_is_refused_naming_the_line():
    with pytest.raises(tg.errors.ShapeError, match=r"leaf 0 is f64\[\] in, f64\[3,3\] out.*test_loops.py"):
        tg.jit(lambda xs: tg.scan(lambda c, x: (c * xs, None), 1.0, xs))(np.ones((3, 3)))
    with pytest.raises(tg.errors.ShapeError, match="int64 carry"):
        tg.jit(lambda x: tg.fori_loop(0, 3, lambda i, v: v * x, 1))(2.0)


def test_loops_without_any_transformation_evaluate_with_numpy():
    carry, ys = tg.scan(lambda c, x: (c + x, c * x), 0.0, np.arange(4.0))
    assert carry == 6.0 and ys.tolist() == [0.0, 0.0, 2.0, 9.0]
    assert tg.fori_loop(0, 4, lambda i, v: v + i, 0) == 6
    assert tg.cond(True, lambda: 1.0, lambda: 2.0) == 1.0


@pytest.mark.parametrize("reverse", [False, True])
def test_checkpoint_every_recomputes_segments_and_gives_the_same_gradient(backend, reverse):
    def make(every):
        def f(w, xs):
            def step(c, x):
                c = tnp.tanh(c * w + x)
                return c, c * 2.0
            c, ys = tg.scan(step, 0.3, xs, reverse=reverse, checkpoint_every=every)
            return c + tnp.sum(ys * ys * xs)
        return f

    xs = np.linspace(-1, 1, 23)
    value, grads = tg.value_and_grad(make(None), argnums=(0, 1))(0.5, xs)
    for every in (1, 4, 5, 23, 40):  # 23 = 4 segments of 5 and 3 more steps; 23 and 40 leave one segment
        got_value, got = tg.value_and_grad(make(every), argnums=(0, 1))(0.5, xs)
        assert got_value == pytest.approx(value, rel=1e-14)
        assert got[0] == pytest.approx(grads[0], rel=1e-12)
        np.testing.assert_allclose(got[1], grads[1], rtol=1e-12)
    tg.check_grads(make(5), (0.5, xs), order=2)


def stored_rows(program) -> int:
    """The elements of the arrays a program's scans stack beyond the ys the user asked for."""
    return sum(out.aval.size for op in program.ops if op.primitive is scan_p for out in op.outs[op.param["num_carry"]:])


def test_checkpoint_every_stores_about_length_over_k_plus_k_rows():
    def make(every):
        return lambda w: tg.scan(lambda c, _: (tnp.sin(c) * w, None), 1.0, length=10_000, checkpoint_every=every)[0]

    plain = tg.grad(make(None)).lower(0.5).optimized_ir
    checkpointed = tg.grad(make(100)).lower(0.5).optimized_ir
    assert stored_rows(plain) >= 20_000  # two residuals per step: sin c and cos c (or c)
    assert stored_rows(checkpointed) <= 100 + 2 * 100 * 2  # 100 carries, then one segment's residuals at a time
    assert tg.grad(make(100))(0.5) == pytest.approx(tg.grad(make(None))(0.5), rel=1e-12)


def test_debug_nans_names_the_line_in_the_body_and_the_step(backend):
    def f(xs):
        def step(c, x):
            c = tnp.log(c + x)  # nan once c + x < 0
            return c, c
        return tg.scan(step, 1.0, xs)[0]

    line = f.__code__.co_firstlineno + 2
    tg.config.debug_nans, saved = True, tg.config.debug_nans
    try:
        with pytest.raises(FloatingPointError, match=rf"log produced nan .*test_loops.py:{line} \(step 2 of the loop at"):
            tg.jit(f)(np.array([1.0, 0.5, -5.0, 1.0]))
        nested = lambda xs: tg.scan(lambda c, row: (f(row) + c, None), 0.0, xs)[0]
        with pytest.raises(FloatingPointError, match=r"\(step 1 of the loop at .*\) \(step 2 of the loop at"):
            tg.jit(nested)(np.array([[1.0, 0.5, 2.0], [1.0, 0.5, -5.0]]))
        assert tg.jit(f)(np.array([1.0, 0.5, 5.0])) == pytest.approx(np.log(np.log(np.log(2.0) + 0.5) + 5.0))
    finally:
        tg.config.debug_nans = saved


def test_a_switch_index_may_be_a_python_int_argument_and_not_a_float():
    assert tg.jit(lambda i, v: tg.switch(i, [lambda v: v, lambda v: -v], v))(1, 3.0) == -3.0
    with pytest.raises(TypeError, match=r"np.array\(i\)"):
        tg.jit(lambda i, v: tg.switch(i, [lambda v: v, lambda v: -v], v))(1.0, 3.0)

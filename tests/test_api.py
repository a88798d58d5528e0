"""The public API on the seeds' workloads: the values the issue says must hold, caching, nesting."""
import collections
import inspect
import linecache
import threading

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad.fastpath import MISS
from tracegrad import codegen, errors

EXERCISE_GRAD = [-12.353553390593273, 10.25699027111255, 0.0625]
SOFTMAX_GRAD = [0.041772570515350445, 0.8390245074625319, 0.005653302662216329, -0.8864503806400986]


def f(a, b, c):
    return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5


def test_exercise_gradient(backend):
    grads = tg.grad(f, argnums=(0, 1, 2))(2, 3, 4)  # ints are accepted
    assert type(grads) is tuple and all(type(g) is float for g in grads)
    assert grads == pytest.approx(EXERCISE_GRAD, rel=1e-9)


def nll(logits):
    # the micrograd exercise's softmax and loss, unchanged
    counts = [l.exp() for l in logits]
    d = sum(counts)
    probs = [c / d for c in counts]
    return -probs[3].log()


def test_micrograd_softmax(backend):
    value, grads = tg.value_and_grad(nll)([0.0, 3.0, -2.0, 1.0])
    assert value == pytest.approx(2.1755153626167147, rel=1e-9)
    assert type(grads) is list and len(grads) == 4 and all(type(g) is float for g in grads)
    assert grads == pytest.approx(SOFTMAX_GRAD, rel=1e-9)


XS = np.array([[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]])
YS = np.array([1.0, -1.0, -1.0, 1.0])


def init_mlp(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [{"W": rng.uniform(-1, 1, (m, n)), "b": rng.uniform(-1, 1, n)} for m, n in zip(sizes, sizes[1:])]


def predict(params, x):
    for layer in params:
        x = tnp.tanh(x @ layer["W"] + layer["b"])
    return x[:, 0]


def squared_error(params, x, y):
    return tnp.sum((predict(params, x) - y) ** 2)


def sgd_step(params, x, y):
    grads = tg.grad(squared_error)(params, x, y)
    return tg.tree_map(lambda p, g: p - 0.1 * g, params, grads)


def test_micrograd_mlp_trains_with_a_jitted_step():
    jitted = tg.jit(sgd_step)
    params = plain = init_mlp([3, 4, 4, 1])
    for _ in range(200):
        params = jitted(params, XS, YS)
        plain = sgd_step(plain, XS, YS)
    assert squared_error(params, XS, YS) < 1e-2
    for layer, plain_layer in zip(params, plain):
        np.testing.assert_allclose(layer["W"], plain_layer["W"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(layer["b"], plain_layer["b"], rtol=1e-9, atol=1e-12)


def test_backends_agree_on_the_mlp_gradient():
    params = init_mlp([3, 4, 4, 1], seed=1)
    by_numba = tg.grad(squared_error)(params, XS, YS)
    tg.config.backend = "python"
    try:
        by_python = tg.grad(squared_error)(params, XS, YS)
    finally:
        tg.config.backend = "numba"
    for a, b in zip(tg.tree_leaves(by_numba), tg.tree_leaves(by_python)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_second_call_neither_retraces_nor_recompiles(python_backend):
    def g(x, w):
        return tnp.sum(tnp.tanh(x * w))

    grad_g = tg.grad(g, argnums=1)
    before = tg.cache_info()
    grad_g(np.ones(3), 2.0)
    middle = tg.cache_info()
    assert middle["traces"] == before["traces"] + 1
    assert middle["compiles"] == before["compiles"] + 1
    grad_g(np.full(3, 2.0), 5.0)
    tg.grad(g, argnums=1)(np.zeros(3), 1.0)  # a new tg.grad(g) object shares the cache
    assert tg.cache_info() == middle
    grad_g(np.ones(4), 2.0)  # a new shape is a new signature
    assert tg.cache_info()["traces"] == middle["traces"] + 1


def test_jit_static_argnums(python_backend):
    def power_sum(x, n):
        total = 0.0
        for _ in range(n):  # Python control flow on a static value just runs
            total = total + x
        return total

    jitted = tg.jit(power_sum, static_argnums=1)
    assert jitted(2.0, 3) == 6.0
    assert jitted(2.0, 5) == 10.0


def test_grad_of_grad(backend):
    second = tg.grad(tg.grad(f))(2.0, 3.0, 4.0)
    assert second == pytest.approx(-6 * 2.0 + 0.25 * 2.0**-1.5, rel=1e-9)
    third = tg.grad(tg.grad(tg.grad(lambda x: tnp.sin(x) * x)))(0.7)
    assert third == pytest.approx(-3 * np.sin(0.7) - 0.7 * np.cos(0.7), rel=1e-9)


def test_grad_inside_jit_matches_grad_outside(python_backend):
    params = init_mlp([3, 4, 1])
    inside = tg.jit(lambda p: tg.grad(squared_error)(p, XS, YS))(params)
    outside = tg.grad(squared_error)(params, XS, YS)
    for a, b in zip(tg.tree_leaves(inside), tg.tree_leaves(outside)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_grad_inside_jit_is_staged_into_jits_program(python_backend):
    """By interpretation: the gradient's ops join jit's trace; it is never traced alone, nor compiled."""
    gradient = tg.grad(lambda p, x, y: squared_error(p, x, y))  # a function of its own: a cache of its own
    params = init_mlp([3, 4, 1])
    compiles = tg.cache_info()["compiles"]
    lowered = tg.jit(lambda p: gradient(p, XS, YS)).lower(params)
    assert not gradient.cache and tg.cache_info()["compiles"] == compiles
    forward = [op.primitive.name for op in lowered.ir.ops if op.adjoint_of is None]
    assert forward.count("tanh") == 2 and {op.adjoint_of for op in lowered.ir.ops} >= {"tanh", "matmul", "pow"}


def test_closure_over_an_enclosing_traced_value(python_backend):
    inner_grads = []

    def outer(x):
        inner_grads.append(tg.grad(lambda y: x * y * y))
        return inner_grads[-1](3.0)  # d/dy x y^2 = 2 x y

    assert tg.jit(outer)(2.0) == pytest.approx(12.0)
    assert tg.grad(outer)(2.0) == pytest.approx(6.0)
    # x is a constant to the inner gradient: 2 x y, staged into outer's program as (x * 3) + (3 * x)
    assert str(tg.make_ir(outer)(2.0)) == """\
{ lambda a:f64[] . let
    b:f64[] = mul a 3.0
    c:f64[] = mul 3.0 a
    d:f64[] = add b c
  in ( d ) }"""
    assert not any(inner.cache for inner in inner_grads)  # nothing traced alone, nothing compiled


def test_value_and_grad_with_aux_and_argnums(python_backend):
    def loss(w, b, x):
        prediction = w * x + b
        return tnp.sum(prediction**2), {"prediction": prediction}

    x = np.array([1.0, 2.0])
    (value, aux), (dw, db) = tg.value_and_grad(loss, argnums=(0, 1), has_aux=True)(0.5, 1.0, x)
    prediction = 0.5 * x + 1.0
    assert value == pytest.approx(np.sum(prediction**2))
    np.testing.assert_allclose(aux["prediction"], prediction)
    assert dw == pytest.approx(np.sum(2 * prediction * x)) and db == pytest.approx(np.sum(2 * prediction))
    grads, aux = tg.grad(loss, has_aux=True)(0.5, 1.0, x)
    assert grads == pytest.approx(dw) and set(aux) == {"prediction"}


def test_grad_of_a_vector_output_says_so(python_backend):
    with pytest.raises(errors.NonScalarOutputError, match="scalar"):
        tg.grad(lambda x: x * 2.0)(np.ones(3))


def test_vjp_returns_output_and_pullback(backend):
    x, w = np.array([1.0, 2.0, 3.0]), np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.0]])
    out, pullback = tg.vjp(lambda x, w: tnp.tanh(x @ w), x, w)
    np.testing.assert_allclose(out, np.tanh(x @ w))
    cotangent = np.array([1.0, -2.0])
    dx, dw = pullback(cotangent)
    local = cotangent * (1 - np.tanh(x @ w) ** 2)
    np.testing.assert_allclose(dx, w @ local)
    np.testing.assert_allclose(dw, np.outer(x, local))


def test_check_grads_passes_and_fails_with_a_table(python_backend, monkeypatch):
    tg.check_grads(f, (2.0, 3.0, 4.0), order=2)
    tg.check_grads(lambda x: tnp.tanh(x) * 2.0, (np.array([0.1, -0.3]),), order=2)  # a vector output
    from tracegrad import core, primitives

    monkeypatch.setitem(core.vjp_rules, primitives.sin_p, lambda g, out, x: (g * 2.0,))  # a wrong rule
    with pytest.raises(AssertionError, match=r"1 of 2 coordinates disagree[\s\S]*arg 1"):
        tg.check_grads(lambda a, b: a * 3.0 + tnp.sin(b), (1.0, 0.5))


def test_lowered_shows_ir_and_commented_source(python_backend):
    lowered = tg.jit(tg.grad(lambda x: tnp.sum(tnp.sin(x)))).lower(np.ones(3))
    assert "cos" in str(lowered.ir)
    assert "# Grad of: tnp.sin(x)  (sin, test_api.py:" in lowered.source and "np.cos(a)" in lowered.source
    np.testing.assert_allclose(lowered(np.zeros(3)), np.ones(3))
    with pytest.raises(TypeError, match="signature"):
        lowered(np.zeros(4))


def test_generated_source_is_in_linecache(backend):
    lowered = tg.jit(lambda x: x * 2.0 + 1.0).lower(1.0)
    function = lowered.function
    function = getattr(function, "py_func", None) or function.__wrapped__
    assert inspect.getsource(function) == lowered.source
    code = function.__code__
    assert linecache.getline(code.co_filename, code.co_firstlineno).startswith("def ")


def test_long_programs_are_split_into_parts(python_backend, monkeypatch):
    monkeypatch.setattr(codegen, "MAX_OPS_PER_FUNCTION", 10)

    def long(x):
        for _ in range(30):
            x = x * 1.01 + 0.01
        return x

    lowered = tg.jit(long).lower(1.0)
    assert "def jit_long_part5(" in lowered.source
    expected = 1.0
    for _ in range(30):
        expected = expected * 1.01 + 0.01
    assert lowered(1.0) == pytest.approx(expected, rel=1e-14)
    assert tg.grad(long)(1.0) == pytest.approx(1.01**30, rel=1e-12)


def test_a_deep_program_does_not_hit_the_recursion_limit(python_backend):
    def deep(x):
        for _ in range(50_000):
            x = x * 0.99999 + 1e-6  # two ops per step: 100,000 ops
        return x

    assert tg.grad(deep)(1.0) == pytest.approx(0.99999**50_000, rel=1e-9)


def test_closed_over_arrays_are_constants_fixed_at_trace_time(python_backend):
    weights = np.array([1.0, 2.0])
    jitted = tg.jit(lambda x: tnp.sum(weights * x))
    assert jitted(np.ones(2)) == 3.0
    weights[:] = 10.0  # mutating a captured array does not reach the traced program
    assert jitted(np.ones(2)) == 3.0
    assert tg.jit(lambda x: tnp.sum(weights * x))(np.ones(2)) == 20.0  # a new trace sees the new values


def test_threads_calling_one_jitted_function_trace_once(python_backend):
    from concurrent.futures import ThreadPoolExecutor

    def g(x):
        return tnp.sum(tnp.tanh(x) * 3.0)

    jitted = tg.jit(g)
    before = tg.cache_info()["traces"]
    inputs = [np.full(5, i / 10) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(jitted, inputs))
    assert results == [pytest.approx(np.sum(np.tanh(x) * 3.0)) for x in inputs]
    assert tg.cache_info()["traces"] == before + 1


def test_the_fast_lane_checks_structure_shapes_and_dtypes(python_backend):
    def total(params, scale):
        return tnp.sum(params["W"]) * scale + tnp.sum(params["b"]) * 10.0

    jitted = tg.jit(total)
    params = {"W": np.ones((2, 2)), "b": np.ones(3)}
    assert jitted(params, 2.0) == 38.0
    assert jitted(params, 3.0) == 42.0  # through the generated flattener
    fast_call = jitted.fast_call
    assert fast_call((params, 3.0)) == 42.0
    # every difference falls back to the general path, which retraces or converts
    assert fast_call(({"W": np.ones((2, 2)), "c": np.ones(3)}, 3.0)) is MISS
    assert fast_call(({"W": np.ones((2, 3)), "b": np.ones(3)}, 3.0)) is MISS
    assert fast_call(({"W": np.ones((2, 2), np.float32), "b": np.ones(3)}, 3.0)) is MISS
    assert fast_call(([np.ones((2, 2)), np.ones(3)], 3.0)) is MISS
    assert fast_call((params, 3)) is MISS
    assert fast_call((params,)) is MISS
    assert jitted({"W": np.ones((2, 2), np.float32), "b": np.ones(3)}, 3) == 42.0
    assert jitted({"W": np.ones((3, 3)), "b": np.ones(1)}, 1.0) == 19.0
    assert jitted(params, 1.0) == 34.0  # alternating signatures both stay right
    assert jitted({"W": np.ones((3, 3)), "b": np.ones(1)}, 1.0) == 19.0


def test_the_gradient_of_a_0d_array_is_a_0d_array(backend):
    f = lambda x, y: tnp.sin(x) * y
    gx, gy = tg.grad(f, argnums=(0, 1))(np.array(2.0), 3.0)
    assert type(gx) is np.ndarray and gx.shape == () and type(gy) is float
    assert gx == pytest.approx(3.0 * np.cos(2.0), rel=1e-14) and gy == pytest.approx(np.sin(2.0), rel=1e-14)
    value, grad = tg.value_and_grad(f)(np.array(2.0), 3.0)
    assert type(value) is float and type(grad) is np.ndarray and grad.shape == ()


def test_the_fast_lane_builds_the_results_tree():
    Pair = collections.namedtuple("Pair", "first second")

    def nested(x, y):
        return {"sum": x + y, "pair": Pair(x * 2.0, [y, (x,)])}

    jitted = tg.jit(nested)  # numba: the fast lane writes the tree's expression into its own code
    x, y = np.ones(3), 2.0
    for _ in range(2):  # the second call takes the fast lane
        result = jitted(x, y)
        assert type(result["pair"]) is Pair and type(result["pair"].second) is list
        np.testing.assert_array_equal(result["sum"], x + y)
        np.testing.assert_array_equal(result["pair"].first, x * 2.0)
        assert result["pair"].second[0] == 2.0 and type(result["pair"].second[1]) is tuple
    assert jitted.lower(x, y).compiled.finish_expression is not None


def test_threads_generating_two_programs_sources_do_not_wait_for_each_other(python_backend, monkeypatch):
    # functools.cached_property (Python <= 3.11) holds one lock per attribute for all instances: the
    # second source waited until the first one's was written (and a child forked meanwhile hung)
    def doubled(x):
        return x * 2.0

    def tripled(x):
        return x * 3.0

    first, second = tg.jit(doubled).lower(1.0), tg.jit(tripled).lower(1.0)
    inside, release = threading.Event(), threading.Event()
    real_generate_source = codegen.generate_source

    def generate_source(program, name, **options):
        if name == "jit_doubled":  # the first source takes until released
            inside.set()
            release.wait(30)
        return real_generate_source(program, name, **options)

    monkeypatch.setattr(codegen, "generate_source", generate_source)
    slow = threading.Thread(target=lambda: first.source)
    slow.start()
    try:
        assert inside.wait(30)
        quick = threading.Thread(target=lambda: second.source)
        quick.start()
        quick.join(10)
        assert not quick.is_alive(), "the second source waited for the first one"
    finally:
        release.set()
        slow.join()
    assert first(1.0) == 2.0 and second(1.0) == 3.0
    assert "source" in vars(second.compiled)  # computed once, kept in the instance


@pytest.mark.parametrize("max_signatures, traces", [(1, 6), (2, 4)])
def test_the_newest_signature_is_kept_whatever_max_signatures(python_backend, monkeypatch, max_signatures, traces):
    # with max_signatures = 1, adding a signature used to drop that newest one (the fast lane's was kept),
    # so each call of the new shape traced it again
    monkeypatch.setattr(tg.config, "max_signatures", max_signatures)
    jitted = tg.jit(lambda x: tnp.sum(x * 2.0))
    before = tg.cache_info()["traces"]
    for n in (1, 1, 2, 2, 1, 2, 3, 1):
        x = np.ones(n)
        assert jitted(x) == 2.0 * n
        assert jitted.key((x,), []) in jitted.cache and len(jitted.cache) <= max_signatures
    assert tg.cache_info()["traces"] - before == traces  # one per call of a signature not kept


def test_a_trace_may_lower_its_own_function_for_another_shape(python_backend):
    # the function's lock is held while it is traced: it was not reentrant, and this call never returned
    def rows_total(x):
        if x.ndim == 1:
            return tnp.sum(x)
        return jitted.lower(np.ones(x.shape[1:]))(x[0]) * x.shape[0]  # the same function, for one row's shape

    jitted = tg.jit(rows_total)
    # a plain recursive call joins the trace instead
    recursive = tg.jit(lambda x: tnp.sum(x) if x.ndim == 1 else recursive(x[0]) * x.shape[0])
    results = []
    worker = threading.Thread(target=lambda: results.extend([jitted(np.ones((2, 3))), recursive(np.ones((2, 3)))]),
                              daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the trace waited for its own function's lock"
    assert results == [6.0, 6.0]
    assert jitted.key((np.ones(3),), []) in jitted.cache and jitted(np.ones(3)) == 3.0

"""Large temporaries kept from call to call (one set per thread), never handed back to the caller."""
import threading

import numpy as np

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import codegen

rng = np.random.default_rng(1)


def layer(x, w):
    return tnp.sum(tnp.tanh(x @ w) * 2.0, axis=0)


def test_numba_source_keeps_large_temporaries_in_a_per_thread_workspace(monkeypatch):
    monkeypatch.setattr(codegen, "WORKSPACE_MIN_SIZE", 8)
    line = layer.__code__.co_firstlineno + 1
    source = tg.jit(layer).lower(np.ones((4, 3)), np.ones((3, 2))).source
    # the sum over the batch is added up in the loop, so e is never stored
    assert source == f"""\
import threading


def jit_layer_core(a, b, _workspace):
    # test_workspace.py:{line}
    c = tg_matmul_into(a, b, _workspace[0])
    f = np.zeros((2,), np.float64)
    for _i0 in range(4):
        for _i1 in range(2):
            # test_workspace.py:{line}
            _d = np.tanh(c[_i0, _i1])
            _e = _d * 2.0
            f[_i1] += _e
    return (f, )


RUN_IN_PYTHON = ('jit_layer',)
jit_layer_kept = threading.local()


def jit_layer(a, b):
    # the large temporaries of jit_layer_core, made once per thread and reused by each call
    workspace = getattr(jit_layer_kept, "arrays", None)
    if workspace is None:
        workspace = jit_layer_kept.arrays = (
            np.empty((4, 2), np.float64),  # c
        )
    return jit_layer_core(a, b, workspace)
"""


def test_an_output_is_never_a_kept_array_or_a_view_of_one(monkeypatch):
    monkeypatch.setattr(codegen, "WORKSPACE_MIN_SIZE", 8)

    def f(x, w):
        h = tnp.tanh(x @ w)
        return h.T, tnp.reshape(h * 2.0, (-1,)), x @ w, tnp.sum(h), tnp.sum(h * 3.0, axis=0)

    compiled = tg.jit(f)
    w = rng.standard_normal((3, 5))
    x1, x2 = rng.standard_normal((7, 3)), rng.standard_normal((7, 3))
    first = compiled(x1, w)
    saved = [np.copy(value) for value in first]
    second = compiled(x2, w)
    for kept, value in zip(first, saved):
        np.testing.assert_array_equal(kept, value)  # the second call changed none of the first call's arrays
    h = np.tanh(x2 @ w)
    for got, expected in zip(second, (h.T, (h * 2.0).reshape(-1), x2 @ w, h.sum(), (h * 3.0).sum(axis=0))):
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_threads_each_use_their_own_kept_arrays():
    grad = tg.jit(tg.grad(lambda w, x: tnp.sum(tnp.tanh(x @ w) ** 2)))
    w = rng.standard_normal((64, 128)) * 0.1
    inputs = [rng.standard_normal((512, 64)) for _ in range(4)]
    expected = [grad(w, x) for x in inputs]
    assert "_workspace" in grad.lower(w, inputs[0]).source
    wrong: list = []

    def work(index):
        for _ in range(20):
            if not np.allclose(grad(w, inputs[index]), expected[index], rtol=1e-12, atol=0):
                wrong.append(index)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not wrong


def test_parallel_loops_and_products_fill_kept_arrays(monkeypatch):
    monkeypatch.setattr(codegen, "WORKSPACE_MIN_SIZE", 8)
    monkeypatch.setattr(codegen, "PARALLEL_MIN_LIBM_CALLS", 8)
    monkeypatch.setattr(codegen, "PARALLEL_MIN_PRODUCT", 8)

    def f(x, w, b, v):
        return tnp.sum((tnp.tanh(x @ w + b) * 3.0) @ v)

    tg.config.parallel = True
    try:
        compiled = tg.jit(f)
    finally:
        tg.config.parallel = False
    x, w = rng.standard_normal((32, 4)), rng.standard_normal((4, 8))
    b, v = rng.standard_normal(8), rng.standard_normal(8)
    source = compiled.lower(x, w, b, v).source
    # the parallel loop writes into the product's kept array e, which it reads last
    assert "def jit_f_loop0(e, c):\n    i = e\n" in source and "numba.prange(32)" in source
    assert "e = tg_parallel_matmul_into(a, b, _workspace[0])" in source
    for scale in (1.0, 2.0):  # a second call refills the same arrays
        expected = np.sum((np.tanh((x * scale) @ w + b) * 3.0) @ v)
        np.testing.assert_allclose(compiled(x * scale, w, b, v), expected, rtol=1e-12)

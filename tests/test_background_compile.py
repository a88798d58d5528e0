"""A new program runs at once with NumPy while numba compiles it in a background thread."""
import collections
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import codegen, concurrency


@pytest.fixture
def in_background():
    saved = tg.config.backend, tg.config.compile_in_background
    tg.config.backend, tg.config.compile_in_background = "numba", True
    yield
    tg.config.backend, tg.config.compile_in_background = saved


def test_wait_for_compiles_returns_when_the_compiled_code_is_in_place(in_background):
    jitted = tg.jit(lambda x: tnp.sum(tnp.exp(x)))
    assert jitted(np.zeros(3)) == 3.0
    tg.wait_for_compiles()
    assert hasattr(jitted.lower(np.zeros(3)).compiled.function, "py_func")  # a numba dispatcher
    assert jitted(np.zeros(3)) == 3.0


def test_first_calls_run_numpy_then_numba_with_the_same_results(in_background):
    def loss(w, x):
        return tnp.sum(tnp.tanh(x @ w) ** 2) + 0.5 * tnp.sum(w * w)

    w, x = np.linspace(-1, 1, 12).reshape(4, 3), np.linspace(0, 2, 8).reshape(2, 4)
    gradient = tg.value_and_grad(loss)
    first = gradient(w, x)
    assert type(first[0]) is float and first[1].shape == (4, 3)
    assert not hasattr(gradient.lower(w, x).compiled.function, "py_func")  # NumPy's stand-in for now
    tg.wait_for_compiles()
    later = gradient(w, x)
    assert type(later[0]) is float
    assert later[0] == pytest.approx(first[0], rel=1e-13)
    np.testing.assert_allclose(later[1], first[1], rtol=1e-12)


def test_a_failed_background_compile_is_raised_not_hidden(in_background, monkeypatch):
    def broken_load(source, name, backend):
        if backend == "numba":
            raise RuntimeError("numba could not compile this")
        return real_load(source, name, backend)

    real_load = codegen.load
    monkeypatch.setattr(codegen, "load", broken_load)
    jitted = tg.jit(lambda x: x * 3.0 + 0.25)
    with pytest.warns(RuntimeWarning, match="numba could not compile"):
        assert jitted(2.0) == 6.25  # NumPy's answer while numba works
        tg.wait_for_compiles()
    deadline = time.monotonic() + 60
    with pytest.raises(RuntimeError, match="could not compile"):
        while time.monotonic() < deadline:
            jitted(2.0)
            time.sleep(0.05)


def test_a_short_process_waits_for_its_compile_so_the_next_one_starts_warm(tmp_path):
    script = textwrap.dedent("""
        import numpy as np
        import tracegrad as tg
        import tracegrad.numpy as tnp
        grad = tg.grad(lambda x: tnp.sum(tnp.sin(x) * x))
        value = grad(np.linspace(0, 1, 5))
        function = grad.lower(np.linspace(0, 1, 5)).compiled.function
        stats = getattr(function, "stats", None)  # numba's dispatcher, or NumPy's stand-in
        print(float(value.sum()), stats and sum(stats.cache_hits.values()), stats and sum(stats.cache_misses.values()))
    """)
    environment = {"TRACEGRAD_CACHE_DIR": str(tmp_path), "PATH": "", "PYTHONPATH": str(Path(__file__).parents[1])}
    run = lambda: subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                                 check=True, timeout=300).stdout.split()
    cold_value, *cold_stats = run()
    assert cold_stats == ["None", "None"]  # the first call ran NumPy's code while numba compiled
    (entry,) = tmp_path.glob("tg_*")  # the compile finished before the process exited
    assert (entry / "compiled").exists() and list(entry.glob("*.nbi"))
    warm_value, *warm_stats = run()
    assert warm_value == cold_value
    assert warm_stats == ["1", "0"]  # numba's code from the first call, loaded from the cache: no compile


def test_the_compile_thread_keeps_no_workspace_arrays(in_background, monkeypatch):
    # the compile thread runs each new program once to compile it: the large temporaries the program
    # keeps per thread (its workspace) must not stay with that thread for the rest of the process
    monkeypatch.setattr(codegen, "WORKSPACE_MIN_SIZE", 8)
    jitted = tg.jit(lambda x, w: tnp.sum(tnp.tanh(x @ w) * 1.75, axis=0))
    x, w = np.ones((40, 3)), np.full((3, 2), 0.5)
    want = np.full(2, 40 * np.tanh(1.5) * 1.75)
    np.testing.assert_allclose(jitted(x, w), want, rtol=1e-14)  # NumPy's code while numba compiles
    tg.wait_for_compiles()
    np.testing.assert_allclose(jitted(x, w), want, rtol=1e-14)  # numba's code, with this thread's workspace
    compiled = jitted.lower(x, w).compiled
    assert "numpy_function" in vars(compiled)  # so numba's code was compiled on the compile thread
    function = compiled.function
    (kept,) = [value for value in function.__globals__.values() if isinstance(value, threading.local)]
    assert hasattr(kept, "arrays")
    on_compile_thread = []
    concurrency.submit(lambda: on_compile_thread.append(vars(kept).copy()))
    tg.wait_for_compiles()
    assert on_compile_thread == [{}]


def test_a_failure_to_mark_the_disk_cache_does_not_fail_the_compiled_function(in_background, monkeypatch):
    def broken_mark_compiled(source):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(codegen, "mark_compiled", broken_mark_compiled)
    jitted = tg.jit(lambda x: tnp.sum(tnp.cos(x) * 1.375))
    assert jitted(np.zeros(4)) == 5.5  # NumPy's code while numba compiles
    with pytest.warns(RuntimeWarning, match="could not note jit_fun as compiled in the disk cache"):
        tg.wait_for_compiles()
    assert jitted(np.zeros(4)) == 5.5
    assert hasattr(jitted.lower(np.zeros(4)).compiled.function, "py_func")  # numba's code


def test_a_request_interrupted_as_it_is_made_is_made_again(in_background, monkeypatch):
    # a Ctrl-C right after the program was marked as queued, before its job was: it used to stay marked,
    # and run NumPy's code for good
    def interrupted_submit(job):
        monkeypatch.setattr(concurrency, "submit", real_submit)
        raise KeyboardInterrupt

    real_submit = concurrency.submit
    monkeypatch.setattr(concurrency, "submit", interrupted_submit)
    jitted = tg.jit(lambda x: tnp.sum(tnp.sin(x) + 1.125))
    with pytest.raises(KeyboardInterrupt):
        jitted(np.zeros(2))
    assert jitted(np.zeros(2)) == 2.25  # NumPy's code, and the compile asked for again
    tg.wait_for_compiles()
    assert jitted(np.zeros(2)) == 2.25
    assert hasattr(jitted.lower(np.zeros(2)).compiled.function, "py_func")  # numba's code


class QueueInterruptedOnce(collections.deque):
    """The compile queue, with a Ctrl-C in the next job pushed out, as it leaves the queue."""

    def popleft(self):
        job = super().popleft()
        if threading.current_thread() is threading.main_thread() and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return job

    interrupted = False


def test_jobs_a_ctrl_c_in_the_queue_loses_are_asked_for_again(in_background, monkeypatch):
    # a Ctrl-C between a full queue's pushing out its oldest job and taking the new one: both functions
    # used to stay marked as queued with no job in the queue, and ran NumPy's code for good
    monkeypatch.setattr(concurrency, "MAX_PENDING", 1)
    monkeypatch.setattr(concurrency, "_pending", QueueInterruptedOnce())
    functions = [tg.jit(lambda x, c=c: tnp.sum(tnp.cos(x) * c)) for c in (1.5, 2.5, 3.5)]
    x = np.zeros(2)
    with concurrency._job_lock:  # the compile thread waits to run the first job: the next one stays queued
        assert functions[0](x) == 3.0
        deadline = time.monotonic() + 30
        while concurrency._pending and time.monotonic() < deadline:
            time.sleep(0.001)
        assert functions[1](x) == 5.0  # queued
        with pytest.raises(KeyboardInterrupt):
            functions[2](x)  # pushes out the job of functions[1], and is interrupted
    tg.wait_for_compiles()
    for c, function in zip((1.5, 2.5, 3.5), functions):  # one at a time, as the queue holds one
        assert function(x) == 2 * c  # numba's code, or NumPy's asking again for a compile it has not got
        tg.wait_for_compiles()
        assert function(x) == 2 * c
        assert hasattr(function.lower(x).compiled.function, "py_func")  # numba's code

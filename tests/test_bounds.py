"""Memory, disk and exit time stay bounded however many distinct signatures a process meets."""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


def run_script(script: str, cache: Path, timeout: float = 300, **environment) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=str(cache), TRACEGRAD_BACKEND="numba",
               PYTHONPATH=str(Path(__file__).parents[1]), **environment)
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture
def max_signatures():
    saved = tg.config.max_signatures
    tg.config.max_signatures = 4
    yield
    tg.config.max_signatures = saved


def test_a_function_keeps_its_most_recent_signatures(backend, max_signatures):
    grad = tg.grad(lambda x: tnp.sum(tnp.sin(x) * x))
    for n in range(1, 11):
        x = np.linspace(0.0, 1.0, n)
        np.testing.assert_allclose(grad(x), np.sin(x) + x * np.cos(x), rtol=1e-12)
    assert len(grad.cache) == 4
    np.testing.assert_allclose(grad(np.ones(1)), [np.sin(1.0) + np.cos(1.0)], rtol=1e-12)  # dropped, traced again
    assert len(grad.cache) == 4


def test_the_signature_the_fast_lane_calls_is_kept(backend, max_signatures):
    f = tg.jit(lambda x: x * 2.0)
    hot = np.ones(1)
    f(hot)
    f(hot)  # the fast lane now calls this signature without touching the cache's order
    for n in range(2, 9):
        f(np.ones(n))
        f(hot)
    assert f.key((hot,), []) in f.cache


def test_numba_compiles_a_bounded_number_of_programs_then_numpy_runs_the_rest(tmp_path):
    run = run_script("""
        import warnings
        import numpy as np
        import tracegrad as tg
        import tracegrad.numpy as tnp
        from tracegrad import codegen
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            f = tg.grad(lambda x: tnp.sum(tnp.tanh(x) * x))
            for n in range(1, 7):
                x = np.linspace(0.0, 1.0, n)
                np.testing.assert_allclose(f(x), np.tanh(x) + x * (1 - np.tanh(x) ** 2), rtol=1e-12)
                np.testing.assert_allclose(f(x), np.tanh(x) + x * (1 - np.tanh(x) ** 2), rtol=1e-12)
        said = [w for w in caught if "max_compiled_programs" in str(w.message)]
        print(len(codegen._numba_loaded), len(said), said[0].filename == "<string>")
    """, tmp_path, TRACEGRAD_MAX_COMPILED_PROGRAMS="3", TRACEGRAD_BACKGROUND_COMPILE="0")
    assert run.stdout.split() == ["3", "1", "True"]  # said once, at the user's line


def test_many_shapes_keep_memory_and_the_exit_short(tmp_path):
    # a user looping over variable-length data: each shape is a new signature
    run = run_script("""
        import time
        import numpy as np
        import tracegrad as tg
        import tracegrad.numpy as tnp
        from tracegrad import concurrency

        def resident_mb():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2 ** 20

        f = tg.value_and_grad(lambda w, x: tnp.sum(tnp.tanh(x @ w) ** 2))
        w = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
        f(w, np.ones((1, 4)))
        tg.wait_for_compiles()
        start, most_pending = resident_mb(), 0
        for n in range(2, 402):
            f(w, np.linspace(0.0, 1.0, 4 * n).reshape(n, 4))
            most_pending = max(most_pending, tg.cache_info()["pending_compiles"])
        print(round(resident_mb() - start), most_pending, tg.cache_info()["compiles"], flush=True)
        print(time.time(), flush=True)
    """, tmp_path, timeout=600, TRACEGRAD_BACKGROUND_COMPILE="1", TRACEGRAD_EXIT_WAIT_SECONDS="2")
    ended = time.time()
    growth_mb, most_pending, compiles, loop_end = run.stdout.split()
    assert int(most_pending) <= 9  # the queue (8) and the compile running
    assert int(growth_mb) < 150, run.stdout  # 400 signatures compiled would take 500-900 MB
    assert ended - float(loop_end) < 2 + 10  # the exit waited about TRACEGRAD_EXIT_WAIT_SECONDS


def test_the_disk_cache_removes_the_entries_used_longest_ago(tmp_path):
    cache = tmp_path / "cache"
    run_script("""
        import numpy as np
        import tracegrad as tg
        import tracegrad.numpy as tnp
        for k in range(12):
            f = tg.grad(lambda x, k=k: tnp.sum(tnp.sin(x * (k + 1.0)) * tnp.exp(x)))
            f(np.linspace(0.0, 1.0, 5))
    """, cache, TRACEGRAD_BACKGROUND_COMPILE="0", TRACEGRAD_CACHE_MAX_MB="0.25")
    entries = list(cache.glob("tg_*"))
    size = sum(path.stat().st_size for path in cache.rglob("*") if path.is_file())
    assert 0 < len(entries) < 12
    assert size < 1.5 * 0.25 * 2 ** 20

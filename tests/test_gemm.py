"""tracegrad.gemm: the blocked matrix product that generated numba code calls."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tracegrad import gemm, numba_jit

rng = np.random.default_rng(0)

SHAPES = [  # (m, k, n): whole blocks, edges in every direction, k over one chunk, n over one column block
    (12, 8, 32), (7, 3, 9), (100, 16, 16), (13, 5, 17), (6, 1, 16), (300, 600, 70), (20, 40, 300),
    (5, 5, 5), (1, 4, 20), (20, 4, 1), (13, 0, 17), (40, 300, 10), (38, 20, 48),
]


def layouts(m, k, n):
    """a and b row-major, each transposed, and a non-contiguous a or b."""
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    yield a, b
    yield rng.standard_normal((k, m)).T, b
    yield a, rng.standard_normal((n, k)).T
    yield rng.standard_normal((2 * m, k))[::2], b
    yield rng.standard_normal((k, m)).T, rng.standard_normal((k, 2 * n))[:, ::2]


@pytest.mark.parametrize("m, k, n", SHAPES)
def test_blocked_matmul_matches_numpy_for_every_shape_and_layout(m, k, n):
    for a, b in layouts(m, k, n):
        for product in (gemm.blocked_matmul(a, b), gemm.tg_matmul(a, b), gemm.parallel_matmul(a, b)):
            assert product.shape == (m, n) and product.flags.c_contiguous
            np.testing.assert_allclose(product, a @ b, rtol=1e-12, atol=1e-12)


def test_matmul_into_fills_the_given_array():
    a, b = rng.standard_normal((50, 70)), rng.standard_normal((70, 40))
    for matmul_into in (gemm.tg_matmul_into, gemm.parallel_matmul_into):
        out = np.full((50, 40), np.nan)
        assert matmul_into(a, b, out) is out
        np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_the_blas_fallback_matches_numpy_for_every_layout():  # what hosts without AVX-512 run
    matmul, matmul_into = (numba_jit.jit_compile(f) for f in (gemm.blas_matmul, gemm.blas_matmul_into))
    for a, b in layouts(13, 5, 17):
        np.testing.assert_allclose(matmul(a, b), a @ b, rtol=1e-12)
        out = np.empty((13, 17))
        assert matmul_into(a, b, out) is out
        np.testing.assert_allclose(out, a @ b, rtol=1e-12)


def test_a_strided_operand_compiles_without_numbas_performance_warning():
    # numba warns once per process, when it first compiles np.dot for a strided type: a fresh process
    script = textwrap.dedent("""
        import numpy as np
        from tracegrad import gemm
        a, b = np.ones((14, 6))[::2], np.ones((6, 5))
        assert (gemm.tg_matmul(a, b) == 6.0).all() and (gemm.tg_matmul(b.T, a.T) == 6.0).all()
    """)
    environment = dict(os.environ, TRACEGRAD_DISABLE_CACHE="1")
    run = subprocess.run([sys.executable, "-W", "always", "-c", script], env=environment, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "NumbaPerformanceWarning" not in run.stderr



FORCED_PATH = textwrap.dedent("""
    import numpy as np
    import tracegrad as tg
    import tracegrad.numpy as tnp
    from tracegrad import gemm
    tg.config.compile_in_background = False
    rng = np.random.default_rng(0)
    def loss(w, x):
        return tnp.sum(tnp.tanh(x @ w) @ w.T)
    for m, k, n in [(1, 7, 17), (17, 255, 7), (255, 17, 1)]:  # odd shapes; the products' operands transposed
        w, x = rng.standard_normal((k, n)), rng.standard_normal((m, k))
        value, grad = tg.jit(tg.value_and_grad(loss))(w, x)
        tg.config.backend = "python"
        expected_value, expected_grad = tg.jit(tg.value_and_grad(loss))(w, x)
        tg.config.backend = "numba"
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-11, atol=1e-12)
        a, b = rng.standard_normal((2 * m, k))[::2], rng.standard_normal((n, k)).T  # strided, transposed
        np.testing.assert_allclose(gemm.tg_matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    print(gemm.GEMM_PATH)
""")


@pytest.mark.parametrize("choice", ["blas", "blocked"])
def test_each_forced_product_path_runs_and_agrees_with_numpy(choice):
    """TRACEGRAD_GEMM forces a path (a fresh process: the choice is made at import); "blocked" on a
    CPU without AVX-512 falls back to BLAS with a warning."""
    environment = dict(os.environ, TRACEGRAD_GEMM=choice)
    run = subprocess.run([sys.executable, "-c", FORCED_PATH], env=environment, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    expected = "tracegrad's AVX-512 kernel" if choice == "blocked" and gemm.has_avx512() else "BLAS"
    assert run.stdout.strip().splitlines()[-1] == expected
    if choice == "blocked" and not gemm.has_avx512():
        assert "needs a CPU with AVX-512" in run.stderr


def test_an_unknown_product_path_is_refused_by_name():
    run = subprocess.run([sys.executable, "-c", "import tracegrad"], env=dict(os.environ, TRACEGRAD_GEMM="avx9"),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "TRACEGRAD_GEMM='avx9': choose one of auto, blocked, blas" in run.stderr

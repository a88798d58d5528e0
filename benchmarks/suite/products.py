"""Which float32 product compiled code should call: tracegrad's GEMM kernel made float32, or BLAS's sgemm.

Run from the repository root: `python benchmarks/suite/products.py`. Pinned to one core and one
thread (as bench_core.py is). For each product of W5's and W6's SGD step (batch 256 and 4,096; the
forward products, and the backward ones with their transposed operands) it times, sampled in turn
(median of 7 rounds):

  kernel32   tracegrad.gemm's blocked kernel with its vector type made <16 x float> (its panels
             32 columns wide), built here from gemm.py's source by substituting the types
  sgemm      BLAS's float32 product, what generated code calls for float32 matrices (gemm.tg_matmul)
  kernel64   tracegrad.gemm's float64 kernel on the same shapes in float64, for scale

and prints each product, then the sum per batch. Results are checked against NumPy first.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import suite.threads  # noqa: E402  (first: pins the thread pools before NumPy is imported)

CORE = suite.threads.pin_to_one_core()

import numba  # noqa: E402
import numpy as np  # noqa: E402

from tracegrad import gemm  # noqa: E402

# gemm.py's kernel, with 16 float32 lanes where it has 8 float64 ones
FLOAT32_SUBSTITUTIONS = [
    ("Float64x8", "Float32x16"), ("float64x8", "float32x16"), ("ir.DoubleType(), 8", "ir.FloatType(), 16"),
    ("[0.0] * 8", "[0.0] * 16"), ("ir.IntType(32), 8), [0] * 8", "ir.IntType(32), 16), [0] * 16"),
    ("llvm.fma.v8f64", "llvm.fma.v16f32"), ("types.float64", "types.float32"), ("align=8", "align=4"),
    ("MR, NR = 6, 16", "MR, NR = 6, 32"), ("b_start + k * NR + 8", "b_start + k * NR + 16"),
    ("load8(c, at + 8)", "load8(c, at + 16)"), ("store8(c, at + 8, right)", "store8(c, at + 16, right)"),
    ("store8(out, start + k * NR + 8, load8(b_rows, at + 8))",
     "store8(out, start + k * NR + 16, load8(b_rows, at + 16))"),
    ("i0 + 8 <= k_step", "i0 + 16 <= k_step"), ("np.empty(MR * KC + 2)", "np.empty(MR * KC + 10, np.float32)"),
    ("np.empty((a.shape[0], b.shape[1]))", "np.empty((a.shape[0], b.shape[1]), np.float32)"),
    ("np.empty(min(KC, depth_total) * min(NC, (n + NR - 1) // NR * NR))",
     "np.empty(min(KC, depth_total) * min(NC, (n + NR - 1) // NR * NR), np.float32)"),
    ("np.empty(MR * NR)", "np.empty(MR * NR, np.float32)"),
]
COMPILED = ["store_row", "micro_kernel", "pack_panels", "pack_sliver", "blas_is_faster", "operands", "multiply_rows",
            "blocked_matmul_into", "blocked_matmul"]


def float32_kernel():
    """gemm.py's kernel code (up to its BLAS wrappers) with float32 vectors, compiled uncached."""
    source = open(gemm.__file__).read()
    source = source[:source.index("def blas_matmul(a, b):")]
    source = source.replace("from . import disk_cache\n", "").replace("from .numba_jit", "from tracegrad.numba_jit")
    for old, new in FLOAT32_SUBSTITUTIONS:
        if old not in source:
            raise RuntimeError(f"gemm.py changed: {old!r} is not in it")
        source = source.replace(old, new)
    module = types.ModuleType("gemm_float32")
    exec(compile(source, "gemm_float32", "exec"), module.__dict__)
    for name in COMPILED:
        setattr(module, name, module.jit_compile(getattr(module, name), None, inline=name == "micro_kernel"))
    return module


def products(batch: int):
    """(name, a, b) of W5/W6's step: x@W1, h1@W2, h2@W3, then the backward products (transposed operands)."""
    return [("x @ W1", (batch, 64), (64, 128), ""), ("h1 @ W2", (batch, 128), (128, 128), ""),
            ("h2 @ W3", (batch, 128), (128, 10), ""), ("g3 @ W3.T", (batch, 10), (10, 128), "bT"),
            ("h2.T @ g3", (128, batch), (batch, 10), "aT"), ("g2 @ W2.T", (batch, 128), (128, 128), "bT"),
            ("h1.T @ g2", (128, batch), (batch, 128), "aT"), ("x.T @ g1", (64, batch), (batch, 128), "aT")]


def operand(rng, shape, transposed: bool, dtype):
    values = rng.standard_normal(shape[::-1] if transposed else shape).astype(dtype)
    return values.T if transposed else values


def per_call(function, a, b, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function(a, b)
    return (time.perf_counter() - start) / calls


def main() -> None:
    kernel32 = float32_kernel()
    rows = {"kernel32": numba.njit(lambda a, b: kernel32.blocked_matmul(a, b)),
            "sgemm": numba.njit(lambda a, b: gemm.blas_operand(a) @ gemm.blas_operand(b)),
            "kernel64": numba.njit(lambda a, b: gemm.blocked_matmul(a, b))}
    import llvmlite.binding as llvm

    host = llvm.get_host_cpu_features()
    print(f"float32 products: {llvm.get_host_cpu_name()}, "
          f"{', '.join(f for f in ('avx2', 'fma', 'avx512f', 'avx512vl') if host.get(f))}; {CORE}; "
          f"load average {os.getloadavg()[0]:.2f} at the start")
    print("  median of 7 rounds, the three sampled in turn; microseconds per product\n")
    rng = np.random.default_rng(0)
    for batch in (256, 4096):
        totals = dict.fromkeys(rows, 0.0)
        print(f"  batch {batch:>5} {'':<12} {'kernel32':>9} {'sgemm':>9} {'kernel64':>9}  kernel32/sgemm")
        for name, a_shape, b_shape, transposed in products(batch):
            a32, b32 = operand(rng, a_shape, transposed == "aT", np.float32), operand(rng, b_shape, transposed == "bT",
                                                                                       np.float32)
            arguments = {"kernel32": (a32, b32), "sgemm": (a32, b32),
                         "kernel64": (a32.astype(np.float64), b32.astype(np.float64))}
            expected = a32.astype(np.float64) @ b32.astype(np.float64)
            for key, function in rows.items():
                np.testing.assert_allclose(function(*arguments[key]), expected, rtol=1e-3, atol=1e-3)
            calls = 100 if batch == 256 else 10
            samples = {key: [] for key in rows}
            for _ in range(7):
                for key, function in rows.items():
                    samples[key].append(per_call(function, *arguments[key], calls) * 1e6)
            medians = {key: statistics.median(values) for key, values in samples.items()}
            for key in rows:
                totals[key] += medians[key]
            print(f"  {name:<12} {str(a_shape) + ('.T' if transposed == 'aT' else ''):>12} "
                  + " ".join(f"{medians[key]:>9.1f}" for key in rows)
                  + f"  {medians['kernel32'] / medians['sgemm']:.2f}")
        print(f"  {'sum':<25} " + " ".join(f"{totals[key]:>9.1f}" for key in rows)
              + f"  {totals['kernel32'] / totals['sgemm']:.2f}\n")


if __name__ == "__main__":
    main()

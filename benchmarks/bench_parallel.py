"""tg.config.parallel on and off, side by side: W5's net, and the same net with sine activations.

    python benchmarks/bench_parallel.py

The issue's rule: parallel loops are off by default and, when a user turns them on for a batch
of 4,096 or more, the step must not be slower than the serial one. Unlike bench_core.py this
script uses every core (numba's thread pool as numba sizes it; BLAS on one thread, as there):
that is what `parallel = True` is for. Both steps are built in one process, their results are
checked against each other, then timed in alternating samples so that a busy spell of the
shared machine hits both.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TRACEGRAD_BACKGROUND_COMPILE", "0")  # time compiled code from the first sample
for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[name] = "1"  # BLAS on one thread; numba's own pool is not limited by these

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dataclasses  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
from suite import impl_tracegrad, workloads  # noqa: E402
from suite.timing import Timing, calibrate, loop_seconds  # noqa: E402

SAMPLES = 9
CASES = [("tanh", 256), ("tanh", 4096), ("tanh", 16384), ("sin", 256), ("sin", 4096), ("sin", 16384)]


def build(workload, parallel: bool):
    tg.config.parallel = parallel  # read when the transformation is created
    try:
        step = impl_tracegrad.build_step(workload)
    finally:
        tg.config.parallel = False
    step.fn(*step.args)  # compile
    return step


def agree(a, b) -> bool:
    leaves_a, leaves_b = tg.tree_flatten(a)[0], tg.tree_flatten(b)[0]
    return len(leaves_a) == len(leaves_b) and all(
        np.allclose(x, y, rtol=1e-9, atol=1e-12) for x, y in zip(leaves_a, leaves_b))


def jax_adapter():
    """suite.impl_jax, or None when JAX is not installed (its column is then left out)."""
    try:
        from suite import impl_jax
    except ImportError:
        return None
    return impl_jax


def threaded_ops(step) -> int:
    """Parallel loops and products in the generated code; 0: the same code as the serial step."""
    code = [line for line in step.fn.lower(*step.args).source.splitlines() if not line.lstrip().startswith("#")]
    return sum(("numba.prange" in line) + ("tg_parallel_matmul" in line) for line in code)


def median_times(steps) -> list[float]:
    """Per-step medians of alternating samples, so a busy spell of the shared machine hits every step."""
    counts = [calibrate(s.fn, s.args, Timing().sample_seconds, loop_seconds(s.fn, s.args, 1)) for s in steps]
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(SAMPLES):
        for i, step in enumerate(steps):
            times[i].append(loop_seconds(step.fn, step.args, counts[i]) / counts[i])
    return [statistics.median(t) for t in times]


def main() -> None:
    import numba

    jax = jax_adapter()
    print(f"tracegrad {tg.__version__}, numba {numba.__version__}, {os.cpu_count()} CPUs, "
          f"numba threads {numba.config.NUMBA_NUM_THREADS}, BLAS on 1 thread; per step: median of "
          f"{SAMPLES} alternating samples of >= 50 ms; "
          + (f"JAX {jax.jax.__version__} jit(value_and_grad + update), XLA's own threads" if jax else
             "JAX not installed (pip install jax): its column is left out") + "\n")
    print("  W5's MLP 64-128-128-10, one SGD step; its tanh runs in NumPy's SIMD loop, its sine in numba's loops")
    print(f"  {'hidden, batch':<14} {'threaded ops':>12} {'serial':>10} {'parallel':>10} {'parallel / serial':>18}"
          + (f" {'JAX':>10} {'parallel / JAX':>15}" if jax else ""))
    for hidden, batch in CASES:
        key = f"{hidden}, {batch}"
        workload = workloads.classifier(batch, key)
        workload = dataclasses.replace(workload, mlp=dataclasses.replace(workload.mlp, hidden=hidden))
        steps = [build(workload, False), build(workload, True)]
        results = [step.fn(*step.args) for step in steps]
        if jax:
            steps.append(jax.build_step(workload))
            results.append(steps[-1].read(steps[-1].fn(*steps[-1].args)))
        if not all(agree(results[0], result) for result in results[1:]):
            raise SystemExit(f"{key}: the steps' results differ")
        medians = median_times(steps)
        line = (f"  {key:<14} {threaded_ops(steps[1]):>12} {medians[0] * 1e3:>7.2f} ms {medians[1] * 1e3:>7.2f} ms "
                f"{medians[1] / medians[0]:>18.2f}")
        if jax:
            line += f" {medians[2] * 1e3:>7.2f} ms {medians[1] / medians[2]:>15.2f}"
        print(line)


if __name__ == "__main__":
    main()

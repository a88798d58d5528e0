"""W5 and W6 (batch 4,096) in float32: tracegrad's float32 step against its own float64 step, JAX's
float32 step and NumPy float32 by hand, sampled in turn.

Every row's loss and gradient, and its result after one step, are checked against tracegrad's
float64 results before anything is timed (float32 tolerances: rtol 1e-4, atol 1e-6 after one
step; rtol 1e-3, atol 1e-5 for gradients).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
import traceback

import numpy as np

from . import checks, workloads
from .timing import Timing, garbage_collector_paused, measure

WORKLOADS = ("W5", "W6/b4096")
STEP_RTOL, STEP_ATOL = 1e-4, 1e-6
GRADIENT_RTOL, GRADIENT_ATOL = 1e-3, 1e-5


def as_float32(workload):
    """The workload with its parameters and inputs in float32 (integer labels as they are)."""
    cast = lambda leaf: leaf.astype(np.float32) if np.asarray(leaf).dtype == np.float64 else leaf  # noqa: E731
    params, x, labels = workload.args
    params32 = [{key: cast(value) for key, value in layer.items()} for layer in params]
    return dataclasses.replace(workload, key=workload.key + " f32", args=(params32, cast(x), labels))


def dtypes(tree) -> set:
    from . import trees

    return {str(np.asarray(leaf).dtype) for leaf in trees.leaves(tree) if np.ndim(leaf)}


def implementations(loaded) -> list[tuple[str, object, bool]]:
    """(label, adapter, float32?) for each row: tracegrad float64 first (the checks' reference)."""
    adapters = {impl.key: impl for impl in loaded.implementations}
    rows = [("tracegrad float64 jit(step)", adapters["tracegrad"], False),
            ("tracegrad float32 jit(step)", adapters["tracegrad"], True)]
    if "jax" in adapters:
        rows.append(("JAX float32 jit(step)", adapters["jax"], True))
    rows.append(("NumPy float32, hand-written", adapters["numpy"], True))
    return rows


def run(loaded, timing: Timing, rounds: int) -> bool:
    """Check, then time every row of each float32 workload; print the table. False if a check failed."""
    print("\nfloat32: W5 and W6 at batch 4,096 (rows sampled in turn, one sample of each per round; "
          f"median of {rounds} rounds)")
    print(f"  CPU: {cpu_description()}; load average {os.getloadavg()[0]:.2f} at the start")
    print(f"  checks before timing, against tracegrad's float64 step: the result of one step (rtol {STEP_RTOL:g}, "
          f"atol {STEP_ATOL:g}), loss and gradient (rtol {GRADIENT_RTOL:g}, atol {GRADIENT_ATOL:g}), "
          "every array float32")
    ok = True
    for key in WORKLOADS:
        workload = workloads.get(key)
        workload32 = as_float32(workload)
        built, expected, first_calls = [], None, {}
        for label, adapter, is_float32 in implementations(loaded):
            chosen = workload32 if is_float32 else workload
            try:
                start = time.perf_counter()
                step = adapter.build_step(chosen)
                after_step = step.read(step.fn(*step.args))
                first_calls[label] = time.perf_counter() - start
                gradient = adapter.value_and_grad(chosen)
            except Exception:  # noqa: BLE001  (the row is reported, the others run)
                print(f"  {key} {label}: ERROR\n{traceback.format_exc()}")
                ok = False
                continue
            if expected is None:
                expected = (after_step, gradient)
            else:
                problem = (checks.mismatch(after_step, expected[0], STEP_RTOL, STEP_ATOL)
                           or checks.mismatch(gradient, expected[1], GRADIENT_RTOL, GRADIENT_ATOL))
                kinds = dtypes(after_step[1]) | dtypes(gradient[1])
                if problem is None and kinds != {"float32"}:
                    problem = f"results of dtypes {sorted(kinds)}, not float32"
                if problem:
                    print(f"  {key} {label}: FAILED ({problem})")
                    ok = False
                    continue
            built.append((label, step))
        samples: dict[str, list[float]] = {label: [] for label, _ in built}
        one_sample = dataclasses.replace(timing, samples=1, slow_samples=1)
        for _ in range(rounds):
            for label, step in built:
                with garbage_collector_paused():
                    samples[label].append(measure(step.fn, step.args, one_sample).per_call)
        medians = {label: statistics.median(values) for label, values in samples.items()}
        spreads = {label: (max(values) - min(values)) / medians[label] for label, values in samples.items()}
        print(f"\n  {workload32.title.replace(key, key + ' float32', 1)}")
        print(f"  {'row':<32} {'first call':>10} {'per step':>11} {'spread':>7} {'vs tg f64':>10} {'vs JAX f32':>11}")
        f64 = medians.get("tracegrad float64 jit(step)")
        jax32 = medians.get("JAX float32 jit(step)")
        for label, median in medians.items():
            vs_f64 = f"{median / f64:.2f}x" if f64 else "-"
            vs_jax = f"{median / jax32:.2f}x" if jax32 else "-"
            print(f"  {label:<32} {first_calls[label]:>8.2f} s {median * 1e3:>8.3f} ms {spreads[label]:>6.0%} "
                  f"{vs_f64:>10} {vs_jax:>11}")
    print(f"\n  load average {os.getloadavg()[0]:.2f} at the end")
    return ok


def cpu_description() -> str:
    """The CPU's name (as LLVM knows it) and its vector features."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    wanted = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl")
    return f"{llvm.get_host_cpu_name()} ({', '.join(f for f in wanted if features.get(f))})"

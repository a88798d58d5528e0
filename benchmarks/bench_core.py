"""tracegrad against hand-written numba and NumPy code and the AD libraries that are installed.

Run from the repository root:

    python benchmarks/bench_core.py                  # all workloads, all installed peers
    python benchmarks/bench_core.py --quick          # smoke test: short samples
    python benchmarks/bench_core.py --workloads W4,W5 --implementations tracegrad,jax
    python benchmarks/bench_core.py --float32         # only the float32 rows of W5 and W6 (batch 4,096)

    # the path of a CPU without AVX-512, on one that has it: BLAS's AVX2 kernels for the products,
    # numba's code compiled for Haswell (AVX2 + FMA)
    TRACEGRAD_GEMM=blas OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell python benchmarks/bench_core.py

Workloads W1-W6 are described in suite/workloads.py, what is measured in benchmarks/README.md.
After them (with W5 or W6 selected), W5 and W6 at batch 4,096 in float32 (suite/float32.py).
Every implementation's loss and gradient (and its result after one step) is checked against
the hand-written numba reference (rtol 1e-9) before it is timed; the reference's gradient is
checked against central differences. The exit status is 1 if any check failed, any
implementation raised, or tracegrad (or numba/NumPy) did not import; else 0.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite.threads  # noqa: E402  (first: pins the thread pools before NumPy is imported)

CORE_PINNING = suite.threads.pin_to_one_core()  # before any library starts a thread

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from suite import checks, float32, registry, report, threads, workloads  # noqa: E402
from suite.implementation import Unsupported  # noqa: E402
from suite.report import Row  # noqa: E402
from suite.timing import Timing, garbage_collector_paused, measure  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("tracegrad") is None:  # run from a checkout that is not installed
    sys.path.insert(0, REPO_ROOT)


@dataclass
class Expected:
    """The reference's results for one workload."""
    after_step: Any  # (value, gradient) or, for an SGD step, (value, updated parameters)
    value_and_grad: Any


def disagreement(workload, gradient, after_step, expected: Expected) -> str | None:
    problem = checks.mismatch(gradient, expected.value_and_grad)
    if problem:
        return f"value and gradient: {problem}"
    problem = checks.mismatch(after_step, expected.after_step) if workload.lr is not None else None
    return f"after one step: {problem}" if problem else None


def run_row(implementation, workload, timing: Timing, expected: Expected | None) -> tuple[Row, Expected | None]:
    """Build, call once (the first-call time), check, then time one implementation of a workload.

    With expected None this is the reference: its results become the expected ones, and its
    gradient is checked against central differences instead.
    """
    row = Row(workload.key, implementation.label, implementation.key)
    try:
        with garbage_collector_paused():
            start = time.perf_counter()
            step = implementation.build_step(workload)
            result = step.fn(*step.args)
            row.first_call = time.perf_counter() - start
            after_step = step.read(result)
            gradient = after_step if workload.lr is None else implementation.value_and_grad(workload)
        if expected is None:
            expected = Expected(after_step, gradient)
            problem = checks.central_difference_mismatch(workload, gradient[1])
        else:
            problem = disagreement(workload, gradient, after_step, expected)
        if problem:
            row.status, row.note = "FAILED", problem
            return row, expected
        row.measurement = measure(step.fn, step.args, timing)
    except Unsupported as reason:
        row.status, row.note = "skipped", str(reason)
    except Exception as error:  # noqa: BLE001  (reported in the table, the run goes on)
        row.status, row.note = "ERROR", f"{type(error).__name__}: {error}".splitlines()[0][:200]
        row.details = traceback.format_exc()
    return row, expected


def run_workload(workload, implementations, timing: Timing) -> list[Row]:
    print(f"\n{workload.title}", flush=True)
    rows, expected = [], None
    for implementation in implementations:
        if workload.kind not in implementation.kinds:
            continue
        if rows and expected is None:
            rows.append(Row(workload.key, implementation.label, implementation.key, "ERROR",
                            note="no reference result to check against"))
        else:
            row, expected = run_row(implementation, workload, timing, expected)
            rows.append(row)
        reference = rows[0].measurement
        if rows[-1].measurement and reference:
            rows[-1].ratio = rows[-1].measurement.per_call / reference.per_call
        report.print_row(rows[-1])
    return rows


def print_header(options, timing: Timing, loaded: registry.Loaded, tracegrad_note: str) -> None:
    import numpy as np

    from tracegrad import gemm

    print("tracegrad benchmark" + (" (--quick: short samples, not for quoting)" if options.quick else ""))
    print(f"  python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs; {', '.join(loaded.versions)}")
    for note in loaded.notes:
        print(f"  {note}")
    for error in loaded.errors:
        print("  ERROR: " + error.rstrip().replace("\n", "\n    "))
    print(f"  threads pinned to one: {threads.describe()}; {CORE_PINNING}")
    print(f"  CPU: {float32.cpu_description()}; float64 products: {gemm.GEMM_PATH} (TRACEGRAD_GEMM="
          f"{os.environ.get('TRACEGRAD_GEMM', 'auto')}); numba code for NUMBA_CPU_NAME="
          f"{os.environ.get('NUMBA_CPU_NAME', 'host')}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'auto')}")
    print(f"  per step: median of {timing.samples} samples, each a loop of >= {timing.sample_seconds * 1e3:g} ms;"
          f" a call of >= {timing.slow_call_seconds:g} s is timed by {timing.slow_samples} single-call sample(s)"
          " instead (see 'samples'); garbage collector off during timed calls (collected before each sample)")
    print(f"  checks before timing: loss and gradient, and the result of one step, against the numba reference "
          f"(rtol {checks.RTOL:g}, atol {checks.ATOL:g}); the reference's gradient against central differences")
    print("  first call: building the step and calling it once, compiling included")
    print(f"  tracegrad: {tracegrad_note}")
    print("  PyTorch and micrograd steps update their own parameters, so they go on training from call to call;"
          " the others are pure and are called again on the same arguments")
    if not options.float32:
        print()
        report.print_table_header()


def prepare_tracegrad(warm_cache: bool) -> tuple[str | None, str]:
    """Set tracegrad's environment before it is imported: (the temporary cache directory, a note).

    tracegrad's default runs a new program as NumPy code while numba compiles it in the
    background; here the first call compiles instead, so that it shows the compile time and
    every later call runs compiled code (bench_startup.py measures the default).
    """
    os.environ["TRACEGRAD_BACKGROUND_COMPILE"] = "0"
    if "tracegrad" in sys.modules:  # imported already (the moons example imports it): the setting is read at import
        sys.modules["tracegrad"].config.compile_in_background = False
    note = ("background compile off (TRACEGRAD_BACKGROUND_COMPILE=0): the first call traces and compiles, "
            "later calls run compiled code")
    if warm_cache:
        return None, f"{note}; its usual compile cache (--warm-cache), so a first call may load from it"
    directory = tempfile.mkdtemp(prefix="tracegrad-bench-cache-")
    os.environ["TRACEGRAD_CACHE_DIR"] = directory
    return directory, f"{note}; a new empty compile cache"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short samples, for a smoke test")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5,W6",
                        help="comma-separated: W1..W6, or one W6 batch such as W6/b16 (default: all)")
    parser.add_argument("--implementations", default="", help=f"comma-separated subset of "
                        f"{','.join(registry.KEYS)} (the numba reference always runs)")
    parser.add_argument("--samples", type=int, help="samples per row (default 7, 3 with --quick)")
    parser.add_argument("--sample-ms", type=float,
                        help="minimum length of one sample in ms (default 50, 2 with --quick)")
    parser.add_argument("--float32", action="store_true", help="only the float32 rows (W5 and W6 at batch "
                        "4,096: tracegrad float32 and float64, JAX float32, NumPy float32)")
    parser.add_argument("--float32-rounds", type=int, default=9, help="rounds of float32 samples (default 9)")
    parser.add_argument("--warm-cache", action="store_true", help="use tracegrad's usual compile cache "
                        "instead of an empty one (first calls may load instead of compiling)")
    options = parser.parse_args(argv)
    selected = {key.strip() for key in options.implementations.split(",") if key.strip()}
    unknown = selected - set(registry.KEYS)
    if unknown:
        parser.error(f"unknown implementation(s) {', '.join(sorted(unknown))}; choose from {', '.join(registry.KEYS)}")
    try:
        options.workload_keys = workloads.select(options.workloads.split(","))
    except ValueError as error:
        parser.error(str(error))
    options.selected = selected
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    timing = Timing(sample_seconds=(options.sample_ms or (2.0 if options.quick else 50.0)) / 1e3,
                    samples=options.samples or (3 if options.quick else 7),
                    slow_call_seconds=0.2 if options.quick else 0.5, slow_samples=1 if options.quick else 3)
    cache, tracegrad_note = prepare_tracegrad(options.warm_cache)
    try:
        loaded = registry.load(options.selected)
        print_header(options, timing, loaded, tracegrad_note)
        if not loaded.implementations or loaded.implementations[0].key != "numba":
            print("\nno numba reference: nothing can be checked")
            return 1
        rows = [] if options.float32 else [row for key in options.workload_keys
                                           for row in run_workload(workloads.get(key), loaded.implementations, timing)]
        float32_ok = True
        if options.float32 or {"W5", "W6/b4096"} & set(options.workload_keys):
            float32_ok = float32.run(loaded, timing, options.float32_rounds)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    if rows:
        report.print_summary(options.workload_keys, rows, registry.KEYS)
        report.print_problems(rows)
    bad = [f"{row.workload} {row.label}: {row.status}" for row in rows if row.status in ("FAILED", "ERROR")]
    bad += [] if float32_ok else ["a float32 row failed its check or raised"]
    bad += [error.splitlines()[0] for error in loaded.errors]
    print("\n" + ("FAILED: " + "; ".join(bad) if bad else "all checks passed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

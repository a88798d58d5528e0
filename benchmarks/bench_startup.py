"""Startup: how soon a fresh Python process gets W4's first gradient from tracegrad.

Run from the repository root:

    python benchmarks/bench_startup.py            # 3 runs of each measurement
    python benchmarks/bench_startup.py --runs 5

Each measurement runs `python -c CHILD` in a fresh subprocess (threads pinned to one, as in
bench_core.py); CHILD imports tracegrad, builds W4 (micrograd's moons MLP 2-16-16-1 with the
SVM loss, see suite/workloads.py) and prints the gradient of its loss with tg.grad.

  cold   TRACEGRAD_CACHE_DIR is a new empty directory. The time of W4's first tg.grad call
         (target <= 2 s), with tracegrad's default settings (a new program runs as NumPy code
         while numba compiles it in a background thread; the process waits at exit for the
         compile, so the whole process takes longer) and, for comparison, with
         TRACEGRAD_BACKGROUND_COMPILE=0 (the first call compiles).
  warm   the directory a cold run filled: the wall time of the whole process, interpreter
         start to exit (target <= 1.0 s).

Every run's printed gradient must equal the hand-written NumPy one (rtol 1e-9). The exit
status is 1 if a run failed or printed a wrong gradient; a missed target is printed, not fatal.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite.threads  # noqa: E402,F401  (children inherit the one-thread environment)

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from suite import workloads  # noqa: E402
from suite.impl_numpy import value_and_grad as numpy_value_and_grad  # noqa: E402

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
CHILD = """
import time
start = time.perf_counter()
import sys
sys.path.insert(0, {benchmarks_dir!r})
import suite.threads
import tracegrad as tg
from suite import workloads
from suite.impl_tracegrad import loss_for
workload = workloads.get("W4")
grad = tg.grad(loss_for(workload))
before = time.perf_counter()
gradient = grad(*workload.args)
print("first_grad_seconds", time.perf_counter() - before)
print("gradient_W1_00", repr(float(gradient[0]["W"][0, 0])))
"""
TARGETS = {"cold_first_grad": 2.0, "warm_process": 1.0}


@dataclass
class Run:
    wall: float  # the whole process, as the parent sees it
    first_grad: float  # W4's first tg.grad call, inside the process
    gradient: float


def run_python(code: str, cache_dir: str | None = None, background_compile: bool = True) -> tuple[float, str]:
    """(wall seconds, stdout) of `python -c code`; raises RuntimeError if it fails."""
    env = dict(os.environ)
    for name in ("TRACEGRAD_DISABLE_CACHE", "TRACEGRAD_BACKGROUND_COMPILE", "TRACEGRAD_BACKEND"):
        env.pop(name, None)  # tracegrad's defaults, unless told otherwise below
    if not background_compile:
        env["TRACEGRAD_BACKGROUND_COMPILE"] = "0"
    if cache_dir:
        env["TRACEGRAD_CACHE_DIR"] = cache_dir
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"python -c ... exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return wall, done.stdout


def run_child(cache_dir: str, background_compile: bool = True) -> Run:
    wall, stdout = run_python(CHILD.format(benchmarks_dir=BENCHMARKS_DIR), cache_dir, background_compile)
    values = dict(line.split(" ", 1) for line in stdout.splitlines() if " " in line)
    return Run(wall, float(values["first_grad_seconds"]), float(values["gradient_W1_00"]))


def measure_runs(runs: int) -> dict[str, list[Run]]:
    """Cold runs (each in a new cache directory) with and without background compile, then warm
    runs in the directory the last cold run filled."""
    results: dict[str, list[Run]] = {"cold": [], "cold, compiling in the first call": [], "warm": []}
    directories = []
    try:
        for background_compile, key in ((False, "cold, compiling in the first call"), (True, "cold")):
            for _ in range(runs):
                directories.append(tempfile.mkdtemp(prefix="tracegrad-startup-cache-"))
                results[key].append(run_child(directories[-1], background_compile))
        results["warm"] = [run_child(directories[-1]) for _ in range(runs)]
    finally:
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)
    return results


def baseline(code: str, runs: int) -> float:
    return statistics.median(run_python(code)[0] for _ in range(runs))


def verdict(measured: float, target: float | None) -> tuple[str, str]:
    if target is None:
        return "", ""
    return f"<= {target:.1f} s", "met" if measured <= target else "MISSED"


def print_table(results: dict[str, list[Run]], baselines: dict[str, float], runs: int) -> None:
    cold, synchronous, warm = results["cold"], results["cold, compiling in the first call"], results["warm"]
    median = statistics.median
    rows = [
        ("cold cache: W4's first tg.grad call (default settings)", median(r.first_grad for r in cold),
         TARGETS["cold_first_grad"]),
        ("cold cache: whole process, wall (waits for the compile)", median(r.wall for r in cold), None),
        ("cold cache, TRACEGRAD_BACKGROUND_COMPILE=0: first tg.grad", median(r.first_grad for r in synchronous),
         None),
        ("warm cache: whole process, wall", median(r.wall for r in warm), TARGETS["warm_process"]),
        ("warm cache: W4's first tg.grad call", median(r.first_grad for r in warm), None),
        *((f"baseline: python -c \"{code}\", wall", seconds, None) for code, seconds in baselines.items()),
    ]
    print(f"\n  {'measurement (median of ' + str(runs) + ' runs)':<60} {'measured':>9} {'target':>9}  result")
    for name, measured, target in rows:
        target_text, result = verdict(measured, target)
        print(f"  {name:<60} {measured:>7.2f} s {target_text:>9}  {result}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (default 3)")
    options = parser.parse_args(argv)
    print("tracegrad startup benchmark: fresh processes, thread pools pinned to one thread by environment "
          f"variables (not to one core), python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    try:
        baselines = {code: baseline(code, options.runs) for code in ("import numpy", "import tracegrad")}
        results = measure_runs(options.runs)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as error:
        print(f"FAILED: {error}")
        return 1
    print_table(results, baselines, options.runs)
    expected = float(numpy_value_and_grad(workloads.get("W4"))[1][0]["W"][0, 0])
    wrong = [run.gradient for group in results.values() for run in group
             if not np.isclose(run.gradient, expected, rtol=1e-9, atol=0)]
    if wrong:
        print(f"\nFAILED: printed gradient(s) {wrong}, expected {expected!r}")
        return 1
    print(f"\n  every run printed dL/dW1[0,0] = {expected!r}, as the hand-written NumPy gradient")
    return 0


if __name__ == "__main__":
    sys.exit(main())

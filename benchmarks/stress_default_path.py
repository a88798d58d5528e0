"""Stress test of tracegrad's default call path: background compiles and the disk cache, under races.

    python benchmarks/stress_default_path.py --processes 4 --threads 8 --functions 50 --rounds 20

Each round makes a fresh, cold cache directory shared by all the round's processes. Each process
starts its threads behind a barrier; each thread makes `--functions` fresh Python functions from a
handful of factories (so that many of them generate the same code, across threads and processes:
the race) and calls each `--calls` times while numba compiles in the background; then the process
waits for its compiles (tg.wait_for_compiles) and every thread calls every function again. Every
result is compared with the same function run on tracegrad's python backend.

Prints one row per round and the totals; exits 1 on any error, wrong result, crash or timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RTOL, ATOL = 1e-11, 1e-13


# -- one worker process ----------------------------------------------------------------------

def factories(tg, tnp, np):
    """kind -> (make(c) -> callable(args) -> result, args): each call of make gives new Python functions."""
    x = np.linspace(-1.0, 1.0, 5)
    batch = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    params = {"W": np.linspace(-0.5, 0.5, 6).reshape(3, 2), "b": np.array([0.1, -0.2])}

    def scalar_grad(c):
        return tg.grad(lambda a: tnp.sin(a) * a + c * a * a)

    def array_grad(c):
        return tg.grad(lambda v: tnp.sum(tnp.tanh(v) * v) * c)

    def dict_value_and_grad(c):
        function = tg.value_and_grad(lambda p, b: tnp.mean((tnp.tanh(b @ p["W"] + p["b"]) - c) ** 2))
        return lambda p, b: function(p, b)

    def jitted_step(c):
        def loss(p, b):
            return tnp.mean((tnp.tanh(b @ p["W"] + p["b"]) - c) ** 2)

        def step(p, b):
            grads = tg.grad(loss)(p, b)
            return tg.tree_map(lambda value, g: value - 0.1 * g, p, grads)

        return tg.jit(step)

    def vjp_pullback(c):
        def run(v):
            out, pullback = tg.vjp(lambda u: tnp.tanh(u) * c + tnp.exp(u), v)
            return out, pullback(np.ones_like(v))

        return run

    return {
        "grad(scalar)": (scalar_grad, (0.5,)),
        "grad(array)": (array_grad, (x,)),
        "value_and_grad(dict)": (dict_value_and_grad, (params, batch)),
        "jit(step with grad)": (jitted_step, (params, batch)),
        "vjp+pullback": (vjp_pullback, (x,)),
    }


CONSTANTS = (1.0, 2.0, 3.0)  # with the kinds above: 15 distinct programs, each made by many functions


def worker(threads: int, functions: int, calls: int, seed: int) -> int:
    import numpy as np

    import tracegrad as tg
    import tracegrad.numpy as tnp

    kinds = factories(tg, tnp, np)
    names = sorted(kinds)

    # the reference: every program on the python backend
    saved = tg.config.backend
    tg.config.backend = "python"
    reference = {(name, c): kinds[name][0](c)(*kinds[name][1]) for name in names for c in CONSTANTS}
    tg.config.backend = saved

    lock = threading.Lock()
    report = {"calls": 0, "errors": 0, "mismatches": 0, "messages": []}

    def note(kind: str, text: str) -> None:
        with lock:
            report[kind] += 1
            if len(report["messages"]) < 10:
                report["messages"].append(text[:500])

    def same(got, want) -> bool:
        got_leaves, got_tree = tg.tree_flatten(got)
        want_leaves, want_tree = tg.tree_flatten(want)
        if got_tree != want_tree:
            return False
        return all(np.allclose(np.asarray(a, float), np.asarray(b, float), rtol=RTOL, atol=ATOL)
                   for a, b in zip(got_leaves, want_leaves))

    def call(label: str, function, name: str, c: float) -> None:
        with lock:
            report["calls"] += 1
        try:
            got = function(*kinds[name][1])
        except Exception as error:
            note("errors", f"{label}: {type(error).__name__}: {error}")
            return
        if not same(got, reference[name, c]):
            note("mismatches", f"{label}: got {got!r}, expected {reference[name, c]!r}")

    made: dict[int, list] = {}
    barrier = threading.Barrier(threads)

    def first_phase(index: int) -> None:
        mine = made[index] = []
        barrier.wait()
        for k in range(functions):
            name = names[(k + index + seed) % len(names)]
            c = CONSTANTS[(k // len(names) + seed) % len(CONSTANTS)]
            try:
                function = kinds[name][0](c)  # a fresh Python function each time
            except Exception as error:
                note("errors", f"thread {index} function {k} ({name}): making it: {type(error).__name__}: {error}")
                continue
            mine.append((k, name, c, function))
            for n in range(calls):
                call(f"thread {index} function {k} ({name}, c={c}) call {n}", function, name, c)

    def second_phase(index: int) -> None:
        barrier.wait()
        for k, name, c, function in made[index]:
            call(f"thread {index} function {k} ({name}, c={c}) after wait_for_compiles", function, name, c)

    def run_threads(target) -> None:
        pool = [threading.Thread(target=target, args=(i,), name=f"stress-{i}") for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()

    started = time.perf_counter()
    run_threads(first_phase)
    tg.wait_for_compiles()
    run_threads(second_phase)
    report["seconds"] = time.perf_counter() - started
    print("STRESS " + json.dumps(report), flush=True)
    return 0


# -- the driver ------------------------------------------------------------------------------

def run_round(number: int, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="tracegrad-stress-") as directory:
        cache = Path(directory) / "cache"
        cache.mkdir(mode=0o700)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("TRACEGRAD_", "NUMBA_"))}
        env.update(PYTHONPATH=str(ROOT), TRACEGRAD_CACHE_DIR=str(cache), TRACEGRAD_BACKEND="numba",
                   TRACEGRAD_BACKGROUND_COMPILE="1")
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(args.threads),
                   "--functions", str(args.functions), "--calls", str(args.calls)]
        started = time.perf_counter()
        processes = [subprocess.Popen(command + ["--seed", str(number * args.processes + p)], env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True)
                     for p in range(args.processes)]
        row = {"round": number, "errors": 0, "mismatches": 0, "crashes": 0, "timeouts": 0, "calls": 0,
               "messages": []}
        deadline = started + args.timeout
        for index, process in enumerate(processes):
            try:
                stdout, stderr = process.communicate(timeout=max(0.1, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                row["timeouts"] += 1
                row["messages"].append(f"process {index}: still running after {args.timeout} s (killed)")
            lines = [line for line in stdout.splitlines() if line.startswith("STRESS ")]
            if process.returncode != 0 or not lines or "Traceback" in stderr:
                if process.returncode != -signal.SIGKILL:
                    row["crashes"] += 1
                    row["messages"].append(f"process {index}: exit code {process.returncode}: {stderr[-1500:]}")
            if lines:
                report = json.loads(lines[-1][len("STRESS "):])
                for key in ("errors", "mismatches", "calls"):
                    row[key] += report[key]
                row["messages"] += [f"process {index}: {m}" for m in report["messages"]]
        row["seconds"] = time.perf_counter() - started
        return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--functions", type=int, default=50, help="fresh functions made by each thread")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3, help="calls of each function before wait_for_compiles")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a round may take")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        try:
            return worker(args.threads, args.functions, args.calls, args.seed)
        except BaseException:
            traceback.print_exc()
            return 1

    print(f"{'round':>5} {'processes':>9} {'threads':>7} {'functions':>9} {'calls':>7} {'errors':>6} "
          f"{'mismatches':>10} {'crashes':>7} {'timeouts':>8} {'wall s':>7}", flush=True)
    totals = {"errors": 0, "mismatches": 0, "crashes": 0, "timeouts": 0, "calls": 0}
    messages = []
    started = time.perf_counter()
    for number in range(args.rounds):
        row = run_round(number, args)
        for key in totals:
            totals[key] += row[key]
        messages += [f"round {number}: {m}" for m in row["messages"]]
        print(f"{number:>5} {args.processes:>9} {args.threads:>7} {args.functions:>9} {row['calls']:>7} "
              f"{row['errors']:>6} {row['mismatches']:>10} {row['crashes']:>7} {row['timeouts']:>8} "
              f"{row['seconds']:>7.1f}", flush=True)
    print(f"{'all':>5} {args.processes:>9} {args.threads:>7} {args.functions:>9} {totals['calls']:>7} "
          f"{totals['errors']:>6} {totals['mismatches']:>10} {totals['crashes']:>7} {totals['timeouts']:>8} "
          f"{time.perf_counter() - started:>7.1f}")
    for message in messages[:20]:
        print("  " + message.replace("\n", "\n    "))
    if len(messages) > 20:
        print(f"  ... and {len(messages) - 20} more")
    failed = any(totals[key] for key in ("errors", "mismatches", "crashes", "timeouts"))
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

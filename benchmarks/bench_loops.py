"""W7: the gradient of an RK4 integration of a damped pendulum, a loop that stays a loop.

Run from the repository root:

    python benchmarks/bench_loops.py                  # N = 100, 1,000, 10,000, 100,000 + the unrolled row
    python benchmarks/bench_loops.py --quick          # smoke test: short samples, one cold run, no unrolled row
    python benchmarks/bench_loops.py --sizes 1000 --unrolled-timeout 60

The loss: N steps of RK4 (dt = 0.01) of `theta'' = -damping * theta' - omega2 * sin(theta)`
from `(theta0, 0)`, the mean squared error of the angle after every step against a fixed
target trajectory (the true parameters' trajectory plus noise, seed 0); its value and gradient
with respect to `p = (damping, omega2, theta0)`, at a guess away from the truth.

Rows, per N: tracegrad `tg.jit(tg.value_and_grad(loss))` with `tg.scan` over the steps; the
hand-written numba forward and adjoint (the floor: every ratio is to it); JAX
`jax.jit(jax.value_and_grad(loss))` with `lax.scan` and float64, if JAX imports; the floor's
own code run as plain Python (no numba). At N = 1,000 only: the same loss as a Python `for`
loop through tracegrad, which unrolls it (in subprocesses with a timeout).

Before anything is timed, every gradient is compared with the floor's (rtol 1e-9), and the
floor's with central differences. benchmarks/README.md (W7) says what each column means.
The exit status is 1 if a check failed or a required row raised; a missed target is printed,
not fatal.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite.threads  # noqa: E402  (first: pins the thread pools before NumPy is imported)

CORE_PINNING = suite.threads.pin_to_one_core()  # before any library starts a thread; children inherit it

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from suite import threads  # noqa: E402
from suite.report import seconds  # noqa: E402
from suite.timing import Measurement, Timing, garbage_collector_paused, measure  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("tracegrad") is None:  # run from a checkout that is not installed
    sys.path.insert(0, REPO_ROOT)

DT = 0.01
TRUE_PARAMS = np.array([0.3, 9.0, 1.2])  # damping, omega2 (g / length), initial angle
GUESS = np.array([0.25, 8.0, 1.0])  # where the gradient is taken
NOISE = 0.01
SIZES = (100, 1_000, 10_000, 100_000)
UNROLLED_N = 1_000
RTOL, ATOL = 1e-9, 1e-12
TARGET_COLD_SECONDS, TARGET_COLD_SPREAD, TARGET_VS_FLOOR = 3.0, 0.20, 1.5


# -- the hand-written floor: numba forward storing the states, adjoint by hand -----------------


@numba.njit(cache=False)
def floor_value_and_grad(p, target):
    damping, omega2, theta0 = p[0], p[1], p[2]
    n = target.shape[0]
    th = np.empty(n + 1)
    om = np.empty(n + 1)
    th[0], om[0] = theta0, 0.0
    total = 0.0
    for i in range(n):
        t, o = th[i], om[i]
        a1, b1 = o, -damping * o - omega2 * math.sin(t)
        t2, o2 = t + 0.5 * DT * a1, o + 0.5 * DT * b1
        a2, b2 = o2, -damping * o2 - omega2 * math.sin(t2)
        t3, o3 = t + 0.5 * DT * a2, o + 0.5 * DT * b2
        a3, b3 = o3, -damping * o3 - omega2 * math.sin(t3)
        t4, o4 = t + DT * a3, o + DT * b3
        a4, b4 = o4, -damping * o4 - omega2 * math.sin(t4)
        th[i + 1] = t + DT / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
        om[i + 1] = o + DT / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
        d = th[i + 1] - target[i]
        total += d * d
    g_damping = g_omega2 = 0.0
    at = ao = 0.0  # cotangents of th[i + 1], om[i + 1]
    for i in range(n - 1, -1, -1):
        at += 2.0 * (th[i + 1] - target[i]) / n
        t, o = th[i], om[i]  # the stages again, from the stored state
        s1 = math.sin(t)
        a1, b1 = o, -damping * o - omega2 * s1
        t2, o2 = t + 0.5 * DT * a1, o + 0.5 * DT * b1
        s2 = math.sin(t2)
        a2, b2 = o2, -damping * o2 - omega2 * s2
        t3, o3 = t + 0.5 * DT * a2, o + 0.5 * DT * b2
        s3 = math.sin(t3)
        b3 = -damping * o3 - omega2 * s3
        t4, o4 = t + DT * o3, o + DT * b3
        s4 = math.sin(t4)
        ga1, gb1 = DT / 6.0 * at, DT / 6.0 * ao  # cotangents of each stage's (a, b)
        ga2, gb2 = DT / 3.0 * at, DT / 3.0 * ao
        ga3, gb3 = DT / 3.0 * at, DT / 3.0 * ao
        ga4, gb4 = DT / 6.0 * at, DT / 6.0 * ao
        nt, no = at, ao
        # stage 4: a4 = o4, b4 = -damping * o4 - omega2 * sin(t4); t4 = t + DT * a3, o4 = o + DT * b3
        gt4, go4 = -omega2 * math.cos(t4) * gb4, ga4 - damping * gb4
        g_damping -= o4 * gb4
        g_omega2 -= s4 * gb4
        nt += gt4
        no += go4
        ga3 += DT * gt4
        gb3 += DT * go4
        # stage 3, from t3 = t + DT/2 * a2, o3 = o + DT/2 * b2
        gt3, go3 = -omega2 * math.cos(t3) * gb3, ga3 - damping * gb3
        g_damping -= o3 * gb3
        g_omega2 -= s3 * gb3
        nt += gt3
        no += go3
        ga2 += 0.5 * DT * gt3
        gb2 += 0.5 * DT * go3
        # stage 2, from t2 = t + DT/2 * a1, o2 = o + DT/2 * b1
        gt2, go2 = -omega2 * math.cos(t2) * gb2, ga2 - damping * gb2
        g_damping -= o2 * gb2
        g_omega2 -= s2 * gb2
        nt += gt2
        no += go2
        ga1 += 0.5 * DT * gt2
        gb1 += 0.5 * DT * go2
        # stage 1, at the state itself
        nt += -omega2 * math.cos(t) * gb1
        no += ga1 - damping * gb1
        g_damping -= o * gb1
        g_omega2 -= s1 * gb1
        at, ao = nt, no
    grad = np.empty(3)
    grad[0], grad[1], grad[2] = g_damping, g_omega2, at
    return total / n, grad


@numba.njit(cache=False)
def trajectory(p, n):
    """The angle after each of n RK4 steps (the floor's forward pass): makes the target."""
    damping, omega2 = p[0], p[1]
    t, o = p[2], 0.0
    out = np.empty(n)
    for i in range(n):
        a1, b1 = o, -damping * o - omega2 * math.sin(t)
        t2, o2 = t + 0.5 * DT * a1, o + 0.5 * DT * b1
        a2, b2 = o2, -damping * o2 - omega2 * math.sin(t2)
        t3, o3 = t + 0.5 * DT * a2, o + 0.5 * DT * b2
        a3, b3 = o3, -damping * o3 - omega2 * math.sin(t3)
        t4, o4 = t + DT * a3, o + DT * b3
        a4, b4 = o4, -damping * o4 - omega2 * math.sin(t4)
        t, o = t + DT / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4), o + DT / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)
        out[i] = t
    return out


def problem(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the parameters where the gradient is taken, the target trajectory of n angles)."""
    noise = np.random.default_rng(0).normal(0.0, NOISE, n)
    return GUESS.copy(), trajectory(TRUE_PARAMS, n) + noise


def floor_loss(p, target) -> float:
    return float(floor_value_and_grad(np.asarray(p, np.float64), target)[0])


# -- tracegrad ---------------------------------------------------------------------------------


def rk4_step(p, sin, state):
    """One RK4 step of the pendulum, written once for tracegrad, JAX and the unrolled loop."""
    damping, omega2 = p[0], p[1]
    th, om = state

    def f(th, om):
        return om, -damping * om - omega2 * sin(th)

    a1, b1 = f(th, om)
    a2, b2 = f(th + 0.5 * DT * a1, om + 0.5 * DT * b1)
    a3, b3 = f(th + 0.5 * DT * a2, om + 0.5 * DT * b2)
    a4, b4 = f(th + DT * a3, om + DT * b3)
    return th + DT / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4), om + DT / 6.0 * (b1 + 2.0 * b2 + 2.0 * b3 + b4)


def tracegrad_loss(p, target):
    import tracegrad as tg
    import tracegrad.numpy as tnp

    def step(state, angle):
        state = rk4_step(p, tnp.sin, state)
        return state, state[0] - angle

    _, errors = tg.scan(step, (p[2], 0.0), target)
    return tnp.mean(errors * errors)


def tracegrad_hoisted_loss(p, target):
    """The same, with the parameters read out of `p` before the scan: the body closes over two
    scalars instead of indexing the array `p` at every step."""
    import tracegrad as tg
    import tracegrad.numpy as tnp

    scalars = (p[0], p[1])

    def step(state, angle):
        state = rk4_step(scalars, tnp.sin, state)
        return state, state[0] - angle

    _, errors = tg.scan(step, (p[2], 0.0), target)
    return tnp.mean(errors * errors)


def tracegrad_unrolled_loss(p, target):
    """The same loss with a Python for loop: tracing unrolls it, one copy of the step per step."""
    import tracegrad.numpy as tnp

    state, total = (p[2], 0.0), 0.0
    for i in range(target.shape[0]):
        state = rk4_step(p, tnp.sin, state)
        error = state[0] - target[i]
        total = total + error * error
    return total / target.shape[0]


def tracegrad_function(hoisted: bool = False):
    import tracegrad as tg

    return tg.jit(tg.value_and_grad(tracegrad_hoisted_loss if hoisted else tracegrad_loss))


def stacked_bytes(program, forward_only: bool) -> tuple[int, int]:
    """(arrays, bytes) stacked by the top-level scans of a program: their ys (the forward,
    `reverse=False`, scans only if forward_only)."""
    arrays = total = 0
    for op in program.ops:
        if op.primitive.name != "scan":
            continue
        params = dict(op.params)
        if forward_only and params["reverse"]:
            continue
        for var in op.outs[params["num_carry"]:]:
            arrays += 1
            total += var.aval.size * 8
    return arrays, total


def tracegrad_residuals(p, target, hoisted: bool = False) -> tuple[int, int]:
    """(arrays, bytes) that reverse mode stacks: the forward scan's ys in the optimized program of
    value_and_grad, less the ys the loss's own scan stacks."""
    import tracegrad as tg

    loss = tracegrad_hoisted_loss if hoisted else tracegrad_loss
    with_grad = stacked_bytes(tracegrad_function(hoisted).lower(p, target).optimized_ir, forward_only=True)
    plain = stacked_bytes(tg.jit(loss).lower(p, target).optimized_ir, forward_only=True)
    return with_grad[0] - plain[0], with_grad[1] - plain[1]


# -- JAX -----------------------------------------------------------------------------------------


def jax_function():
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    def loss(p, target):
        def step(state, angle):
            state = rk4_step(p, jnp.sin, state)
            return state, state[0] - angle

        _, errors = lax.scan(step, (p[2], jnp.zeros((), p.dtype)), target)
        return jnp.mean(errors * errors)

    compiled = jax.jit(jax.value_and_grad(loss))
    return (lambda *args: jax.block_until_ready(compiled(*args))), loss


def jax_residuals(loss, p, target) -> tuple[int, int]:
    """(arrays, bytes) stacked by the forward scan of value_and_grad's jaxpr (before XLA), less
    the loss's own ys: what JAX's reverse mode asks to keep per step."""
    import jax

    def count(closed):
        arrays = total = 0
        for eqn in closed.jaxpr.eqns:
            if eqn.primitive.name == "scan" and not eqn.params["reverse"]:
                for var in eqn.outvars[eqn.params["num_carry"]:]:
                    arrays += 1
                    total += var.aval.size * var.aval.dtype.itemsize
                break
        return arrays, total

    with_grad = count(jax.make_jaxpr(jax.value_and_grad(loss))(p, target))
    plain = count(jax.make_jaxpr(loss)(p, target))
    return with_grad[0] - plain[0], with_grad[1] - plain[1]


def jax_version() -> str | None:
    try:
        import jax
    except Exception:  # noqa: BLE001
        return None
    return jax.__version__


def to_numpy(result):
    value, grad = result
    return float(value), np.asarray(grad, np.float64)


# -- children: fresh processes for the first calls ---------------------------------------------


def child_main(kind: str, target_file: str) -> None:
    """In a fresh process (empty tracegrad cache set by the parent): time the first call; print JSON.

    The target comes from a file the parent wrote, so that nothing in this process has compiled
    before the timed call (numba's first compile in a process costs more than later ones)."""
    p, target = GUESS.copy(), np.load(target_file)
    out: dict = {}
    if kind in ("tracegrad", "tracegrad-hoisted"):
        import tracegrad as tg

        tg.config.compile_in_background = False
        function = tracegrad_function(hoisted=kind == "tracegrad-hoisted")
        start = time.perf_counter()
        result = function(p, target)
        out["first_call"] = time.perf_counter() - start
    elif kind == "jax":
        function, _ = jax_function()
        import jax.numpy as jnp

        p, target = jnp.asarray(p), jnp.asarray(target)
        start = time.perf_counter()
        result = function(p, target)
        out["first_call"] = time.perf_counter() - start
    elif kind == "floor":  # numba compiles the floor on its first call (no cache)
        start = time.perf_counter()
        result = floor_value_and_grad(p, target)
        out["first_call"] = time.perf_counter() - start
    elif kind in ("unrolled", "unrolled-background"):
        import tracegrad as tg

        tg.config.compile_in_background = kind == "unrolled-background"
        function = tg.jit(tg.value_and_grad(tracegrad_unrolled_loss))
        start = time.perf_counter()
        result = function(p, target)
        out["first_call"] = time.perf_counter() - start
        if kind == "unrolled-background":
            report(out, result)  # the first gradient (NumPy code), in case the compile outlasts the timeout
            first = time.perf_counter()
            again = function(p, target)  # still NumPy code unless the compile is done
            out["second_call"] = time.perf_counter() - first
            out["second_value"] = list(map(float, [again[0], *again[1]]))
            tg.wait_for_compiles()
            out["compiled_after"] = time.perf_counter() - start
            function(p, target)
            compiled = measure(function, (p, target), Timing(samples=3))
            out["compiled_call"], out["compiled_spread"] = compiled.per_call, compiled.spread
            out["compiled_sample_seconds"] = compiled.sample_seconds
    else:
        raise SystemExit(f"unknown child kind {kind}")
    report(out, result)


def report(out: dict, result) -> None:
    """Print what the child measured so far; the parent reads the last such line."""
    value, grad = to_numpy(result)
    out["value"], out["grad"] = value, grad.tolist()
    print("RESULT " + json.dumps(out), flush=True)


def run_child(kind: str, n: int, timeout: float) -> dict:
    """Run child_main in a fresh process with a new empty tracegrad cache: its last JSON report,
    with "timeout" set if it did not finish in time."""
    work = tempfile.mkdtemp(prefix="tracegrad-w7-")
    cache, target_file = os.path.join(work, "cache"), os.path.join(work, "target.npy")
    os.mkdir(cache, 0o700)
    np.save(target_file, problem(n)[1])
    env = dict(os.environ, TRACEGRAD_CACHE_DIR=cache, TRACEGRAD_BACKGROUND_COMPILE="0")
    for name in ("TRACEGRAD_DISABLE_CACHE", "TRACEGRAD_BACKEND"):
        env.pop(name, None)
    import tracegrad  # the child imports the tracegrad this process imported

    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(tracegrad.__file__)),
                                                      env.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, target_file]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, finished = done.stdout, done.stderr, {}
    except subprocess.TimeoutExpired as expired:
        stdout, stderr, finished = expired.stdout or "", expired.stderr or "", {"timeout": timeout}
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        done = None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reports = [line[len("RESULT "):] for line in stdout.splitlines() if line.startswith("RESULT ")]
    if reports:
        return {**json.loads(reports[-1]), **finished}
    if finished:
        return finished
    raise RuntimeError(f"child {kind} N={n} exited with {done.returncode}:\n{stderr[-3000:]}")


# -- checks ----------------------------------------------------------------------------------------


def mismatch(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> str | None:
    (value, grad), (want_value, want_grad) = actual, expected
    got, want = np.concatenate([[value], grad]), np.concatenate([[want_value], want_grad])
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if not np.allclose(got, want, rtol=rtol, atol=atol):
        worst = int(np.argmax(np.abs(got - want) - rtol * np.abs(want)))
        names = ("value", "d/damping", "d/omega2", "d/theta0")
        return f"{names[worst]}: {got[worst]!r}, expected {want[worst]!r}"
    return None


def central_difference_mismatch(p, target, grad, coordinates=(0, 2), eps=1e-6, rtol=1e-6,
                                atol=1e-9) -> str | None:
    for index in coordinates:
        up, down = p.copy(), p.copy()
        up[index] += eps
        down[index] -= eps
        numeric = (floor_loss(up, target) - floor_loss(down, target)) / (2 * eps)
        if not np.isclose(grad[index], numeric, rtol=rtol, atol=atol):
            return f"floor gradient[{index}] = {grad[index]!r}, central difference {numeric!r}"
    return None


# -- rows ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    key: str  # floor, tracegrad, jax, python, unrolled
    label: str
    status: str = "ok"
    first_call: float | None = None  # cold: a fresh process, empty cache
    first_note: str = ""
    measurement: Measurement | None = None
    ratio: float | None = None
    residuals: tuple[int, int] | None = None  # (arrays, bytes) stacked for reverse mode
    cold_kind: str | None = None  # the child kind whose first call is timed in fresh processes
    expected: tuple | None = field(default=None, repr=False)  # the floor's (value, gradient)
    first_calls: list[float] = field(default_factory=list)
    note: str = ""
    details: str = field(default="", repr=False)


WIDTHS = (36, 7, 10, 7, 10, 8, 22)


def line(cells) -> str:
    first, *rest = cells
    return f"  {first:<{WIDTHS[0]}}" + "".join(f" {cell:>{width}}" for cell, width in zip(rest, WIDTHS[1:]))


def memory(residuals: tuple[int, int] | None) -> str:
    if residuals is None:
        return "-"
    arrays, total = residuals
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if total >= scale:
            return f"{arrays} arrays, {total / scale:.3g} {unit}"
    return f"{arrays} arrays, {total} B"


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:.1f}" if ratio < 100 else f"{ratio:.0f}"


def print_row(row: Row) -> None:
    m = row.measurement
    print(line((row.label, row.status, seconds(m.per_call if m else None),
                f"{m.spread * 100:.1f}%" if m else "-", m.describe() if m else "-", ratio_text(row.ratio),
                memory(row.residuals))), flush=True)
    for note in filter(None, (row.first_note, row.note)):
        print(f"      -> {note}", flush=True)


def timed_row(row: Row, build, expected, timing: Timing, cold_kind: str | None) -> Row:
    """Build, check against `expected`, time; its first call is timed later, in fresh processes."""
    row.cold_kind, row.expected = cold_kind, expected
    try:
        function, args, residuals = build()
        result = to_numpy(function(*args))
        problem_text = mismatch(result, expected)
        if problem_text:
            row.status, row.note = "FAILED", problem_text
            return row
        row.residuals = residuals
        row.measurement = measure(function, args, timing)
    except Exception as error:  # noqa: BLE001  (reported in the table, the run goes on)
        row.status, row.note = "ERROR", f"{type(error).__name__}: {error}".splitlines()[0][:200]
        row.details = traceback.format_exc()
    return row


def measure_first_calls(rows: list[Row], runs: int) -> None:
    """Each row's first call in `runs` fresh processes, round by round over every N and row, so
    that a change in the machine's load falls on all of them alike; the median, each checked."""
    timed = [row for row in rows if row.status == "ok" and row.cold_kind]
    if not timed or not runs:
        return
    print(f"\nFirst calls: {runs} round(s), each a fresh process per row and N in turn (empty tracegrad cache, "
          "background compile off; numba compiling the floor; XLA compiling JAX's)", flush=True)
    for _ in range(runs):
        for row in timed:
            if row.status != "ok":
                continue
            try:
                out = run_child(row.cold_kind, row.n, timeout=600)
                problem_text = mismatch((out["value"], np.array(out["grad"])), row.expected)
            except Exception as error:  # noqa: BLE001
                row.status, row.note = "ERROR", f"first call: {type(error).__name__}: {error}".splitlines()[0][:200]
                row.details = traceback.format_exc()
                continue
            if problem_text:
                row.status, row.note = "FAILED", f"in a fresh process: {problem_text}"
                continue
            row.first_calls.append(out["first_call"])
    for row in timed:
        if row.first_calls:
            row.first_call = statistics.median(row.first_calls)
            row.first_note = f"{min(row.first_calls):.2f}-{max(row.first_calls):.2f} s"
        print(f"  N = {row.n:<8,} {row.label.strip():<38} {row.status:>6} {seconds(row.first_call):>10}"
              f"  ({row.first_note or row.note})", flush=True)


def run_size(n: int, options, timing: Timing) -> list[Row]:
    print(f"\nW7, N = {n:,} RK4 steps (residuals: what reverse mode stacks per run)", flush=True)
    p, target = problem(n)
    rows = []
    floor = Row(n, "floor", "numba by hand (floor)")
    try:
        with garbage_collector_paused():
            expected = to_numpy(floor_value_and_grad(p, target))
        problem_text = central_difference_mismatch(p, target, expected[1])
        if problem_text:
            floor.status, floor.note = "FAILED", problem_text
        else:
            floor = timed_row(floor, lambda: (floor_value_and_grad, (p, target), (2, 2 * (n + 1) * 8)), expected,
                              timing, "floor")
    except Exception as error:  # noqa: BLE001
        floor.status, floor.note = "ERROR", f"{type(error).__name__}: {error}".splitlines()[0][:200]
        floor.details = traceback.format_exc()
    rows.append(floor)
    print_row(floor)
    if floor.status != "ok":
        return rows

    def build_tracegrad(hoisted=False):
        function = tracegrad_function(hoisted)
        return function, (p, target), tracegrad_residuals(p, target, hoisted)

    def build_jax():
        import jax.numpy as jnp

        function, loss = jax_function()
        args = (jnp.asarray(p), jnp.asarray(target))
        return function, args, jax_residuals(loss, *args)

    builders = [("tracegrad", "tracegrad jit(value_and_grad), scan", build_tracegrad, "tracegrad"),
                ("tracegrad-hoisted", "  same, p[0], p[1] read before scan", lambda: build_tracegrad(True),
                 "tracegrad-hoisted")]
    if options.jax_version:
        builders.append(("jax", "JAX jit(value_and_grad), lax.scan", build_jax, "jax"))
    if n <= options.python_max_n:
        builders.append(("python", "plain Python (the floor's code)",
                         lambda: (floor_value_and_grad.py_func, (p, target), (2, 2 * (n + 1) * 8)), None))
    for key, label, build, cold_kind in builders:
        row = timed_row(Row(n, key, label), build, expected, timing, cold_kind)
        if row.measurement and floor.measurement:
            row.ratio = row.measurement.per_call / floor.measurement.per_call
        rows.append(row)
        print_row(row)
    floor.ratio = 1.0 if floor.measurement else None
    return rows


def run_unrolled(options, timing: Timing, floor_row: Row | None) -> Row:
    """The Python for loop through tracegrad at N = 1,000: cold (compile first) and with background compile."""
    n = UNROLLED_N
    print(f"\nW7, N = {n:,}: the loss as a Python for loop (unrolled by tracing), fresh processes, "
          f"timeout {options.unrolled_timeout:g} s each", flush=True)
    p, target = problem(n)
    expected = to_numpy(floor_value_and_grad(p, target))
    row = Row(n, "unrolled", "tracegrad, Python for loop (unrolled)")
    try:
        limit = f"> {options.unrolled_timeout:g} s"
        cold = run_child("unrolled", n, options.unrolled_timeout)
        if "first_call" not in cold:
            row.note = f"background compile off: the first call (trace and compile) did not finish: {limit}"
        else:
            problem_text = mismatch((cold["value"], np.array(cold["grad"])), expected)
            if problem_text:
                row.status, row.note = "FAILED", problem_text
                return row
            row.first_call = cold["first_call"]
        background = run_child("unrolled-background", n, options.unrolled_timeout)
        checked = [(background["value"], np.array(background["grad"]))] if "value" in background else []
        if "second_value" in background:
            checked.append((background["second_value"][0], np.array(background["second_value"][1:])))
        for result in checked:
            problem_text = mismatch(result, expected)
            if problem_text:
                row.status, row.note = "FAILED", f"background compile: {problem_text}"
                return row
        parts = ["background compile on: the first gradient (NumPy code) "
                 + (f"after {seconds(background['first_call'])}" if "first_call" in background else limit)]
        if "second_call" in background:
            parts.append(f"a second call {seconds(background['second_call'])}")
        if "compiled_call" in background:
            row.measurement = Measurement(background["compiled_call"], background["compiled_spread"], 3,
                                          background["compiled_sample_seconds"])
            if floor_row is not None and floor_row.measurement:
                row.ratio = row.measurement.per_call / floor_row.measurement.per_call
            parts.append(f"compiled code {seconds(background['compiled_after'])} after the first call started "
                         "(per call: the compiled code, median of 3 samples)")
        else:
            parts.append(f"compiled code: not within the timeout ({limit} after the process started)")
        row.first_note = "; ".join(parts)
    except Exception as error:  # noqa: BLE001
        row.status, row.note = "ERROR", f"{type(error).__name__}: {error}".splitlines()[0][:200]
        row.details = traceback.format_exc()
    print_row(row)
    return row


# -- summary ------------------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> None:
    print("  | " + " | ".join(header) + " |")
    print("  | " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |")
    for cells in rows:
        print("  | " + " | ".join(cells) + " |")


def print_summary(rows: list[Row], sizes, unrolled: Row | None, timeout: float) -> list[str]:
    """The side-by-side tables and the targets; returns the missed targets."""
    by = {(row.n, row.key): row for row in rows}
    present = lambda key: any(row.key == key for row in rows)  # noqa: E731
    keys = [key for key in ("tracegrad", "tracegrad-hoisted", "jax", "python") if present(key)]
    labels = {"tracegrad": "**tracegrad**", "tracegrad-hoisted": "tracegrad, p read before the scan",
              "jax": "JAX", "python": "plain Python"}

    def cell(row: Row | None, text) -> str:
        if row is None:
            return "-"
        return text(row) if row.status == "ok" else row.status

    print("\nSummary: per call / the hand-written numba floor's, measured side by side in this run "
          "(below 1: faster than the floor)")
    table = []
    for n in sizes:
        floor, tg, jx = by.get((n, "floor")), by.get((n, "tracegrad")), by.get((n, "jax"))
        cells = [f"{n:,}", cell(floor, lambda row: seconds(row.measurement.per_call))]
        cells += [cell(by.get((n, key)), lambda row: ratio_text(row.ratio)) for key in keys]
        if present("jax"):
            both = tg and jx and tg.measurement and jx.measurement
            cells.append(ratio_text(tg.measurement.per_call / jx.measurement.per_call) if both else "-")
        table.append(cells)
    markdown(["N", "floor per call"] + [labels[key] for key in keys] + (["tracegrad / JAX"] if present("jax") else []),
             table)

    print("\nFirst call (a fresh process, empty cache; median and range of the rounds) and the residuals stacked "
          "for reverse mode")
    first_keys = [key for key in ("tracegrad", "tracegrad-hoisted", "jax", "floor") if present(key)]
    memory_keys = [key for key in ("tracegrad", "jax", "floor") if present(key)]
    names = {"tracegrad": "tracegrad", "tracegrad-hoisted": "tracegrad, p before", "jax": "JAX", "floor": "floor"}
    table = []
    for n in sizes:
        cells = [f"{n:,}"] + [cell(by.get((n, key)), lambda row: seconds(row.first_call)
                                   + (f" ({row.first_note})" if row.first_note else "")) for key in first_keys]
        cells += [cell(by.get((n, key)), lambda row: memory(row.residuals)) for key in memory_keys]
        table.append(cells)
    markdown(["N"] + [f"{names[key]} first call" for key in first_keys]
             + [f"{names[key]} residuals" for key in memory_keys], table)
    if unrolled is not None:
        first = seconds(unrolled.first_call) if unrolled.first_call else f"> {timeout:g} s (did not finish)"
        compiled = (f"{seconds(unrolled.measurement.per_call)} ({ratio_text(unrolled.ratio)} x the floor)"
                    if unrolled.measurement else "-")
        print(f"\n  unrolled Python for loop through tracegrad, N = {UNROLLED_N:,} ({unrolled.status}): first call, "
              f"background compile off (trace and compile): {first}; per call, compiled: {compiled}")
        if unrolled.first_note:
            print(f"    {unrolled.first_note}")

    print("\nTargets (from the issue), for tracegrad's row (the parameters read inside the scan's body):")
    missed = []
    tg_rows = [by[(n, "tracegrad")] for n in sizes if (n, "tracegrad") in by]
    firsts = [row.first_call for row in tg_rows if row.first_call is not None]
    if firsts:
        worst = max(firsts)
        spread = (max(firsts) - min(firsts)) / min(firsts)
        verdict(f"cold first compiled call <= {TARGET_COLD_SECONDS:g} s at every N", worst <= TARGET_COLD_SECONDS,
                f"{min(firsts):.2f}-{worst:.2f} s", missed)
        if len(firsts) > 1:
            verdict(f"cold first call independent of N (within {TARGET_COLD_SPREAD:.0%} from N = "
                    f"{tg_rows[0].n:,} to {tg_rows[-1].n:,})", spread <= TARGET_COLD_SPREAD,
                    f"(max - min) / min = {spread:.0%}", missed)
    for n in sizes:
        tg, jx, hoisted = by.get((n, "tracegrad")), by.get((n, "jax")), by.get((n, "tracegrad-hoisted"))
        if tg is None or tg.ratio is None:
            continue
        also = f" (p before: {hoisted.ratio:.2f})" if hoisted is not None and hoisted.ratio else ""
        verdict(f"N = {n:,}: per call <= {TARGET_VS_FLOOR:g} x the numba floor", tg.ratio <= TARGET_VS_FLOOR,
                f"{tg.ratio:.2f} x{also}", missed)
        if jx is not None and jx.measurement:
            ratio = tg.measurement.per_call / jx.measurement.per_call
            also = (f" (p before: {hoisted.measurement.per_call / jx.measurement.per_call:.2f})"
                    if hoisted is not None and hoisted.measurement else "")
            verdict(f"N = {n:,}: per call <= JAX", ratio <= 1.0, f"{ratio:.2f} x JAX{also}", missed)
    return missed


def verdict(name: str, met: bool, measured: str, missed: list[str]) -> None:
    print(f"  {name:<62} {measured:>34}  {'met' if met else 'MISSED'}")
    if not met:
        missed.append(name)


def cpu_description() -> str:
    model, flags = platform.processor() or "?", []
    try:
        with open("/proc/cpuinfo") as info:
            for text in info:
                if text.startswith("model name") and model in ("?", "", platform.machine()):
                    model = text.split(":", 1)[1].strip()
                if text.startswith("flags"):
                    flags = text.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    shown = [flag for flag in ("avx", "avx2", "fma", "avx512f", "avx512dq", "avx512vl") if flag in flags]
    return f"{model}; {', '.join(shown) if shown else 'no AVX flags'}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated step counts N")
    parser.add_argument("--quick", action="store_true",
                        help="short samples, one cold run per row, no unrolled row: a smoke test")
    parser.add_argument("--samples", type=int, help="samples per row (default 7, 3 with --quick)")
    parser.add_argument("--sample-ms", type=float, help="minimum length of one sample in ms (default 50)")
    parser.add_argument("--cold-runs", type=int, help="fresh processes per first-call time (default 3, "
                        "1 with --quick; 0: none)")
    parser.add_argument("--no-jax", action="store_true", help="leave JAX out even if it imports")
    parser.add_argument("--python-max-n", type=int, default=100_000,
                        help="largest N for the plain Python row (default 100,000)")
    parser.add_argument("--no-unrolled", action="store_true", help="leave out the unrolled for-loop row")
    parser.add_argument("--unrolled-timeout", type=float, default=600.0,
                        help="seconds each unrolled subprocess may take (default 600)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "TARGET_FILE"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    options.sizes = [int(size.replace("_", "")) for size in options.sizes.split(",") if size.strip()]
    if options.cold_runs is None:
        options.cold_runs = 1 if options.quick else 3
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    if options.child:
        child_main(*options.child)
        return 0
    timing = Timing(sample_seconds=(options.sample_ms or (2.0 if options.quick else 50.0)) / 1e3,
                    samples=options.samples or (3 if options.quick else 7),
                    slow_call_seconds=0.2 if options.quick else 0.5, slow_samples=1 if options.quick else 3)
    os.environ["TRACEGRAD_BACKGROUND_COMPILE"] = "0"
    cache = tempfile.mkdtemp(prefix="tracegrad-w7-cache-")
    os.environ["TRACEGRAD_CACHE_DIR"] = cache  # this process's tracegrad: an empty cache too
    import tracegrad as tg

    tg.config.compile_in_background = False
    options.jax_version = None if options.no_jax else jax_version()
    print("W7 benchmark: gradient of an RK4 pendulum integration" + (" (--quick: not for quoting)"
                                                                      if options.quick else ""))
    print(f"  python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"tracegrad {tg.__version__}, " + (f"jax {options.jax_version}" if options.jax_version else
                                             "JAX: skipped (not installed, or --no-jax)"))
    print(f"  CPU: {cpu_description()}; {os.cpu_count()} CPUs")
    print(f"  threads pinned to one: {threads.describe()}; {CORE_PINNING}")
    print(f"  per call: median of {timing.samples} samples, each a loop of >= {timing.sample_seconds * 1e3:g} ms; "
          f"a call of >= {timing.slow_call_seconds:g} s is timed by {timing.slow_samples} single call(s)")
    print(f"  first call: {options.cold_runs} fresh process(es) per row (median), tracegrad with a new empty cache "
          "and background compile off; the floor's is numba compiling it")
    print(f"  checks: value and gradient against the floor's (rtol {RTOL:g}, atol {ATOL:g}), the floor's gradient "
          "against central differences of its loss (d/damping, d/theta0)")
    print()
    print(line(("implementation", "check", "per call", "spread", "samples", "vs floor", "residuals")))
    rows: list[Row] = []
    try:
        for n in options.sizes:
            rows += run_size(n, options, timing)
        measure_first_calls(rows, options.cold_runs)
        unrolled = None
        if not options.no_unrolled and not options.quick:
            floor_row = next((row for row in rows if row.n == UNROLLED_N and row.key == "floor"), None)
            unrolled = run_unrolled(options, timing, floor_row)
            rows.append(unrolled)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print_summary(rows, options.sizes, unrolled, options.unrolled_timeout)
    for row in rows:
        if row.details:
            print(f"\n--- N = {row.n} / {row.label}: traceback ---\n{row.details.rstrip()}")
    bad = [f"N={row.n} {row.label}: {row.status}" for row in rows if row.status in ("FAILED", "ERROR")]
    print("\n" + ("FAILED: " + "; ".join(bad) if bad else "all checks passed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

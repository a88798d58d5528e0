"""Core benchmark: tracegrad against hand-written numba forward+backward code.

Run from the repository root:

    python benchmarks/bench_core.py           # full run (7 samples of >= 50 ms per row)
    python benchmarks/bench_core.py --quick   # smoke test: short samples

Workloads (all float64):

  W1  value and gradient of micrograd's exercise
          f(a, b, c) = -a**3 + sin(3*b) - 1.0/c + b**2.5 - a**0.5   at (2, 3, 4)
  W2  value and gradient of -log(softmax(logits)[3]) at logits [0, 3, -2, 1],
      written micrograd-style (exp, sum, divide, log) over a list of 4 floats
  W3  micrograd's MLP 3 -> 4 -> 4 -> 1 (tanh on every layer) on its 4-point
      dataset, loss = sum of squared errors, params a list of {"W", "b"} dicts:
      W3a  value and gradient of the loss
      W3b  one SGD step (lr 0.1) returning the updated params

For each workload the floor is hand-written numba code (@njit, error_model="numpy"):
scalar code for W1/W2, loops over arrays for W3.  W3 also has a hand-written NumPy
version and the numba code behind a small wrapper that takes and returns the pytree,
as tracegrad does.  JAX rows are added when JAX is installed.

What is measured:

  check       before any timing, each implementation's value and gradient are
              compared with the reference (the known numbers for W1/W2; the NumPy
              version for W3, itself checked against central differences) with
              rtol 1e-9 (atol 1e-12).  A mismatch prints FAIL and the row is not timed.
  first call  wall time of the first call of a freshly built function, including
              tracing and compiling (numba: compiling; numba's one-time start-up in
              the process is paid by the first numba row).
  per call    median over >= 7 samples of the per-call time of a loop calibrated to
              last >= 50 ms, with the garbage collector off during each sample.
  spread      (max - min) / median over the samples.
  ratio       per-call time over the hand-written numba floor of the same workload.

BLAS, OpenMP and numba are pinned to one thread before NumPy is imported.
Exit status is 1 if any implementation failed its check or raised (including
tracegrad failing to import), else 0.
"""
from __future__ import annotations

import os
import sys

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
for _name in THREAD_VARIABLES:
    os.environ[_name] = "1"
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-9, 1e-12
LEARNING_RATE = 0.1
njit = numba.njit(cache=False, error_model="numpy")


# ---------------------------------------------------------------------------------------
# optional libraries
# ---------------------------------------------------------------------------------------

def import_tracegrad():
    """Return (tg, tnp, None) or (None, None, error text)."""
    if importlib.util.find_spec("tracegrad") is None:
        sys.path.insert(0, REPO_ROOT)
    try:
        import tracegrad as tg_module
        import tracegrad.numpy as tnp_module
        missing = [name for name in ("grad", "value_and_grad", "jit", "tree_map")
                   if not hasattr(tg_module, name)]
        if missing:
            raise ImportError(f"tracegrad has no {', '.join(missing)}")
        return tg_module, tnp_module, None
    except Exception:  # noqa: BLE001  (any failure to import is reported, not fatal)
        return None, None, traceback.format_exc()


def import_jax():
    """Return (jax, jax.numpy) with float64 enabled, or (None, None)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, None
    jax.config.update("jax_enable_x64", True)
    return jax, jnp


tg, tnp, TRACEGRAD_ERROR = import_tracegrad()
jax, jnp = import_jax()


# ---------------------------------------------------------------------------------------
# W1: f(a, b, c) = -a**3 + sin(3*b) - 1.0/c + b**2.5 - a**0.5
# ---------------------------------------------------------------------------------------

W1_ARGS = (2.0, 3.0, 4.0)
W1_VALUE = -2.0 ** 3 + math.sin(9.0) - 1.0 / 4.0 + 3.0 ** 2.5 - 2.0 ** 0.5
W1_GRAD = (-12.353553390593273, 10.25699027111255, 0.0625)


@njit
def w1_numba(a, b, c):
    """Hand-written forward and backward; returns (value, (da, db, dc))."""
    a_sq = a * a
    sqrt_a = math.sqrt(a)
    sqrt_b = math.sqrt(b)
    inv_c = 1.0 / c
    value = -a_sq * a + math.sin(3.0 * b) - inv_c + b * b * sqrt_b - sqrt_a
    da = -3.0 * a_sq - 0.5 / sqrt_a
    db = 3.0 * math.cos(3.0 * b) + 2.5 * b * sqrt_b
    dc = inv_c * inv_c
    return value, (da, db, dc)


def make_w1_tracegrad():
    def f(a, b, c):
        return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5
    return f


def make_w1_jax():
    def f(a, b, c):
        return -a**3 + jnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5
    return f


# ---------------------------------------------------------------------------------------
# W2: -log(softmax(logits)[3])
# ---------------------------------------------------------------------------------------

W2_LOGITS = [0.0, 3.0, -2.0, 1.0]
W2_VALUE = 2.1755153626167147
W2_GRAD = [0.041772570515350445, 0.8390245074625319, 0.005653302662216329, -0.8864503806400986]


@njit
def w2_numba(l0, l1, l2, l3):
    """Hand-written forward and backward; returns (value, (d0, d1, d2, d3))."""
    e0, e1, e2, e3 = math.exp(l0), math.exp(l1), math.exp(l2), math.exp(l3)
    total = e0 + e1 + e2 + e3
    inv_total = 1.0 / total
    value = math.log(total) - l3
    return value, (e0 * inv_total, e1 * inv_total, e2 * inv_total, e3 * inv_total - 1.0)


def w2_loss_micrograd_style(logits):
    """The loss as in micrograd's notebook; works on tracegrad tracers."""
    counts = [logit.exp() for logit in logits]
    denominator = sum(counts)
    probs = [count / denominator for count in counts]
    return -probs[3].log()


def w2_loss_jax(logits):
    counts = [jnp.exp(logit) for logit in logits]
    denominator = sum(counts)
    probs = [count / denominator for count in counts]
    return -jnp.log(probs[3])


# ---------------------------------------------------------------------------------------
# W3: micrograd's MLP 3 -> 4 -> 4 -> 1, tanh on every layer, sum of squared errors
# ---------------------------------------------------------------------------------------

W3_XS = np.array([[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]])
W3_YS = np.array([1.0, -1.0, -1.0, 1.0])
W3_SIZES = (3, 4, 4, 1)


def w3_init_params(sizes=W3_SIZES, seed=0):
    rng = np.random.default_rng(seed)
    return [{"W": rng.uniform(-1, 1, (n_in, n_out)), "b": rng.uniform(-1, 1, n_out)}
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def flatten_params(params):
    return tuple(leaf for layer in params for leaf in (layer["W"], layer["b"]))


def unflatten_params(flat):
    return [{"W": flat[i], "b": flat[i + 1]} for i in range(0, len(flat), 2)]


# -- hand-written NumPy -------------------------------------------------------------------

def w3_loss_numpy(params, x, y):
    h = x
    for layer in params:
        h = np.tanh(h @ layer["W"] + layer["b"])
    err = h[:, 0] - y
    return float(err @ err)


def w3_value_and_grad_numpy(params, x, y):
    activations = [x]
    for layer in params:
        activations.append(np.tanh(activations[-1] @ layer["W"] + layer["b"]))
    err = activations[-1][:, 0] - y
    d_h = (2.0 * err)[:, None]
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        d_z = d_h * (1.0 - activations[i + 1] ** 2)
        grads[i] = {"W": activations[i].T @ d_z, "b": d_z.sum(axis=0)}
        d_h = d_z @ params[i]["W"].T
    return float(err @ err), grads


def w3_step_numpy(params, x, y):
    _, grads = w3_value_and_grad_numpy(params, x, y)
    return [{k: layer[k] - LEARNING_RATE * g[k] for k in layer} for layer, g in zip(params, grads)]


# -- hand-written numba -------------------------------------------------------------------

@njit
def dense_tanh(x, W, b):
    """tanh(x @ W + b) with loops."""
    n, k = x.shape
    m = W.shape[1]
    h = np.empty((n, m))
    for i in range(n):
        for j in range(m):
            s = b[j]
            for p in range(k):
                s += x[i, p] * W[p, j]
            h[i, j] = math.tanh(s)
    return h


@njit
def dense_tanh_backward(x, W, h, d_h, need_dx):
    """Cotangents of x, W, b for h = tanh(x @ W + b), given the cotangent d_h of h."""
    n, k = x.shape
    m = W.shape[1]
    d_x = np.zeros((n, k))
    d_W = np.zeros((k, m))
    d_b = np.zeros(m)
    for i in range(n):
        for j in range(m):
            d_z = d_h[i, j] * (1.0 - h[i, j] * h[i, j])
            d_b[j] += d_z
            for p in range(k):
                d_W[p, j] += x[i, p] * d_z
            if need_dx:
                for p in range(k):
                    d_x[i, p] += d_z * W[p, j]
    return d_x, d_W, d_b


@njit
def w3_value_and_grad_numba(x, y, W1, b1, W2, b2, W3, b3):
    """Returns (loss, dW1, db1, dW2, db2, dW3, db3)."""
    h1 = dense_tanh(x, W1, b1)
    h2 = dense_tanh(h1, W2, b2)
    h3 = dense_tanh(h2, W3, b3)
    loss = 0.0
    d_h3 = np.empty_like(h3)
    for i in range(h3.shape[0]):
        err = h3[i, 0] - y[i]
        loss += err * err
        d_h3[i, 0] = 2.0 * err
    d_h2, d_W3, d_b3 = dense_tanh_backward(h2, W3, h3, d_h3, True)
    d_h1, d_W2, d_b2 = dense_tanh_backward(h1, W2, h2, d_h2, True)
    _, d_W1, d_b1 = dense_tanh_backward(x, W1, h1, d_h1, False)
    return loss, d_W1, d_b1, d_W2, d_b2, d_W3, d_b3


@njit
def w3_step_numba(x, y, W1, b1, W2, b2, W3, b3, lr):
    """Returns the updated (W1, b1, W2, b2, W3, b3)."""
    _, d_W1, d_b1, d_W2, d_b2, d_W3, d_b3 = w3_value_and_grad_numba(x, y, W1, b1, W2, b2, W3, b3)
    return (W1 - lr * d_W1, b1 - lr * d_b1, W2 - lr * d_W2, b2 - lr * d_b2,
            W3 - lr * d_W3, b3 - lr * d_b3)


def w3_value_and_grad_numba_tree(params, x, y):
    loss, *grads = w3_value_and_grad_numba(x, y, *flatten_params(params))
    return loss, unflatten_params(grads)


def w3_step_numba_tree(params, x, y):
    return unflatten_params(w3_step_numba(x, y, *flatten_params(params), LEARNING_RATE))


# -- tracegrad and JAX --------------------------------------------------------------------

def make_w3_loss(np_module):
    def loss(params, x, y):
        h = x
        for layer in params:
            h = np_module.tanh(h @ layer["W"] + layer["b"])
        err = np_module.reshape(h, (-1,)) - y
        return np_module.sum(err * err)
    return loss


def make_w3_step_tracegrad():
    loss = make_w3_loss(tnp)
    return tg.jit(lambda params, x, y: tg.tree_map(lambda p, g: p - 0.1 * g, params,
                                                     tg.grad(loss)(params, x, y)))


def make_w3_step_jax():
    loss = make_w3_loss(jnp)
    return jax.jit(lambda params, x, y: jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params,
                                                               jax.grad(loss)(params, x, y)))


def central_difference_grads(loss, params, x, y, eps=1e-6):
    """Numerical gradient of loss wrt every parameter, as the params' structure."""
    grads = []
    for layer in params:
        layer_grads = {}
        for key, value in layer.items():
            g = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                original = value[index]
                value[index] = original + eps
                plus = loss(params, x, y)
                value[index] = original - eps
                minus = loss(params, x, y)
                value[index] = original
                g[index] = (plus - minus) / (2 * eps)
            layer_grads[key] = g
        grads.append(layer_grads)
    return grads


# ---------------------------------------------------------------------------------------
# checking and timing
# ---------------------------------------------------------------------------------------

def leaves(tree) -> list[np.ndarray]:
    """The leaves of nested tuples/lists/dicts (dicts by sorted key) as float arrays."""
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in leaves(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in leaves(item)]
    return [np.asarray(tree, dtype=np.float64)]


def mismatch(actual, expected) -> str | None:
    """None if actual matches expected leaf by leaf, else a description of the first difference."""
    got, want = leaves(actual), leaves(expected)
    if len(got) != len(want):
        return f"{len(got)} leaves, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"leaf {i}: shape {g.shape}, expected {w.shape}"
        if not np.allclose(g, w, rtol=RTOL, atol=ATOL):
            worst = np.unravel_index(np.argmax(np.abs(g - w)), g.shape) if g.shape else ()
            return f"leaf {i}{list(worst) if worst else ''}: {float(g[worst])!r}, expected {float(w[worst])!r}"
    return None


@dataclass
class Timing:
    sample_seconds: float
    samples: int


def loop_seconds(fn, args, count: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(count):
            fn(*args)
        return time.perf_counter() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def calibrate(fn, args, sample_seconds: float) -> int:
    """Loop count that makes one sample last about sample_seconds (at least 1)."""
    count = 1
    while True:
        elapsed = loop_seconds(fn, args, count)
        if elapsed >= sample_seconds / 8 or count >= 1 << 24:
            return max(1, math.ceil(count * sample_seconds / max(elapsed, 1e-9)))
        count *= 2


def per_call_seconds(fn, args, timing: Timing) -> tuple[float, float]:
    """(median per-call time, (max - min) / median) over timing.samples samples."""
    count = calibrate(fn, args, timing.sample_seconds)
    samples = [loop_seconds(fn, args, count) / count for _ in range(timing.samples)]
    median = statistics.median(samples)
    return median, (max(samples) - min(samples)) / median


# ---------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------

@dataclass
class Case:
    """One implementation of one workload: make() builds the function to call with args."""
    workload: str
    name: str
    make: Callable[[], Callable]
    args: tuple
    expected: Any
    library: str = "reference"  # "reference", "tracegrad" or "jax"


@dataclass
class Row:
    workload: str
    name: str
    status: str  # ok, FAIL, ERROR, skipped
    first_call: float | None = None
    per_call: float | None = None
    spread: float | None = None
    ratio: float | None = None
    note: str = ""
    details: str = field(default="", repr=False)


def run_case(case: Case, timing: Timing) -> Row:
    row = Row(case.workload, case.name, "ok")
    if case.library == "tracegrad" and tg is None:
        row.status, row.note = "ERROR", "tracegrad did not import (see above)"
        return row
    try:
        start = time.perf_counter()
        fn = case.make()
        result = fn(*case.args)
        row.first_call = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001
        row.status, row.note = "ERROR", f"{type(error).__name__}: {error}".splitlines()[0]
        row.details = traceback.format_exc()
        return row
    problem = mismatch(result, case.expected)
    if problem:
        row.status, row.note = "FAIL", problem
        return row
    try:
        row.per_call, row.spread = per_call_seconds(fn, case.args, timing)
    except Exception as error:  # noqa: BLE001  (a later call may fail where the first did not)
        row.status, row.note = "ERROR", f"while timing: {type(error).__name__}: {error}".splitlines()[0]
        row.details = traceback.format_exc()
    return row


def jax_blocking(fn):
    return lambda *args: jax.block_until_ready(fn(*args))


def scalar_cases(workload, numba_fn, numba_args, tracegrad_fun, tracegrad_args, argnums,
                 jax_fun, expected) -> list[Case]:
    cases = [Case(workload, "numba, hand-written", lambda: numba_fn, numba_args, expected)]
    cases.append(Case(workload, "tracegrad value_and_grad",
                      lambda: tg.value_and_grad(tracegrad_fun(), argnums=argnums),
                      tracegrad_args, expected, "tracegrad"))
    cases.append(Case(workload, "tracegrad jit(value_and_grad)",
                      lambda: tg.jit(tg.value_and_grad(tracegrad_fun(), argnums=argnums)),
                      tracegrad_args, expected, "tracegrad"))
    if jax is not None:
        cases.append(Case(workload, "jax jit(value_and_grad)",
                          lambda: jax_blocking(jax.jit(jax.value_and_grad(jax_fun(), argnums=argnums))),
                          tracegrad_args, expected, "jax"))
    return cases


def w3_cases(params, x, y) -> list[Case]:
    flat_args = (x, y, *flatten_params(params))
    tree_args = (params, x, y)
    expected_vg = w3_value_and_grad_numpy(params, x, y)
    expected_step = w3_step_numpy(params, x, y)
    vg, step = "W3a MLP value_and_grad", "W3b MLP SGD step"
    cases = [
        Case(vg, "numba, hand-written (flat arrays)", lambda: w3_value_and_grad_numba, flat_args, expected_vg),
        Case(vg, "numba, hand-written + pytree wrapper", lambda: w3_value_and_grad_numba_tree, tree_args,
             expected_vg),
        Case(vg, "NumPy, hand-written", lambda: w3_value_and_grad_numpy, tree_args, expected_vg),
        Case(vg, "tracegrad value_and_grad", lambda: tg.value_and_grad(make_w3_loss(tnp)), tree_args,
             expected_vg, "tracegrad"),
        Case(vg, "tracegrad jit(value_and_grad)", lambda: tg.jit(tg.value_and_grad(make_w3_loss(tnp))),
             tree_args, expected_vg, "tracegrad"),
        Case(step, "numba, hand-written (flat arrays)", lambda: w3_step_numba, (*flat_args, LEARNING_RATE),
             expected_step),
        Case(step, "numba, hand-written + pytree wrapper", lambda: w3_step_numba_tree, tree_args, expected_step),
        Case(step, "NumPy, hand-written", lambda: w3_step_numpy, tree_args, expected_step),
        Case(step, "tracegrad jit(step)", make_w3_step_tracegrad, tree_args, expected_step, "tracegrad"),
    ]
    if jax is not None:
        cases.insert(5, Case(vg, "jax jit(value_and_grad)",
                             lambda: jax_blocking(jax.jit(jax.value_and_grad(make_w3_loss(jnp)))),
                             tree_args, expected_vg, "jax"))
        cases.append(Case(step, "jax jit(step)", lambda: jax_blocking(make_w3_step_jax()), tree_args,
                          expected_step, "jax"))
    return cases


def check_w3_reference(params, x, y) -> str | None:
    """Check the NumPy reference against central differences (rtol 1e-5); None if it agrees."""
    _, grads = w3_value_and_grad_numpy(params, x, y)
    copies = [{key: value.copy() for key, value in layer.items()} for layer in params]
    numeric = central_difference_grads(w3_loss_numpy, copies, x, y)
    for g, n in zip(leaves(grads), leaves(numeric)):
        if not np.allclose(g, n, rtol=1e-5, atol=1e-7):
            return f"NumPy W3 gradient disagrees with central differences: {g} vs {n}"
    return None


def all_cases() -> list[Case]:
    params = w3_init_params()
    return [
        *scalar_cases("W1 scalar f(a,b,c)", w1_numba, W1_ARGS, make_w1_tracegrad, W1_ARGS, (0, 1, 2),
                      make_w1_jax, (W1_VALUE, W1_GRAD)),
        *scalar_cases("W2 softmax NLL", w2_numba, tuple(W2_LOGITS), lambda: w2_loss_micrograd_style,
                      (list(W2_LOGITS),), 0, lambda: w2_loss_jax, (W2_VALUE, W2_GRAD)),
        *w3_cases(params, W3_XS, W3_YS),
    ]


def add_ratios(rows: list[Row]) -> None:
    """Ratio of each row's per-call time to the first (numba) row of its workload."""
    floors = {}
    for row in rows:
        if row.workload not in floors:
            floors[row.workload] = row.per_call
        floor = floors[row.workload]
        if row.per_call is not None and floor:
            row.ratio = row.per_call / floor


# ---------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------

def print_header(timing: Timing, quick: bool) -> None:
    threads = ", ".join(f"{name}={os.environ[name]}" for name in THREAD_VARIABLES)
    print("tracegrad core benchmark" + (" (--quick)" if quick else ""))
    print(f"  python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    print(f"  threads: {threads} (numba.config.NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})")
    print(f"  timing: median of {timing.samples} samples, each a loop of >= "
          f"{timing.sample_seconds * 1e3:g} ms; checks rtol {RTOL:g}, atol {ATOL:g}")
    if tg is not None:
        print(f"  tracegrad: imported from {os.path.relpath(os.path.dirname(tg.__file__), REPO_ROOT)}")
    else:
        print("  tracegrad: FAILED TO IMPORT; its rows are marked ERROR. The error:")
        print("    " + TRACEGRAD_ERROR.rstrip().replace("\n", "\n    "))
    print(f"  jax: {'jax ' + jax.__version__ if jax is not None else 'not installed, rows skipped'}")
    print()


def fmt(value: float | None, scale: float, width: int, decimals: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value * scale:{width}.{decimals}f}"


def print_table(rows: list[Row]) -> None:
    header = f"{'implementation':38} {'check':6} {'first call':>11} {'per call':>11} {'spread':>7} {'vs numba':>9}"
    units = f"{'':38} {'':6} {'ms':>11} {'µs':>11} {'%':>7} {'':>9}"
    workload = None
    for row in rows:
        if row.workload != workload:
            workload = row.workload
            print(f"{workload}\n  {header}\n  {units}")
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        print(f"  {row.name:38} {row.status:6} {fmt(row.first_call, 1e3, 11, 2)} "
              f"{fmt(row.per_call, 1e6, 11, 3)} {fmt(row.spread, 1e2, 7, 1)} {ratio:>9}")
        if row.note:
            print(f"      -> {row.note}")
    print()
    print("first call: the first call of a freshly built function (tracegrad/jax: trace + compile;")
    print("numba: compile). ratio: per-call time over the first numba row of the workload.")


def print_details(rows: list[Row]) -> None:
    for row in rows:
        if row.details:
            print(f"\n--- {row.workload} / {row.name}: traceback ---")
            print(row.details.rstrip())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short samples, for a smoke test")
    parser.add_argument("--samples", type=int, default=None, help="samples per row (default 7)")
    parser.add_argument("--sample-ms", type=float, default=None,
                        help="minimum length of one sample in ms (default 50, 2 with --quick)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    timing = Timing(sample_seconds=(args.sample_ms or (2.0 if args.quick else 50.0)) / 1e3,
                    samples=args.samples or 7)
    print_header(timing, args.quick)

    reference_problem = check_w3_reference(w3_init_params(), W3_XS, W3_YS)
    if reference_problem:
        print(f"FAIL: {reference_problem}\n")

    rows = [run_case(case, timing) for case in all_cases()]
    add_ratios(rows)
    print_table(rows)
    print_details(rows)
    failed = reference_problem or any(row.status in ("FAIL", "ERROR") for row in rows) or tg is None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

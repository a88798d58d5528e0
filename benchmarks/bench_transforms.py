"""Composed transformations: per-example gradients (vmap of grad) and a Hessian, against JAX and NumPy.

Run from the repository root:

    python benchmarks/bench_transforms.py                 # W8 and W9, JAX too if it is installed
    python benchmarks/bench_transforms.py --quick         # smoke test: short samples
    python benchmarks/bench_transforms.py --workloads W9

  W8  per-example gradients of W5's MLP (64-128-128-10, tanh, tanh, linear, softmax cross-entropy
      with integer labels; suite/workloads.py) at batch 256: the gradient of each example's loss
      with respect to all parameters, stacked along a new first axis (256 x 26,122 numbers)
  W9  the 100 x 100 Hessian of a regularised logistic-regression loss, 1,000 examples x 100
      features: mean log-loss + 1e-2 * ||w||^2

Each workload's loss is written once, over the library's NumPy-like module, so every library
runs the same formula. Before anything is timed, every row's result is checked against the
workload's reference row (rtol 1e-9, atol 1e-12), and the reference itself is checked: W8's
(a loop of single-example gradients) by the mean of its gradients against W5's hand-written
NumPy gradient of the batch loss, W9's (the analytic Hessian) by central differences of the
analytic gradient, which each library's gradient of the loss must also match (rtol 1e-9).

Timing is bench_core.py's (suite/timing.py): per call, the median over samples of a loop
calibrated to last at least 50 ms, the garbage collector off inside a sample; BLAS, numba and
XLA are pinned to one thread and the process to one core. Unlike bench_core.py the rows of a
workload are sampled in turn (one sample of every row, then the next round), so that a busy
spell of a shared machine hits every row alike; the ratios are to the fastest row of the same
run. tracegrad's background compile is off and its compile cache a new empty directory
(--warm-cache: the usual one), so its first call traces and compiles. The exit status is 1 if
any check failed or any row raised, else 0; JAX not being installed is a printed note.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import suite.threads  # noqa: E402  (first: pins the thread pools before NumPy is imported)

CORE_PINNING = suite.threads.pin_to_one_core()  # before any library starts a thread

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if importlib.util.find_spec("tracegrad") is None:  # run from a checkout that is not installed
    sys.path.insert(0, REPO_ROOT)
os.environ["TRACEGRAD_BACKGROUND_COMPILE"] = "0"  # read when tracegrad is imported: first calls compile

import numpy as np  # noqa: E402

import tracegrad as tg  # noqa: E402
import tracegrad.numpy as tnp  # noqa: E402
from suite import checks, report, workloads  # noqa: E402
from suite.report import seconds  # noqa: E402
from suite.timing import Timing, calibrate, garbage_collector_paused, loop_seconds  # noqa: E402

W8_BATCH = 256
W9_EXAMPLES, W9_FEATURES, W9_L2 = 1000, 100, 1e-2
WORKLOADS = ("W8", "W9")


# -- the rows ------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One row: build() gives (fn, args), timed as fn(*args); read(result) gives NumPy arrays to check."""
    label: str
    build: Callable[[], tuple[Callable, tuple]]
    read: Callable[[Any], Any] = lambda result: result
    check: Callable[[], str | None] | None = None  # a further check, after the first call: None if it passes
    is_tracegrad: bool = False
    is_jax: bool = False


@dataclass
class Row:
    label: str
    status: str = "ok"  # ok, FAILED or ERROR
    first_call: float | None = None
    samples: list[float] = field(default_factory=list)  # seconds per call, one per sample
    count: int = 0  # calls per sample
    slow: bool = False  # timed by single-call samples
    fn: Callable | None = None
    args: tuple = ()
    note: str = ""
    details: str = ""

    @property
    def per_call(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> float | None:
        return (max(self.samples) - min(self.samples)) / self.per_call if self.samples else None


def jax_module():
    """(suite.impl_jax, None), which turns float64 on, or (None, the reason) when JAX does not import."""
    try:
        from suite import impl_jax
    except Exception as error:  # noqa: BLE001  (a peer that fails to import is skipped, never fatal)
        return None, (f"skipped, it does not import ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); pip install jax")
    return impl_jax, None


# -- W8: per-example gradients of W5's MLP ------------------------------------------------------

def w8_example_loss(ops):
    """One example's loss: W5's MLP on a vector x, softmax cross-entropy of its integer label."""
    def loss(params, x, label):
        h = x
        for layer in params[:-1]:
            h = ops.tanh(h @ layer["W"] + layer["b"])
        logits = h @ params[-1]["W"] + params[-1]["b"]
        return ops.softmax_cross_entropy(logits[None, :], label[None])  # a batch of one
    return loss


def numpy_per_example_grads(params, x, labels):
    """Forward and backward by hand for the whole batch, each example's gradient kept apart."""
    hs = [x]
    for layer in params[:-1]:
        hs.append(np.tanh(hs[-1] @ layer["W"] + layer["b"]))
    logits = hs[-1] @ params[-1]["W"] + params[-1]["b"]
    d_z = np.exp(logits - logits.max(axis=1, keepdims=True))
    d_z /= d_z.sum(axis=1, keepdims=True)
    d_z[np.arange(len(labels)), labels] -= 1.0  # softmax - one-hot: each example's own loss, not a mean
    grads = [None] * len(params)
    for i in reversed(range(len(params))):
        grads[i] = {"W": np.einsum("bi,bj->bij", hs[i], d_z), "b": d_z}
        if i:
            d_z = (d_z @ params[i]["W"].T) * (1.0 - hs[i] * hs[i])
    return grads


def w8_candidates(workload, jax_impl) -> list[Candidate]:
    from suite import impl_tracegrad

    params, x, labels = workload.args
    # one example's label as a 0-d int64 array: labels[i] would be a NumPy int64 scalar, which
    # tracegrad, like a Python int argument, takes as a float (so it could not index)
    examples = [(x[i], labels[i, ...]) for i in range(len(labels))]

    def tracegrad_vmap():
        loss = w8_example_loss(impl_tracegrad.OPS)
        return tg.jit(tg.vmap(tg.grad(loss), in_axes=(None, 0, 0))), (params, x, labels)

    def tracegrad_loop():
        grad_one = tg.jit(tg.grad(w8_example_loss(impl_tracegrad.OPS)))

        def loop(params, examples):
            grads = [grad_one(params, xi, label) for xi, label in examples]
            return tg.tree_map(lambda *leaves: np.stack(leaves), *grads)
        return loop, (params, examples)

    rows = [Candidate("tracegrad jit(vmap(grad))", tracegrad_vmap, is_tracegrad=True)]
    if jax_impl is not None:
        def jax_vmap():
            import jax
            loss = w8_example_loss(jax_impl.OPS)
            function = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, 0)))
            return jax_impl.blocking(function), jax_impl.device_args(workload)
        rows.append(Candidate("JAX jit(vmap(grad))", jax_vmap, read=jax_impl.to_numpy, is_jax=True))
    rows.append(Candidate(f"loop of {W8_BATCH} tracegrad jit(grad) calls", tracegrad_loop))
    rows.append(Candidate("NumPy, hand-written (batched, einsum)", lambda: (numpy_per_example_grads, workload.args)))
    return rows


def w8_check_reference(workload, grads) -> str | None:
    """The mean over examples of the reference's gradients against W5's hand-written batch gradient."""
    from suite import impl_numpy

    _, expected = impl_numpy.mlp_value_and_grad(workload.mlp, *workload.args)
    problem = checks.mismatch(tg.tree_map(lambda g: g.mean(axis=0), grads), expected)
    return f"mean of the per-example gradients against W5's batch gradient: {problem}" if problem else None


# -- W9: the Hessian of a regularised logistic regression ------------------------------------

def w9_data():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((W9_EXAMPLES, W9_FEATURES))
    true_w = rng.standard_normal(W9_FEATURES) / np.sqrt(W9_FEATURES)
    y = (rng.uniform(size=W9_EXAMPLES) < 1.0 / (1.0 + np.exp(-x @ true_w))).astype(np.float64)
    w = 0.1 * rng.standard_normal(W9_FEATURES)  # where the Hessian is taken
    return w, x, y


def w9_loss(xp):
    """Mean log-loss of labels y in {0, 1} (softplus(z) - y z, written stably) + l2 * ||w||^2."""
    def loss(w, x, y):
        z = x @ w
        softplus = xp.maximum(z, 0.0) + xp.log(1.0 + xp.exp(-xp.abs(z)))
        return xp.mean(softplus - y * z) + W9_L2 * xp.sum(w * w)
    return loss


def w9_gradient(w, x, y):
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    return x.T @ (p - y) / len(y) + 2.0 * W9_L2 * w


def w9_hessian(w, x, y):
    """X^T diag(p (1 - p)) X / n + 2 l2 I."""
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    return (x.T * (p * (1.0 - p))) @ x / len(y) + 2.0 * W9_L2 * np.eye(len(w))


def w9_candidates(args, jax_impl) -> list[Candidate]:
    def gradient_check(gradient: Callable) -> Callable[[], str | None]:
        """The library's gradient of the loss against the analytic one."""
        def check():
            problem = checks.mismatch(np.asarray(gradient(*args)), w9_gradient(*args))
            return f"gradient against the analytic one: {problem}" if problem else None
        return check

    rows = [Candidate("tracegrad jit(hessian)", lambda: (tg.jit(tg.hessian(w9_loss(tnp))), args),
                      check=gradient_check(tg.jit(tg.grad(w9_loss(tnp)))), is_tracegrad=True)]
    if jax_impl is not None:
        import jax
        import jax.numpy as jnp

        def jax_hessian():
            return jax_impl.blocking(jax.jit(jax.hessian(w9_loss(jnp)))), tuple(jnp.asarray(a) for a in args)
        rows.append(Candidate("JAX jit(hessian)", jax_hessian, read=np.asarray,
                              check=gradient_check(jax.jit(jax.grad(w9_loss(jnp)))), is_jax=True))
    rows.append(Candidate("NumPy, analytic", lambda: (w9_hessian, args)))
    return rows


def w9_check_reference(args, hessian) -> str | None:
    """The analytic Hessian against central differences of the analytic gradient, at a few columns."""
    w, eps = args[0], 1e-6
    for k in np.random.default_rng(0).permutation(len(w))[:6]:
        step = np.zeros_like(w)
        step[k] = eps
        column = (w9_gradient(w + step, *args[1:]) - w9_gradient(w - step, *args[1:])) / (2 * eps)
        if not np.allclose(hessian[:, k], column, rtol=1e-5, atol=1e-8):
            return f"analytic Hessian column {k} against central differences of the gradient"
    return None


# -- running a workload ----------------------------------------------------------------------

def first_call(candidate: Candidate, row: Row) -> Any:
    """Build the row and call it once (the first-call time); its result as NumPy arrays."""
    with garbage_collector_paused():
        start = time.perf_counter()
        row.fn, row.args = candidate.build()
        result = row.fn(*row.args)
        row.first_call = time.perf_counter() - start
    return candidate.read(result)


def prepare_rows(candidates: list[Candidate], reference: int, check_reference: Callable) -> list[Row]:
    """Call every row once and check it; the reference row first (it is checked by check_reference)."""
    rows = [Row(candidate.label) for candidate in candidates]
    expected = None
    for i in [reference] + [i for i in range(len(candidates)) if i != reference]:
        row = rows[i]
        try:
            result = first_call(candidates[i], row)
            if i == reference:
                problem = check_reference(result)
                expected = result if problem is None else None
            elif expected is None:
                problem = "the reference row failed: nothing to check against"
            else:
                problem = checks.mismatch(result, expected)
            if problem is None and candidates[i].check is not None:
                problem = candidates[i].check()
            if problem:
                row.status, row.note = "FAILED", problem
        except Exception as error:  # noqa: BLE001  (reported in the table, the run goes on)
            row.status, row.note = "ERROR", f"{type(error).__name__}: {error}".splitlines()[0][:200]
            row.details = traceback.format_exc()
        print(f"    {row.label}: first call {seconds(row.first_call)}, check {row.status}", flush=True)
    return rows


def time_rows(rows: list[Row], timing: Timing) -> None:
    """Calibrate every checked row, then take its samples in rounds, one sample of every row a round.

    A row whose single call lasts slow_call_seconds or more takes slow_samples single-call samples.
    """
    timed = [row for row in rows if row.status == "ok"]
    wanted = {}
    for row in timed:
        one_call = loop_seconds(row.fn, row.args, 1)
        row.slow = one_call >= timing.slow_call_seconds
        row.count = 1 if row.slow else calibrate(row.fn, row.args, timing.sample_seconds, one_call)
        wanted[row.label] = timing.slow_samples if row.slow else timing.samples
    for _ in range(max(wanted.values(), default=0)):
        for row in timed:
            if len(row.samples) < wanted[row.label]:
                row.samples.append(loop_seconds(row.fn, row.args, row.count) / row.count)


def run_workload(title: str, candidates: list[Candidate], reference: int, check_reference: Callable,
                 timing: Timing) -> list[Row]:
    print(f"\n{title}\n  first calls and checks (reference: {candidates[reference].label}):", flush=True)
    rows = prepare_rows(candidates, reference, check_reference)
    time_rows(rows, timing)
    print_table(rows, candidates, timing)
    return rows


# -- output ----------------------------------------------------------------------------------

WIDTHS = (40, 7, 11, 10, 7, 12, 11)


def line(cells) -> str:
    first, *rest = cells
    return f"  {first:<{WIDTHS[0]}}" + "".join(f" {cell:>{width}}" for cell, width in zip(rest, WIDTHS[1:]))


def samples_text(row: Row, timing: Timing) -> str:
    if not row.samples:
        return "-"
    if row.slow:
        return f"{len(row.samples)} x 1 call"
    return f"{len(row.samples)} x {timing.sample_seconds * 1e3:g} ms"


def print_table(rows: list[Row], candidates: list[Candidate], timing: Timing) -> None:
    fastest = min((row.per_call for row in rows if row.samples), default=None)
    print()
    print(line(("implementation", "check", "first call", "per call", "spread", "samples", "vs fastest")))
    for row in rows:
        ratio = row.per_call / fastest if row.samples and fastest else None
        spread = f"{row.spread * 100:.1f}%" if row.samples else "-"
        print(line((row.label, row.status, seconds(row.first_call), seconds(row.per_call), spread,
                    samples_text(row, timing), report.ratio_text(ratio))))
        if row.note:
            print(f"      -> {row.note}")
    tracegrad_row = next((r for r, c in zip(rows, candidates) if c.is_tracegrad and r.samples), None)
    jax_row = next((r for r, c in zip(rows, candidates) if c.is_jax and r.samples), None)
    if tracegrad_row and jax_row:
        ratio = tracegrad_row.per_call / jax_row.per_call
        verdict = "met" if ratio <= 1.0 else "MISSED"
        print(f"  target tracegrad <= JAX: {verdict} (tracegrad / JAX = {ratio:.2f} per call; "
              f"first call {tracegrad_row.first_call / jax_row.first_call:.1f}x JAX's)")
    elif tracegrad_row:
        print("  target tracegrad <= JAX: not measured (no timed JAX row)")
    sys.stdout.flush()


def cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info = cpuinfo.read()
    except OSError:
        return "CPU flags unknown (no /proc/cpuinfo)"
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown CPU")
    present = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in ("avx2", "avx512f"))
    return f"{model}; {present}"


def print_header(options, timing: Timing, tracegrad_note: str, jax_impl, jax_problem) -> None:
    import numba

    quick = " (--quick: short samples, not for quoting)" if options.quick else ""
    print(f"tracegrad transformations benchmark{quick}")
    print(f"  {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; python "
          f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, tracegrad "
          f"{tg.__version__}, " + (jax_impl.VERSION if jax_impl else "no JAX"))
    print(f"  {platform.machine()}, {os.cpu_count()} CPUs: {cpu_features()}; load average "
          + ", ".join(f"{load:.2f}" for load in os.getloadavg()) + " (1, 5, 15 min) at the start")
    if jax_impl is None:
        print(f"  JAX: {jax_problem}")
    print(f"  threads pinned to one: {suite.threads.describe().split('; torch')[0]}; {CORE_PINNING}")
    print(f"  per call: median of {timing.samples} samples, each a loop of >= {timing.sample_seconds * 1e3:g} ms "
          f"(a call of >= {timing.slow_call_seconds:g} s: {timing.slow_samples} single-call samples), the rows of a "
          "workload sampled in turn; spread: (max - min) / median; garbage collector off during timed calls")
    print(f"  checks before timing: every row's result against the reference row (rtol {checks.RTOL:g}, "
          f"atol {checks.ATOL:g}); the reference itself as the module docstring says")
    print("  first call: building the function and calling it once, tracing and compiling included; the "
          "reference row runs first, and the first tracegrad row of the run also compiles tracegrad's "
          "matrix-product kernels (numba compiles them at their first use in a process)")
    print(f"  tracegrad: {tracegrad_note}; JAX: jax_enable_x64, arguments on the device first, block_until_ready")


def prepare_tracegrad(warm_cache: bool) -> tuple[str | None, str]:
    """As bench_core.py: background compile off, and a new empty compile cache: (its directory, a note)."""
    tg.config.compile_in_background = False  # also set by the environment variable before the import
    note = "background compile off (the first call traces and compiles)"
    if warm_cache:
        return None, f"{note}; its usual compile cache (--warm-cache), so a first call may load from it"
    directory = tempfile.mkdtemp(prefix="tracegrad-bench-cache-")
    os.environ["TRACEGRAD_CACHE_DIR"] = directory  # read when a program is compiled
    return directory, f"{note}; a new empty compile cache"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short samples, for a smoke test")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: W8, W9 (default: both)")
    parser.add_argument("--no-jax", action="store_true", help="leave JAX's rows out even if it is installed")
    parser.add_argument("--samples", type=int, help="samples per row (default 7, 3 with --quick)")
    parser.add_argument("--sample-ms", type=float,
                        help="minimum length of one sample in ms (default 50, 2 with --quick)")
    parser.add_argument("--warm-cache", action="store_true", help="use tracegrad's usual compile cache")
    options = parser.parse_args(argv)
    options.keys = [key.strip().upper() for key in options.workloads.split(",") if key.strip()]
    unknown = set(options.keys) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(WORKLOADS)}")
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    timing = Timing(sample_seconds=(options.sample_ms or (2.0 if options.quick else 50.0)) / 1e3,
                    samples=options.samples or (3 if options.quick else 7),
                    slow_call_seconds=0.2 if options.quick else 0.5, slow_samples=1 if options.quick else 3)
    cache, tracegrad_note = prepare_tracegrad(options.warm_cache)
    rows: list[Row] = []
    try:
        jax_impl, jax_problem = (None, "left out (--no-jax)") if options.no_jax else jax_module()
        print_header(options, timing, tracegrad_note, jax_impl, jax_problem)
        if "W8" in options.keys:
            workload = workloads.classifier(W8_BATCH, "W8")
            candidates = w8_candidates(workload, jax_impl)
            reference = next(i for i, c in enumerate(candidates) if c.label.startswith("loop"))
            rows += run_workload(f"W8 per-example gradients of W5's MLP 64-128-128-10 (tanh, softmax "
                                 f"cross-entropy), batch {W8_BATCH}", candidates, reference,
                                 lambda grads: w8_check_reference(workload, grads), timing)
        if "W9" in options.keys:
            args = w9_data()
            candidates = w9_candidates(args, jax_impl)
            rows += run_workload(f"W9 Hessian ({W9_FEATURES} x {W9_FEATURES}) of logistic regression, "
                                 f"{W9_EXAMPLES} examples x {W9_FEATURES} features, mean log-loss + "
                                 f"{W9_L2:g} ||w||^2", candidates, len(candidates) - 1,
                                 lambda hessian: w9_check_reference(args, hessian), timing)
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    for row in rows:
        if row.details:
            print(f"\n--- {row.label}: traceback ---\n{row.details.rstrip()}")
    bad = [f"{row.label}: {row.status}" for row in rows if row.status in ("FAILED", "ERROR")]
    print("\n" + ("FAILED: " + "; ".join(bad) if bad else "all checks passed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

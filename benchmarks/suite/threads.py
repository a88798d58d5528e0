"""Pin BLAS, OpenMP, numba and XLA to one thread. Import this before NumPy or any peer library.

The environment variables are not enough for every library: XLA's CPU runtime keeps a pool of
threads whatever XLA_FLAGS says (JAX used ~1.9 cores on a 2-core machine). So bench_core.py
also calls `pin_to_one_core`, which restricts the process, and every thread it starts later,
to a single CPU core.
"""
import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMBA_NUM_THREADS")
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def pin_to_one_thread() -> None:
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    if XLA_SINGLE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_SINGLE_THREAD}".strip()


def pin_to_one_core() -> str:
    """Restrict this process to one of its CPU cores (Linux); returns a description."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned to one core (no sched_setaffinity on this platform)"
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return f"process pinned to CPU core {core} (sched_setaffinity)"


def describe() -> str:
    pinned = ", ".join(f"{name}={os.environ.get(name)}" for name in THREAD_VARIABLES)
    return f"{pinned}; XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}; torch.set_num_threads(1)"


pin_to_one_thread()

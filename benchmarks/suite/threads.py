"""Pin BLAS, OpenMP, numba and XLA to one thread. Import this before NumPy or any peer library."""
import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMBA_NUM_THREADS")
XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def pin_to_one_thread() -> None:
    for name in THREAD_VARIABLES:
        os.environ[name] = "1"
    if XLA_SINGLE_THREAD not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_SINGLE_THREAD}".strip()


def describe() -> str:
    pinned = ", ".join(f"{name}={os.environ.get(name)}" for name in THREAD_VARIABLES)
    return f"{pinned}; XLA_FLAGS={os.environ.get('XLA_FLAGS')!r}; torch.set_num_threads(1)"


pin_to_one_thread()

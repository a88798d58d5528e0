"""Global settings, read when a transformation is created.

`tg.config.backend = "python"` runs generated code without numba; `tg.config.debug_nans = True`
stops at the first nan or inf; `tg.config.parallel = True` spreads long elementwise loops over
the CPU's cores; `tg.config.reroll_loops = False` keeps unrolled Python loops unrolled. The
environment variables TRACEGRAD_BACKEND, TRACEGRAD_DEBUG_NANS, TRACEGRAD_PARALLEL,
TRACEGRAD_BACKGROUND_COMPILE and TRACEGRAD_REROLL_LOOPS set the defaults.

The bounds on memory, disk and exit time (`max_signatures`, `max_compiled_programs`,
`cache_max_mb`, `exit_wait_seconds`; TRACEGRAD_MAX_SIGNATURES, TRACEGRAD_MAX_COMPILED_PROGRAMS,
TRACEGRAD_CACHE_MAX_MB, TRACEGRAD_EXIT_WAIT_SECONDS) hold for the whole process and are read
when they apply.

TRACEGRAD_GEMM chooses the float64 matrix product of compiled code when tracegrad is imported:
"auto" (the default: tracegrad's kernel on a CPU with AVX-512, else BLAS), "blocked" (the
kernel; on a CPU without AVX-512, BLAS with a warning) or "blas", so tests and benchmarks can
run each path on any machine that supports it.
"""
import os

import attrs


@attrs.define
class Config:
    backend: str = attrs.field(default=os.environ.get("TRACEGRAD_BACKEND", "numba"),
                               validator=attrs.validators.in_(("numba", "python")))
    # raise FloatingPointError at the first op whose value is nan or inf, naming its line
    debug_nans: bool = attrs.field(default=os.environ.get("TRACEGRAD_DEBUG_NANS", "") not in ("", "0"),
                                   converter=bool)
    # run new programs with NumPy while numba compiles them in a background thread
    compile_in_background: bool = attrs.field(
        default=os.environ.get("TRACEGRAD_BACKGROUND_COMPILE", "1") not in ("", "0"), converter=bool)
    # roll the copies of an unrolled Python loop in a long program back into a scan (tracegrad.reroll)
    reroll_loops: bool = attrs.field(default=os.environ.get("TRACEGRAD_REROLL_LOOPS", "1") not in ("", "0"),
                                     converter=bool)
    # numba prange over the outer index of elementwise loops that make codegen.PARALLEL_MIN_LIBM_CALLS libm calls
    parallel: bool = attrs.field(default=os.environ.get("TRACEGRAD_PARALLEL", "") not in ("", "0"), converter=bool)

    # signatures a transformed function keeps traced and loaded, the least recently called dropped first
    max_signatures: int = attrs.field(default=int(os.environ.get("TRACEGRAD_MAX_SIGNATURES", "256")),
                                      converter=int, metadata={"process_wide": True})
    # programs numba compiles in a process; numba never frees machine code (~1-2 MB a program),
    # so later ones run as NumPy code
    max_compiled_programs: int = attrs.field(default=int(os.environ.get("TRACEGRAD_MAX_COMPILED_PROGRAMS", "500")),
                                             converter=int, metadata={"process_wide": True})
    # the on-disk cache's size; the entries used longest ago are removed first
    cache_max_mb: float = attrs.field(default=float(os.environ.get("TRACEGRAD_CACHE_MAX_MB", "1024")),
                                      converter=float, metadata={"process_wide": True})
    # at exit, how long to let queued background compiles fill the disk cache for the next process
    exit_wait_seconds: float = attrs.field(default=float(os.environ.get("TRACEGRAD_EXIT_WAIT_SECONDS", "10")),
                                           converter=float, metadata={"process_wide": True})

    def snapshot(self) -> "Config":
        """A copy, so a transformation keeps the settings in force when it was created."""
        return attrs.evolve(self)

    def transformation_settings(self) -> tuple:
        """The settings a transformation keeps (the process-wide bounds apart)."""
        return tuple(getattr(self, field.name) for field in attrs.fields(Config)
                     if not field.metadata.get("process_wide"))


config = Config()


GEMM_CHOICES = ("auto", "blocked", "blas")


def gemm_choice() -> str:
    """TRACEGRAD_GEMM, checked: which float64 matrix product compiled code calls (see the module)."""
    choice = os.environ.get("TRACEGRAD_GEMM", "auto").strip().lower() or "auto"
    if choice not in GEMM_CHOICES:
        raise ValueError(f"TRACEGRAD_GEMM={choice!r}: choose one of {', '.join(GEMM_CHOICES)}")
    return choice

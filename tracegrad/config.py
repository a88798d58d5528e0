"""Global settings, read when a transformation is created.

`tg.config.backend = "python"` runs generated code without numba; `tg.config.debug_nans = True`
stops at the first nan or inf; `tg.config.parallel = True` spreads long elementwise loops over
the CPU's cores. The environment variables TRACEGRAD_BACKEND, TRACEGRAD_DEBUG_NANS and
TRACEGRAD_PARALLEL set the defaults.
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
    # numba prange over the outer index of elementwise loops that make codegen.PARALLEL_MIN_LIBM_CALLS libm calls
    parallel: bool = attrs.field(default=os.environ.get("TRACEGRAD_PARALLEL", "") not in ("", "0"), converter=bool)

    def snapshot(self) -> "Config":
        """A copy, so a transformation keeps the settings in force when it was created."""
        return attrs.evolve(self)


config = Config()

"""Global settings, read when a transformation is created.

`tg.config.backend = "python"` runs generated code without numba; `tg.config.debug_nans = True`
stops at the first nan or inf. The environment variables TRACEGRAD_BACKEND and
TRACEGRAD_DEBUG_NANS set the defaults.
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

    def snapshot(self) -> "Config":
        """A copy, so a transformation keeps the settings in force when it was created."""
        return attrs.evolve(self)


config = Config()

"""Global settings: `tg.config.backend = "python"` runs generated code without numba."""
import os

import attrs


@attrs.define
class Config:
    backend: str = attrs.field(default=os.environ.get("TRACEGRAD_BACKEND", "numba"),
                               validator=attrs.validators.in_(("numba", "python")))


config = Config()

"""The one call to numba.njit: the settings every compiled function of tracegrad gets."""
from __future__ import annotations

import os
from pathlib import Path


def jit_compile(function, cache_directory: Path | None = None, inline: bool = False):
    """`function` for numba, with NumPy's error model (1/0 is inf, not an exception).

    The GIL is released, except by functions that call NumPy in object mode; functions with
    `numba.prange` loops are compiled for several threads; an `inline` function is compiled
    into each function that calls it. With a `cache_directory` (of `disk_cache`), the machine
    code is saved there, signed, and loaded from there by later processes.
    """
    import numba  # here, not at the top: importing numba takes 0.3 s, which the python backend never pays

    from . import numba_cache

    names = function.__code__.co_names
    if "prange" in names:
        # OpenMP's threads spin after each loop by default and, on a machine with few cores, take
        # them from the serial code that follows (measured: 16.5 ms -> 23 ms per step on 2 cores)
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    dispatcher = numba.njit(function, error_model="numpy", nogil="objmode" not in names, parallel="prange" in names,
                            inline="always" if inline else "never")
    if cache_directory is not None:
        numba_cache.cached(dispatcher, cache_directory, source_stamp=cache_directory.name)
    return dispatcher

"""Warnings that point at the user's line, however deep in tracegrad they are raised."""
from __future__ import annotations

import os
import sys
import warnings

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Warn with the innermost frame outside tracegrad as the warning's place (the thread's start if none)."""
    level, frame = 2, sys._getframe(1)  # stacklevel 2 is the caller of `warn`
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level if frame is not None else 1)

"""Where in the user's code something happens: the line an op is made at, named in errors and comments."""
from __future__ import annotations

import os
import sys

import numpy as np

from .ir import SourceLine

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep


def user_source_line() -> SourceLine | None:
    """The innermost frame outside tracegrad and NumPy: the user's line that is running."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith(PACKAGE_DIR) or filename.startswith(NUMPY_DIR)):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def where_text(source: SourceLine | None) -> str:
    return f"{source[0]}:{source[1]}" if source else "an unknown line"

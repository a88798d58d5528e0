"""Where in the user's code an op is made: named in error messages, comments and debug_nans.

`user_source()` finds the innermost frame outside tracegrad and NumPy, and the expression that
frame is evaluating, from its code's table of positions (Python 3.11+, the table tracebacks'
carets come from; the user's source is read, never parsed). While a program is replayed, or an
adjoint built, `annotate` gives the ops bound inside the source they stand for instead.
"""
from __future__ import annotations

import contextlib
import functools
import linecache
import os
import sys
import threading

import numpy as np

from .ir import Source

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__)) + os.sep
MAX_EXPRESSION = 60  # characters of an expression shown in a comment


def user_source() -> Source | None:
    """The user's code that is running: the innermost frame outside tracegrad and NumPy."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if not (code.co_filename.startswith(PACKAGE_DIR) or code.co_filename.startswith(NUMPY_DIR)):
            return source_at(code, frame.f_lasti, frame.f_lineno)
        frame = frame.f_back
    return None


@functools.lru_cache(maxsize=4096)
def source_at(code, instruction: int, line: int) -> Source:
    return Source(code.co_filename, line, expression_text(code, instruction, line))


@functools.lru_cache(maxsize=256)
def positions(code) -> tuple:
    return tuple(code.co_positions())


def expression_text(code, instruction: int, line: int) -> str | None:
    """The text of the expression the instruction at byte `instruction` evaluates (Python 3.10: its line's)."""
    lines = linecache.getlines(code.co_filename)
    if hasattr(code, "co_positions"):
        start, end, start_column, end_column = positions(code)[instruction // 2]
        if None in (start, end, start_column, end_column) or not 1 <= start <= end <= len(lines):
            return None
        chosen = [text.encode() for text in lines[start - 1:end]]  # columns count UTF-8 bytes
        chosen[-1] = chosen[-1][:end_column]
        chosen[0] = chosen[0][start_column:]
        text = b" ".join(chosen).decode(errors="replace")
    elif 1 <= line <= len(lines):
        text = lines[line - 1]
    else:
        return None
    text = " ".join(text.split())
    return text if len(text) <= MAX_EXPRESSION else text[:MAX_EXPRESSION - 3] + "..."


def where_text(source: Source | None) -> str:
    return str(source) if source else "an unknown line"


class Annotation(threading.local):
    source: Source | None = None  # set while a program is replayed or an adjoint built
    adjoint_of: str | None = None  # the primitive whose adjoint is being built


_annotation = Annotation()


def current_source() -> Source | None:
    """The source of an op bound now: the annotation's, else the user's running code."""
    return _annotation.source or user_source()


def current_adjoint_of() -> str | None:
    return _annotation.adjoint_of


@contextlib.contextmanager
def annotate(source: Source | None, adjoint_of: str | None):
    """Ops bound inside have `source` (the user's running code where None) and `adjoint_of`."""
    saved = _annotation.source, _annotation.adjoint_of
    _annotation.source, _annotation.adjoint_of = source, adjoint_of
    try:
        yield
    finally:
        _annotation.source, _annotation.adjoint_of = saved

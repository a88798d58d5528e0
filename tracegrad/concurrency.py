"""Threads and fork: the one background compile thread, and locks that survive `fork`.

Background compiles run one at a time (numba holds one compiler lock anyway) on a daemon
thread, from a queue of at most `MAX_PENDING` requests: a newer request pushes out the
oldest, whose function keeps running NumPy code and asks again when it is next called. At
exit, the process waits for the queue at most `tg.config.exit_wait_seconds`, then leaves the
rest; files are written atomically, so an abandoned compile leaves nothing half-written.

A forked child inherits locks in the state the parent's threads left them, but not those
threads: tracegrad's locks are made fresh in the child, numba's compiler lock is held across
the fork (so no compile is half-done in the child), and the child takes over the compiles the
parent had queued, on a thread of its own.
"""
from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import weakref
from typing import Callable

from .config import config

MAX_PENDING = 8  # queued compiles; each takes seconds, so older requests are likely stale

_fork_safe_locks: weakref.WeakSet = weakref.WeakSet()


def new_lock(reentrant: bool = False):
    """A lock that a forked child gets unlocked (the thread holding it in the parent is not in the child)."""
    made = threading.RLock() if reentrant else threading.Lock()
    _fork_safe_locks.add(made)
    return made


class Job:
    """A background compile: `run` compiles; `drop` is called instead if the queue pushes it out."""

    def __init__(self, run: Callable[[], None], drop: Callable[[], None]):
        self.run = run
        self.drop = drop


_condition = threading.Condition()
_pending: collections.deque[Job] = collections.deque()
_running: Job | None = None
_worker: threading.Thread | None = None


def submit(job: Job) -> None:
    """Queue `job` for the compile thread, started on first use."""
    global _worker
    dropped = None
    with _condition:
        if len(_pending) >= MAX_PENDING:
            dropped = _pending.popleft()
        _pending.append(job)
        if _worker is None:
            _worker = threading.Thread(target=work, name="tracegrad-compile", daemon=True)
            _worker.start()
        _condition.notify_all()
    if dropped is not None:
        dropped.drop()


def work() -> None:
    global _running
    while True:
        with _condition:
            while not _pending:
                _running = None
                _condition.notify_all()
                _condition.wait()
            _running = job = _pending.popleft()
        job.run()  # reports its own errors


def pending_count() -> int:
    with _condition:
        return len(_pending) + (_running is not None)


def wait_for_compiles(timeout: float | None = None) -> bool:
    """Block until the compile queue is empty; False if `timeout` seconds passed first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _condition:
        while _pending or _running is not None:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            _condition.wait(remaining)
    return True


@atexit.register
def finish_at_exit() -> None:
    """Let queued compiles fill the disk cache for the next process, for a bounded time."""
    if wait_for_compiles(config.exit_wait_seconds):
        return
    with _condition:
        abandoned = list(_pending)
        _pending.clear()
    for job in abandoned:
        job.drop()


# -- fork --------------------------------------------------------------------------------


def numba_compiler_lock():
    if "numba" not in sys.modules:  # not imported: nothing compiles
        return None
    from numba.core.compiler_lock import global_compiler_lock

    return global_compiler_lock


def before_fork() -> None:
    compiler_lock = numba_compiler_lock()
    if compiler_lock is not None:
        compiler_lock.acquire()  # waits for a compile in progress to end
    _condition.acquire()


def after_fork_in_parent() -> None:
    _condition.release()
    compiler_lock = numba_compiler_lock()
    if compiler_lock is not None:
        compiler_lock.release()


def after_fork_in_child() -> None:
    global _condition, _worker, _running
    for lock in list(_fork_safe_locks):
        lock._at_fork_reinit()
    inherited = ([_running] if _running is not None else []) + list(_pending)
    _condition = threading.Condition()
    _pending.clear()
    _running = _worker = None
    compiler_lock = numba_compiler_lock()
    if compiler_lock is not None:
        compiler_lock.release()
    for job in inherited:  # the parent's thread does not exist here: this process compiles them
        submit(job)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=before_fork, after_in_parent=after_fork_in_parent,
                        after_in_child=after_fork_in_child)

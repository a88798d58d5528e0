"""Threads and fork: the one background compile thread, and locks that survive `fork`.

Background compiles run one at a time (numba holds one compiler lock anyway) on a daemon
thread, from a queue of at most `MAX_PENDING` requests: a newer request pushes out the
oldest, whose function keeps running NumPy code and asks again when it is next called. At
exit, the process waits for the queue at most `tg.config.exit_wait_seconds`, then leaves the
rest; files are written atomically, so an abandoned compile leaves nothing half-written.

A forked child inherits locks in the state the parent's threads left them, but not those
threads. So `fork` first waits for the background compile running (and any numba compile) to
end, so that no import or compile is half-done in the child; tracegrad's other locks are made
fresh in the child, and its queue starts empty: a program the parent had queued is compiled in
the child only if the child calls it.
"""
from __future__ import annotations

import _thread
import atexit
import collections
import logging  # noqa: F401  (for its fork hooks: see the end of this module)
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from typing import Callable

from .config import config

MAX_PENDING = 8  # compiles queued at most; one pushed out asks again when its function is next called

_fork_safe_locks: weakref.WeakSet = weakref.WeakSet()


def new_lock():
    """A lock that a forked child gets unlocked (the thread holding it in the parent is not in the child)."""
    return fork_safe(threading.Lock())


def new_rlock():
    """A reentrant lock (the thread holding it may take it again) that a forked child gets unlocked."""
    return fork_safe(threading.RLock())


def fork_safe(lock):
    _fork_safe_locks.add(lock)
    return lock


_condition = threading.Condition()
_job_lock = threading.Lock()  # held while a compile runs; a fork waits for it
_pending: collections.deque[Callable[[], None]] = collections.deque()  # jobs: functions that compile
_running: Callable[[], None] | None = None
_worker: threading.Thread | None = None


def submit(job: Callable[[], None]) -> None:
    """Queue `job` (a function that compiles, and reports its own errors) for the compile thread,
    started on first use. A job pushed out of the queue, or not queued because an exception
    (Ctrl-C) interrupted this, is simply not pending: its function asks again (`is_pending`)."""
    global _worker
    with _condition:
        if len(_pending) >= MAX_PENDING:
            _pending.popleft()
        _pending.append(job)
        if _worker is None:
            _worker = threading.Thread(target=work, name="tracegrad-compile", daemon=True)
            _worker.start()
        _condition.notify_all()


def is_pending(job: Callable[[], None] | None) -> bool:
    """Whether `job` (submitted, or None) is queued or running."""
    with _condition:
        return job is not None and (job is _running or any(queued is job for queued in _pending))


def work() -> None:
    global _running
    while True:
        with _condition:
            while not _pending:
                _running = None
                _condition.notify_all()
                _condition.wait()
            _running = job = _pending.popleft()
        try:
            with _job_lock:
                job()  # reports its own errors
        except BaseException:  # one that escapes anyway (a warning turned error) must not stop the thread
            traceback.print_exc()


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
        _pending.clear()


# -- fork --------------------------------------------------------------------------------


def numba_compiler_lock():
    """numba's compiler lock if numba is imported (never imported here: a fork may come mid-import)."""
    module = sys.modules.get("numba.core.compiler_lock")
    return getattr(module, "global_compiler_lock", None)


_held_across_fork: list = []
_interrupt_handler_before_fork = None  # SIGINT's handler, while the fork hooks hold Ctrl-C back
_interrupted_during_fork = False


def before_fork() -> None:
    """Wait for the compile running to end, so the child sees no import or compile half-done.

    Ctrl-C is held back meanwhile and delivered once the fork is done: CPython ignores an
    exception raised in this hook and forks anyway, which would leave the locks half taken.
    """
    global _interrupt_handler_before_fork, _interrupted_during_fork
    if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers

        def hold_back(signum, frame):
            global _interrupted_during_fork
            _interrupted_during_fork = True

        _interrupted_during_fork = False
        _interrupt_handler_before_fork = signal.signal(signal.SIGINT, hold_back)
    for lock in (_job_lock, numba_compiler_lock(), _condition):  # numba's: a compile in another thread
        if lock is not None:
            lock.acquire()
            _held_across_fork.append(lock)


def release_fork_locks() -> None:
    global _interrupt_handler_before_fork
    for lock in reversed(_held_across_fork):
        lock.release()
    _held_across_fork.clear()
    if _interrupt_handler_before_fork is not None:
        signal.signal(signal.SIGINT, _interrupt_handler_before_fork)
        _interrupt_handler_before_fork = None


def after_fork_in_parent() -> None:
    release_fork_locks()
    if _interrupted_during_fork:  # the Ctrl-C held back, delivered as a signal is, once fork has
        # returned (raised in this hook, it would be ignored)
        timer = threading.Timer(0.01, _thread.interrupt_main)
        timer.daemon = True
        timer.start()


def after_fork_in_child() -> None:
    """Fresh locks and an empty queue: the parent compiles what it queued; the child compiles a
    program again only if it calls it (its function then asks for a compile of its own)."""
    global _condition, _worker, _running
    release_fork_locks()  # a Ctrl-C held back was the parent's
    for lock in list(_fork_safe_locks):
        lock._at_fork_reinit()
    _condition = threading.Condition()
    _pending.clear()
    _running = _worker = None


# `logging` is imported above for its own fork hooks, which hold its lock across a fork: registered
# before ours, they run after ours, so the compile we wait for can still log (imported by numba
# during our wait instead, they would release a lock they never took)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=before_fork, after_in_parent=after_fork_in_parent,
                        after_in_child=after_fork_in_child)

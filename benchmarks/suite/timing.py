"""Steady-state time per call: the median over samples of calibrated loops, GC off inside a sample."""
from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from dataclasses import dataclass


@dataclass
class Timing:
    sample_seconds: float = 0.05  # each sample is a loop that lasts at least this long
    samples: int = 7
    slow_call_seconds: float = 0.5  # a call at least this long is timed by single calls ...
    slow_samples: int = 3  # ... this many of them


@dataclass
class Measurement:
    per_call: float  # median over the samples of (sample time / calls in it)
    spread: float  # (max - min) / median
    samples: int
    sample_seconds: float  # the minimum length of a sample; 0 for single-call samples

    def describe(self) -> str:
        if not self.sample_seconds:
            return f"{self.samples} x 1 call"
        return f"{self.samples} x {self.sample_seconds * 1e3:g} ms"


@contextlib.contextmanager
def garbage_collector_paused():
    """Collect, then keep the cyclic garbage collector off inside the block (as timeit does).

    This favours libraries that make many short-lived cycles: micrograd's graph is a web of
    closures, and with the collector on its steps take several times longer. What survives the
    collection is frozen (never scanned again), so the next collection only sees new objects.
    """
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def loop_seconds(fn, args, count: int) -> float:
    with garbage_collector_paused():
        start = time.perf_counter()
        for _ in range(count):
            fn(*args)
        return time.perf_counter() - start


def measure(fn, args, timing: Timing) -> Measurement:
    """Time fn(*args), which has been called before (so it is compiled and warm)."""
    one_call = loop_seconds(fn, args, 1)
    if one_call >= timing.slow_call_seconds:
        samples = [one_call] + [loop_seconds(fn, args, 1) for _ in range(timing.slow_samples - 1)]
        sample_seconds = 0.0
    else:
        count = calibrate(fn, args, timing.sample_seconds, one_call)
        samples = [loop_seconds(fn, args, count) / count for _ in range(timing.samples)]
        sample_seconds = timing.sample_seconds
    median = statistics.median(samples)
    return Measurement(median, (max(samples) - min(samples)) / median, len(samples), sample_seconds)


def calibrate(fn, args, sample_seconds: float, one_call: float) -> int:
    """A loop count that makes one sample last at least about sample_seconds."""
    count = max(1, int(sample_seconds / 8 / max(one_call, 1e-9)))
    while True:
        elapsed = loop_seconds(fn, args, count)
        if elapsed >= sample_seconds / 8 or count >= 1 << 24:
            return max(1, math.ceil(count * sample_seconds * 1.05 / max(elapsed, 1e-9)))
        count *= 2

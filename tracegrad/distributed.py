"""Data-parallel gradients on Dask: the gradient of a whole batch, from shards held by workers.

    import tracegrad.distributed as tgd

    with tgd.DataParallel(loss, (x, y), shards=4) as parallel:   # a LocalCluster of one worker per core
        for step in range(steps):
            value, grads = parallel.value_and_grad(params)          # = tg.value_and_grad(loss)(params, x, y)
            params, state = optimizer.update(grads, state, params)

The batch's arrays are split along their first axis into shards, scattered to the workers once
and kept there between steps. `loss` goes to each worker once (registered under a token); each
step sends only the parameters. Every worker runs `tg.jit(tg.value_and_grad(loss))` on its
shards, compiled by its own process from its own private disk cache, and the shards' values and
gradients are summed, weighted by shard size for a mean loss (`reduction="mean"`, the default:
the loss of a batch is the mean of its examples' losses) or not (`"sum"`), in a tree of
pairwise sums on the workers. A worker that dies during a step loses its shards and its
results: the shards are scattered again from the driver's copy to the workers left (or the
ones the cluster starts instead), and the step is run again; an error of the loss itself is
raised, not retried.

Needs the optional dependency: pip install "tracegrad[distributed]".
"""
from __future__ import annotations

import itertools
import uuid
from typing import Any, Callable

import numpy as np

try:
    import distributed as dask_distributed
except ImportError as error:  # pragma: no cover - exercised by a test in a subprocess
    raise ImportError('tracegrad.distributed needs Dask\'s distributed scheduler: pip install "tracegrad[distributed]"'
                      ) from error

from .api import jit, value_and_grad
from .config import config
from .tree import tree_map

REDUCTIONS = ("mean", "sum")
_registered: dict[str, Callable] = {}  # on each worker: token -> its jitted value_and_grad


def register(token: str, loss: Callable, argnums, has_aux: bool) -> None:
    """Run on each worker once: keep `loss`'s jitted value_and_grad under `token`."""
    _registered[token] = jit(value_and_grad(loss, argnums=argnums, has_aux=has_aux))


def leave_compiles_unfinished() -> None:
    """Run on each worker of a cluster this module made, before closing it: exit without waiting
    for background compiles (a later process compiles what was not saved)."""
    config.exit_wait_seconds = 0.0


def shard_value_and_grad(token: str, params, shard: tuple, weight: float):
    """On a worker: the shard's (value, gradient), both times `weight`."""
    value, grads = _registered[token](params, *shard)
    return tree_map(lambda leaf: leaf * weight, (value, grads))


def add(first, second):
    """The sum of two (value, gradient) pytrees, on a worker."""
    return tree_map(lambda a, b: a + b, first, second)


class DataParallel:
    """`loss(params, *batch)`'s value and gradient over a batch split across Dask workers (see the module).

    `batch` is a tuple of arrays sharing their first axis (inputs, labels...). `shards` is how many
    pieces to split it into (by default one per worker); `client` a `distributed.Client` (by
    default a new `LocalCluster` with one single-threaded worker process per core, closed by
    `close()`). `argnums` and `has_aux` are `tg.value_and_grad`'s, for the parameters argument.
    """

    def __init__(self, loss: Callable, batch: tuple, shards: int | None = None, client=None,
                 reduction: str = "mean", argnums=0, has_aux: bool = False, retries: int = 3):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, not {reduction!r}")
        self.own_client = client is None
        self.client = client if client is not None else dask_distributed.Client(
            dask_distributed.LocalCluster(threads_per_worker=1, processes=True, dashboard_address=":0"))
        self.loss, self.argnums, self.has_aux, self.retries = loss, argnums, has_aux, retries
        self.token = f"{getattr(loss, '__name__', 'loss')}-{uuid.uuid4().hex}"
        batch = tuple(np.asarray(a) for a in batch)
        lengths = {len(a) for a in batch}
        if len(lengths) != 1:
            raise ValueError(f"the batch's arrays must share their first axis; their lengths are {sorted(lengths)}")
        (total,) = lengths
        count = shards or len(self.client.scheduler_info()["workers"]) or 1
        if not 1 <= count <= total:
            raise ValueError(f"cannot split a batch of {total} into {count} shards")
        bounds = np.linspace(0, total, count + 1).astype(int)
        self.shards = [tuple(a[start:end] for a in batch) for start, end in zip(bounds, bounds[1:])]
        self.weights = [((end - start) / total if reduction == "mean" else 1.0) for start, end in zip(bounds, bounds[1:])]
        self.shard_futures: list = []
        self.registered_on: set[str] = set()
        self.place_shards()

    def workers(self) -> list[str]:
        return sorted(self.client.scheduler_info()["workers"])

    def place_shards(self) -> None:
        """Register the loss on every worker that lacks it, and scatter the shards (again) so that
        each lives on a worker, spread over them in turn."""
        workers = self.workers()
        if not workers:
            self.client.wait_for_workers(1)
            workers = self.workers()
        missing = [w for w in workers if w not in self.registered_on]
        if missing:
            self.client.run(register, self.token, self.loss, self.argnums, self.has_aux, workers=missing)
            self.registered_on.update(missing)
        if not self.shard_futures:
            self.shard_futures = [None] * len(self.shards)
        for k, (shard, worker) in enumerate(zip(self.shards, itertools.cycle(workers))):
            future = self.shard_futures[k]
            if future is None or future.status != "finished":  # never placed, or lost with its worker
                self.shard_futures[k] = self.client.scatter([shard], workers=[worker], hash=False)[0]

    def value_and_grad(self, params) -> tuple[Any, Any]:
        """The whole batch's `(value, gradient)` (with `has_aux`, `((value, aux), gradient)` summed alike)."""
        for attempt in range(self.retries + 1):
            try:
                return self.step(params)
            except (dask_distributed.client.FutureCancelledError, dask_distributed.KilledWorker, OSError,
                    dask_distributed.comm.CommClosedError) as error:
                if attempt == self.retries:
                    raise RuntimeError(f"a data-parallel step failed {attempt + 1} times as workers were lost; "
                                       f"last error: {type(error).__name__}: {error}") from error
                self.registered_on &= set(self.workers())
                self.place_shards()

    def step(self, params):
        parts = [self.client.submit(shard_value_and_grad, self.token, params, shard, weight, pure=False)
                 for shard, weight in zip(self.shard_futures, self.weights)]
        while len(parts) > 1:  # a tree of pairwise sums, on the workers
            paired = [self.client.submit(add, a, b, pure=False) for a, b in zip(parts[::2], parts[1::2])]
            parts = paired + ([parts[-1]] if len(parts) % 2 else [])
        return parts[0].result()

    def close(self) -> None:
        """Forget the shards; close the client and cluster if this object made them."""
        self.shard_futures = []
        if self.own_client:
            self.client.run(leave_compiles_unfinished)
            cluster = self.client.cluster
            self.client.close()
            if cluster is not None:
                cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

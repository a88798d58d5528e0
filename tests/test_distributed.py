"""tracegrad.distributed: the gradient of a whole batch from shards on Dask workers, even when one dies."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tracegrad as tg
from tracegrad import nn

distributed = pytest.importorskip("distributed")
import tracegrad.distributed as tgd  # noqa: E402  (after the skip: it needs Dask)


def moons_loss(params, x, y):  # W4's loss: micrograd's moons MLP 2-16-16-1, hinge
    return nn.hinge(nn.mlp(params, x, activation=nn.relu)[:, 0], y)


def classifier_loss(params, x, labels):  # W5's: MLP 64-128-128-10, tanh, softmax cross-entropy
    return nn.softmax_cross_entropy(nn.mlp(params, x), labels)


def on_a_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.run(tgd.leave_compiles_unfinished)
    client.close()
    cluster.close()


def assert_same(distributed_result, single_result):
    (value, grads), (expected_value, expected_grads) = distributed_result, single_result
    assert value == pytest.approx(expected_value, rel=1e-12, abs=1e-12)
    for got, want in zip(tg.tree_leaves(grads), tg.tree_leaves(expected_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_two_workers_give_the_whole_batchs_gradient(client, python_backend):  # the driver's numbers by NumPy
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 2)), np.where(rng.uniform(size=100) < 0.5, -1.0, 1.0)
    moons = nn.init_mlp([2, 16, 16, 1], seed=1, init="uniform")
    with tgd.DataParallel(moons_loss, (x, y), client=client) as parallel:
        assert len(parallel.shards) == 2
        for step in range(2):  # the shards stay on the workers; only the parameters travel
            moons = tg.tree_map(lambda p: p * 0.9, moons)
            assert_same(parallel.value_and_grad(moons), tg.value_and_grad(moons_loss)(moons, x, y))
    x, labels = rng.standard_normal((256, 64)), rng.integers(0, 10, 256)
    mlp = nn.init_mlp([64, 128, 128, 10], seed=2)
    with tgd.DataParallel(classifier_loss, (x, labels), shards=5, client=client) as parallel:  # uneven shards
        assert_same(parallel.value_and_grad(mlp), tg.value_and_grad(classifier_loss)(mlp, x, labels))
    summed = lambda params, x, labels: classifier_loss(params, x, labels) * len(x)
    with tgd.DataParallel(summed, (x, labels), shards=3, client=client, reduction="sum") as parallel:
        assert_same(parallel.value_and_grad(mlp), tg.value_and_grad(summed)(mlp, x, labels))


def test_a_worker_that_dies_during_a_step_does_not_change_the_gradient(client, tmp_path, python_backend):
    marker = tmp_path / "kill-the-first-worker-that-traces"
    marker.touch()

    def dying_loss(params, x, labels):  # the first worker to trace it exits, mid-step
        if on_a_worker() and os.path.exists(marker):
            os.remove(marker)
            os._exit(1)
        return classifier_loss(params, x, labels)

    rng = np.random.default_rng(3)
    x, labels = rng.standard_normal((64, 64)), rng.integers(0, 10, 64)
    mlp = nn.init_mlp([64, 128, 128, 10], seed=4)
    with tgd.DataParallel(dying_loss, (x, labels), shards=4, client=client) as parallel:
        result = parallel.value_and_grad(mlp)
    assert not marker.exists()  # a worker did die
    assert_same(result, tg.value_and_grad(classifier_loss)(mlp, x, labels))


def test_its_own_cluster_leaves_no_process_behind(python_backend):
    x, labels = np.random.default_rng(5).standard_normal((16, 64)), np.arange(16) % 10
    mlp = nn.init_mlp([64, 10], seed=6)
    with tgd.DataParallel(classifier_loss, (x, labels)) as parallel:
        pids = list(parallel.client.run(os.getpid).values())
        assert_same(parallel.value_and_grad(mlp), tg.value_and_grad(classifier_loss)(mlp, x, labels))
    assert parallel.client.status == "closed"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_without_dask_the_import_error_names_the_extra():
    code = "import sys; sys.modules['distributed'] = None; import tracegrad.distributed"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and 'pip install "tracegrad[distributed]"' in run.stderr

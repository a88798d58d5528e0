"""The on-disk cache of generated modules: reused across processes, never trusting a changed file."""
import os
import subprocess
import sys
import textwrap

import pytest

from tracegrad import disk_cache

SOURCE = "def double(a):\n    return (a * 2.0, )\n"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("TRACEGRAD_CACHE_DIR", str(path))
    monkeypatch.delenv("TRACEGRAD_DISABLE_CACHE", raising=False)
    monkeypatch.setattr(disk_cache, "_warned", False)
    yield path
    for name in [n for n in sys.modules if n.startswith("tracegrad_cache.")]:
        del sys.modules[name]


def entry(cache_dir):
    (path,) = cache_dir.glob("tg_*/tg_*.py")
    return path


def test_an_entry_is_written_once_privately_and_executed_from_its_own_text(cache_dir):
    module = disk_cache.load_module(SOURCE)
    assert module.double(1.5) == (3.0,)
    path = entry(cache_dir)
    assert path.read_text() == disk_cache.HEADER + SOURCE
    assert cache_dir.stat().st_mode & 0o777 == 0o700
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    written = path.stat().st_mtime_ns
    del sys.modules[module.__name__]  # as in a new process
    assert disk_cache.load_module(SOURCE).double(2.0) == (4.0,)
    assert path.stat().st_mtime_ns == written
    assert not list(cache_dir.rglob(".tmp-*"))
    assert not list(cache_dir.rglob("*.pyc"))  # no bytecode is written, so none is ever read


def test_a_changed_entry_is_never_executed_and_is_rewritten(cache_dir):
    module = disk_cache.load_module(SOURCE)
    del sys.modules[module.__name__]
    path = entry(cache_dir)
    path.write_text("raise SystemExit('a tampered cache entry was executed')\n")
    assert disk_cache.load_module(SOURCE).double(1.0) == (2.0,)
    assert path.read_text() == disk_cache.HEADER + SOURCE


def test_the_cache_can_be_turned_off(cache_dir, monkeypatch):
    monkeypatch.setenv("TRACEGRAD_DISABLE_CACHE", "1")
    assert disk_cache.load_module(SOURCE) is None
    assert not cache_dir.exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_a_directory_writable_by_others_is_refused(cache_dir):
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    with pytest.warns(RuntimeWarning, match="writable by others"):
        assert disk_cache.load_module(SOURCE) is None


def test_signed_files_are_read_back_only_unchanged_and_private(cache_dir):
    root = disk_cache.directory()
    path = root / "payload"
    disk_cache.write_signed(root, path, b"machine code")
    assert disk_cache.read_signed(root, path) == b"machine code"
    signed = path.read_bytes()
    for changed in (signed[:-1] + b"?", signed[:-3], signed.replace(b"machine", b"MACHINE"), b"plain pickle"):
        path.write_bytes(changed)
        assert disk_cache.read_signed(root, path) is None
    path.write_bytes(signed)
    path.chmod(0o644)  # readable by others: not a file tracegrad wrote
    assert disk_cache.read_signed(root, path) is None
    path.chmod(0o600)
    os.rename(path, root / "other-name")  # a valid file under another file's name
    assert disk_cache.read_signed(root, root / "other-name") is None


def test_a_damaged_key_is_replaced_and_what_it_signed_is_void(cache_dir):
    root = disk_cache.directory()
    path = root / "payload"
    disk_cache.write_signed(root, path, b"machine code")
    (root / "key").write_bytes(b"short")
    disk_cache.key.cache_clear()
    assert disk_cache.read_signed(root, path) is None
    assert len(disk_cache.key(root)) == disk_cache.KEY_BYTES
    assert (root / "key").stat().st_mode & 0o777 == 0o600


def test_a_second_process_loads_numbas_machine_code_from_the_cache(cache_dir):
    script = textwrap.dedent("""
        import tracegrad as tg, tracegrad.numpy as tnp
        grad = tg.grad(lambda x: tnp.sin(x) * x)
        print(grad(0.5))
        function = grad.lower(0.5).function
        print(sum(function.stats.cache_hits.values()), sum(function.stats.cache_misses.values()))
    """)
    environment = dict(os.environ, TRACEGRAD_CACHE_DIR=str(cache_dir), TRACEGRAD_BACKEND="numba",
                       TRACEGRAD_BACKGROUND_COMPILE="0")  # numba's statistics are read right after the call
    runs = [subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    first, second = (run.stdout.split("\n") for run in runs)
    assert first[0] == second[0]
    assert first[1] == "0 1"  # hits, misses: compiled
    assert second[1] == "1 0"  # loaded from the cache


def test_two_processes_compiling_the_same_function_leave_one_valid_entry(cache_dir):
    script = textwrap.dedent("""
        import sys
        import tracegrad as tg, tracegrad.numpy as tnp
        print(tg.grad(lambda x: tnp.exp(x) * x)(float(sys.argv[1])))
    """)
    environment = dict(os.environ, TRACEGRAD_CACHE_DIR=str(cache_dir), TRACEGRAD_BACKEND="numba")
    processes = [subprocess.Popen([sys.executable, "-c", script, value], env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for value in ("1.0", "2.0")]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    for (out, _), x in zip(outputs, (1.0, 2.0)):
        assert float(out) == pytest.approx(2.718281828459045 ** x * (1 + x))
    (path,) = cache_dir.glob("tg_*/tg_*.py")
    assert path.read_text().startswith(disk_cache.HEADER)
    assert not list(cache_dir.rglob(".tmp-*"))


def test_code_with_parallel_loops_is_compiled_by_each_process(cache_dir):
    # numba's cache and parallel=True crash together (numba issues 4807, 10128): such code is never cached
    script = textwrap.dedent("""
        import numpy as np
        import tracegrad as tg, tracegrad.numpy as tnp
        tg.config.parallel = True
        grad = tg.grad(lambda x: tnp.sum(tnp.sin(x) * x))
        x = np.linspace(0.0, 1.0, 256 * 256).reshape(256, 256)
        print(float(grad(x).sum()))
        lowered = grad.lower(x)
        assert "numba.prange" in lowered.source
        print(sum(lowered.function.stats.cache_hits.values()), sum(lowered.function.stats.cache_misses.values()))
    """)
    environment = dict(os.environ, TRACEGRAD_CACHE_DIR=str(cache_dir), TRACEGRAD_BACKEND="numba",
                       TRACEGRAD_BACKGROUND_COMPILE="0")
    runs = [subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    first, second = (run.stdout.split("\n") for run in runs)
    assert first[0] == second[0]
    assert first[1] == second[1] == "0 1"  # hits, misses: compiled both times


def test_processes_saving_two_signatures_at_once_never_mix_their_code(cache_dir):
    # two processes' views of one entry: each read the index before the other wrote it
    from tracegrad import numba_cache

    root = disk_cache.directory()
    entry = disk_cache.private_subdirectory(root, "tg_entry")
    first, second = (numba_cache.SignedCacheFile(entry, "module.function-1.py311", "stamp") for _ in range(2))
    first.save(("signature A",), b"code for A")
    second._load_index = lambda: {}  # second's stale index: it overwrites first's entry
    second.save(("signature B",), b"code for B")
    del second._load_index
    assert second.load(("signature B",)) == b"code for B"
    assert first.load(("signature A",)) is None  # lost from the index: compiled again, never B's code
    assert len(list(entry.glob("*.nbc"))) == 2  # each signature's data file is its own
    (data_a,) = [path for path in entry.glob("*.nbc") if first._data_name(("signature A",)) == path.name]
    (data_b,) = [path for path in entry.glob("*.nbc") if path != data_a]
    data_a.write_bytes(data_b.read_bytes())  # even a data file under the other's name
    index = first._read(first._index_path)
    first._write(first._index_path, (index[0], index[1], {("signature A",): data_a.name}))
    assert first.load(("signature A",)) is None  # holds B's key: not A's code


def test_eviction_skips_entries_another_process_removes(cache_dir, monkeypatch):
    import shutil

    root = disk_cache.directory()
    entries = [disk_cache.private_subdirectory(root, f"tg_{n}") for n in range(6)]
    for entry in entries:
        (entry / "code.nbc").write_bytes(b"x" * 4096)
    real_scandir = os.scandir

    def listing_then_removal(path):
        if path != root:
            return real_scandir(path)
        listed = list(real_scandir(path))
        shutil.rmtree(entries[2])  # another process evicts it between our listing and our stat
        return iter(listed)

    monkeypatch.setattr(disk_cache.os, "scandir", listing_then_removal)
    monkeypatch.setattr(disk_cache.config, "cache_max_mb", 8192 / 2 ** 20)
    disk_cache.evict_if_full(root, keep=entries[5])  # raises nothing
    assert entries[5].exists() and not entries[0].exists()


def test_processes_starting_together_agree_on_one_key(cache_dir):
    import threading

    root = disk_cache.directory()
    for _ in range(100):
        (root / "key").unlink(missing_ok=True)
        barrier, keys = threading.Barrier(6), []

        def make_key():
            barrier.wait()
            keys.append(disk_cache.key.__wrapped__(root))  # as six processes would, without the memo

        threads = [threading.Thread(target=make_key) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(keys)) == 1 and (root / "key").read_bytes() == keys[0]

"""Regression tests for the compile cache on disk: damaged files, a full disk, and files that someone
else planted must never crash a process nor run foreign code.

Each test runs scripts in fresh processes over a private cache directory (tmp_path), with a
timeout. Scripts that must share cache entries are written under one file name, because
generated code names the file and line each of its statements comes from.
"""
from __future__ import annotations

import importlib.util
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reliability_support import environment, private_directory, run_script

TIMEOUT = 180

# the functions every script here computes, each checked against its analytic value
USER_SCRIPT = """
    import tracegrad as tg
    import tracegrad.numpy as tnp

    mode = sys.argv[1] if len(sys.argv) > 1 else "run"
    x = np.linspace(-1.0, 1.0, 6)
    X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    w = np.linspace(0.5, -0.5, 3)

    scalar = tg.grad(lambda x: tnp.sin(x) * x)
    array = tg.grad(lambda x: tnp.sum(tnp.tanh(x) * x))
    product = tg.grad(lambda w: tnp.sum(tnp.tanh(X @ w)))
    CASES = [
        ("grad of sin(x) * x", scalar, (0.5,), np.cos(0.5) * 0.5 + np.sin(0.5)),
        ("grad of sum(tanh(x) * x)", array, (x,), np.tanh(x) + x * (1 - np.tanh(x) ** 2)),
        ("grad of sum(tanh(X @ w))", product, (w,), X.T @ (1 - np.tanh(X @ w) ** 2)),
    ]


    def run_cases(label):
        for name, function, args, want in CASES:
            attempt(f"{label}: {name}", lambda: function(*args), want)


    run_cases("first calls")
    run_cases("second calls")
    tg.wait_for_compiles()
    run_cases("after wait_for_compiles")
    info = {}
    if mode == "stats":  # numba's own statistics: loaded from its cache, or compiled
        for name, function, args, want in CASES:
            try:
                dispatcher = function.lower(*args).function
                info[name] = [sum(dispatcher.stats.cache_hits.values()), sum(dispatcher.stats.cache_misses.values())]
            except Exception as error:
                failures.append(f"{name}: no statistics: {type(error).__name__}: {error}")
    finish(**info)
"""


def user_run(tmp_path, mode="run", name="cache_user", timeout=TIMEOUT, **env):
    env.setdefault("TRACEGRAD_CACHE_DIR", tmp_path / "cache")
    return run_script(USER_SCRIPT, tmp_path, name, environment(None, **env), timeout, args=[mode])


def numba_files(directory: Path, suffix: str) -> list[Path]:
    return sorted(directory.rglob(f"*.{suffix}"))


# -- 4. damaged numba cache files ------------------------------------------------------------

def garble(path: Path, rng: random.Random) -> None:
    path.write_bytes(rng.randbytes(path.stat().st_size))


def truncate(path: Path, rng: random.Random) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_byte(path: Path, rng: random.Random) -> None:
    if path.suffix == ".nbc":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [garble, truncate, flip_a_byte], ids=["garbled", "truncated", "flipped-byte"])
def test_damaged_numba_cache_files_are_rebuilt_not_fatal(tmp_path, damage):
    cache = tmp_path / "cache"
    user_run(tmp_path, TRACEGRAD_BACKGROUND_COMPILE="0").check()  # fills the cache
    damaged = numba_files(cache, "nbi") + numba_files(cache, "nbc")
    assert any(path.suffix == ".nbc" for path in damaged), f"no numba cache files under {cache}"
    rng = random.Random(20240607)
    for path in damaged:
        damage(path, rng)
    user_run(tmp_path).check()  # right results, exit code 0, no traceback
    third = user_run(tmp_path, "stats", TRACEGRAD_BACKGROUND_COMPILE="0").check()
    statistics = {name: value for name, value in third.items() if name != "failures"}
    assert len(statistics) == 3, third
    for name, (hits, misses) in statistics.items():
        assert hits >= 1 and misses == 0, f"{name}: cache hits {hits}, misses {misses}: not rebuilt\n{third}"


# -- 5. a full disk --------------------------------------------------------------------------

# Installed before tracegrad is imported. FULL = "cache": any open for writing or creating, and any
# mkdir, of a path inside the cache directory fails as on a full disk (reads work); "everywhere": of
# any path; "late": files in the cache directory open, but no data can be written to them (a disk with
# inodes left and no blocks); "no": nothing fails.
FULL_DISK_PRELUDE = """
    import builtins
    import errno
    import io
    import os
    import posix
    import warnings

    CACHE = os.path.realpath(os.environ["TRACEGRAD_CACHE_DIR"])
    FULL = sys.argv[1]
    cache_descriptors = set()  # "late": descriptors of files opened in the cache directory


    def inside(path):
        if isinstance(path, int):
            return path in cache_descriptors
        try:
            path = os.path.realpath(os.fsdecode(os.fspath(path)))
        except TypeError:
            return False
        return FULL == "everywhere" or path == CACHE or path.startswith(CACHE + os.sep)


    def disk_full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))


    class FullFile:
        # a file open for writing on a disk with no space left: writing data fails
        def __init__(self, file):
            self._file = file

        def write(self, data):
            if len(data):
                disk_full(self._file.name)
            return 0

        def writelines(self, lines):
            for line in lines:
                self.write(line)

        def __getattr__(self, name):
            return getattr(self._file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self._file.close()

        def __iter__(self):
            return iter(self._file)


    real_open, real_os_open, real_mkdir, real_makedirs = builtins.open, os.open, os.mkdir, os.makedirs


    def open_for_writing(file, mode="r", *args, **kwargs):
        if FULL != "no" and any(c in mode for c in "wax+") and inside(file):
            if FULL != "late":
                disk_full(file)
            return FullFile(real_open(file, mode, *args, **kwargs))
        return real_open(file, mode, *args, **kwargs)


    def os_open(path, flags, mode=0o777, *, dir_fd=None):
        if FULL != "no" and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            if FULL != "late":
                disk_full(path)
            descriptor = real_os_open(path, flags, mode, dir_fd=dir_fd)
            cache_descriptors.add(descriptor)
            return descriptor
        return real_os_open(path, flags, mode, dir_fd=dir_fd)


    def mkdir(path, mode=0o777, *, dir_fd=None):
        if FULL in ("cache", "everywhere") and inside(path) and not os.path.exists(path):
            disk_full(path)  # (an existing directory still gives FileExistsError)
        return real_mkdir(path, mode, dir_fd=dir_fd)


    def makedirs(name, mode=0o777, exist_ok=False):
        if FULL in ("cache", "everywhere") and inside(name) and not os.path.isdir(name):
            disk_full(name)
        return real_makedirs(name, mode, exist_ok)


    builtins.open = io.open = open_for_writing
    os.open = posix.open = os_open
    os.mkdir = posix.mkdir = mkdir
    os.makedirs = makedirs

    recorder = warnings.catch_warnings(record=True)
    caught = recorder.__enter__()
    warnings.simplefilter("always")
"""

FULL_DISK_SCRIPT = FULL_DISK_PRELUDE + """
    import tracegrad as tg
    import tracegrad.numpy as tnp

    x = np.linspace(-1.0, 1.0, 6)
    X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    w = np.linspace(0.5, -0.5, 3)
    value_and_grad = tg.value_and_grad(lambda x: tnp.sum(tnp.exp(x) * x))
    CASES = [
        ("grad of sin(x) * x", tg.grad(lambda x: tnp.sin(x) * x), (0.5,), np.cos(0.5) * 0.5 + np.sin(0.5)),
        ("grad of sum(tanh(x) * x)", tg.grad(lambda x: tnp.sum(tnp.tanh(x) * x)), (x,),
         np.tanh(x) + x * (1 - np.tanh(x) ** 2)),
        ("grad of sum(tanh(X @ w))", tg.grad(lambda w: tnp.sum(tnp.tanh(X @ w))), (w,),
         X.T @ (1 - np.tanh(X @ w) ** 2)),
        ("jit of cos(x) * 3", tg.jit(lambda x: tnp.cos(x) * 3.0), (x,), np.cos(x) * 3.0),
        ("value of sum(exp(x) * x)", lambda x: value_and_grad(x)[0], (x,), np.sum(np.exp(x) * x)),
        ("gradient of sum(exp(x) * x)", lambda x: value_and_grad(x)[1], (x,), np.exp(x) * (1 + x)),
    ]
    for round in range(3):
        for name, function, args, want in CASES:
            attempt(f"round {round}: {name}", lambda: function(*args), want)
    tg.wait_for_compiles()
    for round in range(2):
        for name, function, args, want in CASES:
            attempt(f"after wait_for_compiles, round {round}: {name}", lambda: function(*args), want)
    out = attempt("vjp", lambda: tg.vjp(lambda x: tnp.tanh(x) * 2.0, x))
    if out is not None:
        check("vjp output", out[0], np.tanh(x) * 2.0)
        attempt("pullback", lambda: out[1](np.ones(6)), ((1 - np.tanh(x) ** 2) * 2.0,))
    tg.wait_for_compiles()
    recorder.__exit__(None, None, None)
    if FULL == "no":
        finish()
    messages = [f"{w.category.__name__}: {w.message}" for w in caught]
    about_cache = [str(w.message) for w in caught if "cache" in str(w.message).lower()]
    from_tracegrad = [str(w.message) for w in caught if str(w.message).startswith("tracegrad:")]
    if len(about_cache) != 1:
        failures.append(f"{len(about_cache)} warnings about the cache, expected exactly one: {about_cache[:5]}")
    elif not about_cache[0].startswith("tracegrad:"):
        failures.append(f"the warning about the cache does not start with 'tracegrad:': {about_cache[0]}")
    extra = [m for m in from_tracegrad if m not in about_cache]
    if extra:
        failures.append(f"other tracegrad warnings: {extra[:5]}")
    finish(warnings=messages[:20])
"""


@pytest.mark.parametrize("full, state, background", [
    ("cache", "empty", "1"),
    ("cache", "empty", "0"),
    # an earlier process wrote the modules, numba's machine code is to be written now
    ("cache", "entries", "1"),
    ("late", "entries", "1"),  # files can be made, not filled: numba's own cache write fails
    ("late", "entries", "0"),
    ("everywhere", "empty", "1"),  # the package's directory and numba's fallback directories are full too
], ids=["cache-disk-background", "cache-disk-foreground", "entries-background", "no-blocks-entries-background",
        "no-blocks-entries-foreground", "every-disk-background"])
def test_a_full_disk_gives_one_warning_and_right_results(tmp_path, full, state, background):
    cache = private_directory(tmp_path / "cache")  # exists and is private: only writing fails
    if state == "entries":
        run_script(FULL_DISK_SCRIPT, tmp_path, "full_disk", environment(cache, TRACEGRAD_BACKGROUND_COMPILE="0"),
                   TIMEOUT, args=["no"]).check()
        assert list(cache.rglob("tg_*.py")), "the first process wrote no entries"
        for path in numba_files(cache, "nbi") + numba_files(cache, "nbc"):
            path.unlink()
    result = run_script(FULL_DISK_SCRIPT, tmp_path, "full_disk",
                        environment(cache, TRACEGRAD_BACKGROUND_COMPILE=background), TIMEOUT, args=[full])
    result.check()


# -- 13. foreign code in the cache -----------------------------------------------------------

class Planted:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def plant_pickle(path: Path, marker: Path, index: bool) -> None:
    """A numba index (.nbi: numba's version, then a pickle) or data file (.nbc: a pickle) that runs code."""
    import numba

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        if index:
            pickle.dump(numba.__version__, file, protocol=-1)
        pickle.dump(Planted(marker), file, protocol=-1)


def assert_not_run(marker: Path, run) -> None:
    assert not marker.exists(), "planted code was executed\n" + run.describe()


def test_a_planted_pyc_of_a_generated_module_is_never_executed(tmp_path):
    from importlib._bootstrap_external import _code_to_timestamp_pyc

    cache, marker = tmp_path / "cache", tmp_path / "MARKER"
    user_run(tmp_path, TRACEGRAD_BACKGROUND_COMPILE="0").check()
    modules = sorted(cache.rglob("tg_*.py"))
    assert modules, f"no generated module under {cache}"
    for module in modules:
        status = module.stat()
        code = compile(f"open({str(marker)!r}, 'w').close()\n", str(module), "exec")
        pyc = Path(importlib.util.cache_from_source(str(module)))
        pyc.parent.mkdir(parents=True, exist_ok=True)
        pyc.write_bytes(_code_to_timestamp_pyc(code, int(status.st_mtime), status.st_size))
    second = user_run(tmp_path)
    assert_not_run(marker, second)
    second.check()


@pytest.mark.parametrize("kind", ["nbi", "nbc"])
def test_a_planted_pickle_in_numbas_cache_files_is_never_loaded(tmp_path, kind):
    cache, marker = tmp_path / "cache", tmp_path / "MARKER"
    user_run(tmp_path, TRACEGRAD_BACKGROUND_COMPILE="0").check()
    targets = numba_files(cache, kind)  # for .nbc, the index stays valid: numba goes on to read the data
    assert targets, f"no .{kind} files under {cache}"
    for path in targets:
        plant_pickle(path, marker, index=kind == "nbi")
    second = user_run(tmp_path)
    assert_not_run(marker, second)
    second.check()


def shared_directory(path: Path) -> Path:
    path.mkdir()
    path.chmod(0o777)  # world-writable, as /tmp or a shared NUMBA_CACHE_DIR is
    return path


def gemm_index_paths(shared: Path, scratch: Path) -> list[Path]:
    """Where numba's own locator puts the index of each of tracegrad.gemm's functions under NUMBA_CACHE_DIR."""
    script = textwrap.dedent("""
        import os
        import numba.core.caching
        from tracegrad import gemm

        for value in vars(gemm).values():
            if hasattr(value, "py_func") and getattr(value.py_func, "__module__", "") == "tracegrad.gemm":
                path = numba.core.caching.FunctionCache(value.py_func)._cache_file._index_path
                print(os.path.relpath(path, os.environ["NUMBA_CACHE_DIR"]))
    """)
    env = environment(scratch / "tracegrad-cache", NUMBA_CACHE_DIR=scratch / "numba-cache")
    found = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    return sorted({shared / line for line in found.stdout.split()})


def test_planted_files_in_a_shared_numba_cache_dir_are_never_loaded(tmp_path):
    shared, marker = shared_directory(tmp_path / "shared"), tmp_path / "MARKER"
    env = {"NUMBA_CACHE_DIR": shared}
    user_run(tmp_path, TRACEGRAD_BACKGROUND_COMPILE="0", **env).check()
    written = [path for path in shared.rglob("*") if path.is_file()]  # today: gemm's and the generated code's
    # also where numba's own locator would look for tracegrad.gemm's functions, written or not
    expected_gemm = gemm_index_paths(shared, private_directory(tmp_path / "scratch"))
    assert expected_gemm, "found no numba functions in tracegrad.gemm"
    for path in sorted(set(written) | set(expected_gemm)):
        plant_pickle(path, marker, index=path.suffix == ".nbi")
    second = user_run(tmp_path, **env)
    assert_not_run(marker, second)
    second.check()


def test_tracegrad_writes_nothing_into_numba_cache_dir(tmp_path):
    # separate from the test above: the required behaviour is that tracegrad's numba code is cached in
    # tracegrad's private cache directory only, never in a directory that NUMBA_CACHE_DIR names
    shared = shared_directory(tmp_path / "shared")
    user_run(tmp_path, NUMBA_CACHE_DIR=shared).check()
    user_run(tmp_path, TRACEGRAD_BACKGROUND_COMPILE="0", NUMBA_CACHE_DIR=shared).check()
    written = sorted(str(path.relative_to(shared)) for path in shared.rglob("*"))
    assert not written, f"tracegrad wrote into NUMBA_CACHE_DIR: {written}"

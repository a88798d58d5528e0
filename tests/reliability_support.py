"""Helpers for the reliability tests: run a script in a fresh Python process, with a timeout.

Each script runs in its own process group (so a forked grandchild cannot keep the test waiting),
imports this checkout's tracegrad (PYTHONPATH is the repository root), and uses a private
compile cache it is given. A script reports with a last stdout line `RESULT {json}`; its
`failures` list must be empty.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# what every script starts with: a list of failures, and ways to add to it
PRELUDE = textwrap.dedent("""
    import json
    import sys
    import traceback

    import numpy as np

    failures = []


    def check(label, got, want, rtol=1e-12):
        try:
            np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float),
                                       rtol=rtol, atol=1e-14)
        except Exception as error:
            failures.append(f"{label}: wrong value {got!r}, expected {want!r}")


    def attempt(label, thunk, want=None, rtol=1e-12):
        try:
            got = thunk()
        except Exception as error:
            failures.append(f"{label}: raised {type(error).__name__}: {error}"[:400])
            return None
        if want is not None:
            check(label, got, want, rtol)
        return got


    def finish(**info):
        info["failures"] = failures
        sys.stdout.flush()
        print("RESULT " + json.dumps(info, default=str), flush=True)
        sys.exit(1 if failures else 0)
""")


def environment(cache_dir: Path | None, **overrides) -> dict:
    """The environment of a script: this checkout's tracegrad, numba backend, background compile on."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRACEGRAD_", "NUMBA_"))}
    env.update(PYTHONPATH=str(ROOT), TRACEGRAD_BACKEND="numba", TRACEGRAD_BACKGROUND_COMPILE="1")
    if cache_dir is not None:
        env["TRACEGRAD_CACHE_DIR"] = str(cache_dir)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class Run:
    def __init__(self, name: str, returncode: int, stdout: str, stderr: str):
        self.name, self.returncode, self.stdout, self.stderr = name, returncode, stdout, stderr
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        self.result = json.loads(lines[-1][len("RESULT "):]) if lines else None

    def describe(self) -> str:
        result = dict(self.result or {})
        failures = result.pop("failures", [])
        shown = "".join(f"\n  {failure}" for failure in failures[:25])
        if len(failures) > 25:
            shown += f"\n  ... and {len(failures) - 25} more"
        stdout = "\n".join(line for line in self.stdout.splitlines() if not line.startswith("RESULT "))
        return (f"{self.name}: exit code {self.returncode}, {len(failures)} failures{shown}\n"
                f"--- result\n{result}\n--- stdout (end)\n{stdout[-2000:]}\n"
                f"--- stderr (end)\n{self.stderr[-6000:]}")

    def check(self) -> dict:
        """Exit code 0, no traceback on stderr, and a result with no failures."""
        assert self.returncode == 0, self.describe()
        assert "Traceback" not in self.stderr, self.describe()
        assert self.result is not None, self.describe()
        assert not self.result["failures"], self.describe()
        return self.result


def run_script(script: str, directory: Path, name: str, env: dict, timeout: float, args=(),
               prelude: bool = True) -> Run:
    """Run `script` (dedented, after PRELUDE) as `directory/name.py`; a run past `timeout` fails the test."""
    path = directory / f"{name}.py"
    env = dict(env)
    # numba's fallback cache (used when it cannot write beside a source file) goes to the test's directory,
    # not the user's home
    env.setdefault("XDG_CACHE_HOME", str(directory / "xdg-cache"))
    path.write_text((PRELUDE if prelude else "") + textwrap.dedent(script))
    process = subprocess.Popen([sys.executable, str(path), *map(str, args)], cwd=directory, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the script's process group: it and any child it forked
        stdout, stderr = process.communicate()
        pytest.fail(f"{name} did not finish in {timeout} s (hung, killed)\n"
                    + Run(name, process.returncode, stdout, stderr).describe())
    return Run(name, process.returncode, stdout, stderr)


def private_directory(path: Path) -> Path:
    """`path`, made as a directory only its owner may use (what tracegrad accepts as a cache)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path

"""The stress script of the default call path (benchmarks/stress_default_path.py), as a test.

CI runs a bounded version (about 15-40 s). The full one (4 processes x 8 threads x 50 functions x
20 rounds, several minutes) is marked `slow`, which pyproject's addopts deselect; run it with

    python -m pytest -m slow tests/test_stress.py

or directly: python benchmarks/stress_default_path.py --processes 4 --threads 8 --functions 50 --rounds 20
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from reliability_support import ROOT

SCRIPT = ROOT / "benchmarks" / "stress_default_path.py"


def stress(round_timeout: float, timeout: float, *arguments: str) -> None:
    """Run the script; a round past `round_timeout` fails inside it, the whole past `timeout` fails here."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRACEGRAD_", "NUMBA_"))}
    process = subprocess.Popen([sys.executable, str(SCRIPT), *arguments, "--timeout", str(round_timeout)], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the stress script hung (killed)\n{stdout[-5000:]}\n{stderr[-5000:]}")
    assert process.returncode == 0, f"exit code {process.returncode}\n{stdout[-8000:]}\n{stderr[-5000:]}"


def test_stress_bounded():
    stress(60, 150, "--processes", "2", "--threads", "4", "--functions", "10", "--rounds", "2")


@pytest.mark.slow
def test_stress_full():
    stress(600, 20 * 600, "--processes", "4", "--threads", "8", "--functions", "50", "--rounds", "20")

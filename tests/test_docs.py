"""Every ```python block in docs/ and the README runs, so the docs cannot drift from the code.

The blocks of one file run in order in one fresh interpreter (later blocks use earlier
names), with the python backend so no time goes to compiling.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])


def python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.MULTILINE | re.DOTALL)


def test_the_documents_have_code():
    assert sum(len(python_blocks(path)) for path in DOCUMENTS) >= 10


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_python_blocks_run(path, tmp_path):
    blocks = python_blocks(path)
    if not blocks:
        pytest.skip(f"{path.name} has no python blocks")
    script = tmp_path / f"{path.stem}_blocks.py"
    script.write_text("\n\n".join(blocks))
    environment = dict(os.environ, TRACEGRAD_BACKEND="python")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{path.name}:\n{result.stderr[-3000:]}"

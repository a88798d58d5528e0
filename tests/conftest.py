import os
import tempfile

import pytest

# a private compile cache for the test session, so runs never share entries with the user's
os.environ["TRACEGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="tracegrad-test-cache-")

import tracegrad as tg  # noqa: E402

# tests of the numba backend must run numba's code from the first call; test_background_compile
# turns the background compile back on
tg.config.compile_in_background = False


@pytest.fixture(params=["python", "numba"])
def backend(request):
    """Run a test once on each backend."""
    saved = tg.config.backend
    tg.config.backend = request.param
    yield request.param
    tg.config.backend = saved


@pytest.fixture
def python_backend():
    saved = tg.config.backend
    tg.config.backend = "python"
    yield
    tg.config.backend = saved

import os
import tempfile

import pytest

# a private compile cache for the test session, so runs never share entries with the user's
os.environ["TRACEGRAD_CACHE_DIR"] = tempfile.mkdtemp(prefix="tracegrad-test-cache-")

import tracegrad as tg  # noqa: E402

# tests of the numba backend must run numba's code from the first call; test_background_compile
# turns the background compile back on
tg.config.compile_in_background = False
# the whole session compiles more programs than a user's process may (500 by default): past the bound
# new programs would run as NumPy code and the tests after it would no longer test numba's code
tg.config.max_compiled_programs = 100_000


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

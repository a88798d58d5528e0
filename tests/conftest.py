import pytest

import tracegrad as tg


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

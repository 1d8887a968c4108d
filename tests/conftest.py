"""Shared test fixtures: the backend matrix and the path to the real data.

Every layer test takes ``xp`` and runs once per backend: NumPy always, CuPy
under the ``gpu`` mark, skipped cleanly where CuPy or a GPU is missing.
Gradient checks themselves run on the host in float64 (see mytorch.gradcheck);
the CuPy case checks that the device result matches the host result.
"""
import os
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mytorch import backend

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MYTORCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _cupy_params():
    usable, reason = backend.cupy_status()
    marks = [pytest.mark.gpu]
    if not usable:
        marks.append(pytest.mark.skip(reason=reason))
    return pytest.param("cupy", marks=marks)


@pytest.fixture(params=["numpy", _cupy_params()])
def backend_name(request):
    """Runs the test under each backend, restoring numpy afterwards."""
    backend.set_backend(request.param)
    yield request.param
    backend.set_backend("numpy")


@pytest.fixture
def xp(backend_name):
    return backend.xp()


@contextmanager
def on_host():
    """Build layers on the NumPy backend whatever the test's backend is (the host reference)."""
    name = backend.get_backend()
    backend.set_backend("numpy")
    try:
        yield
    finally:
        backend.set_backend(name)


@pytest.fixture
def rng(request):
    """A seeded generator, different per test (so shapes and data vary between tests)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


def require_shared(*parts):
    """Path under ../shared/data; skip if absent, but fail when CI=true.

    A silent skip in CI would hide a broken path.
    """
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        msg = f"shared data not found: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: the data must be present)")
        pytest.skip(msg)
    return path


@pytest.fixture
def hw4p1_dir():
    """../shared/data/hw4p1, the real HW4P1 layout."""
    return require_shared("hw4p1")


@pytest.fixture
def wikitext_dir():
    """../shared/data/wikitext-2, the raw token files."""
    return require_shared("wikitext-2")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tiny HW4P1 layout built by dataset.prepare (tests/tinydata.py); copy it before changing it."""
    from tinydata import make_tiny_hw4p1
    return make_tiny_hw4p1(tmp_path_factory.mktemp("tiny"))

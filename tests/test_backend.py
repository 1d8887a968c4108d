"""The backend shim: choosing numpy/cupy, clear errors, host/device moves.

Every test leaves the numpy backend active, whatever happens inside it.
"""
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from mytorch import backend


@pytest.fixture(autouse=True)
def _restore_numpy():
    yield
    backend.set_backend("numpy")


def test_set_backend_numpy():
    backend.set_backend("numpy")
    assert backend.get_backend() == "numpy"
    assert backend.xp() is np


@pytest.mark.parametrize("name", ["bogus", "NumPy", "", "torch"])
def test_unknown_backend_raises_value_error(name):
    with pytest.raises(ValueError, match="unknown backend"):
        backend.set_backend(name)
    assert backend.get_backend() == "numpy"


def test_cupy_without_cupy_raises_backend_error():
    usable, reason = backend.cupy_status()
    if usable:
        pytest.skip("CuPy and a GPU are usable here")
    with pytest.raises(backend.BackendError) as info:
        backend.set_backend("cupy")
    message = str(info.value)
    assert reason in message
    if backend._cupy is None:
        assert "CuPy is not installed" in message
    assert isinstance(info.value, RuntimeError)
    assert backend.get_backend() == "numpy"          # the failed switch changed nothing
    assert backend.xp() is np


def test_to_device_and_to_numpy_round_trip(rng):
    a = rng.standard_normal((3, 4))
    d = backend.to_device(a)
    back = backend.to_numpy(d)
    assert isinstance(back, np.ndarray)
    assert back.shape == a.shape and back.dtype == a.dtype
    assert_array_equal(back, a)
    f = backend.to_device(a, np.float32)
    assert f.dtype == np.float32
    assert_array_equal(backend.to_numpy(f), a.astype(np.float32))
    ids = rng.integers(0, 9, size=(2, 5))
    assert_array_equal(backend.to_numpy(backend.to_device(ids)), ids)
    assert isinstance(backend.to_numpy([1.0, 2.0]), np.ndarray)


def test_get_array_module_is_numpy_for_host_arrays(rng):
    a, b = rng.standard_normal(3), rng.integers(0, 4, size=2)
    assert backend.get_array_module(a) is np
    assert backend.get_array_module(a, b) is np
    assert not backend.is_cupy(a)


def test_device_round_trip_under_each_backend(xp, backend_name, rng):
    """Under cupy the arrays really live on the device; either way the round trip is exact."""
    a = rng.standard_normal((4, 2))
    d = backend.to_device(a)
    assert backend.get_array_module(d) is xp
    assert backend.is_cupy(d) == (backend_name == "cupy")
    assert_array_equal(backend.to_numpy(d), a)

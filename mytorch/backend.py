"""Array backend shim: NumPy by default, CuPy on request.

This is the only module in the project that imports cupy. Layers never import
numpy-or-cupy directly for computation on their inputs; they ask

    xp = get_array_module(x)

and write ``xp.dot``, ``xp.exp`` ... so the same code runs on either library
(Chainer's idiom). Parameters are created with ``xp()``, the module of the
active backend.

    set_backend("numpy" | "cupy")   choose where new parameters live
    xp()                            the active array module
    get_array_module(*arrays)       numpy or cupy, from the arrays themselves
    to_device(a), to_numpy(a)       move arrays to the active backend / back to host
    scatter_add(a, idx, v)          a[idx] += v with repeated idx adding up
"""
import threading

import numpy as np

try:  # CuPy is optional: the `gpu` extra installs it.
    import cupy as _cupy
    _CUPY_IMPORT_ERROR = None
except Exception as err:  # ImportError, or a broken CUDA install
    _cupy = None
    _CUPY_IMPORT_ERROR = err

_BACKENDS = ("numpy", "cupy")
_active = "numpy"


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""


def cupy_status():
    """Return (usable, reason): whether CuPy can run here and, if not, why."""
    if _cupy is None:
        return False, ("CuPy is not installed (pip install -e '.[gpu]', or the cupy-cudaXXx "
                       f"wheel matching your CUDA): {_CUPY_IMPORT_ERROR}")
    try:
        count = _cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return False, f"CuPy is installed but no CUDA GPU is usable: {err}"
    if count < 1:
        return False, "CuPy is installed but no CUDA GPU is present"
    return True, "ok"


def set_backend(name):
    """Select the backend for new parameters: "numpy" or "cupy"."""
    global _active
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(_BACKENDS)}")
    if name == "cupy":
        usable, reason = cupy_status()
        if not usable:
            raise BackendError(f"--backend cupy is not available: {reason}")
    _active = name


def get_backend():
    """Name of the active backend."""
    return _active


def xp():
    """The array module of the active backend (numpy or cupy)."""
    return _cupy if _active == "cupy" else np


def get_array_module(*arrays):
    """numpy or cupy, whichever the given arrays belong to (numpy for host data)."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def cupy_module():
    """The cupy module itself (for mytorch.fast.kernels); BackendError where it is not usable."""
    usable, reason = cupy_status()
    if not usable:
        raise BackendError(reason)
    return _cupy


def is_cupy(a):
    return _cupy is not None and isinstance(a, _cupy.ndarray)


def to_device(a, dtype=None):
    """Copy a host (or device) array to the active backend, optionally casting."""
    mod = xp()
    out = mod.asarray(a)
    return out.astype(dtype, copy=False) if dtype is not None else out


def to_numpy(a):
    """Return a NumPy array (copying from the GPU when needed)."""
    if is_cupy(a):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def erf(x):
    """The error function, elementwise, same shape and dtype: scipy.special.erf on NumPy arrays,
    cupyx.scipy.special.erf on CuPy arrays (SciPy's Cephes algorithm, about 1 ulp in float64)."""
    if is_cupy(x):
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    import scipy.special
    return scipy.special.erf(x)


def scatter_add(a, indices, values):
    """a[indices] += values along axis 0, with repeated indices adding up.

    NumPy's ``a[idx] += v`` counts a repeated index once; this never does.
    On the host, ``np.add.at`` is exact but slow, so rows are summed with a
    sort + ``np.add.reduceat`` (one pass over the values, vectorised).
    """
    if is_cupy(a):
        add_at = getattr(_cupy.add, "at", None)     # CuPy >= 13; cupyx.scatter_add before (deprecated since)
        if add_at is None:
            import cupyx
            add_at = cupyx.scatter_add
        add_at(a, indices, values)
        return a
    indices = np.asarray(indices).reshape(-1)
    values = values.reshape(indices.shape[0], *a.shape[1:])
    if indices.size == 0:
        return a
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    a[sorted_idx[starts]] += np.add.reduceat(values[order], starts, axis=0)
    return a


_SCRATCH = threading.local()        # matmul_accumulate's scratch buffers, one set per thread


def matmul_accumulate(out, a, b):
    """out += a @ b, with no fresh temporary the size of `out`.

    Shapes: a (M, K), b (K, N), out (M, N). The product goes into a scratch buffer
    kept per (shape, dtype) and is then added in place: a fresh (V, D) array on
    every step would cost page faults, and BLAS's own beta = 1 accumulation is
    only reachable through a second BLAS library (scipy's) whose threads fight
    NumPy's for the cores (measured: the projection backward ran 2x slower).
    The buffers are per thread: a batch split over threads (mytorch.fast.split) runs
    two backwards at once, and one shared buffer let each thread add the other's product.
    """
    xp = get_array_module(out)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})     # this thread's own: threads may run
    key = (out.shape, out.dtype.str, is_cupy(out))             # backward at once (mytorch.fast.split)
    scratch = buffers.get(key)
    if scratch is None:
        scratch = buffers[key] = xp.empty_like(out)
    xp.matmul(a, b, out=scratch)
    out += scratch
    return out

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


def scatter_add(a, indices, values):
    """a[indices] += values along axis 0, with repeated indices adding up.

    NumPy's ``a[idx] += v`` counts a repeated index once; this never does.
    On the host, ``np.add.at`` is exact but slow, so rows are summed with a
    sort + ``np.add.reduceat`` (one pass over the values, vectorised).
    """
    if is_cupy(a):
        import cupyx  # only reached when cupy imported
        cupyx.scatter_add(a, indices, values)
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


def matmul_accumulate(out, a, b):
    """out += a @ b without a temporary the size of `out`.

    Shapes: a (M, K), b (K, N), out (M, N), all float32/float64 C-contiguous or
    transposed views of such. On the host this calls BLAS gemm with beta = 1
    (scipy's wrapper), which writes the product straight into `out`; this is
    how big weight gradients (V, D) are accumulated in place.
    """
    if is_cupy(out) or out.dtype not in (np.float32, np.float64) or not _gemm_ready(out, a, b):
        out += a @ b
        return out
    from scipy.linalg import blas
    gemm = blas.sgemm if out.dtype == np.float32 else blas.dgemm
    # BLAS is column-major: C-order out (M, N) is a Fortran (N, M) matrix outT,
    # and outT += b^T a^T.  bT/aT are the Fortran views of b/a (no copies).
    bT, trans_b = (b.T, 0) if b.flags.c_contiguous else (b, 1)
    aT, trans_a = (a.T, 0) if a.flags.c_contiguous else (a, 1)
    gemm(1.0, bT, aT, beta=1.0, c=out.T, trans_a=trans_b, trans_b=trans_a, overwrite_c=1)
    return out


def _gemm_ready(out, a, b):
    same = a.dtype == out.dtype and b.dtype == out.dtype
    layouts = all(x.flags.c_contiguous or x.flags.f_contiguous for x in (a, b))
    return same and layouts and out.flags.c_contiguous and out.ndim == a.ndim == b.ndim == 2

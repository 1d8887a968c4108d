"""Using both cores: BLAS thread control and row-block parallelism for NumPy ufuncs.

Two facts drive this module:
- OpenBLAS threads pay a synchronisation cost on every call. On a small product
  (the recurrent (B, H) x (H, 4H) of one LSTM step) that cost dominates, and on a
  busy machine it explodes; on a big product (the (N, D) x (D, V) projection)
  the threads pay off. ``blas_threads(1)`` scopes a single-threaded region.
- NumPy ufuncs run on one core but release the GIL, so a memory-bound pass over
  a large array (exp of the logits, an Adam update) split into row blocks on a
  thread pool uses every core.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from . import backend

_POOL = None
_MIN_PARALLEL = 1 << 18  # elements; smaller arrays are not worth a thread hop


def num_threads():
    """Threads to use: MYTORCH_THREADS, else the number of cores."""
    env = os.environ.get("MYTORCH_THREADS")
    return max(1, int(env) if env else (os.cpu_count() or 1))


def _blas_controllers():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    return [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]


_CONTROLLERS = None


@contextmanager
def blas_threads(n):
    """Run the body with BLAS limited to n threads (a ~1 us switch; no-op without threadpoolctl)."""
    global _CONTROLLERS
    if _CONTROLLERS is None:
        _CONTROLLERS = _blas_controllers()
    before = [c.get_num_threads() for c in _CONTROLLERS]
    for c in _CONTROLLERS:
        c.set_num_threads(n)
    try:
        yield
    finally:
        for c, k in zip(_CONTROLLERS, before):
            c.set_num_threads(k)


def parallel_rows(fn, *arrays):
    """fn(*blocks) over row blocks of same-length arrays, one block per thread.

    fn must only touch its blocks (rows are independent). Falls back to one
    call for small arrays, one thread, or CuPy arrays (the GPU is parallel already).
    """
    n = arrays[0].shape[0] if arrays[0].ndim else 1
    k = num_threads()
    if k == 1 or arrays[0].size < _MIN_PARALLEL or backend.is_cupy(arrays[0]) or n < k:
        fn(*arrays)
        return
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(k)
    bounds = np.linspace(0, n, k + 1).astype(int)
    futures = [_POOL.submit(fn, *(a[lo:hi] for a in arrays)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    for fut in futures:
        fut.result()

"""Using both cores: BLAS thread control and row-block parallelism for NumPy ufuncs.

Three facts drive this module:
- OpenBLAS threads pay a synchronisation cost on every call. On a small product
  (the recurrent (32, 128) x (128, 512) of one LSTM step) that cost eats the
  gain, and on a busy machine it explodes; on a bigger one (the default recipe's
  (32, 384) x (384, 1536)) and on the (N, D) x (D, V) projection the threads pay
  off. ``blas_threads(1)`` scopes a single-threaded region; ``blas_threads_for(macs)``
  picks by product size.
- NumPy ufuncs run on one core but release the GIL, so a memory-bound pass over
  a large array (exp of the logits, an Adam update) split into row blocks on a
  thread pool uses every core.
- A chain of ufuncs over arrays bigger than the cache (Adam's dozen passes over
  (33280, 128) matrices) streams every operand from memory once per ufunc.
  ``block_elements`` runs the whole chain on cache-sized row blocks instead,
  so each operand crosses the memory bus about once.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .. import backend

_POOL = None
_MIN_PARALLEL = 1 << 18  # elements; smaller arrays are not worth a thread hop
SMALL_PRODUCT = 1 << 22  # multiply-adds; a smaller matrix product runs on one BLAS thread
CACHE_BLOCK = 1 << 18    # elements per operand block (1 MB of float32): the block_elements that measured best


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


def _controllers():
    global _CONTROLLERS
    if _CONTROLLERS is None:
        _CONTROLLERS = _blas_controllers()
    return _CONTROLLERS


def openblas_thread_timeout():
    """n where OpenBLAS's idle worker threads spin 2^n cycles before sleeping; None without OpenBLAS.

    28 is OpenBLAS's default; importing mytorch before numpy sets 16 (see mytorch/__init__.py).
    """
    for c in _controllers():
        read = getattr(c.dynlib, "openblas_thread_timeout", None) if c.internal_api == "openblas" else None
        if read is not None:
            n = int(read())
            return n if n > 0 else 28                  # 0: the variable was not set
    return None


@contextmanager
def blas_threads(n):
    """Run the body with BLAS limited to n threads (a ~1 us switch; no-op without threadpoolctl)."""
    controllers = _controllers()
    before = [c.get_num_threads() for c in controllers]
    for c in controllers:
        c.set_num_threads(n)
    try:
        yield
    finally:
        for c, k in zip(controllers, before):
            c.set_num_threads(k)


@contextmanager
def blas_threads_for(macs):
    """One BLAS thread for a body whose products have `macs` multiply-adds each, if under SMALL_PRODUCT."""
    if macs < SMALL_PRODUCT:
        with blas_threads(1):
            yield
    else:
        yield


def pool():
    """The shared thread pool (num_threads() workers), made on first use."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(num_threads())
    return _POOL


def parallel_rows(fn, *arrays, block_elements=None):
    """fn(*blocks) over row blocks of same-length arrays, one share of the rows per thread.

    fn must only touch its blocks (rows are independent). With ``block_elements``
    each thread calls fn on consecutive blocks of about that many elements of
    arrays[0] (whole rows), so a chain of ufuncs inside fn stays in cache.
    Small arrays, one thread or CuPy arrays (the GPU is parallel already) run on
    the calling thread; CuPy arrays in a single call.
    """
    if backend.is_cupy(arrays[0]) or arrays[0].ndim == 0:
        fn(*arrays)
        return
    n = arrays[0].shape[0]
    rows = n if block_elements is None else max(1, block_elements * n // max(arrays[0].size, 1))

    def run(lo, hi):
        for start in range(lo, hi, rows):
            stop = min(start + rows, hi)
            fn(*(a[start:stop] for a in arrays))

    k = num_threads()
    if k == 1 or arrays[0].size < _MIN_PARALLEL or n < k:
        run(0, n)
        return
    bounds = np.linspace(0, n, k + 1).astype(int)
    futures = [pool().submit(run, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    for fut in futures:
        fut.result()

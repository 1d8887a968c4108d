"""mytorch: autograd-free layers with explicit forward/backward, in NumPy (or CuPy).

    import mytorch
    from mytorch import nn, optim

Import mytorch before numpy in a program that trains (train.py and the benchmark do):
OpenBLAS's worker threads spin for 2^28 cycles (about 0.1 s) after every call before
they sleep, and the row-parallel NumPy passes that follow a big matrix product
(softmax, Adam) then share the cores with spinning threads and run no faster than on
one core (`OPENBLAS_THREAD_TIMEOUT=28 python -m bench.train_step` shows it: README, Speed).
OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when NumPy loads it, so it is set here
(2^16 cycles, about 25 us: warm between back-to-back products) unless the user set it.
"""
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")  # read back: fast.parallel.openblas_thread_timeout()
# Under mpiexec -n N (mytorch.communicator) each process takes its share of the cores, BLAS included
# (OpenBLAS reads its thread count when NumPy loads it), unless the user set them.
_ranks = next((int(os.environ[k]) for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
               if os.environ.get(k, "").isdigit()), 1)
if _ranks > 1:
    _share = str(max(1, (os.cpu_count() or 1) // _ranks))
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MYTORCH_THREADS"):
        os.environ.setdefault(_name, _share)

from . import backend, nn, optim  # noqa: F401, E402
from .backend import set_backend, get_backend, get_array_module, to_numpy, to_device  # noqa: F401, E402

__version__ = "0.1.0"

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
from .launch import share_cores  # noqa: E402  (os only: before NumPy loads)
share_cores()                    # under mpiexec -n N, each process its share of the cores

from . import backend, nn, optim  # noqa: F401, E402
from .backend import set_backend, get_backend, get_array_module, to_numpy, to_device  # noqa: F401, E402

__version__ = "0.1.0"

"""mytorch: autograd-free layers with explicit forward/backward, in NumPy (or CuPy).

    import mytorch
    from mytorch import nn, optim
"""
from . import backend, nn, optim  # noqa: F401
from .backend import set_backend, get_backend, get_array_module, to_numpy, to_device  # noqa: F401

__version__ = "0.1.0"

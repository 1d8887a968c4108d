"""Nanoseconds per element of the NumPy ufuncs a training step leans on, float32, one thread.

    python -m bench.ufuncs

The softmax's exp and the LSTM gates' tanh dominate what a step spends outside its matrix
products; how fast NumPy's float32 exp and tanh run depends on the processor's SIMD (NumPy
dispatches AVX-512 and AVX2 versions), so this prints them beside a multiply and a sqrt on
an array that stays in cache, and which SIMD version NumPy picked for each.
"""
import sys
import time

import numpy as np

UFUNCS = ("multiply", "sqrt", "exp", "tanh")


def ns_per_element(name, n=1 << 16, reps=200):
    """Best-of-reps time of ufunc `name` over n float32 values in [-10, 0), in ns per element."""
    x = -10 * np.random.default_rng(0).random(n, dtype=np.float32)
    out = np.empty_like(x)
    fn = getattr(np, name)
    args = (x, x) if name == "multiply" else (-x,) if name == "sqrt" else (x,)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args, out=out)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def simd_target(name):
    """The SIMD version NumPy dispatched for the float32 loop of `name` ("X86_V3", ...), or "?"."""
    try:
        from numpy.lib.introspect import opt_func_info
        info = opt_func_info(func_name=f"^{name}$", signature="float32")
        return next(iter(info[name].values()))["current"]
    except Exception:  # noqa: BLE001 - NumPy < 2.1, or an unexpected layout: not essential
        return "?"


def main(argv=None):
    print(f"numpy {np.__version__}, float32, one thread, best of 200 passes over 65,536 values in cache")
    for name in UFUNCS:
        print(f"{name:10s} {ns_per_element(name):6.2f} ns/element   (NumPy's loop: {simd_target(name)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

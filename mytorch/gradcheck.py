"""Central finite differences, the ground truth every backward is tested against.

The loss used is L = sum(Z * G) for a fixed random G, so dL/dZ = G and any
backward can be checked through the scalar it defines. Work in float64: with
eps = 1e-5 the central difference has error O(eps^2) ~ 1e-10 from truncation
and O(1e-16 * |L| / eps) ~ 1e-11 * |L| from rounding, both far below the 1e-6
tolerance (eps = 1e-6 would let rounding reach 1e-6 on small gradients).
"""
import numpy as np


def numerical_grad(f, x, eps=1e-5):
    """dF/dx element by element, F = f() a scalar that reads x (mutated in place, restored)."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def directional_grad(f, x, direction, eps=1e-5):
    """d/dt F(x + t * direction) at t = 0: a single random-direction check for big tensors."""
    old = x.copy()
    x += eps * direction
    plus = f()
    x[...] = old - eps * direction
    minus = f()
    x[...] = old
    return (plus - minus) / (2 * eps)


def relative_error(a, b):
    """max |a - b| / max(|a|, |b|, tiny): scale-free, fails on a wrong sign or a factor."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-12)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def check_gradient(f, x, analytic, rtol=1e-6, eps=1e-5, max_elements=2000, rng=None):
    """Compare `analytic` with finite differences of scalar f() w.r.t. array x.

    Tensors up to ``max_elements`` are checked entry by entry; larger ones along
    three random directions (g . d must match the directional derivative).
    Returns the relative error; raises AssertionError above ``rtol``.
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks run in float64, got {x.dtype}")
    if x.size <= max_elements:
        numeric = numerical_grad(f, x, eps)
        err = relative_error(analytic, numeric)
    else:
        rng = rng or np.random.default_rng(0)
        errs = []
        for _ in range(3):
            d = rng.standard_normal(x.shape)
            numeric = directional_grad(f, x, d, eps)
            exact = float(np.sum(analytic * d))
            errs.append(abs(numeric - exact) / max(abs(numeric), abs(exact), 1e-12))
        err = max(errs)
    if not err <= rtol:
        raise AssertionError(f"gradient mismatch: relative error {err:.3e} > {rtol:.1e}")
    return err

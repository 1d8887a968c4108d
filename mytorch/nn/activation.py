"""GELU, the Transformer's activation, and the error function erf it needs.

Shapes: N... any shape (the layer is elementwise).

    GELU(x) = x Phi(x),   Phi(x) = P(Z <= x) = 0.5 (1 + erf(x / sqrt 2))     Z ~ N(0, 1)
            ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))                approximate="tanh"

Both are torch.nn.GELU's formulas (approximate="none" and "tanh").

erf: NumPy has no erf ufunc and SciPy is not a dependency, so erf is computed here, to
float64 accuracy, by a Taylor expansion about the nearest point a of a grid of step 1/8:

    erf(a + d) = sum_n c_n(a) d^n,   |d| <= 1/16,   n = 0 .. 11
    c_0(a) = erf(a)                                          (math.erf, once per grid point)
    c_n(a) = erf^(n)(a) / n! = (2/sqrt(pi)) (-1)^(n-1) H_{n-1}(a) e^(-a^2) / n!     n >= 1

where H_m are the (physicists') Hermite polynomials, H_0 = 1, H_1 = 2a,
H_{m+1} = 2a H_m - 2m H_{m-1}: the derivatives of e^(-x^2) are (-1)^m H_m(x) e^(-x^2).
The table of c_n(a) is built once, at import, from that recurrence. The first term left out
is below 1e-17, so the error is rounding alone: tests/test_gelu.py compares with math.erf
over [-10, 10] and down to 1e-300 (relative error < 1e-15, about two ulps). erf is odd, so
only |x| is looked up; beyond |x| = 6, erf(x) = +-1 in float64 (1 - erf(6) = 2e-17).
Every step is an array operation: the loop runs over the 12 Taylor terms, never over data.
"""
import math

import numpy as np

from .. import backend
from .module import Module

_STEP = 1.0 / 8            # grid step: |d| <= 1/16
_X_MAX = 6.0               # erf(x) rounds to 1 beyond this
_TERMS = 12                # Taylor terms c_0 .. c_11


def _erf_taylor_table():
    """(12, 49) float64 array: row n holds c_n(a) at the grid points a = 0, 1/8, ..., 6."""
    a = np.arange(int(_X_MAX / _STEP) + 1) * _STEP
    table = np.empty((_TERMS, a.size))
    table[0] = [math.erf(v) for v in a]
    gauss = 2.0 / math.sqrt(math.pi) * np.exp(-a * a)      # erf'(a)
    H_prev, H = np.zeros_like(a), np.ones_like(a)            # H_{-1} = 0, H_0 = 1
    factorial = 1.0
    for n in range(1, _TERMS):                              # over Taylor terms, not data
        factorial *= n
        table[n] = (-1) ** (n - 1) * H * gauss / factorial   # uses H_{n-1}
        H_prev, H = H, 2 * a * H - 2 * (n - 1) * H_prev      # H_n
    return table


_ERF_TABLE = _erf_taylor_table()
_TABLES = {}               # (array module, dtype) -> the table there, made once


def erf(x):
    """The error function, elementwise: (2/sqrt(pi)) int_0^x exp(-t^2) dt. Same shape and dtype as x.

    Accurate to about 2 ulps in float64 (see the module docstring). NaN stays NaN; +-inf gives +-1.
    """
    xp = backend.get_array_module(x)
    key = (xp, x.dtype.str)
    if key not in _TABLES:
        _TABLES[key] = xp.asarray(_ERF_TABLE.astype(x.dtype))
    table = _TABLES[key]
    t = xp.abs(x)
    t = xp.where(t < _X_MAX, t, _X_MAX)                     # also NaN -> 6: sign(NaN) restores NaN
    r = xp.rint(t * (1 / _STEP))                            # nearest grid point a = r / 8 ...
    d = t - r * _STEP                                       # exact: the step is a power of 2
    k = r.astype(int)                                       # ... and its column in the table
    y = table[_TERMS - 1][k]
    for n in range(_TERMS - 2, -1, -1):                     # Horner over the Taylor terms
        y = y * d + table[n][k]
    return xp.sign(x) * y                                   # erf(-x) = -erf(x)


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715


class GELU(Module):
    """Gaussian Error Linear Unit, as torch.nn.GELU(approximate=...).

    forward(X):     X of any shape -> Y = GELU(X), same shape and dtype
    backward(dLdY): same shape -> dLdX = dLdY * GELU'(X)
    """

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, X):
        xp = backend.get_array_module(X)
        self.X = X
        if self.approximate == "none":
            self.Phi = 0.5 * (1.0 + erf(X * _SQRT_HALF))        # Phi(X), the normal CDF
            return X * self.Phi
        self.tanh_u = xp.tanh(_SQRT_2_OVER_PI * (X + _TANH_CUBIC * (X * X * X)))
        return 0.5 * X * (1.0 + self.tanh_u)

    def backward(self, dLdY):
        """dLdX = dLdY * dY/dX, elementwise.

        exact:  Y = x Phi(x)                  dY/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2/2) / sqrt(2 pi)
        tanh:   Y = 0.5 x (1 + tanh(u)),      u = sqrt(2/pi) (x + 0.044715 x^3)
                dY/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,
                du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        """
        xp = backend.get_array_module(dLdY)
        X = self.X
        if dLdY.shape != X.shape:
            raise ValueError(f"GELU.backward: expected dLdY of shape {tuple(X.shape)}, "
                             f"got {tuple(dLdY.shape)}")
        if self.approximate == "none":
            phi = _INV_SQRT_2PI * xp.exp(-0.5 * X * X)
            return dLdY * (self.Phi + X * phi)
        th = self.tanh_u
        du_dx = _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * X * X)
        return dLdY * (0.5 * (1.0 + th) + 0.5 * X * (1.0 - th * th) * du_dx)

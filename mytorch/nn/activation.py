"""GELU, the Transformer's activation, exact (with erf) or in its tanh approximation.

Shapes: N... any shape (the layer is elementwise).

    GELU(x) = x Phi(x),   Phi(x) = P(Z <= x) = 0.5 (1 + erf(x / sqrt 2))     Z ~ N(0, 1)
            ~ 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))                approximate="tanh"

Both are torch.nn.GELU's formulas (approximate="none" and "tanh"). erf is SciPy's
(scipy.special.erf; cupyx.scipy.special.erf on the GPU), through mytorch.backend.erf:
tests/test_gelu.py compares it with math.erf over [-10, 10] and down to 1e-300.
"""
import math

from .. import backend
from ..backend import erf  # noqa: F401  (mytorch.nn.erf)
from .module import Module

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

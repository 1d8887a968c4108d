"""nn.GELU's tanh form through exp, in place, with the derivative made in forward.

Shapes: any (the layer is elementwise).

    0.5 (1 + tanh(u)) = sigmoid(2 u) = 1 / (1 + exp(-2 u)),   u = sqrt(2/pi) (x + a x^3), a = 0.044715
    GELU(x) = x s,   s = sigmoid(2 u)
    dY/dx   = s + x s (1 - s) 2 u'(x),   u'(x) = sqrt(2/pi) (1 + 3 a x^2)

The same function as the plain layer's (1 + tanh u) / 2, without its cancellation for x << 0, and
NumPy's float32 exp costs about half its tanh (python -m bench.ufuncs). Every step is in place; exp(-2u)
overflows to inf for x < -~10 in float32 (s = 0, Y = -0: the plain layer's limit), the warning
silenced (and the underflow near it). When training, forward also writes dY/dX from the same
intermediates, and backward is one product (the plain layer rebuilds it from X: about ten array
passes). The exact (erf) form is the plain layer's.
"""
import numpy as np

from .. import backend, nn
from ..nn.activation import _SQRT_2_OVER_PI, _TANH_CUBIC


class GELU(nn.GELU):
    """nn.GELU; approximate="tanh" takes the in-place path through exp (dY/dX kept when training)."""

    def forward(self, X):
        self.inplace = self.approximate == "tanh"
        if not self.inplace:
            return super().forward(X)
        xp = backend.get_array_module(X)
        self.dYdX = None
        with np.errstate(over="ignore", under="ignore"):        # exp(-2u) = inf: s = 0 (see above)
            return self._forward(xp, X)

    def _forward(self, xp, X):
        X2 = X * X                                              # x^2
        s = X2 * _TANH_CUBIC                                    # a x^2
        s += 1.0
        s *= X
        s *= -2.0 * _SQRT_2_OVER_PI                             # -2u
        xp.exp(s, out=s)
        s += 1.0
        xp.reciprocal(s, out=s)                                 # s = sigmoid(2u)
        Y = X * s
        if not self.training:
            return Y
        d = X2                                                  # 2 x u'(x) = 2 sqrt(2/pi) x (1 + 3 a x^2)
        d *= 3.0 * _TANH_CUBIC
        d += 1.0
        d *= X
        d *= 2.0 * _SQRT_2_OVER_PI
        d *= s
        s1 = 1.0 - s                                            # 1 - s
        d *= s1
        d += s                                                  # s + x s (1 - s) 2 u'
        self.dYdX = d
        return Y

    def backward(self, dLdY):
        if not self.inplace:
            return super().backward(dLdY)
        if self.dYdX is None:
            raise RuntimeError("GELU.backward: forward ran in eval mode (nothing saved for backward)")
        if dLdY.shape != self.dYdX.shape:
            raise ValueError(f"GELU.backward: expected dLdY of shape {tuple(self.dYdX.shape)}, "
                             f"got {tuple(dLdY.shape)}")
        return dLdY * self.dYdX

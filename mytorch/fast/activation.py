"""nn.GELU's tanh form with the derivative made in forward: the backward is one product.

Shapes: any (the layer is elementwise).

The plain layer keeps tanh(u) and rebuilds the derivative from X in backward (about ten array
passes each way). Here, when training, forward also writes

    dY/dX = 0.5 (1 + t) + 0.5 X (1 - t^2) sqrt(2/pi) (1 + 3 a X^2),   t = tanh(u), a = 0.044715

into a buffer from the same intermediates, every step in place, and backward is dLdY * dY/dX.
The exact (erf) form, and eval mode, are the plain layer's.
"""
from .. import backend, nn
from ..nn.activation import _SQRT_2_OVER_PI, _TANH_CUBIC


class GELU(nn.GELU):
    """nn.GELU; approximate="tanh" in training mode takes the in-place path."""

    def forward(self, X):
        self.inplace = self.approximate == "tanh" and self.training
        if not self.inplace:
            return super().forward(X)
        xp = backend.get_array_module(X)
        X2 = X * X                                              # x^2
        t = X2 * _TANH_CUBIC                                    # a x^2
        t += 1.0
        t *= X
        t *= _SQRT_2_OVER_PI                                    # u = sqrt(2/pi) (x + a x^3)
        xp.tanh(t, out=t)                                       # t = tanh(u)
        Y = t + 1.0
        Y *= X
        Y *= 0.5                                                # 0.5 x (1 + t)
        d = X2                                                  # du/dx / sqrt(2/pi) = 1 + 3 a x^2
        d *= 3.0 * _TANH_CUBIC
        d += 1.0
        d *= X
        d *= 0.5 * _SQRT_2_OVER_PI                              # 0.5 x du/dx
        t2 = t * t
        xp.subtract(1.0, t2, out=t2)                            # 1 - t^2
        d *= t2
        t += 1.0
        t *= 0.5                                                # 0.5 (1 + t)
        d += t
        self.dYdX = d
        return Y

    def backward(self, dLdY):
        if not self.inplace:
            return super().backward(dLdY)
        if dLdY.shape != self.dYdX.shape:
            raise ValueError(f"GELU.backward: expected dLdY of shape {tuple(self.dYdX.shape)}, "
                             f"got {tuple(dLdY.shape)}")
        return dLdY * self.dYdX

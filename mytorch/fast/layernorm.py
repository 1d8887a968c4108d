"""nn.LayerNorm with its row means as matrix-vector products and its passes in place.

Shapes: N rows (every leading axis), D features.

NumPy reduces a short last axis (D = 64) slowly: a row loop. A mean over the last axis is a
product with a vector of 1/D, which BLAS runs at memory speed, and a row of dot products
(sum_j a_j b_j) is one einsum. Same equations as the plain layer (see nn/layernorm.py):

    mu = X w, var = rowdot(xc, xc) / D   (w = 1/D)       xhat = xc rstd       y = gamma xhat + beta
    dx = rstd (g - g w - xhat rowdot(g, xhat) / D),   g = dLdY gamma
"""
from .. import backend, nn


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (the same parameters and results up to rounding), fewer and cheaper passes."""

    def _mean_vector(self, xp, dtype):
        return xp.full(self.dim, 1.0 / self.dim, dtype=dtype)

    def forward(self, X):
        nn.module.check_last_dim(X, self.dim, "LayerNorm")
        xp = backend.get_array_module(X)
        w = self._mean_vector(xp, X.dtype)
        xc = X - (X @ w)[..., None]                                   # (..., D)
        var = xp.einsum("...j,...j->...", xc, xc) * (1.0 / self.dim)  # (...,)
        self.rstd = (1.0 / xp.sqrt(var + self.eps))[..., None].astype(X.dtype, copy=False)   # (..., 1)
        xc *= self.rstd
        self.Xhat = xc
        Y = xc * self.params["gamma"]
        Y += self.params["beta"]
        return Y

    def backward(self, dLdY):
        if dLdY.shape != self.Xhat.shape:
            raise ValueError(f"LayerNorm.backward: expected dLdY of shape {tuple(self.Xhat.shape)}, "
                             f"got {tuple(dLdY.shape)}")
        xp = backend.get_array_module(dLdY)
        dY2 = dLdY.reshape(-1, self.dim)                              # (N, D)
        Xhat2 = self.Xhat.reshape(-1, self.dim)
        ones = xp.ones(dY2.shape[0], dtype=dY2.dtype)
        self.grads["beta"] += ones @ dY2
        self.grads["gamma"] += xp.einsum("nj,nj->j", dY2, Xhat2)
        w = self._mean_vector(xp, dLdY.dtype)
        g = dLdY * self.params["gamma"]                               # (..., D) dL/dxhat
        gx = xp.einsum("...j,...j->...", g, self.Xhat) * (1.0 / self.dim)   # (...,) mean g xhat
        g -= (g @ w)[..., None]
        g -= self.Xhat * gx[..., None].astype(g.dtype, copy=False)
        g *= self.rstd
        return g

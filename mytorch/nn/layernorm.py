"""Layer normalisation over the last axis, as torch.nn.LayerNorm(D).

Shapes: N rows = every leading axis together (B, T for a Transformer), D features.

    mu    = mean_j x_j                                 (N, 1)
    var   = mean_j (x_j - mu)^2                         (N, 1)   biased: divides by D, not D - 1
    rstd  = 1 / sqrt(var + eps)                         (N, 1)
    xhat  = (x - mu) * rstd                             (N, D)   zero mean, unit variance per row
    y     = gamma * xhat + beta                         (N, D)   gamma, beta (D,) learned

Each row is normalised on its own (unlike batch norm, nothing is shared across rows), so
train and eval modes are the same and a batch of 1 is fine.
"""
import numpy as np

from .. import backend
from .module import Module, check_last_dim


class LayerNorm(Module):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over the last axis.

    params: gamma (D,) initialised to 1, beta (D,) to 0
    forward(X):     X (..., D) -> Y (..., D)
    backward(dLdY): dLdY (..., D) -> dLdX (..., D); adds into grads["gamma"], grads["beta"]
    """

    def __init__(self, dim, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.add_param("gamma", backend.to_device(np.ones(dim, dtype=dtype)))
        self.add_param("beta", backend.to_device(np.zeros(dim, dtype=dtype)))

    def forward(self, X):
        check_last_dim(X, self.dim, "LayerNorm")
        xc = X - X.mean(axis=-1, keepdims=True)                       # (..., D)
        var = (xc * xc).mean(axis=-1, keepdims=True)                  # (..., 1), biased
        xp = backend.get_array_module(X)
        self.rstd = 1.0 / xp.sqrt(var + self.eps)                     # (..., 1)
        self.Xhat = xc * self.rstd                                    # (..., D)
        return self.params["gamma"] * self.Xhat + self.params["beta"]

    def backward(self, dLdY):
        """Rows are independent; within a row (g = dL/dxhat = dLdY * gamma):

            dL/dbeta  = sum_rows dLdY                  dL/dgamma = sum_rows dLdY * xhat
            dL/dx     = rstd * (g - mean_j g_j - xhat * mean_j (g_j xhat_j))

        The last line is g pushed back through xhat = (x - mu) rstd: mu moves every entry of
        the row alike (the "- mean g" term), rstd depends on x through var (the "xhat" term).
        """
        if dLdY.shape != self.Xhat.shape:
            raise ValueError(f"LayerNorm.backward: expected dLdY of shape {tuple(self.Xhat.shape)}, "
                             f"got {tuple(dLdY.shape)}")
        dY2 = dLdY.reshape(-1, self.dim)                              # (N, D)
        Xhat2 = self.Xhat.reshape(-1, self.dim)                       # (N, D)
        self.grads["beta"] += dY2.sum(axis=0)
        self.grads["gamma"] += (dY2 * Xhat2).sum(axis=0)
        g = dLdY * self.params["gamma"]                               # (..., D) dL/dxhat
        return self.rstd * (g - g.mean(axis=-1, keepdims=True)
                            - self.Xhat * (g * self.Xhat).mean(axis=-1, keepdims=True))

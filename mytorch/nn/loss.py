"""Cross-entropy over logits: fused, numerically stable log-softmax + NLL.

Shapes: N rows, C classes.

    m_n   = max_c Z[n, c]
    lse_n = m_n + log sum_c exp(Z[n, c] - m_n)        (log-sum-exp, never overflows)
    L     = mean_n (lse_n - Z[n, y_n])

    dL/dZ = (softmax(Z) - onehot(y)) / N              (the one-hot is never built:
                                                       1/N is subtracted at (n, y_n))
"""
import numpy as np

from .. import backend
from ..parallel import parallel_rows


class CrossEntropyLoss:
    """Mean negative log-likelihood of integer targets under softmax(logits).

    forward(Z, y): Z (N, C) float, y (N,) int -> scalar loss (Python float)
    backward(dLdloss=1.0) -> dL/dZ (N, C)

    With ``inplace=True`` the caller's logits buffer is reused for exp(Z - m)
    and then for the gradient: no (N, C) temporary at all, which matters when
    C is a 33,280-word vocabulary. The caller must not need Z afterwards.
    """

    def __init__(self, inplace=False):
        self.inplace = inplace
        self.E = None

    def forward(self, Z, y):
        xp = backend.get_array_module(Z)
        self._check(Z, y)
        N = Z.shape[0]
        rows = xp.arange(N)
        target = Z[rows, y]                             # (N,) read before Z is overwritten
        E = Z if self.inplace else xp.empty_like(Z)
        m = xp.empty((N, 1), dtype=Z.dtype)
        s = xp.empty(N, dtype=np.float64)

        def block(Z, E, m, s):                          # rows are independent: run in row blocks
            Z.max(axis=1, keepdims=True, out=m)         # (n, 1)
            xp.subtract(Z, m, out=E)
            xp.exp(E, out=E)                            # exp(Z - m), all <= 1: no overflow
            s[...] = E.sum(axis=1)
        parallel_rows(block, Z, E, m, s)
        self.E, self.s, self.y, self.rows = E, s, y, rows
        # L = mean(log s + m - Z_y)
        return float(xp.mean(xp.log(s) + m[:, 0] - target))

    def backward(self, dLdloss=1.0):
        """(softmax(Z) - onehot(y)) * dLdloss / N, written into the saved exp buffer."""
        if self.E is None:
            raise RuntimeError("CrossEntropyLoss.backward needs a forward first (and runs once per forward)")
        N = self.E.shape[0]
        scale = ((dLdloss / N) / self.s).astype(self.E.dtype)[:, None]  # (N, 1): softmax = E / s

        def block(E, scale):
            E *= scale
        parallel_rows(block, self.E, scale)
        dZ = self.E
        dZ[self.rows, self.y] -= dLdloss / N
        self.E = None                                   # the buffer now belongs to the caller
        return dZ

    __call__ = forward

    @staticmethod
    def _check(Z, y):
        if Z.ndim != 2:
            raise ValueError(f"CrossEntropyLoss: expected logits of shape (N, C), got {tuple(Z.shape)}")
        if y.ndim != 1 or y.shape[0] != Z.shape[0]:
            raise ValueError(f"CrossEntropyLoss: expected targets of shape ({Z.shape[0]},), "
                             f"got {tuple(y.shape)}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss: targets must be integers, got dtype {y.dtype}")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= Z.shape[1]):
            raise ValueError(f"CrossEntropyLoss: targets must lie in [0, {Z.shape[1]})")

"""Cross-entropy over logits: fused, numerically stable log-softmax + NLL.

CrossEntropyLoss takes logits; LinearCrossEntropyLoss takes a Linear layer's input
and fuses the projection with the loss (the language model's training head).

Shapes: N rows, C classes, I input features.

    m_n   = max_c Z[n, c]
    lse_n = m_n + log sum_c exp(Z[n, c] - m_n)        (log-sum-exp, never overflows)
    L     = mean_n (lse_n - Z[n, y_n])

    dL/dZ = (softmax(Z) - onehot(y)) / N              (the one-hot is never built:
                                                       1/N is subtracted at (n, y_n))
"""
import numpy as np

from .. import backend
from .module import check_last_dim


def exp_shifted(Z, out):
    """out = exp(Z - m), m = the row max of Z (out may be Z itself).  Z (N, C) -> m (N, 1).

    Every exp argument is <= 0, so nothing overflows; log-sum-exp is then m + log(sum(out)).
    """
    xp = backend.get_array_module(Z)
    m = Z.max(axis=1, keepdims=True)                    # (N, 1)
    xp.subtract(Z, m, out=out)
    xp.exp(out, out=out)
    return m


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
        m = exp_shifted(Z, out=E)                       # E = exp(Z - m), all <= 1; m (N, 1)
        s = E.sum(axis=1, dtype=np.float64)             # (N,)
        self.E, self.s, self.y, self.rows = E, s, y, rows
        # L = mean(log s + m - Z_y)
        return float(xp.mean(xp.log(s) + m[:, 0] - target))

    def backward(self, dLdloss=1.0):
        """(softmax(Z) - onehot(y)) * dLdloss / N, written into the saved exp buffer."""
        if self.E is None:
            raise RuntimeError("CrossEntropyLoss.backward needs a forward first (and runs once per forward)")
        N = self.E.shape[0]
        dZ = self.E
        dZ *= ((dLdloss / N) / self.s).astype(dZ.dtype)[:, None]   # (N, 1): softmax = E / s
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


class LinearCrossEntropyLoss:
    """A Linear layer's logits and the cross-entropy on them, fused: L = CE(X W^T + b, y).

    forward(X, y): X (N, I) float, y (N,) int -> scalar loss (Python float)
    backward(dLdloss=1.0) -> dL/dX (N, I); adds dL/dW and dL/db into the Linear's grads

    The same numbers as ``Linear`` then ``CrossEntropyLoss(inplace=True)``, with two
    passes fewer over the (N, C) logits, which for a 33,280-word vocabulary are the
    biggest arrays of a step. The bias add joins max / exp / sum in one cache-blocked
    pass, and the gradient dZ = (E / s - onehot(y)) / N is never written out: with
    E = exp(Z - m), s its row sums, r = dLdloss / (N s) and c = dLdloss / N,

        dX = dZ W   = r * (E W)     - c W[y]         (row n scaled by r_n)
        dW = dZ^T X = E^T (r * X)   - c onehot(y)^T X
        db = dZ^T 1 = E^T r         - c bincount(y)

    so the backward reads the saved E only in its two matrix products.
    """

    def __init__(self, linear):
        if "b" not in linear.params:
            raise ValueError("LinearCrossEntropyLoss needs a Linear with a bias")
        self.linear = linear
        self.E = None

    def forward(self, X, y, out=None):
        """X (N, I), y (N,) -> mean NLL. `out`: an optional (N, C) buffer for the logits / exp."""
        return self.softmax_loss(self.project(X, out), y)

    def project(self, X, out=None):
        """The matrix product of forward: X (N, I) -> Z = X W^T (N, C), the bias not added yet."""
        W = self.linear.params["W"]
        if X.ndim != 2:
            raise ValueError(f"LinearCrossEntropyLoss: expected X of shape (N, {W.shape[1]}), "
                             f"got {tuple(X.shape)}")
        check_last_dim(X, W.shape[1], "LinearCrossEntropyLoss")
        self.X = X
        return backend.get_array_module(X).matmul(X, W.T, out=out)

    def softmax_loss(self, Z, y):
        """The rest of forward: Z (N, C) from project, y (N,) -> mean NLL; Z becomes E."""
        b = self.linear.params["b"]
        CrossEntropyLoss._check(Z, y)
        xp = backend.get_array_module(Z)
        target = Z[xp.arange(Z.shape[0]), y] + b[y]     # (N,) read before Z is overwritten
        m, s = self.exp_rows(Z)
        self.y, self.E, self.s = y, Z, s
        self.row_nll = xp.log(s) + m[:, 0] - target     # (N,) each row's -log p(y): what adaptation reads
        return float(xp.mean(self.row_nll))

    def exp_rows(self, Z):
        """In place Z -> E = exp(Z + b - m), m the row max of Z + b.  Z (N, C) -> m (N, 1), s (N,) = sum E.

        Every exp argument is <= 0: no overflow. (mytorch.fast.loss does this pass on all cores.)
        """
        Z += self.linear.params["b"]
        m = exp_shifted(Z, out=Z)
        return m, Z.sum(axis=1)

    def backward(self, dLdloss=1.0):
        """-> dX (N, I). dX = r * (E W) - c W[y];  dW += E^T (r * X) - c onehot(y)^T X;
        db += E^T r - c bincount(y)  (r = dLdloss / (N s), c = dLdloss / N)."""
        if self.E is None:
            raise RuntimeError("LinearCrossEntropyLoss.backward needs a forward first "
                               "(and runs once per forward)")
        E, X, y = self.E, self.X, self.y
        W, grads = self.linear.params["W"], self.linear.grads
        xp = backend.get_array_module(E)
        N = E.shape[0]
        c = dLdloss / N
        r = (c / self.s)[:, None]                       # (N, 1): dZ = r E - c onehot(y)
        backend.matmul_accumulate(grads["W"], E.T, X * r)
        backend.scatter_add(grads["W"], y, X * -c)
        grads["b"] += E.T @ r[:, 0]
        backend.scatter_add(grads["b"], y, xp.full(N, -c, dtype=E.dtype))
        dX = E @ W                                      # (N, I)
        dX *= r
        dX -= c * W[y]
        self.E = self.X = None                          # the buffer is the caller's again
        return dX

    __call__ = forward


class LabelSmoothedCrossEntropy:
    """Cross-entropy against a smoothed target, over the rows whose target is not `ignore_index`.

    forward(Z, y): Z (N, C) logits, y (N,) int -> scalar loss (Python float): the mean over the n kept
        rows (y != ignore_index) of   -sum_c q_c log p_c,   p = softmax(Z),
        q = (1 - eps) onehot(y) + eps / C         (Szegedy et al. 2016; eps = 0: CrossEntropyLoss)
    backward(dLdloss=1.0) -> dL/dZ (N, C): (p - q) * dLdloss / n on kept rows, 0 on ignored ones.

    Row loss, with lse = log sum_c exp Z_c:  -sum_c q_c (Z_c - lse) = lse - (1 - eps) Z_y - eps mean_c Z_c
    (sum_c q_c = 1). .nll after forward: the kept rows' summed plain NLL (lse - Z_y), float64; .count: n.
    Forward keeps E = exp(Z - m) and its row sums s, never p itself: backward writes
    dZ = E (k / (n s)) - (k / n) q  (k = 1 on kept rows, 0 elsewhere) in two passes over E. With
    inplace=True, E is the caller's logits buffer (as CrossEntropyLoss's): no (N, C) array allocated.
    """

    def __init__(self, smoothing=0.0, ignore_index=None, inplace=False):
        if not 0 <= smoothing < 1:
            raise ValueError(f"LabelSmoothedCrossEntropy: smoothing must lie in [0, 1), got {smoothing}")
        self.eps, self.ignore_index, self.inplace = float(smoothing), ignore_index, inplace
        self.E = None

    def forward(self, Z, y):
        xp = backend.get_array_module(Z)
        CrossEntropyLoss._check(Z, y if self.ignore_index is None else xp.where(y == self.ignore_index, 0, y))
        N = Z.shape[0]
        keep = xp.ones(N, dtype=bool) if self.ignore_index is None else (y != self.ignore_index)   # (N,)
        yk = xp.where(keep, y, 0)
        rows = xp.arange(N)
        target = Z[rows, yk].astype(np.float64)                               # (N,) read before Z is
        mean_z = Z.mean(axis=1, dtype=np.float64)                             # overwritten
        E = Z if self.inplace else xp.empty_like(Z)
        m = exp_shifted(Z, out=E)                                             # E = exp(Z - m)
        s = E.sum(axis=1, dtype=np.float64)                                   # (N,)
        lse = xp.log(s) + m[:, 0]
        self.count = int(keep.sum())
        n = max(self.count, 1)
        row = lse - (1 - self.eps) * target - self.eps * mean_z               # (N,)
        self.nll = float(((lse - target) * keep).sum())
        self.E, self.s, self.y, self.keep, self.rows, self.n = E, s, yk, keep, rows, n
        return float((row * keep).sum() / n)

    def backward(self, dLdloss=1.0):
        """dZ = (E / s - q) * k dLdloss / n  (q = (1 - eps) onehot(y) + eps / C, k: kept), written into E."""
        if self.E is None:
            raise RuntimeError("LabelSmoothedCrossEntropy.backward needs a forward first")
        dZ, C = self.E, self.E.shape[1]
        c = self.keep * (dLdloss / self.n)                                   # (N,) 0 on ignored rows
        dZ *= (c / self.s).astype(dZ.dtype)[:, None]                          # softmax * k / n
        dZ -= (c * (self.eps / C)).astype(dZ.dtype)[:, None]
        dZ[self.rows, self.y] -= (c * (1 - self.eps)).astype(dZ.dtype)
        self.E = None                                                         # the buffer is the caller's
        return dZ

    __call__ = forward

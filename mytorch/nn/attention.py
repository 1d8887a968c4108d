"""Masked (causal) single-head self-attention, as CMU 11-785 HW4P1 defines it.

Shapes: B batch, T time (queries and keys: it is self-attention), D input
features, D_k key/query features, D_v value features.

    K = X W_k           (B, T, D_k)
    Q = X W_q           (B, T, D_k)
    V = X W_v           (B, T, D_v)
    A_w = Q K^T         (B, T, T)    A_w[b, t, s]: how much query t matches key s
    M                   (B|1, T, T)  additive mask: 0 where query t may see key s, -inf elsewhere
    A_sig = softmax((A_w + M) / sqrt(D_k))   over s, the key axis
    X_new = A_sig V     (B, T, D_v)

The causal mask hides the future: -inf strictly above the diagonal (s > t).
The diagonal is never hidden by it, so every row keeps one finite score.

An optional key_mask (B, T), True = this key may be attended (False for padding),
hides keys as well. A query row left with no key at all (e.g. left padding:
query 0 when key 0 is padding) outputs zeros and gets a zero gradient, never NaN:
mytorch.nn.softmax.softmax maps a row of all -inf to zeros.

The mask is built with `where`, not `-inf * triu(ones)`: 0 * -inf is NaN.
"""
import math

from .. import backend
from .module import Module, check_last_dim
from .softmax import Softmax


class Attention(Module):
    """Causal self-attention with weights W_k (D, D_k), W_q (D, D_k), W_v (D, D_v).

    forward(X, key_mask=None): X (B, T, D) -> X_new (B, T, D_v)
    backward(dLdXnew):         dLdXnew (B, T, D_v) -> dLdX (B, T, D)

    After forward it keeps .X .K .Q .V .A_w .A_sig (and .mask, the additive mask);
    after backward .dLdA_sig .dLdA_w .dLdK .dLdQ .dLdV .dLdWk .dLdWq .dLdWv
    (the names the course autograder reads). grads["W_k"/"W_q"/"W_v"] accumulate (+=).
    """

    def __init__(self, weights_keys, weights_queries, weights_values):
        super().__init__()
        if weights_keys.ndim != 2 or weights_queries.shape != weights_keys.shape:
            raise ValueError(f"Attention: W_k and W_q must both be (D, D_k), got "
                             f"{tuple(weights_keys.shape)} and {tuple(weights_queries.shape)}")
        if weights_values.ndim != 2 or weights_values.shape[0] != weights_keys.shape[0]:
            raise ValueError(f"Attention: W_v must be (D, D_v) with D = {weights_keys.shape[0]}, "
                             f"got {tuple(weights_values.shape)}")
        self.add_param("W_k", weights_keys)       # (D, D_k)
        self.add_param("W_q", weights_queries)    # (D, D_k)
        self.add_param("W_v", weights_values)     # (D, D_v)
        self.softmax = Softmax()

    # The course code reads layer.W_k etc.; they are views of params, so an
    # optimizer that updates params in place is seen here too.
    W_k = property(lambda self: self.params["W_k"])
    W_q = property(lambda self: self.params["W_q"])
    W_v = property(lambda self: self.params["W_v"])

    def forward(self, X, key_mask=None):
        """X (B, T, D), key_mask None or bool (B, T) -> X_new (B, T, D_v)."""
        xp = backend.get_array_module(X)
        if X.ndim != 3:
            raise ValueError(f"Attention: expected X of shape (B, T, D), got {tuple(X.shape)}")
        check_last_dim(X, self.W_k.shape[0], "Attention", "X")
        B, T, _ = X.shape
        d_k = self.W_k.shape[1]

        self.X = X
        self.K = X @ self.W_k                              # (B, T, D_k)
        self.Q = X @ self.W_q                              # (B, T, D_k)
        self.V = X @ self.W_v                              # (B, T, D_v)
        self.A_w = self.Q @ self.K.swapaxes(1, 2)          # (B, T, T)

        allowed = xp.tri(T, dtype=bool)                    # (T, T): key s <= query t
        if key_mask is not None:
            if key_mask.shape != (B, T):
                raise ValueError(f"Attention: key_mask must be (B, T) = {(B, T)}, "
                                 f"got {tuple(key_mask.shape)}")
            allowed = allowed[None] & key_mask.astype(bool)[:, None, :]   # (B, T, T)
        self.mask = xp.where(allowed, 0.0, -xp.inf).astype(X.dtype)      # (T, T) or (B, T, T)

        self.A_sig = self.softmax.forward((self.A_w + self.mask) / math.sqrt(d_k))   # (B, T, T)
        return self.A_sig @ self.V                         # (B, T, D_v)

    def backward(self, dLdXnew):
        """Backprop through forward's lines, bottom to top (b-batched matmuls throughout).

        X_new = A_sig V:       dLdA_sig = dLdXnew V^T                     (B, T, T)
                               dLdV     = A_sig^T dLdXnew                 (B, T, D_v)
        A_sig = softmax(S), S = (A_w + M) / sqrt(D_k), M constant:
                               dLdS     = A_sig * (dLdA_sig - rowsum(dLdA_sig * A_sig))
                               dLdA_w   = dLdS / sqrt(D_k)                (B, T, T)
                               (0 at masked entries, where A_sig = 0)
        A_w = Q K^T:           dLdQ     = dLdA_w K                        (B, T, D_k)
                               dLdK     = dLdA_w^T Q                      (B, T, D_k)
        K = X W_k, Q = X W_q, V = X W_v  (W shared by every b and t, so sum over both):
                               dLdWk    = sum_b X_b^T dLdK_b              (D, D_k)
                               dLdWq    = sum_b X_b^T dLdQ_b              (D, D_k)
                               dLdWv    = sum_b X_b^T dLdV_b              (D, D_v)
        X feeds K, Q and V:    dLdX     = dLdK W_k^T + dLdQ W_q^T + dLdV W_v^T   (B, T, D)
        """
        xp = backend.get_array_module(dLdXnew)
        if dLdXnew.shape != self.X.shape[:2] + (self.W_v.shape[1],):
            raise ValueError(f"Attention.backward: expected dLdXnew of shape "
                             f"{self.X.shape[:2] + (self.W_v.shape[1],)}, got {tuple(dLdXnew.shape)}")
        d_k = self.W_k.shape[1]
        X = self.X

        self.dLdA_sig = dLdXnew @ self.V.swapaxes(1, 2)              # (B, T, T)
        self.dLdV = self.A_sig.swapaxes(1, 2) @ dLdXnew              # (B, T, D_v)
        self.dLdA_w = self.softmax.backward(self.dLdA_sig) / math.sqrt(d_k)   # (B, T, T)
        self.dLdQ = self.dLdA_w @ self.K                             # (B, T, D_k)
        self.dLdK = self.dLdA_w.swapaxes(1, 2) @ self.Q              # (B, T, D_k)

        # sum over b and t at once: contract axes (0, 1) of X with those of dLd*
        self.dLdWk = xp.tensordot(X, self.dLdK, axes=([0, 1], [0, 1]))   # (D, D_k)
        self.dLdWq = xp.tensordot(X, self.dLdQ, axes=([0, 1], [0, 1]))   # (D, D_k)
        self.dLdWv = xp.tensordot(X, self.dLdV, axes=([0, 1], [0, 1]))   # (D, D_v)
        self.grads["W_k"] += self.dLdWk
        self.grads["W_q"] += self.dLdWq
        self.grads["W_v"] += self.dLdWv

        dLdX = (self.dLdK @ self.W_k.T                               # (B, T, D)
                + self.dLdQ @ self.W_q.T
                + self.dLdV @ self.W_v.T)
        return dLdX

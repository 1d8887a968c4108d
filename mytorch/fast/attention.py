"""nn.MultiHeadAttention's bidirectional self-attention with fewer passes and one Q/K/V product.

Shapes: B batch, T positions, D = d_model, h heads, d_k = D / h, N = B T rows.

The plain layer (the specification) projects Q, K and V with three (N, D) x (D, D) products, scales
the (B, h, T, T) scores, and runs the stable softmax with its fully-masked-row guard. Here, for
bidirectional self-attention (a ViT's; a translation encoder's, its padding hidden):

    QKV = X [W_q W_k W_v] + [b_q b_k b_v]       one (N, D) x (D, 3D) product
    Q, K, V = QKV split into heads, copied once into one (3, B, h, T, d_k) array
    A = softmax((Q / sqrt(d_k)) K^T + P)        the scale on Q (T / d_k times fewer entries); P (B, 1, 1, T)
                                                MASKED at padded keys, 0 elsewhere (exp gives them
                                                exactly 0: the plain layer's A); the
                                                softmax in place: (max, subtract,) exp, sum, divide;
                                                the row max only when a score may exceed SAFE_EXP
    backward: dA = A * (dA - rowsum(dA * A)) in place; dQ, dK, dV gathered into one (N, 3D) array,
    so dX = dQKV [W_q W_k W_v]^T and d[W_q W_k W_v] = X^T dQKV are one product each.

Every other call (cross-attention, causal, a key padding mask that hides a whole row) is the plain
layer's. The parameters are the plain layer's (W_q, W_k, W_v: (D, D) each), so checkpoints and the
optimizer do not change.
"""
import math

from .. import backend, nn

# Softmax is unchanged by a shift of its row. The plain layer subtracts each row's max so that no
# exp() overflows; when every score's size is below SAFE_EXP that cannot happen (float32 exp
# overflows above 88) and the row's sum stays above exp(-SAFE_EXP) > 0, so the shift (a slow
# short-row max) is skipped: the same softmax, exactly as stable.
SAFE_EXP = 60.0
# A padded key's score: finite (no inf - inf, no NaN), and exp() of it, shifted or not, is 0 in float32.
MASKED = -1e9


class MultiHeadAttention(nn.MultiHeadAttention):
    """The plain layer, with a fused path for bidirectional self-attention (unmasked or key-padded)."""

    def _fused(self, memory, key_padding_mask):
        """Unmasked or key-padded bidirectional self-attention where every row keeps a key."""
        if memory is not None or self.causal:
            return False
        return key_padding_mask is None or not bool(key_padding_mask.all(axis=-1).any())

    def forward(self, X, memory=None, key_padding_mask=None):
        self.fused = self._fused(memory, key_padding_mask) and X.ndim == 3 and X.shape[-1] == self.d_model
        if not self.fused:
            return super().forward(X, memory, key_padding_mask)
        xp = backend.get_array_module(X)
        B, T, D = X.shape
        h, dk = self.num_heads, self.d_k
        p = self.params
        self.shape, self.cross = (B, T, D), False
        self.X2 = X.reshape(-1, D)                                              # (N, D)
        W = xp.concatenate([p["W_q"], p["W_k"], p["W_v"]], axis=1)              # (D, 3D)
        QKV = self.X2 @ W                                                       # (N, 3D)
        if self.bias:
            QKV += xp.concatenate([p["b_q"], p["b_k"], p["b_v"]])
        QKV = xp.ascontiguousarray(QKV.reshape(B, T, 3, h, dk).transpose(2, 0, 3, 1, 4))   # (3, B, h, T, d_k)
        QKV[0] *= 1.0 / math.sqrt(dk)                                           # Q / sqrt(d_k)
        self.Q, self.K, self.V = QKV[0], QKV[1], QKV[2]
        A = self.Q @ self.K.swapaxes(-1, -2)                                    # (B, h, T, T)
        if key_padding_mask is not None:                                        # the plain layer's check
            keep = self._allowed(xp, B, T, T, False, key_padding_mask)          # (B, 1, 1, T)
            A += xp.where(keep, 0.0, MASKED).astype(A.dtype)
        if self._score_bound(xp) > SAFE_EXP:                                    # else no shift is needed
            A -= A.max(axis=-1, keepdims=True)
        xp.exp(A, out=A)
        A /= (A @ xp.ones(T, dtype=A.dtype))[..., None]                        # row sums (BLAS), >= 1
        self.A_sig = A
        self.use_dropout = self.training and self.attn_dropout.p > 0
        self.A_d = self.attn_dropout.forward(A) if self.use_dropout else A
        self.O2 = self._merge(self.A_d @ self.V)                                # (N, D)
        return self._project(self.O2, "o").reshape(B, T, D)

    def _score_bound(self, xp):
        """max over every score of |q_t . k_s| <= max_t |q_t| max_s |k_s| (Cauchy-Schwarz), Q scaled."""
        q2 = xp.einsum("...d,...d->...", self.Q, self.Q).max()
        k2 = xp.einsum("...d,...d->...", self.K, self.K).max()
        return float(math.sqrt(float(q2) * float(k2)))

    def backward(self, dLdY):
        if not self.fused:
            return super().backward(dLdY)
        xp = backend.get_array_module(dLdY)
        B, T, D = self.shape
        if dLdY.shape != (B, T, D):
            raise ValueError(f"MultiHeadAttention.backward: expected dLdY of shape {(B, T, D)}, "
                             f"got {tuple(dLdY.shape)}")
        h, dk, p = self.num_heads, self.d_k, self.params
        dO = self._split(self._linear_backward(dLdY.reshape(-1, D), self.O2, "o"), B)   # (B, h, T, d_k)
        dQKV = xp.empty((B, T, 3, h, dk), dtype=dLdY.dtype)
        dQKV_h = dQKV.transpose(2, 0, 3, 1, 4)                                  # (3, B, h, T, d_k) view
        xp.matmul(self.A_d.swapaxes(-1, -2), dO, out=dQKV_h[2])                 # dV = A_d^T dO
        dA = dO @ self.V.swapaxes(-1, -2)                                       # (B, h, T, T)
        if self.use_dropout:
            dA = self.attn_dropout.backward(dA)
        A = self.A_sig
        dA -= xp.einsum("...s,...s->...", dA, A)[..., None]                    # softmax backward
        dA *= A
        xp.matmul(dA, self.K, out=dQKV_h[0])                                    # dQ' (of Q / sqrt(d_k))
        dQKV_h[0] *= 1.0 / math.sqrt(dk)                                        # dQ
        xp.matmul(dA.swapaxes(-1, -2), self.Q, out=dQKV_h[1])                   # dK (Q already scaled)
        dQKV2 = dQKV.reshape(-1, 3 * D)                                         # (N, 3D)
        dW = self.X2.T @ dQKV2                                                  # (D, 3D)
        for j, w in enumerate("qkv"):
            self.grads["W_" + w] += dW[:, j * D:(j + 1) * D]
        if self.bias:
            db = dQKV2.sum(axis=0)
            for j, w in enumerate("qkv"):
                self.grads["b_" + w] += db[j * D:(j + 1) * D]
        W = xp.concatenate([p["W_q"], p["W_k"], p["W_v"]], axis=1)              # (D, 3D)
        return (dQKV2 @ W.T).reshape(B, T, D)

"""Multi-head attention (self or cross), with explicit backward and an inference-time KV cache.

Shapes: B batch, T query positions, S key/value positions (S = T in self-attention),
D = d_model, h = num_heads, d_k = D / h per head.

    Q = X W_q + b_q             (B, T, D)   queries from X
    K = M W_k + b_k             (B, S, D)   keys and values from M = X (self-attention)
    V = M W_v + b_v             (B, S, D)     or M = memory (cross-attention)
    split heads: (B, L, D) -> (B, L, h, d_k) -> (B, h, L, d_k): head j owns features j*d_k .. (j+1)*d_k-1
    A_w   = Q K^T / sqrt(d_k)               (B, h, T, S)   every head in one batched product
    A_w   = -inf where query t may not see key s
    A_sig = softmax(A_w) over s             (B, h, T, S)
    A_d   = dropout(A_sig)                  (B, h, T, S)   identity in eval mode or when p = 0
    O     = A_d V                           (B, h, T, d_k) -> merge heads -> (B, T, D)
    Y     = O W_o + b_o                     (B, T, D)

All weights are (D, D) and applied as X @ W (the course's Attention convention). With one head,
no bias and W_o = I this is exactly mytorch.nn.Attention (tests/test_multihead_attention.py).

Masks (True in key_padding_mask = ignore that key, torch.nn.MultiheadAttention's convention;
note Attention's key_mask is the opposite, True = attend):
- causal=True, self-attention only: query t sees keys s <= t. Cross-attention is never causal.
- key_padding_mask (B, S) bool: hides keys of each sequence from every query and head.
A query row left with no key at all (e.g. left padding) gets all -inf; mytorch.nn.softmax maps
such a row to zeros (see softmax.py), so that query outputs b_o (O = 0) and passes no gradient:
never NaN.

KV cache (inference only, no backward, no dropout): forward_step(x, cache) takes the next
positions' queries x (B, T_new, D) (T_new = 1 while generating; more for a prompt), appends
their K, V to cache["K"], cache["V"] (B, h, S, d_k), and attends over every cached position,
causally. The caller owns the cache, one dict per layer, starting empty ({}). The result
equals the full causal forward at those positions.
"""
import math

import numpy as np

from .. import backend
from .dropout import Dropout
from .module import Module, check_last_dim
from .softmax import Softmax, softmax


class MultiHeadAttention(Module):
    """Multi-head scaled dot-product attention, causal by default.

    params: W_q, W_k, W_v, W_o (D, D) ~ U(-1/sqrt(D), 1/sqrt(D)); b_q, b_k, b_v, b_o (D,) = 0 (if bias)
    forward(X, memory=None, key_padding_mask=None): X (B, T, D), memory (B, S, D),
        key_padding_mask (B, S) bool -> Y (B, T, D)
    backward(dLdY): (B, T, D) -> dLdX, or (dLdX, dLdMemory) when forward had a memory
    forward_step(x, cache, key_padding_mask=None): x (B, T_new, D) -> (B, T_new, D), inference only
    After forward: .A_sig (B, h, T, S), the attention weights before dropout.
    """

    def __init__(self, d_model, num_heads, causal=True, bias=True, dropout=0.0, dtype=np.float32, rng=None):
        super().__init__()
        if num_heads < 1 or d_model % num_heads != 0:
            raise ValueError(f"MultiHeadAttention: d_model ({d_model}) must be a multiple of "
                             f"num_heads ({num_heads})")
        rng = rng if rng is not None else np.random.default_rng()
        self.d_model, self.num_heads, self.d_k = d_model, num_heads, d_model // num_heads
        self.causal, self.bias = causal, bias
        bound = 1.0 / math.sqrt(d_model)
        for name in ("W_q", "W_k", "W_v", "W_o"):
            W = rng.uniform(-bound, bound, (d_model, d_model)).astype(dtype)
            self.add_param(name, backend.to_device(W))
        if bias:
            for name in ("b_q", "b_k", "b_v", "b_o"):
                self.add_param(name, backend.to_device(np.zeros(d_model, dtype=dtype)))
        self.softmax = Softmax()
        self.attn_dropout = Dropout(dropout, rng=rng)   # a child: train()/eval() reach it

    # -- pieces shared by forward and forward_step ---------------------------
    def _project(self, Z2, w):
        """Z2 (N, D) -> Z2 @ W_w + b_w, (N, D): one 2-D product over every row."""
        out = Z2 @ self.params["W_" + w]
        if self.bias:
            out += self.params["b_" + w]
        return out

    def _split(self, Z2, B):
        """(B*L, D) -> (B, h, L, d_k)."""
        return Z2.reshape(B, -1, self.num_heads, self.d_k).transpose(0, 2, 1, 3)

    def _merge(self, Zh):
        """(B, h, L, d_k) -> (B*L, D): the inverse of _split."""
        return Zh.transpose(0, 2, 1, 3).reshape(-1, self.d_model)

    def _allowed(self, xp, B, T, S, causal, key_padding_mask):
        """Bool mask, broadcastable to (B, h, T, S): True where query t may see key s.

        Causal: query t sits at absolute position S - T + t (S - T keys came before it, e.g. from a
        cache), and sees keys s <= S - T + t. None when nothing is hidden.
        """
        allowed = None
        if causal:
            allowed = xp.arange(S)[None, :] <= xp.arange(S - T, S)[:, None]        # (T, S)
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (B, S):
                raise ValueError(f"MultiHeadAttention: key_padding_mask must be (B, S) = {(B, S)}, "
                                 f"got {tuple(key_padding_mask.shape)}")
            keep = ~xp.asarray(key_padding_mask, dtype=bool)[:, None, None, :]     # (B, 1, 1, S)
            allowed = keep if allowed is None else keep & allowed
        return allowed

    def _check(self, X, what="X"):
        if X.ndim != 3:
            raise ValueError(f"MultiHeadAttention: expected {what} of shape (B, T, D), got {tuple(X.shape)}")
        check_last_dim(X, self.d_model, "MultiHeadAttention", what)

    # -- training path ---------------------------------------------------------
    def forward(self, X, memory=None, key_padding_mask=None):
        """X (B, T, D), memory None (self-attention) or (B, S, D), key_padding_mask None or (B, S) bool
        -> Y (B, T, D)."""
        xp = backend.get_array_module(X)
        self._check(X)
        B, T, D = X.shape
        self.cross = memory is not None
        if self.cross:
            self._check(memory, "memory")
            if memory.shape[0] != B:
                raise ValueError(f"MultiHeadAttention: memory has batch {memory.shape[0]}, X has {B}")
        M = memory if self.cross else X
        S = M.shape[1]

        self.shape = (B, T, D)
        self.X2 = X.reshape(-1, D)                                   # (B*T, D)
        self.M2 = M.reshape(-1, D)                                   # (B*S, D)
        self.Q = self._split(self._project(self.X2, "q"), B)        # (B, h, T, d_k)
        self.K = self._split(self._project(self.M2, "k"), B)        # (B, h, S, d_k)
        self.V = self._split(self._project(self.M2, "v"), B)        # (B, h, S, d_k)
        A_w = (self.Q @ self.K.swapaxes(-1, -2)) * (1.0 / math.sqrt(self.d_k))    # (B, h, T, S)
        allowed = self._allowed(xp, B, T, S, self.causal and not self.cross, key_padding_mask)
        if allowed is not None:
            A_w = xp.where(allowed, A_w, -xp.inf).astype(A_w.dtype, copy=False)
        self.A_sig = self.softmax.forward(A_w)                      # (B, h, T, S); all -inf row -> 0
        self.use_dropout = self.training and self.attn_dropout.p > 0
        self.A_d = self.attn_dropout.forward(self.A_sig) if self.use_dropout else self.A_sig
        self.O2 = self._merge(self.A_d @ self.V)                     # (B*T, D)
        return self._project(self.O2, "o").reshape(B, T, D)

    def backward(self, dLdY):
        """Backprop through forward's lines, bottom to top (rows r = every (b, t), or (b, s)).

        Y = O W_o + b_o:      dW_o += O^T dY          db_o += sum_r dY        dO = dY W_o^T
        O = A_d V (per head): dA_d = dO V^T           dV = A_d^T dO
        A_d = A_sig * mask:   dA_sig = dA_d * mask                            (dropout's backward)
        A_sig = softmax(A_w): dA_w = A_sig * (dA_sig - rowsum(dA_sig * A_sig))  (0 where masked)
        A_w = Q K^T / sqrt(d_k):
                              dQ = dA_w K / sqrt(d_k)                    dK = dA_w^T Q / sqrt(d_k)
        merge heads back to (rows, D), then for w = q (input X) and w = k, v (input M):
                              dW_w += input^T dW_out  db_w += sum_r d(w)   d(input) += d(w) W_w^T
        Self-attention: M is X, so dX = dQ W_q^T + dK W_k^T + dV W_v^T.
        """
        B, T, D = self.shape
        if dLdY.shape != (B, T, D):
            raise ValueError(f"MultiHeadAttention.backward: expected dLdY of shape {(B, T, D)}, "
                             f"got {tuple(dLdY.shape)}")
        dY2 = dLdY.reshape(-1, D)                                    # (B*T, D)
        dO = self._split(self._linear_backward(dY2, self.O2, "o"), B)   # (B, h, T, d_k)
        dA_d = dO @ self.V.swapaxes(-1, -2)                          # (B, h, T, S)
        dV = self.A_d.swapaxes(-1, -2) @ dO                          # (B, h, S, d_k)
        dA_sig = self.attn_dropout.backward(dA_d) if self.use_dropout else dA_d
        dA_w = self.softmax.backward(dA_sig) * (1.0 / math.sqrt(self.d_k))        # (B, h, T, S)
        dQ = dA_w @ self.K                                           # (B, h, T, d_k)
        dK = dA_w.swapaxes(-1, -2) @ self.Q                          # (B, h, S, d_k)

        dX2 = self._linear_backward(self._merge(dQ), self.X2, "q")   # (B*T, D)
        dM2 = (self._linear_backward(self._merge(dK), self.M2, "k")
               + self._linear_backward(self._merge(dV), self.M2, "v"))   # (B*S, D)
        if self.cross:
            return dX2.reshape(B, T, D), dM2.reshape(B, -1, D)
        return (dX2 + dM2).reshape(B, T, D)

    def _linear_backward(self, dZ2, Z_in2, w):
        """Backward of out = Z_in W_w + b_w over rows: adds dW_w, db_w; returns dZ_in = dZ W_w^T."""
        self.grads["W_" + w] += Z_in2.T @ dZ2                      # (D, D)
        if self.bias:
            self.grads["b_" + w] += dZ2.sum(axis=0)                 # (D,)
        return dZ2 @ self.params["W_" + w].T                        # (rows, D)

    # -- inference path: incremental decoding with a KV cache --------------------
    def forward_step(self, x, cache, key_padding_mask=None):
        """x (B, T_new, D), the next positions; cache a dict ({} at the start) -> (B, T_new, D).

        Appends these positions' K, V (B, h, T_new, d_k) to cache["K"], cache["V"] and attends over
        all S cached positions, causally (a new query sees the cache and the new keys up to
        itself). key_padding_mask, if given, covers all S positions (B, S). No dropout; stores
        nothing for backward (the layer's training state is left as it was).
        """
        xp = backend.get_array_module(x)
        self._check(x, "x")
        B, T_new, D = x.shape
        x2 = x.reshape(-1, D)
        K = self._split(self._project(x2, "k"), B)                   # (B, h, T_new, d_k)
        V = self._split(self._project(x2, "v"), B)
        if "K" in cache:
            K = xp.concatenate([cache["K"], K], axis=2)              # (B, h, S, d_k)
            V = xp.concatenate([cache["V"], V], axis=2)
        cache["K"], cache["V"] = K, V
        S = K.shape[2]
        Q = self._split(self._project(x2, "q"), B)                   # (B, h, T_new, d_k)
        A_w = (Q @ K.swapaxes(-1, -2)) * (1.0 / math.sqrt(self.d_k))  # (B, h, T_new, S)
        allowed = self._allowed(xp, B, T_new, S, self.causal, key_padding_mask)
        if allowed is not None:
            A_w = xp.where(allowed, A_w, -xp.inf).astype(A_w.dtype, copy=False)
        O2 = self._merge(softmax(A_w) @ V)                           # (B*T_new, D)
        return self._project(O2, "o").reshape(B, T_new, D)

    def forward_memory_step(self, x, cache, memory=None, key_padding_mask=None):
        """Cross-attention while decoding: x (B, T_new, D) queries, memory (B, S, D) -> (B, T_new, D).

        K = memory W_k + b_k and V = memory W_v + b_v (B, h, S, d_k) are computed on the first call
        (cache empty) and kept in cache["K"], cache["V"]; later calls may pass memory=None. Not causal;
        key_padding_mask (B, S) hides the source's padding. Inference only, as forward_step.
        """
        xp = backend.get_array_module(x)
        self._check(x, "x")
        B, T_new, D = x.shape
        if "K" not in cache:
            if memory is None:
                raise ValueError("MultiHeadAttention.forward_memory_step: the first call needs the memory")
            self._check(memory, "memory")
            M2 = memory.reshape(-1, D)
            cache["K"] = self._split(self._project(M2, "k"), memory.shape[0])    # (B, h, S, d_k)
            cache["V"] = self._split(self._project(M2, "v"), memory.shape[0])
        K, V = cache["K"], cache["V"]
        Q = self._split(self._project(x.reshape(-1, D), "q"), B)                  # (B, h, T_new, d_k)
        A_w = (Q @ K.swapaxes(-1, -2)) * (1.0 / math.sqrt(self.d_k))              # (B, h, T_new, S)
        allowed = self._allowed(xp, B, T_new, K.shape[2], False, key_padding_mask)
        if allowed is not None:
            A_w = xp.where(allowed, A_w, -xp.inf).astype(A_w.dtype, copy=False)
        O2 = self._merge(softmax(A_w) @ V)                                         # (B*T_new, D)
        return self._project(O2, "o").reshape(B, T_new, D)

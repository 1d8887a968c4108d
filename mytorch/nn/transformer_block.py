"""One pre-LayerNorm Transformer block: a decoder-only LM's (causal) or an encoder's (bidirectional).

Shapes: B batch, S positions, D = d_model, F = d_ff (the MLP's width), h heads.

    X1 = X  + Dropout(MHA(LN1(X)))                       causal or not; key padding optional
    Y  = X1 + Dropout(W2 GELU(W1 LN2(X1) + b1) + b2)      D -> F -> D

GPT-2 runs it causal (models.TransformerLM); a Vision Transformer (models.ViT) and a translation
encoder run it bidirectional, every position seeing every other (key_padding_mask hides padded
keys). Pre-LayerNorm: the residual stream X is never normalised in place, only what each branch
reads, so gradients reach the first block undiminished.
"""
import numpy as np

from .activation import GELU
from .dropout import Dropout
from .layernorm import LayerNorm
from .linear import Linear
from .module import Module, peek
from .multihead_attention import MultiHeadAttention


class TransformerBlock(Module):
    """One pre-LayerNorm Transformer block.

    forward(X, key_padding_mask=None):  X (B, S, D), key_padding_mask None or (B, S) bool
        (True = a padded key, hidden from every query) -> (B, S, D); saves what backward needs
    backward(dLdY): (B, S, D) -> dLdX (B, S, D); adds into every sub-layer's grads
    forward_step(x, cache): x (B, T_new, D), the next positions -> (B, T_new, D); inference only
        (no dropout, nothing saved); cache: this block's attention KV cache, a dict
    d_ff: the MLP's width (default 4 D, GPT-2's); gelu: "tanh" or "none" (exact, erf).
    The sub-layers' classes are the attributes below, so a twin of the block (mytorch.fast) can build
    it from twins of them with the same parameters.
    """
    LayerNorm, GELU, Attention = LayerNorm, GELU, MultiHeadAttention

    def __init__(self, d_model, nhead, dropout=0.0, gelu="tanh", causal=True, d_ff=None,
                 dtype=np.float32, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.ln1 = self.LayerNorm(d_model, dtype=dtype)
        self.attn = self.Attention(d_model, nhead, causal=causal, dropout=dropout, dtype=dtype, rng=rng)
        self.drop1 = Dropout(dropout, rng=rng)
        self.ln2 = self.LayerNorm(d_model, dtype=dtype)
        self.fc = Linear(d_model, d_ff, dtype=dtype, rng=rng)              # W1 (F, D), b1 (F,)
        self.act = self.GELU(gelu)
        self.proj = Linear(d_ff, d_model, dtype=dtype, rng=rng)            # W2 (D, F), b2 (D,)
        self.drop2 = Dropout(dropout, rng=rng)

    @property
    def drops(self):
        """The block's dropout layers: the attention weights', then the two residual branches'."""
        return [self.attn.attn_dropout, self.drop1, self.drop2]

    def forward(self, X, key_padding_mask=None):
        self.dropping = self.training and self.drop1.p > 0
        A = self.attn.forward(self.ln1.forward(X), key_padding_mask=key_padding_mask)   # (B, S, D)
        X = X + (self.drop1.forward(A) if self.dropping else A)           # the residual stream
        Hf = self.act.forward(self.fc.forward(self.ln2.forward(X)))        # (B, S, F)
        Z = self.proj.forward(Hf)                                          # (B, S, D)
        return X + (self.drop2.forward(Z) if self.dropping else Z)

    def backward(self, dLdY):
        """A residual line Y = X + f(X) gives dL/dX = dL/dY + f's backward of dL/dY (f' below):

            Y  = X1 + drop2(W2 GELU(W1 LN2(X1)))     dX1 = dY + LN2'(W1'(GELU'(W2'(drop2'(dY)))))
            X1 = X + drop1(MHA(LN1(X)))              dX  = dX1 + LN1'(MHA'(drop1'(dX1)))
        """
        dZ = self.drop2.backward(dLdY) if self.dropping else dLdY
        dX1 = dLdY + self.ln2.backward(self.fc.backward(self.act.backward(self.proj.backward(dZ))))
        dA = self.drop1.backward(dX1) if self.dropping else dX1
        return dX1 + self.ln1.backward(self.attn.backward(dA))

    def forward_step(self, x, cache):
        x = x + self.attn.forward_step(peek(self.ln1, x), cache)           # (B, T_new, D)
        return x + peek(self.proj, peek(self.act, peek(self.fc, peek(self.ln2, x))))

"""One pre-LayerNorm Transformer decoder block: causal self-attention, cross-attention, MLP.

Shapes: B batch, T target positions, S source positions, D = d_model, F = d_ff, h heads.

    X1 = X  + Dropout(SelfMHA(LN1(X)))                         causal: position t reads targets <= t
    X2 = X1 + Dropout(CrossMHA(LN2(X1), memory, pad))          every target reads every source token
    Y  = X2 + Dropout(W2 GELU(W1 LN3(X2) + b1) + b2)           D -> F -> D

memory (B, S, D) is the encoder's output (after its final LayerNorm); memory_padding_mask (B, S)
bool, True at the source's padding, hides those keys from every query. The target's padding needs
no mask: it sits after the sentence's end, and a causal query never reads a later position.
The encoder of the same Transformer is nn.TransformerBlock with causal=False.
"""
import numpy as np

from .activation import GELU
from .dropout import Dropout
from .layernorm import LayerNorm
from .linear import Linear
from .module import Module, peek
from .multihead_attention import MultiHeadAttention


class DecoderBlock(Module):
    """One pre-LayerNorm decoder block (Vaswani et al. 2017's, with the LayerNorms first).

    forward(X, memory, memory_padding_mask=None): X (B, T, D), memory (B, S, D) -> (B, T, D)
    backward(dLdY): (B, T, D) -> (dLdX (B, T, D), dLdMemory (B, S, D)); adds into every grads
    forward_step(x, caches, memory=None, memory_padding_mask=None): x (B, T_new, D), the next target
        positions -> (B, T_new, D), inference only; caches = {"self": {}, "cross": {}} at the start:
        the self-attention's KV cache grows by T_new a call, the cross-attention's K, V are the
        memory's, projected on the first call only
    The sub-layers' classes are the attributes below, so a twin (mytorch.fast) can swap them.
    """
    LayerNorm, GELU, Attention = LayerNorm, GELU, MultiHeadAttention

    def __init__(self, d_model, nhead, dropout=0.0, gelu="tanh", d_ff=None, dtype=np.float32, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.ln1 = self.LayerNorm(d_model, dtype=dtype)
        self.self_attn = self.Attention(d_model, nhead, causal=True, dropout=dropout, dtype=dtype, rng=rng)
        self.drop1 = Dropout(dropout, rng=rng)
        self.ln2 = self.LayerNorm(d_model, dtype=dtype)
        self.cross_attn = self.Attention(d_model, nhead, causal=False, dropout=dropout, dtype=dtype, rng=rng)
        self.drop2 = Dropout(dropout, rng=rng)
        self.ln3 = self.LayerNorm(d_model, dtype=dtype)
        self.fc = Linear(d_model, d_ff, dtype=dtype, rng=rng)              # W1 (F, D), b1 (F,)
        self.act = self.GELU(gelu)
        self.proj = Linear(d_ff, d_model, dtype=dtype, rng=rng)            # W2 (D, F), b2 (D,)
        self.drop3 = Dropout(dropout, rng=rng)

    @property
    def drops(self):
        return [self.self_attn.attn_dropout, self.drop1, self.cross_attn.attn_dropout, self.drop2, self.drop3]

    def forward(self, X, memory, memory_padding_mask=None):
        self.dropping = self.training and self.drop1.p > 0
        A = self.self_attn.forward(self.ln1.forward(X))                                 # (B, T, D)
        X = X + (self.drop1.forward(A) if self.dropping else A)
        C = self.cross_attn.forward(self.ln2.forward(X), memory, key_padding_mask=memory_padding_mask)
        X = X + (self.drop2.forward(C) if self.dropping else C)                         # (B, T, D)
        Z = self.proj.forward(self.act.forward(self.fc.forward(self.ln3.forward(X))))   # (B, T, D)
        return X + (self.drop3.forward(Z) if self.dropping else Z)

    def backward(self, dLdY):
        """Each residual line Y = X + f(X) gives dX = dY + f'(dY), bottom line first:

            Y  = X2 + drop3(MLP(LN3(X2)))         dX2 = dY + LN3'(MLP'(drop3'(dY)))
            X2 = X1 + drop2(Cross(LN2(X1), M))    dX1 = dX2 + LN2'(dQuery),  dM = dMemory
                                                  where (dQuery, dMemory) = Cross'(drop2'(dX2))
            X1 = X  + drop1(Self(LN1(X)))         dX  = dX1 + LN1'(Self'(drop1'(dX1)))
        """
        dZ = self.drop3.backward(dLdY) if self.dropping else dLdY
        dX2 = dLdY + self.ln3.backward(self.fc.backward(self.act.backward(self.proj.backward(dZ))))
        dC = self.drop2.backward(dX2) if self.dropping else dX2
        dQuery, dMemory = self.cross_attn.backward(dC)
        dX1 = dX2 + self.ln2.backward(dQuery)
        dA = self.drop1.backward(dX1) if self.dropping else dX1
        return dX1 + self.ln1.backward(self.self_attn.backward(dA)), dMemory

    def forward_step(self, x, caches, memory=None, memory_padding_mask=None):
        x = x + self.self_attn.forward_step(peek(self.ln1, x), caches["self"])              # (B, T_new, D)
        x = x + self.cross_attn.forward_memory_step(peek(self.ln2, x), caches["cross"], memory,
                                                    memory_padding_mask)
        return x + peek(self.proj, peek(self.act, peek(self.fc, peek(self.ln3, x))))

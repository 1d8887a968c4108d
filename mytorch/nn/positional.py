"""Position information for a Transformer: learned (GPT-2) or fixed sinusoidal (Vaswani et al.).

Shapes: T positions asked for, L max_len (positions 0 .. L-1), D dim.

Attention is blind to order, so the model adds a vector per position to the token embeddings:

    X = TokenEmbedding(ids) + P[positions]          (B, T, D) = (B, T, D) + (T, D), broadcast over B

- LearnedPositionalEmbedding: P is a learned table (L, D), an Embedding whose ids are positions.
- SinusoidalPositionalEncoding: P is fixed (no parameters):

      P[pos, 2i]   = sin(pos / 10000^(2i / D))
      P[pos, 2i+1] = cos(pos / 10000^(2i / D))        i = 0 .. D/2 - 1

Both take forward(T, offset=0) for positions offset .. offset+T-1 (offset: where the chunk
starts, e.g. the length of a KV cache while decoding), or forward(positions) for an integer
array of positions of any shape S (-> (*S, D)). A position outside [0, max_len) raises
ValueError. Both have backward(dLdP): the learned one adds into grads["W"], the fixed one
does nothing; both return None (positions are integers: no gradient). The model sums dL/dX
over the batch axis first: dLdP = dLdX.sum(axis=0), (T, D).
"""
import numbers

import numpy as np

from .. import backend
from .linear import Embedding
from .module import Module


def _positions(xp, who, max_len, T_or_positions, offset):
    """The integer positions asked for, checked against [0, max_len)."""
    if isinstance(T_or_positions, numbers.Integral):
        T = int(T_or_positions)
        if T < 1 or offset < 0 or offset + T > max_len:
            raise ValueError(f"{who}: positions {offset} .. {offset + T - 1} asked for, but max_len is "
                             f"{max_len} (positions 0 .. {max_len - 1}); T must be >= 1")
        return xp.arange(offset, offset + T)
    positions = xp.asarray(T_or_positions) + offset
    if positions.dtype.kind not in "iu":
        raise TypeError(f"{who}: positions must be an int T or an integer array, got dtype {positions.dtype}")
    if positions.size and (int(positions.min()) < 0 or int(positions.max()) >= max_len):
        raise ValueError(f"{who}: positions in [{int(positions.min())}, {int(positions.max())}] asked for, "
                         f"but max_len is {max_len} (positions 0 .. {max_len - 1})")
    return positions


class LearnedPositionalEmbedding(Embedding):
    """A learned vector per position, as GPT-2's wpe: an Embedding (max_len, dim) looked up by position.

    params: W (max_len, dim), drawn N(0, init_std^2) (GPT-2: 0.02); init_std=None keeps
            Embedding's N(0, 1)
    forward(T, offset=0) -> (T, D);  forward(positions (*S)) -> (*S, D)
    backward(dLdP): (T, D) or (*S, D) -> None; adds into grads["W"] (a repeated position adds up)
    """

    def __init__(self, max_len, dim, dtype=np.float32, rng=None, init_std=0.02):
        rng = rng if rng is not None else np.random.default_rng()
        super().__init__(max_len, dim, dtype=dtype, rng=rng)
        if init_std is not None:
            W = rng.normal(0.0, init_std, size=(max_len, dim)).astype(dtype)
            self.params["W"][...] = backend.to_device(W)
        self.max_len, self.dim = max_len, dim

    def forward(self, T_or_positions, offset=0):
        xp = backend.get_array_module(self.params["W"])
        positions = _positions(xp, "LearnedPositionalEmbedding", self.max_len, T_or_positions, offset)
        return super().forward(positions)               # (T, D): W[positions]

    # backward is Embedding's: dL/dW[p] += dLdP[each place position p was used]


class SinusoidalPositionalEncoding(Module):
    """The fixed sin/cos table of "Attention Is All You Need"; no parameters.

    forward(T, offset=0) -> (T, D);  forward(positions (*S)) -> (*S, D)
    backward(dLdP) -> None (nothing to learn)
    """

    def __init__(self, max_len, dim, dtype=np.float32):
        super().__init__()
        self.max_len, self.dim = max_len, dim
        pos = np.arange(max_len, dtype=np.float64)[:, None]             # (L, 1)
        two_i = np.arange(0, dim, 2, dtype=np.float64)                  # (ceil(D/2),) the 2i
        angle = pos / 10000.0 ** (two_i / dim)                          # (L, ceil(D/2))
        P = np.empty((max_len, dim))
        P[:, 0::2] = np.sin(angle)
        P[:, 1::2] = np.cos(angle[:, :dim // 2])                        # an odd D has one sin more
        self.P = backend.to_device(P.astype(dtype))                     # (L, D), not a parameter

    def forward(self, T_or_positions, offset=0):
        xp = backend.get_array_module(self.P)
        positions = _positions(xp, "SinusoidalPositionalEncoding", self.max_len, T_or_positions, offset)
        return self.P[positions]                                        # (T, D), a copy

    def backward(self, dLdP):
        return None

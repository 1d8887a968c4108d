"""Inverted dropout, and the two variants AWD-LSTM regularises a language model with.

Shapes: N any shape, B batch, T time, D features, V vocabulary.

    Dropout(p)           x (N...)   mask (N...)      a fresh coin per entry
    LockedDropout(p)     x (B, T, D) mask (B, 1, D)  one mask per sequence, the same at every t
    EmbeddingDropout(p)  W (V, D)   mask (V, 1)      drops whole embedding rows (word types)

Every variant computes out = x * mask with mask = keep / (1 - p), keep ~ Bernoulli(1 - p):
"inverted" dropout rescales at train time so E[out] = x and eval mode is the plain
identity. `.mask` holds that scaled mask (0 or 1/(1-p), broadcastable to x), and
backward uses it: out = x * mask  =>  dL/dx = dL/dout * mask.

forward(x, mask=None) draws a new mask, or reuses the one given (e.g. layer.mask:
a gradient check needs one fixed mask across all its evaluations).
In eval mode forward returns x itself and backward returns dL/dout itself.
The caller's array is never written to.

Randomness: `seed=` (an int) or `rng=` (a numpy Generator). Host masks come from
that Generator; on CuPy a device Generator (xp.random.default_rng) is seeded once
from it, so a seeded layer is reproducible on either backend.
"""
import numbers

import numpy as np

from .. import backend
from .module import Module


def _check_p(p, layer):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise ValueError(f"{layer}: dropout probability p must be a number in [0, 1), got {p!r}")
    return float(p)


class _MaskedDropout(Module):
    """Shared machinery: p, the random generators, forward/backward through a stored mask.

    A subclass says only which mask shape its input gets (`_mask_shape`).
    """

    def __init__(self, p=0.5, seed=None, rng=None):
        super().__init__()
        self.p = _check_p(p, type(self).__name__)
        if seed is not None and rng is not None:
            raise ValueError(f"{type(self).__name__}: pass seed= or rng=, not both")
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._device_rngs = {}     # array module -> its Generator (CuPy's lives on the GPU)
        self.mask = None
        self._identity = False     # forward ran in eval mode: backward passes dL/dout through

    def _mask_shape(self, x):
        return x.shape

    def _generator(self, xp):
        if xp is np:
            return self.rng
        if xp not in self._device_rngs:
            self._device_rngs[xp] = xp.random.default_rng(int(self.rng.integers(2**62)))
        return self._device_rngs[xp]

    def forward(self, x, mask=None):
        """x -> x * mask in train mode (a new array), x itself in eval mode."""
        if not self.training:
            self._identity = True
            return x
        self._identity = False
        shape = self._mask_shape(x)
        if mask is None:
            mask = self.new_mask(x)
        elif tuple(mask.shape) != tuple(shape):
            raise ValueError(f"{type(self).__name__}: mask must have shape {tuple(shape)}, "
                             f"got {tuple(mask.shape)}")
        self.mask = mask
        return x * mask                                                   # broadcasts, never in place

    def new_mask(self, x):
        """A fresh scaled mask for x (0 or 1/(1-p), of _mask_shape(x)), kept as .mask; x is not read."""
        xp = backend.get_array_module(x)
        keep = self._generator(xp).random(self._mask_shape(x)) >= self.p  # True with prob 1 - p
        self.mask = keep.astype(x.dtype) * (1.0 / (1.0 - self.p))        # 0 or 1/(1-p)
        return self.mask

    def backward(self, dLdout):
        """out = x * mask  =>  dL/dx = dL/dout * mask (summed over nothing: mask is fixed)."""
        if self._identity:
            return dLdout
        if self.mask is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return dLdout * self.mask


class Dropout(_MaskedDropout):
    """Inverted dropout: each entry kept with probability 1 - p and scaled by 1/(1-p).

    forward(x, mask=None): x of any shape -> same shape; .mask has x's shape
    backward(dLdout): same shape -> dL/dx
    """


class LockedDropout(_MaskedDropout):
    """Variational ("locked") dropout: one mask per sequence, shared by all time steps.

    forward(x, mask=None): x (B, T, D) -> (B, T, D); .mask is (B, 1, D)
    backward(dLdout): (B, T, D) -> dL/dx (B, T, D)
    """

    def _mask_shape(self, x):
        if x.ndim != 3:
            raise ValueError(f"LockedDropout: expected input of shape (B, T, D), got {tuple(x.shape)}")
        B, _, D = x.shape
        return (B, 1, D)                                                 # broadcast over T


class EmbeddingDropout(_MaskedDropout):
    """Drops whole rows of an embedding matrix (every occurrence of a word type at once).

    forward(W, mask=None): W (V, D) -> W * mask, the matrix to look tokens up in; .mask is (V, 1)
    backward(dLdWmasked): (V, D) -> dLdW = dLdWmasked * mask, to add into the embedding's grad

    A model need not form W * mask: (W * mask)[ids] = W[ids] * mask[ids], so it can draw
    new_mask(W) (V, 1), look up m = mask[ids] (B, T, 1) and use  X = W[ids] * m,  dL/dW[ids] += dL/dX * m
    (models.LanguageModel's dropoute).
    """

    def _mask_shape(self, W):
        if W.ndim != 2:
            raise ValueError(f"EmbeddingDropout: expected a weight matrix (V, D), got {tuple(W.shape)}")
        return (W.shape[0], 1)

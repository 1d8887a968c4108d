"""Softmax over the last axis, and the stable softmax / log_softmax functions.

Shapes: N = any leading axes (B, or B, T, or B, T, T for attention scores),
C = the axis normalised over (classes, or keys in attention).

    A = softmax(Z)          A[..., i] = exp(Z_i - m) / sum_j exp(Z_j - m),  m = max_j Z_j
    log_softmax(Z)          Z_i - m - log(sum_j exp(Z_j - m))

Subtracting the row max m changes nothing mathematically (it cancels) but keeps
every exp() argument <= 0, so inputs of size 1e4 neither overflow nor give
inf / inf = NaN.

Fully masked rows: a row whose entries are all -inf (an attention query with no
key it may look at) has no softmax. Here it gives a row of zeros, not NaN, and
therefore a zero gradient; a row with at least one finite entry is unaffected.
"""
from .. import backend
from .module import Module


def _row_max(Z, axis):
    """max over `axis` (keepdims), with 0 where the whole row is -inf (so Z - m stays -inf, not NaN)."""
    xp = backend.get_array_module(Z)
    m = xp.max(Z, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0)


def softmax(Z, axis=-1):
    """Numerically stable softmax of Z along `axis`; same shape and dtype as Z.

    A row of all -inf gives zeros (see the module docstring).
    """
    xp = backend.get_array_module(Z)
    E = xp.exp(Z - _row_max(Z, axis))                  # (..., C), every entry in [0, 1]
    S = E.sum(axis=axis, keepdims=True)                # (..., 1), >= 1 unless the row is all -inf
    return E / xp.where(S > 0, S, 1)


def log_softmax(Z, axis=-1):
    """Numerically stable log(softmax(Z)) along `axis`: Z - m - log(sum exp(Z - m)).

    Never computes log(softmax(Z)), which is -inf as soon as a probability underflows.
    A row needs at least one finite entry (an all -inf row gives NaN: its log-probabilities
    do not exist).
    """
    xp = backend.get_array_module(Z)
    shifted = Z - _row_max(Z, axis)                    # (..., C), max entry 0
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Module):
    """A = softmax(Z) over the last axis.

    forward(Z):     Z ndarray of shape (..., C) -> A of shape (..., C), rows summing to 1
    backward(dLdA): dLdA of shape (..., C) -> dLdZ of shape (..., C)
    """

    def forward(self, Z):
        self.A = softmax(Z, axis=-1)                   # (..., C): all that backward needs
        return self.A

    def backward(self, dLdA):
        """Jacobian-vector product, O(N*C) memory and time.

        dA_i/dZ_j = A_i (delta_ij - A_j), so

            dLdZ_j = sum_i dLdA_i A_i (delta_ij - A_j)
                   = A_j (dLdA_j - sum_i dLdA_i A_i)

        i.e. dLdZ = A * (dLdA - rowsum(dLdA * A)). The (..., C, C) Jacobian is never built.
        A row that forward set to zeros (all -inf) gets dLdZ = 0.
        """
        A = self.A
        return A * (dLdA - (dLdA * A).sum(axis=-1, keepdims=True))   # (..., C)

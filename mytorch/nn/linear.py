"""Linear and Embedding layers.

Shapes: N rows (any leading axes flattened: N = B*T), I in_features,
O out_features, V vocabulary, D embedding dim.
"""
import numpy as np

from .. import backend
from .module import Module, check_ids, check_last_dim


def _uniform(shape, bound, dtype, rng):
    """U(-bound, bound) on the host, moved to the active backend."""
    return backend.to_device(rng.uniform(-bound, bound, size=shape).astype(dtype))


class Linear(Module):
    """Z = X W^T + b, with W of shape (O, I) and b of shape (O,) (PyTorch's layout).

    forward(X): X (..., I) -> Z (..., O)
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / np.sqrt(in_features)  # PyTorch's default init
        self.add_param("W", _uniform((out_features, in_features), bound, dtype, rng))
        if bias:
            self.add_param("b", _uniform((out_features,), bound, dtype, rng))

    def forward(self, X, out=None):
        """X (..., I) -> Z (..., O); `out`: an optional C-contiguous (..., O) buffer to write into."""
        check_last_dim(X, self.in_features, "Linear")
        self.X = X
        xp = backend.get_array_module(X)
        lead = X.shape[:-1]
        # one 2-D product (N, I) x (I, O): a 3-D matmul would loop over the leading axis
        Z2 = xp.matmul(X.reshape(-1, self.in_features), self.params["W"].T,
                       out=None if out is None else out.reshape(-1, self.out_features))
        if "b" in self.params:
            Z2 += self.params["b"]
        return Z2.reshape(*lead, self.out_features)     # (..., O)

    def backward(self, dLdZ):
        """dL/dW = dZ^T X, dL/db = sum_rows dZ, dL/dX = dZ W (rows = all leading axes)."""
        check_last_dim(dLdZ, self.out_features, "Linear.backward", "dLdZ")
        X2 = self.X.reshape(-1, self.in_features)       # (N, I)
        dZ2 = dLdZ.reshape(-1, self.out_features)       # (N, O)
        backend.matmul_accumulate(self.grads["W"], dZ2.T, X2)
        if "b" in self.params:  # column sums as ones @ dZ: a BLAS gemv, on all cores
            xp = backend.get_array_module(dZ2)
            self.grads["b"] += xp.ones(dZ2.shape[0], dtype=dZ2.dtype) @ dZ2
        return (dZ2 @ self.params["W"]).reshape(*self.X.shape)  # (..., I)


class Embedding(Module):
    """Z = W[ids]: a lookup table W of shape (V, D).

    forward(ids): integer ids of any shape S -> (*S, D)
    """

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, rng=None, init_range=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if init_range is None:
            W = rng.standard_normal((num_embeddings, embedding_dim)).astype(dtype)  # PyTorch: N(0, 1)
            self.add_param("W", backend.to_device(W))
        else:
            self.add_param("W", _uniform((num_embeddings, embedding_dim), init_range, dtype, rng))

    def forward(self, ids):
        xp = backend.get_array_module(ids)
        check_ids(ids, self.num_embeddings, "Embedding")
        self.ids = xp.asarray(ids)
        return self.params["W"][self.ids]               # (*S, D)

    def backward(self, dLdZ):
        """dL/dW[v] = sum of dZ over every position whose id is v (repeats add up).

        Returns None: integer ids have no gradient.
        """
        if dLdZ.shape != self.ids.shape + (self.embedding_dim,):
            raise ValueError(f"Embedding.backward: expected dLdZ of shape "
                             f"{self.ids.shape + (self.embedding_dim,)}, got {tuple(dLdZ.shape)}")
        backend.scatter_add(self.grads["W"], self.ids.reshape(-1), dLdZ.reshape(-1, self.embedding_dim))
        return None

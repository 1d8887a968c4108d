"""A Vision Transformer's input layers: an image cut into patches, and a learned class token.

Shapes: B images, C channels, H x W pixels, P the patch side, N = (H / P)(W / P) patches,
K = C P P pixels per patch, D = d_model.

    images (B, C, H, W) -> patches (B, N, K) -> Linear (B, N, D)          PatchEmbedding
    (B, N, D) -> [cls; X] (B, N + 1, D)                                  ClassToken

Cutting into patches is only reshapes: (B, C, H, W) -> (B, C, H/P, P, W/P, P) -> move the two
patch-grid axes first -> (B, H/P, W/P, C, P, P) -> (B, N, K). Patch n = i (W/P) + j is the P x P
square at rows i P .. i P + P - 1, columns j P .. j P + P - 1, read row by row, channel by channel.
A Linear on each patch is a convolution with kernel P and stride P, done as one product.
"""
import numpy as np

from .. import backend
from .linear import Linear
from .module import Module


def to_patches(images, P):
    """images (B, C, H, W) -> (B, N, C P P), patch n = i (W/P) + j (a copy)."""
    B, C, H, W = images.shape
    x = images.reshape(B, C, H // P, P, W // P, P)
    return x.transpose(0, 2, 4, 1, 3, 5).reshape(B, (H // P) * (W // P), C * P * P)


def from_patches(patches, shape, P):
    """The inverse of to_patches: (B, N, C P P) -> (B, C, H, W), shape = (B, C, H, W)."""
    B, C, H, W = shape
    x = patches.reshape(B, H // P, W // P, C, P, P)
    return x.transpose(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


class PatchEmbedding(Module):
    """Non-overlapping P x P patches, each projected to D features by one Linear (K -> D).

    params: the Linear's W (D, K), b (D,) (as proj.W, proj.b)
    forward(images):  (B, C, H, W), H and W multiples of P -> (B, N, D)
    backward(dLdY):   (B, N, D) -> dL/dimages (B, C, H, W); adds into proj's grads
    """

    def __init__(self, patch, channels, d_model, dtype=np.float32, rng=None):
        super().__init__()
        self.patch, self.channels = int(patch), int(channels)
        self.proj = Linear(self.channels * self.patch ** 2, d_model, dtype=dtype, rng=rng)

    def num_patches(self, height, width):
        """N for images of height x width pixels (ValueError unless both are multiples of P)."""
        if height % self.patch or width % self.patch:
            raise ValueError(f"PatchEmbedding: images of {height} x {width} pixels do not divide into "
                             f"{self.patch} x {self.patch} patches")
        return (height // self.patch) * (width // self.patch)

    def forward(self, images):
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"PatchEmbedding: expected images of shape (B, {self.channels}, H, W), "
                             f"got {tuple(images.shape)}")
        self.num_patches(*images.shape[2:])
        self.shape = images.shape
        return self.proj.forward(to_patches(images, self.patch))          # (B, N, D)

    def backward(self, dLdY):
        """Y = patches(images) W^T + b: the Linear's backward gives dL/dpatches (B, N, K); the
        reshapes are a permutation of pixels, so their backward is the inverse permutation."""
        return from_patches(self.proj.backward(dLdY), self.shape, self.patch)


class ClassToken(Module):
    """A learned vector put before the patches; the classifier reads what the blocks make of it.

    params: cls (D,), drawn N(0, init_std^2)
    forward(X):      (B, N, D) -> (B, N + 1, D), position 0 the class token
    backward(dLdY):  (B, N + 1, D) -> dLdX (B, N, D); grads["cls"] += sum_b dLdY[b, 0]
    """

    def __init__(self, d_model, init_std=0.02, dtype=np.float32, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.add_param("cls", backend.to_device(rng.normal(0.0, init_std, d_model).astype(dtype)))

    def forward(self, X):
        xp = backend.get_array_module(X)
        B, N, D = X.shape
        cls = xp.broadcast_to(self.params["cls"].astype(X.dtype, copy=False), (B, 1, D))
        return xp.concatenate([cls, X], axis=1)                           # (B, N + 1, D)

    def backward(self, dLdY):
        """Y[:, 0] = cls for every image (dcls = sum over the batch), Y[:, 1:] = X (dX passes)."""
        self.grads["cls"] += dLdY[:, 0].sum(axis=0)
        return dLdY[:, 1:]

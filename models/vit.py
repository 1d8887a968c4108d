"""A Vision Transformer (Dosovitskiy et al. 2021) from mytorch's layers, for small grey images.

Shapes: B images, C channels, H x W pixels, P patch side, N = H W / P^2 patches, D = d_model,
F = d_ff, K classes, L = nlayers.

    images (B, H, W) uint8 -> (x / 255 - mean) / std -> (B, C=1, H, W)              prepare
        -> PatchEmbedding (B, N, D) -> [cls; X] (B, N + 1, D) + positions -> Dropout
        -> TransformerBlock x L (bidirectional) -> LayerNorm
        -> pool: the class token's row (pool="cls") or the mean over the N + 1 rows ("mean")   (B, D)
        -> Linear head (B, K) logits -> softmax cross-entropy with the labels

Training calls forward_loss(images, labels) then backward_loss(); backward(dlogits) returns the
gradient for the normalised images too (the finite-difference tests check it). Inference:
predict(images) -> (B, K) class probabilities, in eval mode, in chunks, saving nothing;
predict(images, tta=True) averages the log-probabilities of ten fixed views of each image (the image
and its mirror, in place and shifted by a pixel each way: dataset.images.tta_views) and renormalises.

Init: the layers' own (PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every matrix), the class
token and positions N(0, 0.02^2), the head 0 (every class equally likely at the start), LayerNorm
gamma 1 and beta 0. (GPT-2's N(0, 0.02^2) everywhere, which TransformerLM uses, is made for d_model
768; at d_model 64 it is six times below 1/sqrt(D), and a first trial with it learned more slowly.)
"""
import numbers

import numpy as np

from mytorch import backend, fast
from mytorch.nn import (ClassToken, Dropout, LabelSmoothedCrossEntropy, LayerNorm, LearnedPositionalEmbedding,
                        Linear, Module, PatchEmbedding, TransformerBlock, log_softmax, softmax)
from mytorch.nn.module import detached

from dataset.images import tta_views

from .checkpoint import load_parameters, parameter_arrays, save_model

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530     # Fashion-MNIST's training pixels, on [0, 1]


class ViT(Module):
    """Vision Transformer classifier; config: every constructor argument but seed and dtype, and
    model="vit" (models.load builds it from a file). splittable: images are independent rows, so the
    fast tier may split a training batch over threads (mytorch.fast.split)."""

    splittable = True

    def __init__(self, image_size=28, channels=1, patch=4, num_classes=10, d_model=64, nhead=4, nlayers=6,
                 d_ff=128, dropout=0.0, pool="cls", gelu="tanh", mean=FASHION_MEAN, std=FASHION_STD,
                 classes=None, label_smoothing=0.0, seed=0, dtype=np.float32):
        super().__init__()
        for name, value in (("image_size", image_size), ("channels", channels), ("patch", patch),
                            ("num_classes", num_classes), ("d_model", d_model), ("nhead", nhead),
                            ("nlayers", nlayers), ("d_ff", d_ff)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"ViT: {name} must be an integer >= 1, got {value!r}")
        if image_size % patch:
            raise ValueError(f"ViT: image_size {image_size} is not a multiple of patch {patch}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"ViT: pool must be 'cls' or 'mean', got {pool!r}")
        if not 0 <= dropout < 1 or not 0 <= label_smoothing < 1:
            raise ValueError(f"ViT: dropout and label_smoothing must lie in [0, 1), got {dropout!r}, "
                             f"{label_smoothing!r}")
        classes = list(classes) if classes is not None else [str(k) for k in range(num_classes)]
        if len(classes) != num_classes:
            raise ValueError(f"ViT: {len(classes)} class names for {num_classes} classes")
        self.config = dict(model="vit", image_size=int(image_size), channels=int(channels), patch=int(patch),
                           num_classes=int(num_classes), d_model=int(d_model), nhead=int(nhead),
                           nlayers=int(nlayers), d_ff=int(d_ff), dropout=float(dropout), pool=pool,
                           gelu=gelu, mean=float(mean), std=float(std), classes=classes)
        if label_smoothing:                             # (files written before it have none: 0)
            self.config["label_smoothing"] = float(label_smoothing)
        self.image_size, self.channels, self.num_classes = int(image_size), int(channels), int(num_classes)
        self.pool, self.mean, self.std, self.classes = pool, float(mean), float(std), classes
        rng = np.random.default_rng(seed)
        self.patches = PatchEmbedding(patch, channels, d_model, dtype=dtype, rng=rng)
        n = self.patches.num_patches(image_size, image_size) + (pool == "cls")
        self.cls = ClassToken(d_model, dtype=dtype, rng=rng) if pool == "cls" else None
        self.pos = LearnedPositionalEmbedding(n, d_model, dtype=dtype, rng=rng, init_std=0.02)
        self.drop = Dropout(dropout, rng=rng)
        Block = fast.choose(TransformerBlock)           # the plain block, or its fast twin
        self.blocks = [Block(d_model, nhead, dropout, gelu, causal=False, d_ff=d_ff, dtype=dtype, rng=rng)
                       for _ in range(nlayers)]
        self.ln_f = LayerNorm(d_model, dtype=dtype)
        self.head = Linear(d_model, num_classes, dtype=dtype, rng=rng)
        self.head.params["W"].fill(0)
        self.head.params["b"].fill(0)
        self.loss = LabelSmoothedCrossEntropy(label_smoothing)     # eps 0: the plain cross-entropy
        self.timer, self.meta, self.vocab = None, {}, None

    @property
    def drops(self):
        """Every dropout layer (one Generator): the trainer saves and restores each one's .rng."""
        return [self.drop] + [d for b in self.blocks for d in b.drops]

    def lap(self, phase):
        """The benchmark's phase timer hook (app.step calls it); a no-op unless a timer is set."""
        if self.timer is not None:
            self.timer(phase)

    # -- input ---------------------------------------------------------------
    def prepare(self, images):
        """images (B, H, W) or (B, C, H, W), uint8 0-255 -> normalised float32 (B, C, H, W) on the backend."""
        xp = backend.xp()
        images = xp.asarray(images)
        if images.ndim == 3 and self.channels == 1:
            images = images[:, None]
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (self.channels, size, size):
            grey = f"(N, {size}, {size}) or " if self.channels == 1 else ""
            raise ValueError(f"ViT: expected images of shape {grey}(N, {self.channels}, {size}, {size}), "
                             f"got {tuple(images.shape)}")
        if images.dtype != np.uint8:
            raise TypeError(f"ViT: images must be uint8 pixels 0-255 (as the IDX files hold them), "
                            f"got dtype {images.dtype}")
        x = images.astype(self.head.params["W"].dtype)
        return (x * (1.0 / 255) - self.mean) * (1.0 / self.std)

    # -- training path ---------------------------------------------------------
    def forward(self, X):
        """X (B, C, H, W) normalised images -> logits (B, K); saves what backward needs."""
        Z = self.patches.forward(X)                                       # (B, N, D)
        if self.cls is not None:
            Z = self.cls.forward(Z)                                       # (B, N + 1, D)
        Z = Z + self.pos.forward(Z.shape[1])
        self._dropping = self.training and self.drop.p > 0
        if self._dropping:
            Z = self.drop.forward(Z)
        self.lap("embedding")
        for block in self.blocks:
            Z = block.forward(Z)
        Z = self.ln_f.forward(Z)                                          # (B, S, D)
        self._S = Z.shape[1]
        pooled = Z[:, 0] if self.pool == "cls" else Z.mean(axis=1)        # (B, D)
        self.lap("layers_forward")
        return self.head.forward(pooled)                                  # (B, K)

    def backward(self, dlogits):
        """dL/dlogits (B, K) -> dL/dX (B, C, H, W), every parameter's gradient added.

        pooled = Z[:, 0]:        dZ[:, 0] = dpooled, 0 elsewhere
        pooled = mean_s Z[:, s]: dZ[:, s] = dpooled / S for every s
        Z = drop(P(X) (+ cls) + pos): dpos += sum_b dZ', then the class token's and the patches' backward
        """
        xp = backend.get_array_module(dlogits)
        dpooled = self.head.backward(dlogits)                             # (B, D)
        B, D = dpooled.shape
        if self.pool == "cls":
            dZ = xp.zeros((B, self._S, D), dtype=dpooled.dtype)
            dZ[:, 0] = dpooled
        else:
            dZ = xp.broadcast_to((dpooled / self._S)[:, None, :], (B, self._S, D)).copy()
        dZ = self.ln_f.backward(dZ)
        for block in reversed(self.blocks):
            dZ = block.backward(dZ)
        self.lap("layers_backward")
        if self._dropping:
            dZ = self.drop.backward(dZ)
        self.pos.backward(dZ.sum(axis=0))
        if self.cls is not None:
            dZ = self.cls.backward(dZ)
        return self.patches.backward(dZ)                                  # (B, C, H, W)

    def forward_loss(self, images, labels, state=None):
        """images (B, H, W) uint8, labels (B,) -> mean cross-entropy (a float), and None (no state:
        app.step's interface is the language models')."""
        labels = backend.xp().asarray(labels)
        logits = self.forward(self.prepare(images))
        loss = self.loss.forward(logits, labels)
        self.lap("softmax_loss")
        return loss, None

    def backward_loss(self):
        """The backward of the last forward_loss (the images' gradient is not needed: dropped)."""
        self.backward(self.loss.backward())

    # -- inference ---------------------------------------------------------------
    def logits(self, images, batch_size=128):
        """images (N, H, W) uint8 -> logits (N, K) on the host, in chunks of batch_size: forward on a
        detached eval-mode copy (no dropout; a pending training backward stays intact)."""
        twin = detached(self, training=False)
        out = [backend.to_numpy(twin.forward(self.prepare(images[i:i + batch_size])))
               for i in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.num_classes), dtype=np.float32)

    def predict(self, images, batch_size=128, tta=False):
        """images (N, H, W) uint8 0-255 -> (N, K) class probabilities (rows sum to 1), host float32.
        tta: test-time augmentation, softmax of the mean log-probabilities over tta_views' ten views."""
        if not tta:
            return softmax(self.logits(images, batch_size)).astype(np.float32)
        views = tta_views(np.asarray(images))                            # (10, N, H, W)
        logp = sum(log_softmax(self.logits(view, batch_size)) for view in views) / len(views)
        return softmax(logp).astype(np.float32)

    def attention(self, images):
        """images (N, H, W) uint8 -> the last block's attention weights (N, h, S, S), host float32
        (row 0: what the class token reads; with pool="cls")."""
        twin = detached(self, training=False)
        twin.forward(self.prepare(images))
        return backend.to_numpy(twin.blocks[-1].attn.A_sig).astype(np.float32)

    # -- files -------------------------------------------------------------------
    def state_arrays(self):
        """{name: host array} of every parameter."""
        return parameter_arrays(self)

    def load_state_arrays(self, arrays):
        """Fill every parameter from {name: array} (state_arrays' names), shapes checked."""
        load_parameters(self, arrays)

    def save(self, path, float16=False, meta=None, vocab=None):
        """One versioned .npz with the configuration and weights (models.checkpoint)."""
        save_model(self, path, float16=float16, meta=meta)

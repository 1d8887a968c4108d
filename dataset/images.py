"""Batches of labelled images for training, with the augmentation a ViT needs on small data.

Shapes: N images, B batch, H x W pixels, p the crop padding.

augment(images, rng, pad, flip), vectorised over the batch, one gather for both:
    random crop   the image is padded with p zero pixels on every side, (H + 2p, W + 2p), and an
                  H x W window cut at a random offset (dy, dx) in [0, 2p]^2: a shift by up to p pixels
    flip          with probability 1/2 the window is read right to left (a mirror image)
    out[b, i, j] = padded[b, dy_b + i, dx_b + (W - 1 - j if flip_b else j)]

tta_views(images): the ten fixed views that test-time augmentation averages over (the image and its
mirror, in place and shifted by one pixel each way).

ImageLoader: epoch e shuffles the images with np.random.default_rng([seed, e]) and batch k draws
its augmentation from np.random.default_rng([seed, e, k]), so any batch of any epoch can be rebuilt
on its own: set_epoch(e) then batches(start=k) resumes a run bit-identically at batch k.
"""
import numpy as np

from .loader import check_int


def window(images, pad, dy, dx, mirror):
    """images (B, H, W) -> (B, H, W): image b shifted to the H x W window at offset (dy_b, dx_b) of its
    copy padded with `pad` zero pixels, read right to left where mirror_b; dy, dx (B,) ints in
    [0, 2 pad], mirror (B,) bools. One gather for the whole batch; each image keeps its place."""
    B, H, W = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))             # (B, H + 2p, W + 2p)
    cols = np.where(mirror[:, None], np.arange(W - 1, -1, -1), np.arange(W))   # (B, W)
    rows = dy[:, None] + np.arange(H)                                     # (B, H)
    cols = dx[:, None] + cols
    return padded[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]


def augment(images, rng, pad=2, flip=True):
    """images (B, H, W) -> randomly shifted (by up to `pad` pixels, zeros coming in) and mirrored
    copies (B, H, W); rng: a numpy Generator. Each image keeps its place in the batch (and its label)."""
    B = len(images)
    dy = rng.integers(0, 2 * pad + 1, size=B)
    dx = rng.integers(0, 2 * pad + 1, size=B)
    mirror = rng.random(B) < 0.5 if flip else np.zeros(B, dtype=bool)
    return window(images, pad, dy, dx, mirror)


# The views test-time augmentation averages over: the image and its mirror, each in place and shifted
# by one pixel up, down, left and right (offsets into the image padded by one pixel).
VIEW_OFFSETS = ((1, 1), (0, 1), (2, 1), (1, 0), (1, 2))


def tta_views(images):
    """images (B, H, W) (or (B, C, H, W)) -> (10, B, H, W) (or (10, B, C, H, W)): the fixed views of every
    image, VIEW_OFFSETS x {as is, mirrored}."""
    flat = images.reshape(-1, *images.shape[-2:])                         # (B C, H, W)
    n = len(flat)
    views = np.stack([window(flat, 1, np.full(n, dy), np.full(n, dx), np.full(n, mirror))
                      for mirror in (False, True) for dy, dx in VIEW_OFFSETS])
    return views.reshape(len(views), *images.shape)


class ImageLoader:
    """(images (B, H, W), labels (B,)) batches of one epoch, shuffled and augmented reproducibly.

    images (N, H, W), labels (N,); pad, flip: augment's (pad 0 and flip False: the images as they
    are); drop_last: leave out the last N % B images (their order changes every epoch).
    """

    def __init__(self, images, labels, batch_size, seed=0, shuffle=True, pad=2, flip=True, drop_last=True):
        if len(images) != len(labels):
            raise ValueError(f"ImageLoader: {len(images)} images but {len(labels)} labels")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.pad = check_int("pad", pad, 0)
        if len(images) < self.batch_size:
            raise ValueError(f"{len(images)} images, fewer than one batch of {self.batch_size} "
                             "(use a smaller --batch_size)")
        self.images, self.labels = images, labels
        self.seed, self.shuffle, self.flip, self.drop_last = seed, shuffle, flip, drop_last
        self.epoch = 0

    def __len__(self):
        n, B = len(self.images), self.batch_size
        return n // B if self.drop_last else -(-n // B)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def batches(self, start=0):
        """Yield (images (B, H, W) uint8, labels (B,) int64) from batch `start` of the current epoch."""
        n = len(self.images)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for k in range(start, len(self)):
            rows = order[k * self.batch_size:(k + 1) * self.batch_size]
            x = self.images[rows]
            if self.pad or self.flip:
                x = augment(x, np.random.default_rng([self.seed, self.epoch, k]), self.pad, self.flip)
            yield x, self.labels[rows]

    def __iter__(self):
        return self.batches()

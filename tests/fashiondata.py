"""A tiny Fashion-MNIST folder written by the tests: four gzipped IDX files of 28 x 28 images.

Each image is noise with a bright square whose position and brightness depend on its label, so a
small model can learn something and a test can read the label back from the pixels.
"""
import gzip

import numpy as np

from dataset.idx import idx_bytes

TRAIN, TEST = 240, 60            # images; the validation split is every 12th training image (20)


def label_images(labels, rng):
    """(N, 28, 28) uint8 images for labels (N,): a 6 x 6 square at a label-dependent place, value
    100 + 15 label, on noise below 40 (labels_of reads them back)."""
    N = len(labels)
    images = rng.integers(0, 40, (N, 28, 28)).astype(np.uint8)
    for k in range(10):
        rows = labels == k
        r, c = 4 + 2 * (k // 5), 4 + 3 * (k % 5)
        images[rows, r:r + 6, c:c + 6] = 100 + 15 * k
    return images


def labels_of(images):
    """The labels label_images drew, read back from the brightest pixel (a shift or a flip keeps it)."""
    return (images.reshape(len(images), -1).max(axis=1).astype(int) - 100) // 15


def write_fashion(folder, seed=0, train=TRAIN, test=TEST):
    """The four IDX files (gzipped, Zalando's names) in folder; returns folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, array in (("images-idx3", label_images(labels, rng)), ("labels-idx1", labels)):
            with gzip.open(folder / f"{part}-{kind}-ubyte.gz", "wb") as f:
                f.write(idx_bytes(array))
    return folder

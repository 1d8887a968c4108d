"""Fashion-MNIST (Zalando, MIT licence): 70,000 grey 28 x 28 images of ten kinds of clothing.

Where: the four IDX files (dataset.idx) in one folder, gzipped or not, under Zalando's names:

    train-images-idx3-ubyte[.gz]   (60000, 28, 28) uint8     train-labels-idx1-ubyte[.gz]   (60000,)
    t10k-images-idx3-ubyte[.gz]    (10000, 28, 28) uint8     t10k-labels-idx1-ubyte[.gz]    (10000,)

`apt-get install dataset-fashion-mnist` puts them in DEFAULT_DIR, where load() looks first.

Splits: "train" and "valid" cut the 60,000 training images (valid: every 12th image, index
i % 12 == 11: 5,000 images, about 500 a class, fixed for ever); "test" is the 10,000 test images,
for the final figure only (tune on valid).
"""
import os
from collections import namedtuple

import numpy as np

from .corpus import DataError
from .idx import IMAGES, LABELS, IDXError, read_idx

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
VALID_EVERY = 12                     # training image i is a validation image when i % 12 == 11
SPLITS = ("train", "valid", "test")

Split = namedtuple("Split", "images labels")      # (N, 28, 28) uint8, (N,) int64


def find_dir(data=None):
    """The folder holding the IDX files: `data` if given, else DEFAULT_DIR (Debian's package)."""
    if data is not None:
        if not os.path.isdir(data):
            raise DataError(f"--data {data}: no such folder (it should hold Fashion-MNIST's four IDX files)")
        return str(data)
    if os.path.isdir(DEFAULT_DIR):
        return DEFAULT_DIR
    raise DataError(f"no Fashion-MNIST in {DEFAULT_DIR}: `apt-get install dataset-fashion-mnist`, or give "
                    "--data DIR, a folder with the four IDX files (train-images-idx3-ubyte.gz, ...)")


def _file(folder, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    raise DataError(f"{folder} has no {name}.gz (or {name}): a Fashion-MNIST folder holds four IDX files")


def read_pair(folder, part):
    """(images (N, 28, 28) uint8, labels (N,) int64) of part "train" or "test", checked."""
    img_path, lab_path = (_file(folder, name) for name in FILES[part])
    try:
        images, labels = read_idx(img_path, IMAGES), read_idx(lab_path, LABELS)
    except IDXError as err:
        raise DataError(str(err)) from None
    if images.ndim != 3:
        raise DataError(f"{img_path}: images of {images.ndim - 1} dimensions, expected (N, rows, cols)")
    if len(images) != len(labels):
        raise DataError(f"{img_path} holds {len(images)} images but {lab_path} {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{lab_path}: label {int(labels.max())}, but Fashion-MNIST has {len(CLASSES)} "
                        "classes")
    return images, labels.astype(np.int64)


def load(data=None, splits=SPLITS):
    """{split: Split} for the splits asked for, from the folder `data` (or DEFAULT_DIR)."""
    folder = find_dir(data)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; known: {', '.join(SPLITS)}")
    out = {}
    if {"train", "valid"} & set(splits):
        images, labels = read_pair(folder, "train")
        is_valid = np.arange(len(images)) % VALID_EVERY == VALID_EVERY - 1
        for name, keep in (("train", ~is_valid), ("valid", is_valid)):
            if name in splits:
                out[name] = Split(images[keep], labels[keep])
    if "test" in splits:
        out["test"] = Split(*read_pair(folder, "test"))
    return out


def fingerprint(split):
    """A short hash of a split's images and labels: --resume checks the data is the same."""
    import hashlib
    h = hashlib.sha256(np.ascontiguousarray(split.images).tobytes())
    h.update(np.ascontiguousarray(split.labels).tobytes())
    return h.hexdigest()[:16]

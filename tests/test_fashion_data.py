"""Fashion-MNIST's files and batches: the IDX reader and its errors, the splits, the augmentation and
the loader (labels stay with their images; any batch can be rebuilt from (seed, epoch, batch))."""
import gzip
import os

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from conftest import require_shared
from dataset import fashion_mnist
from dataset.corpus import DataError
from dataset.idx import IMAGES, LABELS, IDXError, idx_bytes, parse_idx, read_idx
from dataset.images import ImageLoader, augment, tta_views
from fashiondata import label_images, labels_of, write_fashion


def test_idx_round_trip_gzipped_or_not(tmp_path, rng):
    a = rng.integers(0, 256, (3, 4, 5)).astype(np.uint8)
    (tmp_path / "a").write_bytes(idx_bytes(a))
    with gzip.open(tmp_path / "a.gz", "wb") as f:
        f.write(idx_bytes(a))
    assert_array_equal(read_idx(tmp_path / "a", IMAGES), a)
    assert_array_equal(read_idx(tmp_path / "a.gz", IMAGES), a)
    assert idx_bytes(a)[:4] == bytes([0, 0, 8, 3])                  # magic 2051


@pytest.mark.parametrize("damage, phrase", [
    (lambda b: b"hello world", "not an IDX file"),
    (lambda b: b[:2] + b"\x0d" + b[3:], "element type 0x0d"),
    (lambda b: b[:3] + b"\x01" + b[4:], "magic number 2049, expected an image file"),
    (lambda b: b[:-7], "(truncated)"),
    (lambda b: b + b"xx", "the file holds 62"),
    (lambda b: b[:9], "truncated header"),
])
def test_a_bad_idx_file_says_what_is_wrong(damage, phrase):
    raw = idx_bytes(np.zeros((3, 4, 5), np.uint8))
    with pytest.raises(IDXError) as err:
        parse_idx(damage(raw), "f.idx", IMAGES)
    assert phrase in str(err.value)


def test_missing_and_damaged_files(tmp_path):
    with pytest.raises(IDXError, match="no such file"):
        read_idx(tmp_path / "nothing", LABELS)
    (tmp_path / "x.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(IDXError, match="damaged gzip"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(DataError, match="no such folder"):
        fashion_mnist.load(tmp_path / "none")
    folder = write_fashion(tmp_path / "f")
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    assert set(fashion_mnist.load(folder, ("train", "valid"))) == {"train", "valid"}
    with pytest.raises(DataError, match="has no t10k-labels-idx1-ubyte.gz"):
        fashion_mnist.load(folder)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8)))   # unzipped, short
    with pytest.raises(DataError, match="holds 60 images but .* 5 labels"):
        fashion_mnist.load(folder, ("test",))


def test_splits_are_fixed_and_disjoint(tmp_path):
    folder = write_fashion(tmp_path / "f")
    d = fashion_mnist.load(folder)
    assert len(d["train"].labels) == 220 and len(d["valid"].labels) == 20 and len(d["test"].labels) == 60
    train_images, train_labels = fashion_mnist.read_pair(str(folder), "train")
    assert_array_equal(d["valid"].images, train_images[11::12])      # every 12th, from the 12th
    assert_array_equal(d["valid"].labels, train_labels[11::12])
    assert d["train"].images.dtype == np.uint8 and d["train"].labels.dtype == np.int64


def test_augment_shifts_and_mirrors_each_image_with_its_label(rng):
    labels = rng.integers(0, 10, 64)
    images = label_images(labels, rng)
    out = augment(images, np.random.default_rng(1), pad=2, flip=True)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert_array_equal(labels_of(out), labels)                       # the square, and its label, kept
    assert not np.array_equal(out, images)
    same = augment(images, np.random.default_rng(1), pad=0, flip=False)
    assert_array_equal(same, images)
    mirrored = augment(images[:1], Draws([[0], [0]], [[0.0]]), pad=0, flip=True)
    assert_array_equal(mirrored[0], images[0][:, ::-1])


class Draws:
    """A stand-in Generator: integers() returns the next of `ints`, random() the next of `uniform`."""

    def __init__(self, ints, uniform=()):
        self.ints, self.uniform = iter(ints), iter(uniform)

    def integers(self, lo, hi, size):
        return np.asarray(next(self.ints))

    def random(self, size):
        return np.asarray(next(self.uniform))


def test_a_shift_moves_the_image_and_brings_in_zeros():
    image = np.arange(1, 17, dtype=np.uint8).reshape(1, 4, 4)
    # padded by 1 pixel; the window at dy = 0 (a row of zeros on top), dx = 2 (one column cut on the left)
    out = augment(image, Draws([[0], [2]]), pad=1, flip=False)[0]
    assert_array_equal(out[0], 0)
    assert_array_equal(out[1:, :3], image[0, :3, 1:])
    assert_array_equal(out[1:, 3], 0)


def test_tta_views_are_the_image_its_mirror_and_one_pixel_shifts_of_both(rng):
    labels = rng.integers(0, 10, 7)
    images = label_images(labels, rng)
    views = tta_views(images)
    assert views.shape == (10, 7, 28, 28) and views.dtype == np.uint8
    assert_array_equal(views[0], images)
    assert_array_equal(views[5], images[:, :, ::-1])
    down, up, right, left = views[1:5]                  # offsets (0, 1), (2, 1), (1, 0), (1, 2)
    assert_array_equal(down[:, 1:], images[:, :-1])
    assert_array_equal(up[:, :-1], images[:, 1:])
    assert_array_equal(right[:, :, 1:], images[:, :, :-1])
    assert_array_equal(left[:, :, :-1], images[:, :, 1:])
    for shifted, edge in ((down, (slice(None), 0)), (up, (slice(None), -1)),
                          (right, (slice(None), slice(None), 0)), (left, (slice(None), slice(None), -1))):
        assert_array_equal(shifted[edge], 0)            # zeros come in where the image moved away
    # the mirrored views are the mirror image's views (a mirrored shift right is a shift left)
    assert_array_equal(views[5:], tta_views(images[:, :, ::-1])[[0, 1, 2, 4, 3]])
    for view in views:
        assert_array_equal(labels_of(view), labels)     # every view keeps its image's label
    assert_array_equal(tta_views(images[:, None])[:, :, 0], views)   # (B, C, H, W) alike


def test_loader_batches_are_rebuilt_from_seed_epoch_and_batch(rng):
    labels = rng.integers(0, 10, 100)
    images = label_images(labels, rng)
    loader = ImageLoader(images, labels, 16, seed=5)
    assert len(loader) == 6                                          # drop_last: 100 // 16
    loader.set_epoch(2)
    whole = list(loader.batches())
    loader.set_epoch(0)
    loader.set_epoch(2)
    tail = list(loader.batches(start=4))
    assert len(tail) == 2
    for (a, b), (c, d) in zip(whole[4:], tail):
        assert_array_equal(a, c)
        assert_array_equal(b, d)
    for x, y in whole:
        assert_array_equal(labels_of(x), y)                          # labels stay with their images
    loader.set_epoch(3)
    assert not np.array_equal(next(loader.batches())[1], whole[0][1])  # a new order each epoch
    seen = np.concatenate([y for _, y in ImageLoader(images, labels, 10, shuffle=False, pad=0,
                                                     flip=False).batches()])
    assert_array_equal(seen, labels)
    with pytest.raises(ValueError, match="fewer than one batch"):
        ImageLoader(images, labels, 101)


@pytest.mark.data
def test_the_real_fashion_mnist():
    folder = require_shared("fashion-mnist")
    d = fashion_mnist.load(folder)
    assert d["train"].images.shape == (55000, 28, 28) and d["valid"].images.shape == (5000, 28, 28)
    assert d["test"].images.shape == (10000, 28, 28)
    assert_array_equal(np.bincount(d["test"].labels), np.full(10, 1000))
    assert fashion_mnist.fingerprint(d["train"]) == fashion_mnist.fingerprint(d["train"])

"""Dropout, LockedDropout, EmbeddingDropout.

Gradient checks reuse one mask across every finite-difference evaluation
(forward(x, mask=layer.mask)), in float64 on the host. Each test runs once per
backend via `xp`; device masks come from a device RNG, so device-vs-host checks
feed the host mask to the device layer.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn.dropout import Dropout, EmbeddingDropout, LockedDropout

LAYERS = [Dropout, LockedDropout, EmbeddingDropout]


def _input(cls, rng, big=False):
    """Random nonzero data of the shape each layer takes: any / (B, T, D) / (V, D)."""
    if cls is Dropout:
        shape = (200, 500) if big else tuple(int(n) for n in rng.integers(2, 6, size=rng.integers(1, 4)))
    elif cls is LockedDropout:
        shape = (200, 3, 500) if big else tuple(int(n) for n in rng.integers(2, 6, size=3))
    else:
        shape = (20000, 3) if big else tuple(int(n) for n in rng.integers(3, 8, size=2))
    x = rng.standard_normal(shape)
    return x + np.sign(x) * 0.1          # bounded away from 0, so out == 0 means dropped


def _expected_mask_shape(cls, x):
    if cls is LockedDropout:
        return (x.shape[0], 1, x.shape[2])
    return (x.shape[0], 1) if cls is EmbeddingDropout else x.shape


@pytest.mark.parametrize("cls", LAYERS)
def test_gradient_with_one_fixed_mask(xp, rng, cls):
    p = float(rng.uniform(0.2, 0.7))
    x = _input(cls, rng)
    G = rng.standard_normal(x.shape)
    layer = cls(p, rng=np.random.default_rng(int(rng.integers(1 << 30))))
    out = layer.forward(x)
    mask = layer.mask
    assert mask.shape == _expected_mask_shape(cls, x)
    dLdx = layer.backward(G)
    mask_before = mask.copy()

    def loss():
        return float(np.sum(layer.forward(x, mask=mask) * G))

    check_gradient(loss, x, dLdx, rtol=1e-6)
    assert_array_equal(layer.mask, mask_before)         # FD never drew a new mask
    assert_allclose(dLdx, G * mask, rtol=1e-15, atol=0)
    # device vs host, with the host mask
    dev = cls(p)
    out_dev = dev.forward(xp.asarray(x), mask=xp.asarray(mask))
    assert_allclose(to_numpy(out_dev), out, rtol=1e-15, atol=0)
    assert_allclose(to_numpy(dev.backward(xp.asarray(G))), dLdx, rtol=1e-15, atol=0)


@pytest.mark.parametrize("cls", LAYERS)
def test_mask_values_and_output(xp, rng, cls):
    p = 0.4
    x = xp.asarray(_input(cls, rng))
    layer = cls(p, seed=1)
    out = layer.forward(x)
    mask = to_numpy(layer.mask)
    assert set(np.unique(mask)) <= {0.0, 1 / (1 - p)}
    assert_allclose(to_numpy(out), to_numpy(x) * mask, rtol=1e-15, atol=0)
    assert layer.mask.dtype == x.dtype and out.dtype == x.dtype


@pytest.mark.parametrize("cls", LAYERS)
def test_eval_mode_is_identity(xp, rng, cls):
    x = xp.asarray(_input(cls, rng))
    x_copy = x.copy()
    layer = cls(0.5, seed=0).eval()
    out = layer.forward(x)
    assert out is x
    assert_array_equal(to_numpy(x), to_numpy(x_copy))
    g = xp.asarray(rng.standard_normal(x.shape))
    assert layer.backward(g) is g
    # back in train mode it drops again
    layer.train()
    assert np.any(to_numpy(layer.forward(x)) == 0)


@pytest.mark.parametrize("cls", LAYERS)
def test_callers_array_unchanged_in_train_mode(xp, rng, cls):
    x = xp.asarray(_input(cls, rng))
    x_copy = x.copy()
    G = xp.asarray(rng.standard_normal(x.shape))
    G_copy = G.copy()
    layer = cls(0.5, seed=3)
    out = layer.forward(x)
    layer.backward(G)
    assert out is not x
    assert_array_equal(to_numpy(x), to_numpy(x_copy))
    assert_array_equal(to_numpy(G), to_numpy(G_copy))


def test_locked_dropout_mask_shared_across_time(xp, rng):
    B, T, D = 3, 6, 8
    x = rng.standard_normal((B, T, D))
    x = xp.asarray(x + np.sign(x) * 0.1)                   # nonzero: out == 0 means dropped
    layer = LockedDropout(0.5, seed=5)
    out = to_numpy(layer.forward(x))
    assert layer.mask.shape == (B, 1, D)
    dropped = out == 0                                      # (B, T, D)
    assert_array_equal(dropped, np.broadcast_to(dropped[:, :1], dropped.shape))
    assert dropped.any() and not dropped.all()
    # different sequences in the batch get different masks (P(all equal) = 2^-16 per pair)
    assert len({dropped[b, 0].tobytes() for b in range(B)}) > 1


def test_embedding_dropout_zeroes_whole_rows(xp, rng):
    V, D = 40, 6
    W = rng.standard_normal((V, D))
    W = xp.asarray(W + np.sign(W) * 0.1)                   # nonzero: out == 0 means dropped
    layer = EmbeddingDropout(0.3, seed=7)
    out = to_numpy(layer.forward(W))
    W = to_numpy(W)
    row_dropped = np.all(out == 0, axis=1)
    row_kept = np.all(out != 0, axis=1)
    assert np.all(row_dropped | row_kept)                   # never a partly dropped row
    assert row_dropped.any() and row_kept.any()
    assert_allclose(out[row_kept], W[row_kept] / 0.7, rtol=1e-15)
    # backward: gradient rows of dropped words are 0, the rest scaled by 1/(1-p)
    G = rng.standard_normal((V, D))
    dLdW = to_numpy(layer.backward(xp.asarray(G)))
    assert_allclose(dLdW[row_dropped], 0.0, atol=0)
    assert_allclose(dLdW[row_kept], G[row_kept] / 0.7, rtol=1e-15)


@pytest.mark.parametrize("cls", LAYERS)
def test_keep_fraction_is_about_one_minus_p(xp, rng, cls):
    p = 0.3
    x = xp.asarray(_input(cls, rng, big=True).astype(np.float32))
    layer = cls(p, seed=11)
    out = layer.forward(x)
    mask = to_numpy(layer.mask)
    # ~1e5 (2e4 for rows) Bernoulli draws: std of the fraction <= 0.0033, tolerance >= 6 std
    assert abs(np.mean(mask > 0) - (1 - p)) < 0.02
    assert abs(np.mean(mask) - 1.0) < 0.03                  # inverted dropout: E[mask] = 1
    assert abs(float(to_numpy(out).mean()) - float(to_numpy(x).mean())) < 0.05


@pytest.mark.parametrize("cls", LAYERS)
def test_seeded_reproducibility(xp, rng, cls):
    x = xp.asarray(_input(cls, rng))
    a, b = cls(0.5, seed=123), cls(0.5, seed=123)
    outs_a = [to_numpy(a.forward(x)) for _ in range(2)]
    outs_b = [to_numpy(b.forward(x)) for _ in range(2)]
    assert_array_equal(outs_a[0], outs_b[0])               # same seed: the same sequence of masks
    assert_array_equal(outs_a[1], outs_b[1])
    big = xp.ones((64, 4, 64)) if cls is LockedDropout else xp.ones((4096, 4))
    a, c = cls(0.5, seed=123), cls(0.5, seed=124)
    first = to_numpy(a.forward(big))
    assert not np.array_equal(first, to_numpy(a.forward(big)))       # a fresh mask every call
    assert not np.array_equal(first, to_numpy(c.forward(big)))       # another seed, another mask
    # a Generator passed as rng= is used as-is
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    assert_array_equal(to_numpy(cls(0.5, rng=g1).forward(big)), to_numpy(cls(0.5, rng=g2).forward(big)))


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_bad_p_raises(cls, p):
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\)"):
        cls(p)


@pytest.mark.parametrize("cls", LAYERS)
def test_p_zero_keeps_everything(rng, cls):
    x = _input(cls, rng)
    layer = cls(0.0, seed=0)
    out = layer.forward(x)
    assert_allclose(out, x, rtol=0, atol=0)
    assert out is not x


def test_misuse_raises(rng):
    with pytest.raises(ValueError, match="not both"):
        Dropout(0.5, seed=1, rng=np.random.default_rng(1))
    with pytest.raises(RuntimeError, match="before forward"):
        Dropout(0.5).backward(np.ones(3))
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        LockedDropout(0.5).forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(V, D\)"):
        EmbeddingDropout(0.5).forward(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="mask must have shape"):
        Dropout(0.5).forward(np.ones((2, 3)), mask=np.ones((3, 2)))

"""Positional embeddings: the learned table (GPT-2) and the fixed sinusoidal one (Vaswani et al.).

Shapes: T positions, L max_len, D dim. Loss L = sum(P * G), so dL/dP = G.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import Embedding, LearnedPositionalEmbedding, SinusoidalPositionalEncoding


def _vaswani(max_len, dim):
    """PE[pos, 2i] = sin(pos / 10000^(2i/D)), PE[pos, 2i+1] = cos(same), entry by entry."""
    P = np.zeros((max_len, dim))
    for pos in range(max_len):
        for j in range(dim):
            angle = pos / 10000 ** ((j - j % 2) / dim)
            P[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return P


@pytest.mark.parametrize("dim", [1, 2, 7, 16])
def test_sinusoidal_matches_the_formula(rng, dim):
    L = int(rng.integers(5, 40))
    enc = SinusoidalPositionalEncoding(L, dim, dtype=np.float64)
    want = _vaswani(L, dim)
    assert enc.params == {} and enc.parameters() == []
    assert_allclose(enc.forward(L), want, rtol=0, atol=1e-12)
    T = int(rng.integers(1, L))
    offset = int(rng.integers(0, L - T + 1))
    got = enc.forward(T, offset=offset)
    assert got.shape == (T, dim)
    assert_allclose(got, want[offset:offset + T], rtol=0, atol=1e-12)
    ids = rng.integers(0, L, size=(2, 3))
    assert_allclose(enc.forward(ids), want[ids], rtol=0, atol=1e-12)
    assert enc.backward(np.ones((T, dim))) is None
    assert SinusoidalPositionalEncoding(L, dim).forward(3).dtype == np.float32


@pytest.mark.parametrize("cls", [LearnedPositionalEmbedding, SinusoidalPositionalEncoding])
def test_positions_beyond_max_len_raise(cls):
    layer = cls(8, 4)
    layer.forward(8)
    layer.forward(1, offset=7)
    for args, kwargs in (((9,), {}), ((2,), {"offset": 7}), ((0,), {}), ((1,), {"offset": -1}),
                         ((np.array([0, 8]),), {}), ((np.array([[-1]]),), {})):
        with pytest.raises(ValueError, match="max_len is 8"):
            layer.forward(*args, **kwargs)
    with pytest.raises(TypeError, match="integer"):
        layer.forward(np.array([0.0, 1.0]))


def test_learned_is_an_embedding_over_positions(rng):
    L, D = 12, 5
    pos = LearnedPositionalEmbedding(L, D, dtype=np.float64, rng=rng)
    assert isinstance(pos, Embedding) and sorted(pos.params) == ["W"] and pos.params["W"].shape == (L, D)
    W = pos.params["W"]
    assert_allclose(pos.forward(L), W, rtol=0, atol=0)
    assert_allclose(pos.forward(4, offset=3), W[3:7], rtol=0, atol=0)
    ids = np.array([[0, 3, 3], [11, 0, 3]])
    assert_allclose(pos.forward(ids), W[ids], rtol=0, atol=0)


def test_learned_init(rng):
    big = LearnedPositionalEmbedding(400, 50, rng=np.random.default_rng(0))
    assert big.params["W"].dtype == np.float32
    assert abs(float(big.params["W"].std()) - 0.02) < 1e-3           # GPT-2's N(0, 0.02^2)
    plain = LearnedPositionalEmbedding(400, 50, rng=np.random.default_rng(0), init_std=None)
    assert abs(float(plain.params["W"].std()) - 1.0) < 0.02           # Embedding's N(0, 1)
    a = LearnedPositionalEmbedding(10, 3, rng=np.random.default_rng(5))
    b = LearnedPositionalEmbedding(10, 3, rng=np.random.default_rng(5))
    assert_allclose(a.params["W"], b.params["W"], rtol=0, atol=0)     # seeded


@pytest.mark.parametrize("how", ["T", "offset", "repeated ids"])
def test_learned_gradient_matches_finite_differences(rng, how):
    L, D = int(rng.integers(4, 10)), int(rng.integers(1, 5))
    pos = LearnedPositionalEmbedding(L, D, dtype=np.float64, rng=rng, init_std=1.0)
    args = {"T": ((L,), {}), "offset": ((2,), {"offset": L - 2}),
            "repeated ids": ((rng.integers(0, 3, size=(3, 4)),), {})}[how]
    out = pos.forward(*args[0], **args[1])
    G = rng.standard_normal(out.shape)
    assert pos.backward(G) is None

    def loss():
        return float(np.sum(pos.forward(*args[0], **args[1]) * G))

    check_gradient(loss, pos.params["W"], pos.grads["W"].copy(), rtol=1e-6)
    if how == "offset":                                    # rows never used get nothing
        assert not pos.grads["W"][:L - 2].any()


def test_learned_grads_accumulate_and_zero_grad(rng):
    pos = LearnedPositionalEmbedding(6, 3, dtype=np.float64, rng=rng)
    G1, G2 = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    pos.forward(4)
    pos.backward(G1)
    pos.forward(2, offset=1)
    pos.backward(G2)
    want = np.zeros((6, 3))
    want[:4] += G1
    want[1:3] += G2
    assert_allclose(pos.grads["W"], want, rtol=1e-14, atol=0)
    pos.zero_grad()
    assert not pos.grads["W"].any()


def test_device_matches_host(xp, rng):
    with on_host():
        host = LearnedPositionalEmbedding(9, 4, dtype=np.float64, rng=np.random.default_rng(3))
        want = host.forward(5, offset=2)
        host.backward(want * 2)
    dev = LearnedPositionalEmbedding(9, 4, dtype=np.float64, rng=np.random.default_rng(3))
    got = dev.forward(5, offset=2)
    dev.backward(got * 2)
    assert_allclose(to_numpy(got), want, rtol=0, atol=0)
    assert_allclose(to_numpy(dev.grads["W"]), host.grads["W"], rtol=1e-14, atol=0)
    assert_allclose(to_numpy(SinusoidalPositionalEncoding(9, 6, dtype=np.float64).forward(4, offset=3)),
                    _vaswani(9, 6)[3:7], rtol=0, atol=1e-12)

"""The translation model's layers: DecoderBlock (causal self-attention, cross-attention, MLP), the
cross-attention's decoding step, LabelSmoothedCrossEntropy, and models.Translator as a whole, each
backward against central differences in float64 for every input and parameter, random shapes and seeds.

Shapes: B batch, T target positions, S source positions, D d_model, V vocabulary.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from dataset.subwords import BOS, EOS, PAD
from models.translator import Translator
from mytorch.gradcheck import check_gradient, numerical_grad
from mytorch.nn import CrossEntropyLoss, DecoderBlock, LabelSmoothedCrossEntropy, MultiHeadAttention
from mytorch.nn import log_softmax


def _check_params(layer, loss, rng, rtol=1e-6):
    """Every parameter against central differences; a key bias b_k shifts a query's scores alike, which
    softmax ignores: its gradient is exactly 0, checked as such."""
    for name, p, g in layer.named_parameters():
        if name.endswith("b_k"):
            assert np.all(np.abs(g) < 1e-12) and np.all(np.abs(numerical_grad(loss, p)) < 1e-8)
        else:
            check_gradient(loss, p, g.copy(), rtol=rtol, rng=rng)


def _padding(rng, B, S):
    """(B, S) bool, True at each row's padding (every row keeps >= 1 real key)."""
    lengths = rng.integers(1, S + 1, B)
    return np.arange(S)[None, :] >= lengths[:, None]


@pytest.mark.parametrize("seed", range(3))
def test_decoder_block_backward(seed):
    rng = np.random.default_rng(seed)
    B, T, S = (int(n) for n in rng.integers(1, 5, 3))
    D, h = 4 * int(rng.integers(1, 3)), int(rng.choice([1, 2, 4]))
    block = DecoderBlock(D, h, dropout=0.0, d_ff=int(rng.integers(3, 9)), dtype=np.float64, rng=rng)
    for _, p, _ in block.named_parameters():
        p += 0.1 * rng.standard_normal(p.shape)                    # no all-zero biases or unit gains
    X, M = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D))
    pad = _padding(rng, B, S)
    G = rng.standard_normal((B, T, D))
    loss = lambda: float(np.sum(block.forward(X, M, pad) * G))                    # noqa: E731
    block.forward(X, M, pad)
    dX, dM = block.backward(G)
    assert dX.shape == X.shape and dM.shape == M.shape
    check_gradient(loss, X, dX)
    check_gradient(loss, M, dM)
    assert np.all(dM[pad] == 0)                                    # padded memory rows are never read
    _check_params(block, loss, rng)


def test_decoder_block_is_causal_and_hides_padding(rng):
    D = 8
    block = DecoderBlock(D, 2, dtype=np.float64, rng=rng)
    X, M = rng.standard_normal((2, 5, D)), rng.standard_normal((2, 4, D))
    pad = np.array([[False, False, True, True], [False, False, False, False]])
    Y = block.forward(X, M, pad)
    X2, M2 = X.copy(), M.copy()
    X2[:, 3:] += 1.0                                               # later targets change
    M2[0, 2:] += 5.0                                               # padded source rows change
    Y2 = block.forward(X2, M2, pad)
    assert_allclose(Y2[:, :3], Y[:, :3], atol=1e-12)
    assert not np.allclose(Y2[:, 3:], Y[:, 3:])


@pytest.mark.parametrize("seed", range(2))
def test_decoder_block_step_equals_full_forward(seed):
    rng = np.random.default_rng(seed)
    D, T, S, B = 8, 6, 5, 3
    block = DecoderBlock(D, 2, dtype=np.float64, rng=rng)
    X, M = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D))
    pad = _padding(rng, B, S)
    full = block.forward(X, M, pad)
    caches = {"self": {}, "cross": {}}
    steps = [block.forward_step(X[:, t:t + 1], caches, M if t == 0 else None, pad) for t in range(T)]
    assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-10, atol=1e-12)


def test_cross_attention_step_needs_memory_first(rng):
    attn = MultiHeadAttention(8, 2, causal=False, rng=rng)
    with pytest.raises(ValueError, match="first call needs the memory"):
        attn.forward_memory_step(np.zeros((1, 1, 8), np.float32), {})


@pytest.mark.parametrize("seed", range(3))
def test_label_smoothed_cross_entropy(seed):
    rng = np.random.default_rng(seed)
    N, C = int(rng.integers(2, 9)), int(rng.integers(2, 7))
    eps = float(rng.uniform(0.05, 0.4))
    Z = 3 * rng.standard_normal((N, C))
    y = rng.integers(1, C, N)
    y[rng.random(N) < 0.3] = 0                                     # 0 = the ignored id
    y[0] = 1                                                       # at least one row counts
    crit = LabelSmoothedCrossEntropy(eps, ignore_index=0)
    loss = crit.forward(Z.copy(), y)
    keep = y != 0
    logp = log_softmax(Z)
    q = np.full((N, C), eps / C)
    q[np.arange(N), y] += 1 - eps
    want = -(q * logp).sum(axis=1)[keep].mean()                    # the definition, by hand
    assert loss == pytest.approx(want, rel=1e-12)
    assert crit.nll == pytest.approx(-logp[np.arange(N), y][keep].sum(), rel=1e-12)
    assert crit.count == keep.sum()
    dZ = crit.backward()
    assert np.all(dZ[~keep] == 0)
    buffer = Z.copy()                                              # in place: the logits become dZ
    inplace = LabelSmoothedCrossEntropy(eps, ignore_index=0, inplace=True)
    assert inplace.forward(buffer, y) == loss and inplace.backward() is buffer
    assert_allclose(buffer, dZ, rtol=0, atol=0)
    check_gradient(lambda: LabelSmoothedCrossEntropy(eps, ignore_index=0).forward(Z.copy(), y), Z, dZ)


def test_label_smoothing_zero_is_cross_entropy(rng):
    Z, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    a, b = LabelSmoothedCrossEntropy(0.0), CrossEntropyLoss()
    assert a.forward(Z.copy(), y) == pytest.approx(b.forward(Z.copy(), y), rel=1e-12)
    assert_allclose(a.backward(), b.backward(), rtol=1e-12)
    with pytest.raises(ValueError, match="smoothing must lie in"):
        LabelSmoothedCrossEntropy(1.0)


def _batch(rng, V, B, S, T):
    """A padded batch as dataset.pairs makes it: x = ids + EOS, y = BOS + ids + EOS, PAD after."""
    x = np.full((B, S), PAD, np.int32)
    y = np.full((B, T + 1), PAD, np.int32)
    for b in range(B):
        ls, lt = int(rng.integers(1, S)), int(rng.integers(1, T))
        x[b, :ls] = rng.integers(EOS + 1, V, ls)
        x[b, ls] = EOS
        y[b, 0], y[b, 1:lt + 1], y[b, lt + 1] = BOS, rng.integers(EOS + 1, V, lt), EOS
    return x, y


@pytest.mark.parametrize("tied", [True, False])
def test_translator_backward(tied):
    rng = np.random.default_rng(7 + tied)
    V, D = 11, 8
    model = Translator(V, d_model=D, nhead=2, enc_layers=2, dec_layers=2, d_ff=6, dropout=0.0, tied=tied,
                       max_len=16, label_smoothing=0.1, seed=3, dtype=np.float64)
    for _, p, _ in model.named_parameters():
        p += 0.1 * rng.standard_normal(p.shape)
    x, y = _batch(rng, V, 3, 5, 4)
    loss = lambda: model.forward_loss(x, y)[0]                     # noqa: E731
    model.zero_grad()
    loss()
    model.backward_loss()
    _check_params(model, loss, rng)
    assert (model.out.params["W"] is model.src_embed.params["W"]) == tied      # tied: one matrix
    assert model.tgt_embed.params["W"] is model.src_embed.params["W"]            # a joint vocabulary

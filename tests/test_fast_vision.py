"""mytorch.fast's Transformer twins (attention, GELU, LayerNorm, the block) and the batch split,
each against the plain code it replaces.

Shapes: B batch, T positions, D d_model, F the MLP's width.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from models import ViT
from mytorch import fast, nn
from mytorch.fast import activation, attention, block, layernorm, split


def _twin_run(cls, X, dY, make, scale=1.0, **kwargs):
    layer = make(cls)
    Y = layer.forward(X * scale, **kwargs)
    dX = layer.backward(dY)
    return [Y, dX] + [layer.grads[k] for k in sorted(layer.grads)]


def _padding(rng, B, T):
    """A (B, T) key padding mask: each row's last 0 .. T - 1 keys hidden (every row keeps one)."""
    keep = rng.integers(1, T + 1, size=B)
    return np.arange(T)[None, :] >= keep[:, None]


@pytest.mark.parametrize("big_scores", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_fast_attention_is_the_plain_layer(rng, big_scores, padded):
    """The fused self-attention: forward, dX and every parameter's gradient, with and without a key
    padding mask; with scores above SAFE_EXP (big inputs) the row max is subtracted as the plain layer
    does, without it skipped."""
    B, T, h = rng.integers(1, 4), rng.integers(2, 9), rng.integers(1, 4)
    D = h * rng.integers(1, 5)
    X, dY = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
    mask = _padding(rng, B, T) if padded else None
    if padded:
        mask[0, 1:] = True                                       # a row that keeps a single key
    scale = 40.0 if big_scores else 1.0
    make = lambda cls: cls(D, h, causal=False, dtype=np.float64, rng=np.random.default_rng(3))   # noqa: E731
    fast_layer = make(attention.MultiHeadAttention)
    fast_layer.forward(X * scale, key_padding_mask=mask)
    assert fast_layer.fused and (fast_layer._score_bound(np) > attention.SAFE_EXP) == big_scores
    for a, b in zip(_twin_run(nn.MultiHeadAttention, X, dY, make, scale, key_padding_mask=mask),
                    _twin_run(attention.MultiHeadAttention, X, dY, make, scale, key_padding_mask=mask)):
        assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    if padded:                                                   # the hidden keys get no attention
        assert np.all(fast_layer.A_sig.transpose(0, 3, 1, 2)[mask] == 0)   # (B, S, h, T)[hidden keys]


def test_fast_attention_takes_the_plain_path_for_cross_attention_causal_and_empty_rows(rng):
    B, T, D = 2, 5, 8
    X, M, dY = rng.standard_normal((B, T, D)), rng.standard_normal((B, 3, D)), rng.standard_normal((B, T, D))
    empty = np.zeros((B, T), dtype=bool)
    empty[1] = True                                              # a row with every key hidden
    for kwargs in (dict(key_padding_mask=empty), dict(memory=M)):
        outs = []
        for cls in (nn.MultiHeadAttention, attention.MultiHeadAttention):
            layer = cls(D, 2, causal=False, dtype=np.float64, rng=np.random.default_rng(1))
            outs.append(layer.forward(X, **kwargs))
            assert not getattr(layer, "fused", False)
        assert_allclose(*outs, rtol=1e-12)
    causal = attention.MultiHeadAttention(D, 2, causal=True, dtype=np.float64, rng=np.random.default_rng(1))
    plain = nn.MultiHeadAttention(D, 2, causal=True, dtype=np.float64, rng=np.random.default_rng(1))
    assert_allclose(causal.forward(X), plain.forward(X), rtol=1e-12)
    assert_allclose(causal.backward(dY), plain.backward(dY), rtol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fast_gelu_is_the_plain_gelu(rng, dtype, tol):
    X = (rng.standard_normal((3, 4, 7)) * 3).astype(dtype)
    dY = rng.standard_normal(X.shape).astype(dtype)
    outs = []
    for cls in (nn.GELU, activation.GELU):
        g = cls("tanh")
        outs.append((g.forward(X), g.backward(dY)))
        assert outs[-1][0].dtype == dtype and outs[-1][1].dtype == dtype
    for a, b in zip(*outs):
        assert_allclose(a, b, rtol=tol, atol=tol)
    evaluating = activation.GELU("tanh").eval()
    assert_allclose(evaluating.forward(X), outs[0][0], rtol=tol, atol=tol)
    with pytest.raises(RuntimeError, match="eval mode"):
        evaluating.backward(dY)
    exact = activation.GELU("none")
    assert_allclose(exact.forward(X), nn.GELU("none").forward(X), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_gelu_tails_are_finite_and_the_plain_limits(dtype):
    """exp(-2u) overflows far left (float32 past x ~ -10): s = 0, no warning, no NaN; far right s = 1."""
    X = np.array([-1e4, -300.0, -60.0, -12.0, 0.0, 12.0, 60.0, 1e4], dtype=dtype)
    g = activation.GELU("tanh")
    with np.errstate(all="raise"):
        Y = g.forward(X)
        dX = g.backward(np.ones_like(X))
    assert np.all(np.isfinite(Y)) and np.all(np.isfinite(dX))
    assert_allclose(Y, np.where(X > 0, X, 0.0), atol=1e-30)
    assert_allclose(dX, np.select([X > 0, X == 0], [1.0, 0.5], 0.0), atol=1e-30)         # GELU'(0) = 1/2


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-11), (np.float32, 2e-5)])
def test_fast_layernorm_is_the_plain_layernorm(rng, dtype, tol):
    D = int(rng.integers(2, 40))
    X = (rng.standard_normal((2, 5, D)) * 4 + 1).astype(dtype)
    dY = rng.standard_normal(X.shape).astype(dtype)

    def make(cls):
        ln = cls(D, dtype=dtype)
        ln.params["gamma"][...] = np.linspace(0.5, 1.5, D)
        ln.params["beta"][...] = np.linspace(-1, 1, D)
        return ln
    a, b = _twin_run(nn.LayerNorm, X, dY, make), _twin_run(layernorm.LayerNorm, X, dY, make)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype == dtype
        assert_allclose(u, v, rtol=tol, atol=tol)


def test_the_fast_block_is_built_from_the_twins_each_as_its_switch_stands(monkeypatch):
    for name in ("BLOCK", "ATTENTION", "GELU", "LAYERNORM"):
        monkeypatch.delenv(f"MYTORCH_FAST_{name}", raising=False)
    monkeypatch.delenv("MYTORCH_FAST", raising=False)
    assert fast.choose(nn.TransformerBlock) is block.TransformerBlock
    b = block.TransformerBlock(8, 2, causal=False)
    assert type(b.attn) is attention.MultiHeadAttention and type(b.act) is activation.GELU
    assert type(b.ln1) is layernorm.LayerNorm and type(b.ln2) is layernorm.LayerNorm
    monkeypatch.setenv("MYTORCH_FAST_GELU", "0")
    b = block.TransformerBlock(8, 2, causal=False)
    assert type(b.act) is nn.GELU and type(b.attn) is attention.MultiHeadAttention
    monkeypatch.setenv("MYTORCH_FAST_BLOCK", "0")
    assert fast.choose(nn.TransformerBlock) is nn.TransformerBlock
    names = lambda m: [(n, p.shape) for n, p, _ in m.named_parameters()]       # noqa: E731
    assert names(block.TransformerBlock(8, 2)) == names(nn.TransformerBlock(8, 2))


def test_a_vit_of_fast_blocks_trains_as_the_plain_one(rng, monkeypatch):
    images = rng.integers(0, 256, (6, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 3, 6)
    outs = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MYTORCH_FAST", switch)
        m = ViT(image_size=8, patch=4, num_classes=3, d_model=8, nhead=2, nlayers=2, d_ff=16, seed=4,
                dtype=np.float64)
        m.head.params["W"][...] = np.random.default_rng(0).standard_normal(m.head.params["W"].shape)
        loss, _ = m.forward_loss(images, labels)
        m.backward_loss()
        outs.append([loss] + [g.copy() for _, _, g in m.named_parameters()])
    for a, b in zip(*outs):
        assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("batch", [50, 37])
def test_the_batch_split_step_gives_the_whole_batchs_loss_and_gradients(rng, batch, monkeypatch):
    """Two and three threads (50 rows: 3 shares of at least MIN_ROWS; 37 rows: 2 shares, unequal), against
    the model on the whole batch."""
    images = rng.integers(0, 256, (batch, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 3, batch)
    model = ViT(image_size=8, patch=4, num_classes=3, d_model=8, nhead=2, nlayers=2, d_ff=16, seed=4,
                dtype=np.float64)
    model.head.params["W"][...] = np.random.default_rng(0).standard_normal(model.head.params["W"].shape)
    loss, _ = model.forward_loss(images, labels)
    model.backward_loss()
    want = [loss] + [g.copy() for _, _, g in model.named_parameters()]
    for k in (2, 3):
        step = split.BatchSplit(model, k)
        step.zero_grad()
        loss, state = step.forward_loss(images, labels)
        step.backward_loss()
        assert state is None and len(step.shares) == min(k, batch // split.MIN_ROWS)
        got = [loss] + [g for _, _, g in model.named_parameters()]
        for a, b in zip(want, got):
            assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        for (_, p, _), (_, q, g) in zip(model.named_parameters(), step.replicas[1].named_parameters()):
            assert p is q and g is not p                     # the weights shared, the gradients not


def test_the_split_is_chosen_only_where_it_applies(monkeypatch):
    monkeypatch.setenv("MYTORCH_THREADS", "2")
    monkeypatch.delenv("MYTORCH_FAST", raising=False)
    monkeypatch.delenv("MYTORCH_FAST_SPLIT", raising=False)
    vit = ViT(image_size=8, patch=4, num_classes=3, d_model=8, nhead=2, nlayers=1, d_ff=16)
    assert isinstance(fast.batch_split(vit), split.BatchSplit)
    monkeypatch.setenv("MYTORCH_FAST_SPLIT", "0")
    assert fast.batch_split(vit) is vit
    monkeypatch.delenv("MYTORCH_FAST_SPLIT")
    monkeypatch.setenv("MYTORCH_THREADS", "1")
    assert fast.batch_split(vit) is vit
    with pytest.raises(ValueError, match="carry no state"):
        split.BatchSplit(vit, 2).forward_loss(np.zeros((32, 8, 8), np.uint8), np.zeros(32, int), state=[1])


def test_split_dropout_masks_come_from_the_models_own_stream(rng):
    """With dropout, each step draws the replicas' masks from the model's dropout Generator, so a run
    resumed from that Generator's saved state (what the trainer saves) takes the same next step."""
    images = rng.integers(0, 256, (40, 8, 8)).astype(np.uint8)
    labels = rng.integers(0, 3, 40)

    def model():
        m = ViT(image_size=8, patch=4, num_classes=3, d_model=8, nhead=2, nlayers=1, d_ff=16, seed=4,
                dropout=0.3, dtype=np.float64)
        m.head.params["W"][...] = np.random.default_rng(0).standard_normal(m.head.params["W"].shape)
        return m
    first = model()
    step = split.BatchSplit(first, 2)
    one = step.forward_loss(images, labels)[0]
    saved = first.drops[0].rng.bit_generator.state
    two = step.forward_loss(images, labels)[0]
    assert one != two                                             # new masks each step
    resumed = model()
    for d in resumed.drops:
        d.rng.bit_generator.state = saved
    assert split.BatchSplit(resumed, 2).forward_loss(images, labels)[0] == two

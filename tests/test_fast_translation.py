"""The fast tier under models.Translator: the decoder block of twins computes the plain one's loss and
gradients, and a batch split over threads weighs each share by its target tokens (the loss is a mean
over tokens, not rows), so the split step's gradients are the whole batch's."""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from dataset.subwords import BOS, EOS, PAD
from models import Translator
from mytorch import fast, nn
from mytorch.fast import block, split


def _batch(rng, V, B, S, T):
    x = np.full((B, S), PAD, np.int32)
    y = np.full((B, T + 1), PAD, np.int32)
    for b in range(B):
        ls, lt = int(rng.integers(1, S)), int(rng.integers(1, T))
        x[b, :ls], x[b, ls] = rng.integers(EOS + 1, V, ls), EOS
        y[b, 0], y[b, 1:lt + 1], y[b, lt + 1] = BOS, rng.integers(EOS + 1, V, lt), EOS
    return x, y


def _model(**kw):
    m = Translator(13, d_model=8, nhead=2, enc_layers=2, dec_layers=2, d_ff=12, dropout=0.0, max_len=20,
                   seed=5, dtype=np.float64, **kw)
    rng = np.random.default_rng(1)
    for _, p, _ in m.named_parameters():
        p += 0.1 * rng.standard_normal(p.shape)
    return m


def _loss_and_grads(model, x, y):
    model.zero_grad()
    loss, _ = model.forward_loss(x, y)
    model.backward_loss()
    return [loss] + [g.copy() for _, _, g in model.named_parameters()]


def _split_loss_and_grads(model, x, y, k):
    step = split.BatchSplit(model, k)
    step.zero_grad()
    loss, _ = step.forward_loss(x, y)
    step.backward_loss()
    return [loss] + [g for _, _, g in model.named_parameters()]


def test_the_fast_decoder_block_is_built_from_the_twins(monkeypatch):
    monkeypatch.delenv("MYTORCH_FAST", raising=False)
    monkeypatch.delenv("MYTORCH_FAST_BLOCK", raising=False)
    assert fast.choose(nn.DecoderBlock) is block.DecoderBlock
    names = lambda m: [(n, p.shape) for n, p, _ in m.named_parameters()]       # noqa: E731
    assert names(block.DecoderBlock(8, 2)) == names(nn.DecoderBlock(8, 2))
    monkeypatch.setenv("MYTORCH_FAST_BLOCK", "0")
    assert fast.choose(nn.DecoderBlock) is nn.DecoderBlock


def test_a_translator_of_fast_blocks_computes_the_plain_ones_loss_and_gradients(rng, monkeypatch):
    x, y = _batch(rng, 13, 4, 6, 5)
    outs = []
    for switch in ("1", "0"):
        monkeypatch.setenv("MYTORCH_FAST", switch)
        outs.append(_loss_and_grads(_model(), x, y))
    for a, b in zip(*outs):
        assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_the_split_step_weighs_shares_by_target_tokens(rng, k):
    x, y = _batch(rng, 13, 3 * split.MIN_ROWS, 6, 7)
    y[:split.MIN_ROWS, 3:] = PAD                              # the first share's targets are short
    y[:split.MIN_ROWS, 2] = EOS
    model = _model()
    want = _loss_and_grads(model, x, y)
    for a, b in zip(want, _split_loss_and_grads(model, x, y, k)):
        assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_the_split_step_is_the_whole_batchs_every_time_in_float32(rng):
    """Two threads run backward at once: a scratch buffer shared between them (backend.matmul_accumulate's,
    once) made the gradients differ from run to run. float32 at a realistic width, a fresh split each time
    (the threads then run in step, on the same shapes)."""
    x, y = _batch(rng, 40, 32, 12, 12)
    for seed in range(6):
        model = Translator(40, d_model=32, nhead=2, enc_layers=1, dec_layers=1, d_ff=64, dropout=0.0,
                           seed=seed)
        want = _loss_and_grads(model, x, y)
        for a, b in zip(want, _split_loss_and_grads(model, x, y, 2)):
            assert_allclose(a, b, rtol=2e-4, atol=2e-6)

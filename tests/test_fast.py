"""mytorch.fast: the switch, and each fast twin against the plain code it replaces.

Shapes: N rows, C classes, I features, B batch, H hidden size.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mytorch import fast, nn
from mytorch.fast import loss as fast_loss
from mytorch.fast import lstm as fast_lstm
from models import LanguageModel


def test_every_piece_is_on_by_default_and_each_switch_turns_one_off(monkeypatch):
    for name in fast.SWITCHES:
        monkeypatch.delenv(f"MYTORCH_FAST_{name.upper()}", raising=False)
    monkeypatch.delenv("MYTORCH_FAST", raising=False)
    assert all(fast.settings().values())
    assert fast.choose(nn.LSTMCell) is fast_lstm.LSTMCell
    assert fast.choose(nn.LinearCrossEntropyLoss) is fast_loss.LinearCrossEntropyLoss
    assert fast.choose(nn.Linear) is nn.Linear                       # no twin: the class itself
    monkeypatch.setenv("MYTORCH_FAST_LOSS", "0")
    assert fast.choose(nn.LinearCrossEntropyLoss) is nn.LinearCrossEntropyLoss
    assert fast.choose(nn.LSTMCell) is fast_lstm.LSTMCell
    monkeypatch.setenv("MYTORCH_FAST", "0")
    assert not any(fast.settings().values())
    assert fast.choose(nn.LSTMCell) is nn.LSTMCell
    with pytest.raises(ValueError, match="unknown fast piece"):
        fast.enabled("adam2")


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fast_loss_gives_the_plain_loss_and_gradients(dtype, tol, rng, monkeypatch):
    """Big enough for the row-parallel path (N x C > 2^18 elements) on three threads."""
    monkeypatch.setenv("MYTORCH_THREADS", "3")
    N, I, C = 96, 8, 4001
    X = rng.standard_normal((N, I)).astype(dtype)
    y = rng.integers(0, C, N)
    blocks = []
    real = fast_loss.parallel_rows
    monkeypatch.setattr(fast_loss, "parallel_rows", lambda fn, *a, **k: blocks.append(1) or real(fn, *a, **k))
    out = {}
    for cls in (nn.LinearCrossEntropyLoss, fast_loss.LinearCrossEntropyLoss):
        lin = nn.Linear(I, C, dtype=dtype, rng=np.random.default_rng(0))
        lin.params["b"][...] = np.random.default_rng(1).standard_normal(C) * 3
        head = cls(lin)
        loss = head.forward(X, y)
        dX = head.backward(0.7)
        out[cls] = [np.array(loss), dX, lin.grads["W"], lin.grads["b"]]
    assert blocks                                                    # the fast pass ran
    for a, b in zip(*out.values()):
        assert_allclose(a, b, rtol=tol, atol=tol)


def test_fast_lstm_cell_on_numpy_is_the_plain_cell(rng):
    x = rng.standard_normal((3, 4, 5))
    outs = []
    for cls in (nn.LSTMCell, fast_lstm.LSTMCell):
        cell = cls(5, 6, dtype=np.float64, rng=np.random.default_rng(2))
        state, hs = None, []
        for t in range(4):
            state = cell.forward(x[:, t], state)
            hs.append(state[0])
        dx, dh, dc = cell.backward(np.ones_like(state[0]))
        outs.append(hs + [dx, dh, dc] + list(cell.grads.values()))
    for a, b in zip(*outs):
        assert_array_equal(a, b)


def test_the_model_trains_the_same_with_every_speed_up_off(rng, monkeypatch):
    """One training step's loss and gradients, fast tier on and off."""
    ids, targets = rng.integers(0, 50, (4, 6)), rng.integers(0, 50, (4, 6))
    runs = []
    for off in ("1", "0"):
        monkeypatch.setenv("MYTORCH_FAST", off)
        model = LanguageModel(50, emsize=8, nhid=9, nlayers=2, tied=False, seed=3, dtype=np.float64)
        assert isinstance(model.cells[0], fast_lstm.LSTMCell) == (off == "1")
        loss, _ = model.forward_loss(ids, targets)
        model.backward_loss()
        runs.append([np.array(loss)] + [g.copy() for _, _, g in model.named_parameters()])
    for a, b in zip(*runs):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)

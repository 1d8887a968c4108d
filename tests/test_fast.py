"""mytorch.fast: the switch, and each fast twin against the plain code it replaces.

Shapes: N rows, C classes, I features, B batch, T time, H hidden size.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mytorch import backend, fast, nn
from mytorch.fast import loss as fast_loss
from mytorch.fast import lstm as fast_lstm
from models import LanguageModel


def test_every_piece_is_on_by_default_and_each_switch_turns_one_off(monkeypatch):
    for name in fast.SWITCHES:
        monkeypatch.delenv(f"MYTORCH_FAST_{name.upper()}", raising=False)
    monkeypatch.delenv("MYTORCH_FAST", raising=False)
    assert all(fast.settings().values())
    assert fast.choose(nn.LSTMCell) is fast_lstm.LSTMCell
    assert fast.choose(nn.LSTM) is fast_lstm.LSTM
    assert fast.choose(nn.LinearCrossEntropyLoss) is fast_loss.LinearCrossEntropyLoss
    assert fast.choose(nn.Linear) is nn.Linear                       # no twin: the class itself
    monkeypatch.setenv("MYTORCH_FAST_LOSS", "0")
    assert fast.choose(nn.LinearCrossEntropyLoss) is nn.LinearCrossEntropyLoss
    assert fast.choose(nn.LSTMCell) is fast_lstm.LSTMCell
    monkeypatch.setenv("MYTORCH_FAST_LSTM", "0")
    assert fast.choose(nn.LSTM) is nn.LSTM and fast.choose(nn.LSTMCell) is nn.LSTMCell
    monkeypatch.delenv("MYTORCH_FAST_LSTM")
    assert fast.choose(nn.LSTM) is fast_lstm.LSTM
    monkeypatch.setenv("MYTORCH_FAST", "0")
    assert not any(fast.settings().values())
    assert fast.choose(nn.LSTMCell) is nn.LSTMCell
    assert fast.choose(nn.LSTM) is nn.LSTM
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


def _lstm_run(cls, xp, dtype, X, state, G, dstate):
    """forward + backward of a fresh cls layer (same seed every time) -> host arrays of everything."""
    layer = cls(X.shape[-1], G.shape[-1], dtype=dtype, rng=np.random.default_rng(2))
    Hs, (hT, cT) = layer.forward(xp.asarray(X), tuple(xp.asarray(a) for a in state))
    dX, (dh0, dc0) = layer.backward(xp.asarray(G), tuple(xp.asarray(a) for a in dstate))
    return [backend.to_numpy(a) for a in (Hs, hT, cT, dX, dh0, dc0, *layer.grads.values())]


def _lstm_data(rng, dtype, B=3, T=5, I=4, H=6):
    X, G = rng.standard_normal((B, T, I)) * 2, rng.standard_normal((B, T, H))
    state = (rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    dstate = (rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    return [a.astype(dtype) for a in (X, *state, G, *dstate)]


def test_fast_lstm_on_numpy_is_the_plain_lstm(rng):
    X, h0, c0, G, dh, dc = _lstm_data(rng, np.float64)
    plain, twin = (_lstm_run(cls, np, np.float64, X, (h0, c0), G, (dh, dc))
                   for cls in (nn.LSTM, fast_lstm.LSTM))
    assert len(plain) == 10
    for a, b in zip(plain, twin):
        assert_array_equal(a, b)


def test_fast_lstm_runs_its_time_loops_under_recurrence_threads(rng, monkeypatch):
    """Both time loops enter recurrence_threads with one step's (B, H) x (H, 4H) size; nothing else does."""
    B, T, I, H = 3, 4, 5, 2
    entered, inside = [], []
    real = fast.recurrence_threads
    monkeypatch.setattr(fast, "recurrence_threads", lambda macs: entered.append(macs) or real(macs))
    layer = fast_lstm.LSTM(I, H, dtype=np.float64, rng=rng)
    for name in ("cell_update", "cell_update_backward"):    # every step runs inside the region
        fn = getattr(layer, name)
        monkeypatch.setattr(layer, name, lambda *a, fn=fn: inside.append(len(entered)) or fn(*a))
    layer.forward(rng.standard_normal((B, T, I)))
    assert entered == [B * H * 4 * H] and inside == [1] * T
    layer.backward(rng.standard_normal((B, T, H)))
    assert entered == [B * H * 4 * H] * 2 and inside == [1] * T + [2] * T
    nn.LSTM(I, H, rng=rng).forward(rng.standard_normal((B, T, I)))
    assert len(entered) == 2                                     # the plain layer never does


@pytest.mark.gpu
@pytest.mark.skipif(not backend.cupy_status()[0], reason=backend.cupy_status()[1])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fast_lstm_on_cupy_matches_the_plain_lstm_on_numpy(rng, dtype, tol, monkeypatch):
    """The twin's fused kernels on the GPU against the plain layer on the host, each kernel once a step."""
    from mytorch.fast import kernels
    X, h0, c0, G, dh, dc = _lstm_data(rng, dtype)
    host = _lstm_run(nn.LSTM, np, dtype, X, (h0, c0), G, (dh, dc))
    calls = []
    for name in ("lstm_step_forward", "lstm_step_backward"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    backend.set_backend("cupy")
    try:
        dev = _lstm_run(fast_lstm.LSTM, backend.xp(), dtype, X, (h0, c0), G, (dh, dc))
    finally:
        backend.set_backend("numpy")
    for a, b in zip(dev, host):
        assert a.dtype == dtype
        assert_allclose(a, b, rtol=tol, atol=tol)
    T = X.shape[1]
    assert calls.count("lstm_step_forward") == T and calls.count("lstm_step_backward") == T


def test_the_model_trains_the_same_with_every_speed_up_off(rng, monkeypatch):
    """One training step's loss and gradients, fast tier on and off."""
    ids, targets = rng.integers(0, 50, (4, 6)), rng.integers(0, 50, (4, 6))
    runs = []
    for off in ("1", "0"):
        monkeypatch.setenv("MYTORCH_FAST", off)
        model = LanguageModel(50, emsize=8, nhid=9, nlayers=2, tied=False, seed=3, dtype=np.float64)
        assert isinstance(model.layers[0], fast_lstm.LSTM) == (off == "1")
        loss, _ = model.forward_loss(ids, targets)
        model.backward_loss()
        runs.append([np.array(loss)] + [g.copy() for _, _, g in model.named_parameters()])
    for a, b in zip(*runs):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14)

"""LSTMCell: one step, BPTT through T steps driven by the caller, and reuse.

Shapes: B batch, T time, I input, H hidden, 4H stacked gates (i, f, g, o).
Gradients against central differences in float64; the forward against a naive
reference written here from PyTorch's torch.nn.LSTMCell formulas (torch itself
is not a dependency). nn.LSTM, the sequence layer, is tested in test_lstm_layer.py.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import LSTMCell

PARAMS = ("W_ih", "W_hh", "b_ih", "b_hh")


def _reference_step(x, h, c, W_ih, W_hh, b_ih, b_hh):
    """torch.nn.LSTMCell, written out: gates in the order i, f, g, o."""
    x, h, c = (np.asarray(a, np.float64) for a in (x, h, c))
    gates = x @ W_ih.T.astype(np.float64) + b_ih + h @ W_hh.T.astype(np.float64) + b_hh
    a_i, a_f, a_g, a_o = np.split(gates, 4, axis=1)
    i = 1.0 / (1.0 + np.exp(-a_i))
    f = 1.0 / (1.0 + np.exp(-a_f))
    g = np.tanh(a_g)
    o = 1.0 / (1.0 + np.exp(-a_o))
    c_new = f * c + i * g
    return o * np.tanh(c_new), c_new


def _sizes(rng):
    return int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 4))  # B, I, H


def _cell(I, H, rng, dtype=np.float64):
    return LSTMCell(I, H, dtype=dtype, rng=rng)


def _copy_weights(dst, src):
    for name in PARAMS:
        dst.params[name][...] = src.params[name]


def _params64(cell):
    return [to_numpy(cell.params[n]).astype(np.float64) for n in PARAMS]


def _run_sequence(cell, X, h0, c0, G, Gc):
    """Per-step forward, then BPTT in reverse: X (T, B, I), G (T, B, H), Gc (B, H).

    L = sum_t sum(h_t * G_t) + sum(c_T * Gc). Returns hs, c_T, dX, dh0, dc0.
    """
    T = X.shape[0]
    state, hs = (h0, c0), []
    for t in range(T):
        state = cell.forward(X[t], state)
        hs.append(state[0])
    dX = np.zeros_like(X)
    dh, dc = np.zeros_like(G[0]), Gc
    for t in reversed(range(T)):
        dX[t], dh, dc = cell.backward(G[t] + dh, dc)
    return np.stack(hs), state[1], dX, dh, dc


def _sequence_loss(cell, X, h0, c0, G, Gc):
    state = (h0, c0)
    loss = 0.0
    for t in range(X.shape[0]):
        state = cell.forward(X[t], state, cache=False)
        loss += float(np.sum(state[0] * G[t]))
    return loss + float(np.sum(state[1] * Gc))


def test_param_layout_and_init_are_torchs(rng):
    I, H = 7, 5
    cell = LSTMCell(I, H, rng=rng)
    shapes = {"W_ih": (4 * H, I), "W_hh": (4 * H, H), "b_ih": (4 * H,), "b_hh": (4 * H,)}
    assert {k: v.shape for k, v in cell.params.items()} == shapes
    assert {k: v.shape for k, v in cell.grads.items()} == shapes
    k = 1 / np.sqrt(H)
    for p in cell.params.values():
        assert p.dtype == np.float32 and np.abs(p).max() <= k


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_forward_matches_torch_formula(rng, dtype, rtol):
    B, I, H = 3, 4, 5
    cell = _cell(I, H, rng, dtype)
    # bigger weights than the init so every gate saturates somewhere
    for name in PARAMS:
        cell.params[name][...] = (rng.standard_normal(cell.params[name].shape) * 2).astype(dtype)
    x = rng.standard_normal((B, I)).astype(dtype)
    h, c = (rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    h1, c1 = cell.forward(x, (h, c))
    assert h1.dtype == dtype and c1.dtype == dtype
    rh, rc = _reference_step(x, h, c, *_params64(cell))
    assert_allclose(h1, rh, rtol=rtol, atol=rtol)
    assert_allclose(c1, rc, rtol=rtol, atol=rtol)


def test_single_step_gradients_match_finite_differences(rng):
    B, I, H = _sizes(rng)
    cell = _cell(I, H, rng)
    x = rng.standard_normal((B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    Gh, Gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    cell.forward(x, (h0, c0))
    dx, dh0, dc0 = cell.backward(Gh, Gc)
    assert dx.shape == x.shape and dh0.shape == h0.shape and dc0.shape == c0.shape

    def f():
        h1, c1 = cell.forward(x, (h0, c0), cache=False)
        return float(np.sum(h1 * Gh) + np.sum(c1 * Gc))

    check_gradient(f, x, dx, rtol=1e-6)
    check_gradient(f, h0, dh0, rtol=1e-6)
    check_gradient(f, c0, dc0, rtol=1e-6)
    for name in PARAMS:
        check_gradient(f, cell.params[name], cell.grads[name].copy(), rtol=1e-6)


def test_single_step_without_dc(rng):
    """backward(dh) with dc=None means no gradient arrives at c' from above."""
    B, I, H = 2, 3, 4
    cell = _cell(I, H, rng)
    x, h0, c0 = rng.standard_normal((B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    Gh = rng.standard_normal((B, H))
    cell.forward(x, (h0, c0))
    dx, dh0, dc0 = cell.backward(Gh)

    def f():
        return float(np.sum(cell.forward(x, (h0, c0), cache=False)[0] * Gh))

    check_gradient(f, x, dx, rtol=1e-6)
    check_gradient(f, c0, dc0, rtol=1e-6)
    check_gradient(f, cell.params["W_hh"], cell.grads["W_hh"].copy(), rtol=1e-6)


@pytest.mark.parametrize("T", [1, "random"])
def test_bptt_gradients_match_finite_differences(rng, T):
    T = int(rng.integers(1, 6)) if T == "random" else T
    B, I, H = _sizes(rng)
    cell = _cell(I, H, rng)
    X = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    G, Gc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    hs, cT, dX, dh0, dc0 = _run_sequence(cell, X, h0, c0, G, Gc)

    # forward against the reference, step by step
    h, c = h0, c0
    for t in range(T):
        h, c = _reference_step(X[t], h, c, *_params64(cell))
        assert_allclose(hs[t], h, rtol=1e-12, atol=1e-14)
    assert_allclose(cT, c, rtol=1e-12, atol=1e-14)

    def f():
        return _sequence_loss(cell, X, h0, c0, G, Gc)

    check_gradient(f, X, dX, rtol=1e-6)
    check_gradient(f, h0, dh0, rtol=1e-6)
    check_gradient(f, c0, dc0, rtol=1e-6)
    for name in PARAMS:
        check_gradient(f, cell.params[name], cell.grads[name].copy(), rtol=1e-6)


def test_cell_reused_for_a_second_sequence_matches_a_fresh_cell(rng):
    T1, T2 = 3, int(rng.integers(1, 5))
    B, I, H = 2, 3, 4
    cell = _cell(I, H, rng)
    fresh = _cell(I, H, rng)
    _copy_weights(fresh, cell)

    def data(T):
        return (rng.standard_normal((T, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
                rng.standard_normal((T, B, H)), rng.standard_normal((B, H)))

    first, second = data(T1), data(T2)
    _run_sequence(cell, *first)
    # an evaluation pass that is never backpropagated, with the cache off
    state = None
    for t in range(T1):
        state = cell.forward(first[0][t], state, cache=False)
    cell.zero_grad()
    out_reused = _run_sequence(cell, *second)
    out_fresh = _run_sequence(fresh, *second)
    for a, b in zip(out_reused, out_fresh):
        assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    for name in PARAMS:
        assert_allclose(cell.grads[name], fresh.grads[name], rtol=1e-13, atol=1e-15)
    with pytest.raises(RuntimeError):      # nothing left over from either sequence
        cell.backward(np.zeros((B, H)))


def test_clear_cache_drops_an_unused_forward(rng):
    B, I, H = 2, 3, 2
    cell = _cell(I, H, rng)
    fresh = _cell(I, H, rng)
    _copy_weights(fresh, cell)
    for _ in range(2):
        cell.forward(rng.standard_normal((B, I)))             # cached, never backpropagated
    cell.clear_cache()
    seq = (rng.standard_normal((2, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
           rng.standard_normal((2, B, H)), rng.standard_normal((B, H)))
    for a, b in zip(_run_sequence(cell, *seq), _run_sequence(fresh, *seq)):
        assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    with pytest.raises(RuntimeError):
        cell.backward(np.zeros((B, H)))
    assert cell._cache == []


def test_batch_of_one(rng):
    I, H = 3, 4
    cell = _cell(I, H, rng)
    x, h0, c0 = rng.standard_normal((1, I)), rng.standard_normal((1, H)), rng.standard_normal((1, H))
    Gh, Gc = rng.standard_normal((1, H)), rng.standard_normal((1, H))
    h1, c1 = cell.forward(x, (h0, c0))
    rh, rc = _reference_step(x, h0, c0, *_params64(cell))
    assert h1.shape == (1, H)
    assert_allclose(h1, rh, rtol=1e-12)
    assert_allclose(c1, rc, rtol=1e-12)
    dx, dh0, dc0 = cell.backward(Gh, Gc)

    def f():
        h, c = cell.forward(x, (h0, c0), cache=False)
        return float(np.sum(h * Gh) + np.sum(c * Gc))

    check_gradient(f, x, dx, rtol=1e-6)
    check_gradient(f, h0, dh0, rtol=1e-6)
    check_gradient(f, cell.params["W_ih"], cell.grads["W_ih"].copy(), rtol=1e-6)


def test_state_none_means_zeros(rng):
    B, I, H = 2, 3, 4
    a, b = _cell(I, H, rng), _cell(I, H, rng)
    _copy_weights(b, a)
    x = rng.standard_normal((B, I))
    Gh, Gc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    ha, ca = a.forward(x, None)
    hb, cb = b.forward(x, (np.zeros((B, H)), np.zeros((B, H))))
    rh, rc = _reference_step(x, np.zeros((B, H)), np.zeros((B, H)), *_params64(a))
    assert_allclose(ha, rh, rtol=1e-12)
    assert_allclose(ca, rc, rtol=1e-12)
    assert_allclose(ha, hb, rtol=1e-14)
    outs_a, outs_b = a.backward(Gh, Gc), b.backward(Gh, Gc)
    for u, v in zip(outs_a, outs_b):
        assert_allclose(u, v, rtol=1e-13, atol=1e-15)
    for name in PARAMS:
        assert_allclose(a.grads[name], b.grads[name], rtol=1e-13, atol=1e-15)
    assert not np.any(a.grads["W_hh"])                        # h = 0: no recurrent weight gradient


def test_backward_more_times_than_forward_raises(rng):
    B, I, H = 2, 3, 2
    cell = _cell(I, H, rng)
    with pytest.raises(RuntimeError):
        cell.backward(np.zeros((B, H)))
    cell.forward(rng.standard_normal((B, I)))
    cell.backward(rng.standard_normal((B, H)))
    with pytest.raises(RuntimeError, match="more times than forward"):
        cell.backward(rng.standard_normal((B, H)))
    cell.forward(rng.standard_normal((B, I)), cache=False)    # an inference step stores nothing
    with pytest.raises(RuntimeError):
        cell.backward(rng.standard_normal((B, H)))


def test_wrong_shapes_raise(rng):
    B, I, H = 2, 3, 4
    cell = _cell(I, H, rng)
    ok_h, ok_c = np.zeros((B, H)), np.zeros((B, H))
    bad_inputs = [
        (rng.standard_normal((B, I + 1)), None),              # wrong input size
        (rng.standard_normal((B, 2, I)), None),               # a sequence given to the one-step forward
        (rng.standard_normal((I,)), None),                    # no batch axis
        (rng.standard_normal((B, I)), (np.zeros((B, H + 1)), ok_c)),
        (rng.standard_normal((B, I)), (ok_h, np.zeros((B + 1, H)))),
        (rng.standard_normal((B + 1, I)), (ok_h, ok_c)),      # batch of x differs from the state's
    ]
    for x, state in bad_inputs:
        with pytest.raises(ValueError, match=r"LSTMCell: expected (x|h|c) of shape"):
            cell.forward(x, state)
    assert cell._cache == []


def test_failed_calls_leave_the_cell_usable(rng):
    """A wrong-shape call raises without consuming or leaving behind a cache entry."""
    B, I, H = 2, 3, 4
    cell, fresh = _cell(I, H, rng), _cell(I, H, rng)
    _copy_weights(fresh, cell)
    seq = (rng.standard_normal((3, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
           rng.standard_normal((3, B, H)), rng.standard_normal((B, H)))
    X, h0, c0, G, Gc = seq
    with pytest.raises(ValueError):
        cell.forward(X[0], (np.zeros((B, H + 1)), c0))        # bad state after a good x
    state = (h0, c0)
    for t in range(3):
        state = cell.forward(X[t], state)
    with pytest.raises(ValueError):
        cell.backward(np.zeros((B, H + 1)))                   # bad dh: nothing may be popped
    with pytest.raises(ValueError):
        cell.backward(np.zeros((B, H)), np.zeros((1, H)))     # bad dc (would broadcast silently)
    dX = np.zeros_like(X)
    dh, dc = np.zeros((B, H)), Gc
    for t in reversed(range(3)):
        dX[t], dh, dc = cell.backward(G[t] + dh, dc)
    r_hs, r_cT, r_dX, r_dh0, r_dc0 = _run_sequence(fresh, *seq)
    assert_allclose(dX, r_dX, rtol=1e-13, atol=1e-15)
    assert_allclose(dh, r_dh0, rtol=1e-13, atol=1e-15)
    for name in PARAMS:
        assert_allclose(cell.grads[name], fresh.grads[name], rtol=1e-13, atol=1e-15)
    with pytest.raises(RuntimeError):
        cell.backward(np.zeros((B, H)))
    assert cell._cache == []                                  # nothing left behind by the errors


def test_grads_accumulate_across_sequences_and_zero_grad_clears(rng):
    B, I, H = 2, 3, 2
    cell, a, b = _cell(I, H, rng), _cell(I, H, rng), _cell(I, H, rng)
    _copy_weights(a, cell)
    _copy_weights(b, cell)

    def data():
        return (rng.standard_normal((2, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
                rng.standard_normal((2, B, H)), rng.standard_normal((B, H)))

    s1, s2 = data(), data()
    _run_sequence(cell, *s1)
    _run_sequence(cell, *s2)
    _run_sequence(a, *s1)
    _run_sequence(b, *s2)
    for name in PARAMS:
        assert_allclose(cell.grads[name], a.grads[name] + b.grads[name], rtol=1e-12, atol=1e-15)
    cell.zero_grad()
    assert all(not np.any(g) for g in cell.grads.values())


def test_device_forward_and_backward_match_host(xp, rng):
    """Under cupy the device cell must reproduce the host cell (and both the reference)."""
    T, B, I, H = 3, 2, 4, 3
    with on_host():
        host = LSTMCell(I, H, dtype=np.float64, rng=np.random.default_rng(5))
    dev = LSTMCell(I, H, dtype=np.float64, rng=np.random.default_rng(5))
    X = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    G, Gc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    hs, cT, dX, dh0, dc0 = _run_sequence(host, X, h0, c0, G, Gc)

    state, d_hs = (xp.asarray(h0), xp.asarray(c0)), []
    for t in range(T):
        state = dev.forward(xp.asarray(X[t]), state)
        d_hs.append(to_numpy(state[0]))
    dh, dc = xp.zeros((B, H)), xp.asarray(Gc)
    d_dX = np.zeros_like(X)
    for t in reversed(range(T)):
        dx, dh, dc = dev.backward(xp.asarray(G[t]) + dh, dc)
        d_dX[t] = to_numpy(dx)

    h, c = h0, c0
    for t in range(T):
        h, c = _reference_step(X[t], h, c, *_params64(host))
        assert_allclose(d_hs[t], h, rtol=1e-12, atol=1e-14)
    assert_allclose(np.stack(d_hs), hs, rtol=1e-12, atol=1e-14)
    assert_allclose(to_numpy(state[1]), cT, rtol=1e-12, atol=1e-14)
    assert_allclose(d_dX, dX, rtol=1e-10, atol=1e-13)
    assert_allclose(to_numpy(dh), dh0, rtol=1e-10, atol=1e-13)
    assert_allclose(to_numpy(dc), dc0, rtol=1e-10, atol=1e-13)
    for name in PARAMS:
        assert_allclose(to_numpy(dev.grads[name]), host.grads[name], rtol=1e-10, atol=1e-13)

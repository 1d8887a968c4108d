"""nn.LSTM, the sequence layer: finite differences, agreement with LSTMCell's BPTT loop, its one cache.

Shapes: B batch, T time, I input, H hidden, 4H stacked gates (i, f, g, o).
Gradients against central differences in float64 (mytorch.gradcheck); the loss is
L = sum(Hs * G) + sum(h_T * Gh) + sum(c_T * Gc), so dHs = G and dstate = (Gh, Gc).
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import LSTM, LSTMCell
from test_lstm import PARAMS, _reference_step

R = "random"


def _layer(I, H, rng, dtype=np.float64):
    return LSTM(I, H, dtype=dtype, rng=rng)


def _copy_weights(dst, src):
    for name in PARAMS:
        dst.params[name][...] = src.params[name]


def _params64(layer):
    return [to_numpy(layer.params[n]).astype(np.float64) for n in PARAMS]


def _data(rng, B, T, I, H):
    """X (B, T, I), state (h0, c0), dHs (B, T, H), dstate (dh_T, dc_T): all random, none zero."""
    return (rng.standard_normal((B, T, I)), (rng.standard_normal((B, H)), rng.standard_normal((B, H))),
            rng.standard_normal((B, T, H)), (rng.standard_normal((B, H)), rng.standard_normal((B, H))))


def _loss(layer, X, state, G, dstate):
    Hs, (h, c) = layer.forward(X, state, cache=False)
    loss = float(np.sum(Hs * G))
    if dstate is not None:
        for a, d in zip((h, c), dstate):
            loss += 0.0 if d is None else float(np.sum(a * d))
    return loss


def _cell_bptt(cell, X, state, G, dstate):
    """The same sequence through LSTMCell, stepped by hand: Hs, h_T, c_T, dX, dh0, dc0."""
    B, T, _ = X.shape
    hs = []
    for t in range(T):
        state = cell.forward(X[:, t], state)
        hs.append(state[0])
    dh, dc = (None, None) if dstate is None else dstate
    dh = np.zeros_like(G[:, 0]) if dh is None else dh
    dX = np.zeros_like(X)
    for t in reversed(range(T)):
        dX[:, t], dh, dc = cell.backward(G[:, t] + dh, dc)
    return np.stack(hs, axis=1), state[0], state[1], dX, dh, dc


def test_params_are_drawn_like_the_cells_and_in_a_fixed_order():
    """Same seed, same weights, for LSTM and LSTMCell alike: W_ih, W_hh, b_ih, b_hh from one rng."""
    I, H = 5, 3
    rng = np.random.default_rng(7)
    k = 1 / np.sqrt(H)
    expected = {n: rng.uniform(-k, k, size=s).astype(np.float32) for n, s in
                (("W_ih", (4 * H, I)), ("W_hh", (4 * H, H)), ("b_ih", (4 * H,)), ("b_hh", (4 * H,)))}
    for cls in (LSTM, LSTMCell):
        layer = cls(I, H, rng=np.random.default_rng(7))
        assert list(layer.params) == list(PARAMS) and list(layer.grads) == list(PARAMS)
        for name in PARAMS:
            assert layer.params[name].dtype == np.float32
            assert_array_equal(layer.params[name], expected[name])
            assert not np.any(layer.grads[name])


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_forward_matches_torch_formula(rng, dtype, rtol):
    B, T, I, H = 3, 4, 5, 2
    layer = _layer(I, H, rng, dtype)
    for name in PARAMS:          # bigger weights than the init so every gate saturates somewhere
        layer.params[name][...] = (rng.standard_normal(layer.params[name].shape) * 2).astype(dtype)
    X, (h0, c0), _, _ = _data(rng, B, T, I, H)
    X, h0, c0 = (a.astype(dtype) for a in (X, h0, c0))
    Hs, (hT, cT) = layer.forward(X, (h0, c0))
    assert Hs.shape == (B, T, H) and Hs.dtype == dtype and hT.dtype == dtype
    h, c = h0, c0
    for t in range(T):
        h, c = _reference_step(X[:, t], h, c, *_params64(layer))
        assert_allclose(Hs[:, t], h, rtol=rtol, atol=rtol)
    assert_allclose(hT, h, rtol=rtol, atol=rtol)
    assert_allclose(cT, c, rtol=rtol, atol=rtol)


CASES = [  # T, B, initial state given, dstate: None, "both", "h" (dh_T only) or "c" (dc_T only)
    (R, R, True, "both"), (R, R, True, None), (R, R, False, "both"), (R, R, False, None),
    (1, R, True, "both"), (1, R, False, None), (R, 1, True, "h"), (R, 1, False, "c"), (1, 1, True, None),
]


@pytest.mark.parametrize("T, B, with_state, dstate", CASES)
def test_gradients_match_finite_differences(rng, T, B, with_state, dstate):
    T = int(rng.integers(2, 6)) if T == R else T
    B = int(rng.integers(2, 4)) if B == R else B
    I, H = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    layer = _layer(I, H, rng)
    X, state, G, (Gh, Gc) = _data(rng, B, T, I, H)
    ds = {None: None, "both": (Gh, Gc), "h": (Gh, None), "c": (None, Gc)}[dstate]
    if with_state:
        Hs, _ = layer.forward(X, state)
    else:
        Hs, _ = layer.forward(X)
        state = (np.zeros((B, H)), np.zeros((B, H)))      # dh0, dc0: the gradient at the zero state
    dX, (dh0, dc0) = layer.backward(G, ds)
    assert dX.shape == X.shape and dh0.shape == dc0.shape == (B, H)

    def f():
        return _loss(layer, X, state, G, ds)

    check_gradient(f, X, dX, rtol=1e-6)
    check_gradient(f, state[0], dh0, rtol=1e-6)
    check_gradient(f, state[1], dc0, rtol=1e-6)
    for name in PARAMS:
        check_gradient(f, layer.params[name], layer.grads[name].copy(), rtol=1e-6)


@pytest.mark.parametrize("with_state, with_dstate", [(True, True), (False, False), (True, False)])
@pytest.mark.parametrize("T", [1, R])
def test_layer_equals_the_cells_bptt_loop(rng, T, with_state, with_dstate):
    T = int(rng.integers(2, 7)) if T == R else T
    B, I, H = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
    layer = _layer(I, H, rng)
    cell = LSTMCell(I, H, dtype=np.float64, rng=rng)
    _copy_weights(cell, layer)
    X, state, G, dstate = _data(rng, B, T, I, H)
    state = state if with_state else None
    dstate = dstate if with_dstate else None
    Hs, (hT, cT) = layer.forward(X, state)
    dX, (dh0, dc0) = layer.backward(G, dstate)
    ref = _cell_bptt(cell, X, state, G, dstate)
    for name, a, b in zip(("Hs", "h_T", "c_T", "dX", "dh0", "dc0"), (Hs, hT, cT, dX, dh0, dc0), ref):
        assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=name)
    for name in PARAMS:
        assert_allclose(layer.grads[name], cell.grads[name], rtol=1e-12, atol=1e-14, err_msg=name)
    if not with_state and T == 1:
        assert not np.any(layer.grads["W_hh"])                # h_{-1} = 0: no recurrent weight gradient


def test_grads_accumulate_across_two_backwards_and_zero_grad_clears(rng):
    B, T, I, H = 2, 3, 4, 3
    layer, a, b = _layer(I, H, rng), _layer(I, H, rng), _layer(I, H, rng)
    _copy_weights(a, layer)
    _copy_weights(b, layer)
    s1, s2 = _data(rng, B, T, I, H), _data(rng, B + 1, T - 1, I, H)   # a second shape, too
    for lay, seqs in ((layer, (s1, s2)), (a, (s1,)), (b, (s2,))):
        for X, state, G, dstate in seqs:
            lay.forward(X, state)
            lay.backward(G, dstate)
    for name in PARAMS:
        assert np.any(a.grads[name]) and np.any(b.grads[name])
        assert_allclose(layer.grads[name], a.grads[name] + b.grads[name], rtol=1e-12, atol=1e-15)
    layer.zero_grad()
    assert all(not np.any(g) for g in layer.grads.values())


def test_inference_forward_leaves_the_cache_alone(rng):
    """forward(cache=False) stores nothing: a backward after it still belongs to the cached forward."""
    B, T, I, H = 2, 3, 2, 4
    layer, fresh = _layer(I, H, rng), _layer(I, H, rng)
    _copy_weights(fresh, layer)
    X, state, G, dstate = _data(rng, B, T, I, H)
    out = layer.forward(X, state)
    Hs_inf, _ = layer.forward(rng.standard_normal((B + 1, T + 2, I)), cache=False)
    assert Hs_inf.shape == (B + 1, T + 2, H)
    assert_array_equal(layer.forward(X, state, cache=False)[0], out[0])
    dX, (dh0, dc0) = layer.backward(G, dstate)
    fresh.forward(X, state)
    r_dX, (r_dh0, r_dc0) = fresh.backward(G, dstate)
    for u, v in ((dX, r_dX), (dh0, r_dh0), (dc0, r_dc0)):
        assert_array_equal(u, v)
    for name in PARAMS:
        assert_array_equal(layer.grads[name], fresh.grads[name])


def test_a_layer_reused_for_a_second_sequence_matches_a_fresh_one(rng):
    I, H = 3, 2
    layer, fresh = _layer(I, H, rng), _layer(I, H, rng)
    _copy_weights(fresh, layer)
    first, second = _data(rng, 2, 4, I, H), _data(rng, 3, 2, I, H)
    layer.forward(first[0], first[1])
    layer.backward(first[2], first[3])
    layer.zero_grad()
    outs = []
    for lay in (layer, fresh):
        Hs, state = lay.forward(second[0], second[1])
        outs.append([Hs, *state, lay.backward(second[2], second[3])[0]] + [lay.grads[n] for n in PARAMS])
    for u, v in zip(*outs):
        assert_array_equal(u, v)


def test_clear_cache_drops_a_forward(rng):
    layer = _layer(2, 3, rng)
    X, state, G, _ = _data(rng, 2, 3, 2, 3)
    layer.forward(X, state)
    layer.clear_cache()
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(G)


def test_backward_without_a_cached_forward_raises(rng):
    B, T, I, H = 2, 3, 2, 3
    layer = _layer(I, H, rng)
    X, state, G, _ = _data(rng, B, T, I, H)
    with pytest.raises(RuntimeError, match=r"LSTM.backward needs a forward\(cache=True\)"):
        layer.backward(G)                                     # no forward at all
    layer.forward(X, state, cache=False)
    with pytest.raises(RuntimeError, match="LSTM.backward"):
        layer.backward(G)                                     # only an inference forward
    layer.forward(X, state)
    layer.backward(G)
    with pytest.raises(RuntimeError, match="at most once"):
        layer.backward(G)                                     # the cache was consumed


def test_wrong_shapes_raise_and_name_the_expected_shape(rng):
    B, T, I, H = 2, 3, 4, 5
    layer = _layer(I, H, rng)
    ok = (np.ones((B, H)), np.ones((B, H)))
    bad_forwards = [
        (rng.standard_normal((B, T, I + 1)), None, r"LSTM: expected X of shape \(B, T, 4\)"),
        (rng.standard_normal((B, I)), None, r"LSTM: expected X of shape \(B, T, 4\)"),   # one step
        (rng.standard_normal((B, 0, I)), None, r"with T >= 1, got \(2, 0, 4\)"),
        (rng.standard_normal((B, T, I)), (np.ones((B, H + 1)), ok[1]), r"LSTM: expected h of shape \(2, 5\)"),
        (rng.standard_normal((B, T, I)), (ok[0], np.ones((B + 1, H))), r"LSTM: expected c of shape \(2, 5\)"),
    ]
    for X, state, msg in bad_forwards:
        with pytest.raises(ValueError, match=msg):
            layer.forward(X, state)
    with pytest.raises(RuntimeError):                         # the rejected forwards cached nothing
        layer.backward(np.ones((B, T, H)))

    X, state, G, dstate = _data(rng, B, T, I, H)
    layer.forward(X, state)
    bad_backwards = [
        ((np.ones((B, T + 1, H)), None), r"LSTM.backward: expected dHs of shape \(2, 3, 5\)"),
        ((np.ones((B, T, H)), (np.ones((B, H + 1)), None)), r"expected dh_T of shape \(2, 5\)"),
        ((np.ones((B, T, H)), (None, np.ones((1, H)))), r"expected dc_T of shape \(2, 5\)"),  # broadcasts
    ]
    for args, msg in bad_backwards:
        with pytest.raises(ValueError, match=msg):
            layer.backward(*args)
    fresh = _layer(I, H, rng)                                 # the rejected calls consumed nothing
    _copy_weights(fresh, layer)
    fresh.forward(X, state)
    dX, (dh0, dc0) = layer.backward(G, dstate)
    r_dX, (r_dh0, r_dc0) = fresh.backward(G, dstate)
    for u, v in ((dX, r_dX), (dh0, r_dh0), (dc0, r_dc0)):
        assert_array_equal(u, v)
    for name in PARAMS:
        assert_array_equal(layer.grads[name], fresh.grads[name])


def test_the_callers_arrays_are_left_unchanged(rng):
    B, T, I, H = 2, 3, 2, 3
    layer = _layer(I, H, rng)
    data = _data(rng, B, T, I, H)
    X, (h0, c0), G, (Gh, Gc) = data
    copies = [a.copy() for a in (X, h0, c0, G, Gh, Gc)]
    layer.forward(X, (h0, c0))
    layer.backward(G, (Gh, Gc))
    for a, b in zip((X, h0, c0, G, Gh, Gc), copies):
        assert_array_equal(a, b)


def test_device_forward_and_backward_match_host(xp, rng):
    """Under cupy the plain layer on the device must reproduce the host layer."""
    B, T, I, H = 2, 4, 3, 5
    with on_host():
        host = LSTM(I, H, dtype=np.float64, rng=np.random.default_rng(5))
    dev = LSTM(I, H, dtype=np.float64, rng=np.random.default_rng(5))
    X, (h0, c0), G, (Gh, Gc) = _data(rng, B, T, I, H)
    Hs, (hT, cT) = host.forward(X, (h0, c0))
    dX, (dh0, dc0) = host.backward(G, (Gh, Gc))
    d_Hs, (d_hT, d_cT) = dev.forward(xp.asarray(X), (xp.asarray(h0), xp.asarray(c0)))
    d_dX, (d_dh0, d_dc0) = dev.backward(xp.asarray(G), (xp.asarray(Gh), xp.asarray(Gc)))
    for a, b in zip((d_Hs, d_hT, d_cT, d_dX, d_dh0, d_dc0), (Hs, hT, cT, dX, dh0, dc0)):
        assert_allclose(to_numpy(a), b, rtol=1e-10, atol=1e-13)
    for name in PARAMS:
        assert_allclose(to_numpy(dev.grads[name]), host.grads[name], rtol=1e-10, atol=1e-13)

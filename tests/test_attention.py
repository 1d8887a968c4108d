"""Causal self-attention: forward against a naive reference, backward against central differences.

Loss L = sum(X_new * G) for a random G, so dL/dX_new = G. Gradient checks run on
the host in float64; each test runs once per backend via `xp`, and the device
result must match the host result.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn.attention import Attention


def _draw(rng, B=None, T=None):
    """Random sizes and float64 data; B or T can be pinned.

    A random T is >= 2: with one time step softmax's output is 1 whatever the scores, so
    dLdWk = dLdWq = 0 exactly and their checks cannot fail (T = 1 is its own pinned case).
    """
    B = int(rng.integers(1, 4)) if B is None else B
    T = int(rng.integers(2, 6)) if T is None else T
    D, D_k, D_v = (int(n) for n in rng.integers(2, 5, size=3))
    X = rng.standard_normal((B, T, D))
    W_k = rng.standard_normal((D, D_k)) * 0.7
    W_q = rng.standard_normal((D, D_k)) * 0.7
    W_v = rng.standard_normal((D, D_v)) * 0.7
    return X, W_k, W_q, W_v


def _reference(X, W_k, W_q, W_v, key_mask=None):
    """Independent of the layer: einsum, a multiplicative 0/1 mask, softmax written out."""
    B, T, _ = X.shape
    K = np.einsum("btd,dk->btk", X, W_k)
    Q = np.einsum("btd,dk->btk", X, W_q)
    V = np.einsum("btd,dv->btv", X, W_v)
    A_w = np.einsum("btk,bsk->bts", Q, K)
    allowed = np.broadcast_to(np.arange(T)[None, :, None] >= np.arange(T)[None, None, :], (B, T, T))
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, :]
    scores = A_w / math.sqrt(W_k.shape[1])
    shift = np.max(np.where(allowed, scores, -1e300), axis=-1, keepdims=True)
    weights = np.exp(np.where(allowed, scores - shift, -1e300)) * allowed
    total = weights.sum(axis=-1, keepdims=True)
    A_sig = weights / np.where(total > 0, total, 1.0)
    return np.einsum("bts,bsv->btv", A_sig, V), dict(K=K, Q=Q, V=V, A_w=A_w, A_sig=A_sig)


def _on_device(xp, X, W_k, W_q, W_v, G, key_mask=None):
    """Forward + backward on the `xp` backend; everything returned on the host."""
    layer = Attention(xp.asarray(W_k), xp.asarray(W_q), xp.asarray(W_v))
    out = layer.forward(xp.asarray(X), None if key_mask is None else xp.asarray(key_mask))
    dLdX = layer.backward(xp.asarray(G))
    arrays = dict(out=out, dLdX=dLdX, dLdWk=layer.dLdWk, dLdWq=layer.dLdWq, dLdWv=layer.dLdWv)
    return {k: to_numpy(v) for k, v in arrays.items()}


def _check_all_gradients(X, W_k, W_q, W_v, G, key_mask=None):
    """FD check of dLdX, dLdWk, dLdWq, dLdWv; returns the analytic results."""
    layer = Attention(W_k, W_q, W_v)
    out = layer.forward(X, key_mask)
    dLdX = layer.backward(G)

    def loss():
        return float(np.sum(Attention(W_k, W_q, W_v).forward(X, key_mask) * G))

    # the FD helpers perturb these very arrays in place; the fresh layer in loss() reads them
    check_gradient(loss, X, dLdX, rtol=1e-6)
    check_gradient(loss, W_k, layer.dLdWk, rtol=1e-6)
    check_gradient(loss, W_q, layer.dLdWq, rtol=1e-6)
    check_gradient(loss, W_v, layer.dLdWv, rtol=1e-6)
    return dict(out=out, dLdX=dLdX, dLdWk=layer.dLdWk, dLdWq=layer.dLdWq, dLdWv=layer.dLdWv)


def _assert_same(got, want):
    for name in want:
        assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_forward_matches_reference(xp, rng):
    X, W_k, W_q, W_v = _draw(rng, T=int(rng.integers(2, 6)))
    layer = Attention(W_k, W_q, W_v)
    out = layer.forward(X)
    want, parts = _reference(X, W_k, W_q, W_v)
    assert out.shape == X.shape[:2] + (W_v.shape[1],)
    assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    for name, value in parts.items():
        assert_allclose(getattr(layer, name), value, rtol=1e-12, atol=1e-12, err_msg=name)
    # strictly-upper entries of A_sig are exactly the masked ones; rows sum to 1
    T = X.shape[1]
    assert np.all(layer.A_sig[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
    assert_allclose(layer.A_sig.sum(-1), 1.0, atol=1e-12)
    dev = Attention(xp.asarray(W_k), xp.asarray(W_q), xp.asarray(W_v))
    assert_allclose(to_numpy(dev.forward(xp.asarray(X))), out, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["random", "T=1", "B=1", "long"])
def test_gradients_match_finite_differences(xp, rng, case):
    pinned = {"random": {}, "T=1": {"T": 1}, "B=1": {"B": 1}, "long": {"B": 2, "T": 7}}[case]
    X, W_k, W_q, W_v = _draw(rng, **pinned)
    G = rng.standard_normal(X.shape[:2] + (W_v.shape[1],))
    host = _check_all_gradients(X, W_k, W_q, W_v, G)
    if case == "T=1":       # one key: A_sig = 1 whatever Q and K are, so W_k, W_q get exactly nothing
        assert not host["dLdWk"].any() and not host["dLdWq"].any()
    else:                   # otherwise these gradients are not trivially zero: their checks can fail
        assert np.abs(host["dLdWk"]).max() > 1e-3 and np.abs(host["dLdWq"]).max() > 1e-3
    _assert_same(_on_device(xp, X, W_k, W_q, W_v, G), host)


def test_intermediate_gradients_and_names(rng):
    """The autograder's attribute names, their shapes, and the chain between them."""
    X, W_k, W_q, W_v = _draw(rng, B=2, T=4)
    B, T, D = X.shape
    D_k, D_v = W_k.shape[1], W_v.shape[1]
    G = rng.standard_normal((B, T, D_v))
    layer = Attention(W_k, W_q, W_v)
    layer.forward(X)
    layer.backward(G)
    shapes = dict(dLdA_sig=(B, T, T), dLdA_w=(B, T, T), dLdK=(B, T, D_k), dLdQ=(B, T, D_k),
                  dLdV=(B, T, D_v), dLdWk=(D, D_k), dLdWq=(D, D_k), dLdWv=(D, D_v))
    for name, shape in shapes.items():
        assert getattr(layer, name).shape == shape, name
    # dLdV, dLdA_w checked by FD through their own input (V, A_w) with the rest fixed
    A_sig, V = layer.A_sig.copy(), layer.V.copy()
    check_gradient(lambda: float(np.sum((A_sig @ V) * G)), V, layer.dLdV, rtol=1e-6)
    A_w = layer.A_w.copy()
    mask = np.where(np.tri(T, dtype=bool), 0.0, -np.inf)

    def loss_from_A_w():
        S = (A_w + mask) / math.sqrt(D_k)
        E = np.exp(S - S.max(-1, keepdims=True))
        return float(np.sum(((E / E.sum(-1, keepdims=True)) @ V) * G))

    check_gradient(loss_from_A_w, A_w, layer.dLdA_w, rtol=1e-6)
    # masked future entries get exactly no gradient
    assert np.all(layer.dLdA_w[:, ~np.tri(T, dtype=bool)] == 0)


def test_future_positions_do_not_influence_the_past(xp, rng):
    X, W_k, W_q, W_v = _draw(rng, B=2, T=5)
    t = int(rng.integers(0, 4))
    layer = Attention(xp.asarray(W_k), xp.asarray(W_q), xp.asarray(W_v))
    before = to_numpy(layer.forward(xp.asarray(X)))
    X2 = X.copy()
    X2[:, t + 1:] += rng.standard_normal(X2[:, t + 1:].shape) * 5
    after = to_numpy(layer.forward(xp.asarray(X2)))
    assert_allclose(after[:, :t + 1], before[:, :t + 1], rtol=0, atol=1e-12)
    assert np.abs(after[:, t + 1:] - before[:, t + 1:]).max() > 1e-3   # the change did reach later steps
    # and backward: a loss on outputs up to t sends no gradient to inputs after t
    G = rng.standard_normal(before.shape)
    G[:, t + 1:] = 0
    dLdX = to_numpy(layer.backward(xp.asarray(G)))
    assert_allclose(dLdX[:, t + 1:], 0.0, rtol=0, atol=1e-15)
    assert np.abs(dLdX[:, :t + 1]).max() > 0


def test_fully_masked_positions_give_zeros_and_no_nan(xp, rng):
    """Left padding: query t sees keys s <= t, all padding for t < pad -> no key at all."""
    X, W_k, W_q, W_v = _draw(rng, B=3, T=5)
    key_mask = np.ones((3, 5), dtype=bool)
    key_mask[0, :2] = False            # queries 0, 1 of sequence 0 have no key
    key_mask[1, 3] = False             # a hole: query 3 still sees 0..2
    key_mask[2, :] = False             # nothing at all
    G = rng.standard_normal((3, 5, W_v.shape[1]))
    with np.errstate(all="raise"):     # no 0/0, no inf - inf, anywhere
        host = _check_all_gradients(X, W_k, W_q, W_v, G, key_mask)
        layer = Attention(W_k, W_q, W_v)
        out = layer.forward(X, key_mask)
        layer.backward(G)
    for name in ("out", "dLdX", "dLdWk", "dLdWq", "dLdWv"):
        assert not np.any(np.isnan(host[name])), name
    for arr in (layer.A_sig, layer.dLdA_sig, layer.dLdA_w, layer.dLdK, layer.dLdQ, layer.dLdV):
        assert not np.any(np.isnan(arr))
    empty = ~(np.tri(5, dtype=bool)[None] & key_mask[:, None, :]).any(-1)      # (B, T) rows with no key
    assert empty.sum() == 2 + 5
    assert_allclose(out[empty], 0.0, atol=0)
    assert_allclose(layer.A_sig[empty], 0.0, atol=0)
    assert_allclose(layer.dLdA_w[empty], 0.0, atol=0)
    assert_allclose(layer.A_sig[~empty].sum(-1), 1.0, atol=1e-12)
    assert np.all(layer.A_sig[1, :, 3] == 0)                   # the masked key gets no weight
    want, _ = _reference(X, W_k, W_q, W_v, key_mask)
    assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    # a fully masked sequence passes no gradient at all
    assert_allclose(host["dLdX"][2], 0.0, atol=0)
    _assert_same(_on_device(xp, X, W_k, W_q, W_v, G, key_mask), host)


def test_grads_accumulate_over_two_sequences_and_zero_grad(rng):
    """One layer, two sequences of different lengths in a row: grads add up (+=)."""
    X1, W_k, W_q, W_v = _draw(rng, B=2, T=3)
    X2 = rng.standard_normal((1, 4, X1.shape[2]))
    layer = Attention(W_k, W_q, W_v)
    grads = []
    for X in (X1, X2):
        G = rng.standard_normal(X.shape[:2] + (W_v.shape[1],))
        layer.forward(X)
        layer.backward(G)
        grads.append((layer.dLdWk.copy(), layer.dLdWq.copy(), layer.dLdWv.copy()))
        fresh = Attention(W_k, W_q, W_v)                 # the reused layer must agree with a new one
        fresh.forward(X)
        assert_allclose(layer.dLdWk, (fresh.backward(G), fresh.dLdWk)[1], rtol=1e-12, atol=1e-14)
    for i, key in enumerate(("W_k", "W_q", "W_v")):
        assert_allclose(layer.grads[key], grads[0][i] + grads[1][i], rtol=1e-12, atol=1e-14)
    assert layer.W_k is layer.params["W_k"]
    layer.zero_grad()
    for key in ("W_k", "W_q", "W_v"):
        assert not layer.grads[key].any()


def test_float32_stays_float32(xp, rng):
    X, W_k, W_q, W_v = (a.astype(np.float32) for a in _draw(rng, B=2, T=3))
    layer = Attention(xp.asarray(W_k), xp.asarray(W_q), xp.asarray(W_v))
    out = layer.forward(xp.asarray(X))
    dLdX = layer.backward(xp.ones_like(out))
    assert out.dtype == np.float32 and dLdX.dtype == np.float32 and layer.dLdWk.dtype == np.float32
    want, _ = _reference(X.astype(np.float64), W_k.astype(np.float64), W_q.astype(np.float64),
                         W_v.astype(np.float64))
    assert_allclose(to_numpy(out), want, rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise(rng):
    X, W_k, W_q, W_v = _draw(rng, B=2, T=3)
    with pytest.raises(ValueError, match="W_k and W_q"):
        Attention(W_k, W_q[:, :1], W_v)
    with pytest.raises(ValueError, match="W_v"):
        Attention(W_k, W_q, np.ones((W_k.shape[0] + 1, 2)))
    layer = Attention(W_k, W_q, W_v)
    with pytest.raises(ValueError, match="B, T, D"):
        layer.forward(X[0])
    with pytest.raises(ValueError):
        layer.forward(np.ones((2, 3, W_k.shape[0] + 1)))
    with pytest.raises(ValueError, match="key_mask"):
        layer.forward(X, np.ones((2, 4), dtype=bool))
    layer.forward(X)
    with pytest.raises(ValueError, match="dLdXnew"):
        layer.backward(np.ones((2, 3, W_v.shape[1] + 1)))

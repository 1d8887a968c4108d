"""MultiHeadAttention: a per-head loop reference, central differences, the course Attention, the KV cache.

Shapes: B batch, T queries, S keys (memory length in cross-attention), D = d_model, h heads, d_k = D / h.
Loss L = sum(Y * G) for a random G, so dL/dY = G. Gradient checks in float64, on the host.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import on_host
from mytorch.backend import to_device, to_numpy
from mytorch.gradcheck import check_gradient, numerical_grad
from mytorch.nn import Attention, Dropout, MultiHeadAttention

NAMES = ("W_q", "W_k", "W_v", "W_o", "b_q", "b_k", "b_v", "b_o")


def _layer(D, h, rng, **kwargs):
    """A float64 layer; its biases random (they start at 0) so that they matter in every check."""
    layer = MultiHeadAttention(D, h, dtype=np.float64, rng=rng, **kwargs)
    for name in NAMES[4:]:
        if name in layer.params:
            layer.params[name][...] = to_device(rng.standard_normal(D) * 0.5)   # on the layer's backend
    return layer


def _sizes(rng, h=None, T=None):
    """h heads of d_k features, B sequences of T >= 2 steps (T pinned only where a test says)."""
    h = int(rng.integers(1, 4)) if h is None else h
    d_k = int(rng.integers(1, 4))
    B = int(rng.integers(1, 4))
    T = int(rng.integers(2, 6)) if T is None else T
    return B, T, h * d_k, h


def _reference(p, h, X, memory=None, key_padding_mask=None, causal=True, dropout_mask=None):
    """One head at a time (a loop: fine in a test), softmax over the allowed keys written out."""
    M = X if memory is None else memory
    B, T, D = X.shape
    S = M.shape[1]
    d_k = D // h
    b = {k: p.get(k, np.zeros(D)) for k in NAMES[4:]}
    Q, K, V = X @ p["W_q"] + b["b_q"], M @ p["W_k"] + b["b_k"], M @ p["W_v"] + b["b_v"]
    allowed = np.ones((B, T, S), dtype=bool)
    if causal and memory is None:
        allowed &= np.tril(np.ones((T, S), dtype=bool))
    if key_padding_mask is not None:
        allowed &= ~key_padding_mask[:, None, :]
    O = np.zeros((B, T, D))
    for j in range(h):
        cols = slice(j * d_k, (j + 1) * d_k)
        scores = np.einsum("btk,bsk->bts", Q[..., cols], K[..., cols]) / math.sqrt(d_k)
        shift = np.max(np.where(allowed, scores, -1e300), axis=-1, keepdims=True)
        weights = np.exp(np.where(allowed, scores - shift, -1e300)) * allowed
        total = weights.sum(axis=-1, keepdims=True)
        A = weights / np.where(total > 0, total, 1.0)
        if dropout_mask is not None:
            A = A * dropout_mask[:, j]
        O[..., cols] = np.einsum("bts,bsk->btk", A, V[..., cols])
    return O @ p["W_o"] + b["b_o"]


def _check_all_gradients(layer, X, G, memory=None, key_padding_mask=None):
    """FD on X (and memory) and on every parameter; returns the analytic results."""
    out = layer.forward(X, memory, key_padding_mask)
    grads = layer.backward(G)
    dX, dM = grads if memory is not None else (grads, None)
    analytic = {name: layer.grads[name].copy() for name in layer.params}

    def loss():
        return float(np.sum(layer.forward(X, memory, key_padding_mask) * G))

    check_gradient(loss, X, dX, rtol=1e-6)
    if memory is not None:
        check_gradient(loss, memory, dM, rtol=1e-6)
    for name in layer.params:
        if name == "b_k":
            continue
        check_gradient(loss, layer.params[name], analytic[name], rtol=1e-6)
    if "b_k" in layer.params:
        # b_k adds q . b_k to every score of query q's row: softmax ignores a constant shift,
        # so dL/db_k is 0 (rounding noise both ways, hence no relative comparison)
        assert_allclose(analytic["b_k"], 0.0, atol=1e-12)
        assert_allclose(numerical_grad(loss, layer.params["b_k"]), 0.0, atol=1e-8)
    return dict(out=out, dX=dX, dM=dM, **analytic)


CASES = ["causal", "non-causal", "one head", "several heads", "no bias", "T=1", "B=1",
         "padding", "cross", "cross, padding, no bias"]


@pytest.mark.parametrize("case", CASES)
def test_forward_and_gradients(rng, case):
    h = {"one head": 1, "several heads": int(rng.integers(2, 4))}.get(case)
    B, T, D, h = _sizes(rng, h=h, T=1 if case == "T=1" else None)
    B = 1 if case == "B=1" else B
    causal = case != "non-causal"
    layer = _layer(D, h, rng, causal=causal, bias="no bias" not in case)
    X = rng.standard_normal((B, T, D))
    memory = rng.standard_normal((B, int(rng.integers(1, 6)), D)) if "cross" in case else None
    kpm = None
    if "padding" in case:
        S = T if memory is None else memory.shape[1]
        kpm = rng.random((B, S)) < 0.4
        kpm[0, :1] = True                                   # query 0 of sequence 0 sees no key (causal)
    G = rng.standard_normal((B, T, D))
    got = _check_all_gradients(layer, X, G, memory, kpm)
    want = _reference(layer.params, h, X, memory, kpm, causal)
    assert got["out"].shape == (B, T, D)
    assert_allclose(got["out"], want, rtol=1e-12, atol=1e-12)
    assert sorted(layer.params) == sorted(layer.grads) == sorted(NAMES if layer.bias else NAMES[:4])
    assert layer.A_sig.shape == (B, h, T, T if memory is None else memory.shape[1])


def test_fully_masked_queries_give_b_o_and_no_nan(rng):
    """Left padding: a query with no key outputs O = 0 (so Y = b_o) and passes no gradient."""
    B, T, D, h = 3, 5, 6, 2
    layer = _layer(D, h, rng)
    X = rng.standard_normal((B, T, D))
    kpm = np.zeros((B, T), dtype=bool)
    kpm[0, :2] = True                                       # queries 0, 1 of sequence 0: no key
    kpm[1, 3] = True                                        # a hole
    kpm[2, :] = True                                        # nothing at all
    G = rng.standard_normal((B, T, D))
    with np.errstate(all="raise"):
        got = _check_all_gradients(layer, X, G, key_padding_mask=kpm)
        Y = layer.forward(X, key_padding_mask=kpm)
        dX = layer.backward(G)
    empty = ~(np.tri(T, dtype=bool)[None] & ~kpm[:, None, :]).any(-1)      # (B, T) queries with no key
    assert empty.sum() == 2 + 5
    assert not np.isnan(Y).any() and not np.isnan(dX).any()
    assert_allclose(Y[empty], np.broadcast_to(layer.params["b_o"], (7, D)), rtol=0, atol=1e-15)
    assert_allclose(layer.A_sig.transpose(0, 2, 1, 3)[empty], 0.0, atol=0)
    assert_allclose(layer.A_sig[1, :, :, 3], 0.0, atol=0)                  # the masked key, every head
    assert_allclose(dX[2], 0.0, atol=0)      # sequence 2 sees nothing: Y = b_o whatever X is
    assert_allclose(got["out"], _reference(layer.params, h, X, key_padding_mask=kpm), rtol=1e-12, atol=1e-12)


def test_one_head_equals_the_course_attention(rng):
    """h = 1, no bias, W_o = I: Attention(W_k, W_q, W_v), whose d_k is D (its W are (D, D) here)."""
    B, T, D, _ = _sizes(rng, h=1)
    mha = _layer(D, 1, rng, bias=False)
    mha.params["W_o"][...] = np.eye(D)
    att = Attention(mha.params["W_k"].copy(), mha.params["W_q"].copy(), mha.params["W_v"].copy())
    X = rng.standard_normal((B, T, D))
    G = rng.standard_normal((B, T, D))
    key_mask = rng.random((B, T)) > 0.3                     # Attention: True = attend
    key_mask[:, 0] = False                                  # query 0: no key at all
    for mask in (None, key_mask):
        Y = mha.forward(X, key_padding_mask=None if mask is None else ~mask)
        dX = mha.backward(G)
        assert_allclose(Y, att.forward(X, mask), rtol=1e-12, atol=1e-13)
        assert_allclose(dX, att.backward(G), rtol=1e-11, atol=1e-13)
        assert_allclose(mha.A_sig[:, 0], att.A_sig, rtol=1e-12, atol=1e-14)
    for name in ("W_q", "W_k", "W_v"):                      # both accumulated over the two passes
        assert_allclose(mha.grads[name], att.grads[name], rtol=1e-11, atol=1e-13)


class _FixedMaskDropout(Dropout):
    """Dropout that reuses one mask, so every evaluation of a gradient check sees the same one."""

    def forward(self, x, mask=None):
        return super().forward(x, self.fixed if self.training else None)


def test_attention_dropout(rng):
    B, T, D, h = 2, 4, 6, 3
    X = rng.standard_normal((B, T, D))
    G = rng.standard_normal((B, T, D))
    keep = X.copy()
    layer = _layer(D, h, np.random.default_rng(7), dropout=0.5)
    same = _layer(D, h, np.random.default_rng(7), dropout=0.5)
    Y = layer.forward(X)
    assert_allclose(same.forward(X), Y, rtol=0, atol=0)                       # seeded through rng
    mask = layer.attn_dropout.mask
    assert mask.shape == (B, h, T, T) and set(np.unique(mask)) == {0.0, 2.0}  # inverted: 0 or 1/(1-p)
    assert_allclose(Y, _reference(layer.params, h, X, dropout_mask=mask), rtol=1e-12, atol=1e-12)
    assert np.abs(layer.forward(X) - Y).max() > 1e-6                          # a fresh mask next time
    assert_allclose(X, keep, rtol=0, atol=0)

    layer.eval()                                                             # reaches the child Dropout
    assert not layer.attn_dropout.training
    plain = _layer(D, h, np.random.default_rng(7))
    assert_allclose(layer.forward(X), plain.forward(X), rtol=0, atol=0)
    assert_allclose(layer.backward(G), plain.backward(G), rtol=0, atol=0)
    layer.train()

    fixed = _FixedMaskDropout(0.5)
    fixed.fixed = mask
    layer.attn_dropout = fixed
    layer.zero_grad()
    layer.forward(X)
    dX = layer.backward(G)

    def loss():
        return float(np.sum(layer.forward(X) * G))

    check_gradient(loss, X, dX, rtol=1e-6)
    for name in ("W_q", "W_v", "b_q"):
        check_gradient(loss, layer.params[name], layer.grads[name].copy(), rtol=1e-6)


@pytest.mark.parametrize("padding", [False, True])
def test_kv_cache_steps_equal_the_full_forward(rng, padding):
    """A prompt of 2 positions, then one position at a time: each equals the full causal forward."""
    B, T, D, h = 2, 6, 6, 2
    layer = _layer(D, h, rng, dropout=0.3)                  # train mode: the step must not drop
    X = rng.standard_normal((B, T, D))
    kpm = None
    if padding:
        kpm = np.zeros((B, T), dtype=bool)
        kpm[1, :3] = True                                   # left padding: sequence 1 starts at 3
    layer.eval()
    full = layer.forward(X, key_padding_mask=kpm)
    layer.train()
    cache = {}
    steps = [(0, 2)] + [(t, t + 1) for t in range(2, T)]
    for start, stop in steps:
        part = layer.forward_step(X[:, start:stop], cache,
                                  key_padding_mask=None if kpm is None else kpm[:, :stop])
        assert part.shape == (B, stop - start, D)
        assert cache["K"].shape == cache["V"].shape == (B, h, stop, D // h)
        assert_allclose(part, full[:, start:stop], rtol=1e-12, atol=1e-13)


def test_kv_cache_leaves_the_training_state_alone(rng):
    B, T, D, h = 2, 3, 4, 2
    layer = _layer(D, h, rng)
    X, G = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
    fresh = _layer(D, h, rng)
    for name in NAMES:
        fresh.params[name][...] = layer.params[name]
    layer.forward(X)
    layer.forward_step(rng.standard_normal((1, 5, D)), {})
    assert_allclose(layer.backward(G), (fresh.forward(X), fresh.backward(G))[1], rtol=0, atol=0)


def test_grads_accumulate_over_two_sequences_and_zero_grad(rng):
    D, h = 6, 3
    layer = _layer(D, h, rng)
    want = {name: 0.0 for name in NAMES}
    for B, T in ((2, 3), (1, 5)):
        X, G = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
        fresh = _layer(D, h, rng)
        for name in NAMES:
            fresh.params[name][...] = layer.params[name]
        fresh.forward(X)
        fresh.backward(G)
        for name in NAMES:
            want[name] = want[name] + fresh.grads[name]
        layer.forward(X)
        layer.backward(G)
    for name in NAMES:
        assert_allclose(layer.grads[name], want[name], rtol=1e-12, atol=1e-14, err_msg=name)
    layer.zero_grad()
    assert not any(g.any() for g in layer.grads.values())


def test_init_dtype_and_float32(rng):
    layer = MultiHeadAttention(8, 2, rng=rng)
    for name in NAMES:
        assert layer.params[name].dtype == np.float32
    assert np.abs(layer.params["W_q"]).max() <= 1 / math.sqrt(8) and not layer.params["b_q"].any()
    X = rng.standard_normal((2, 3, 8)).astype(np.float32)
    Y = layer.forward(X, key_padding_mask=np.array([[True, False, False], [False] * 3]))  # query 0: no key
    dX = layer.backward(np.ones_like(Y))
    assert Y.dtype == dX.dtype == layer.grads["W_q"].dtype == np.float32
    p64 = {k: v.astype(np.float64) for k, v in layer.params.items()}
    kpm = np.array([[True, False, False], [False] * 3])
    want = _reference(p64, 2, X.astype(np.float64), key_padding_mask=kpm)
    assert_allclose(Y, want, rtol=1e-4, atol=1e-5)


def test_bad_arguments_raise(rng):
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MultiHeadAttention(6, 4)
    layer = _layer(6, 2, rng)
    X = rng.standard_normal((2, 3, 6))
    with pytest.raises(ValueError, match="B, T, D"):
        layer.forward(X[0])
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        layer.forward(np.ones((2, 3, 5)))
    with pytest.raises(ValueError, match="key_padding_mask"):
        layer.forward(X, key_padding_mask=np.zeros((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="batch"):
        layer.forward(X, memory=np.ones((3, 4, 6)))
    layer.forward(X)
    with pytest.raises(ValueError, match="dLdY"):
        layer.backward(np.ones((2, 3, 5)))


@pytest.mark.parametrize("cross", [False, True])
def test_device_matches_host(xp, rng, cross):
    B, T, D, h = 2, 4, 6, 3
    X, G = rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D))
    memory = rng.standard_normal((B, 5, D)) if cross else None
    kpm = rng.random((B, 5 if cross else T)) < 0.3
    with on_host():
        host = _layer(D, h, np.random.default_rng(1))
        want = [host.forward(X, memory, kpm), host.backward(G)] + [host.grads[n] for n in NAMES]
        want_step = host.forward_step(X, {})
    dev = _layer(D, h, np.random.default_rng(1))
    got = [dev.forward(xp.asarray(X), None if memory is None else xp.asarray(memory), xp.asarray(kpm)),
           dev.backward(xp.asarray(G))] + [dev.grads[n] for n in NAMES]
    for g, w in zip(got, want):
        for a, b in zip(g, w) if isinstance(w, tuple) else [(g, w)]:
            assert_allclose(to_numpy(a), b, rtol=1e-11, atol=1e-12)
    assert_allclose(to_numpy(dev.forward_step(xp.asarray(X), {})), want_step, rtol=1e-11, atol=1e-12)

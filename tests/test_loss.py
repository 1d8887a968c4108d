"""CrossEntropyLoss and LinearCrossEntropyLoss: value, gradient, stability, the in-place
mode, the fused head's equality with Linear + CrossEntropyLoss, and input checks.

Shapes: N rows, C classes, I input features. The reference is an independent float64
log-softmax (np.logaddexp.reduce); gradients against central differences in float64.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import CrossEntropyLoss, Linear, LinearCrossEntropyLoss


def _reference_loss(Z, y):
    Z = np.asarray(Z, np.float64)
    logp = Z - np.logaddexp.reduce(Z, axis=1, keepdims=True)
    return -float(np.mean(logp[np.arange(Z.shape[0]), y]))


def _reference_grad(Z, y):
    Z = np.asarray(Z, np.float64)
    P = np.exp(Z - np.logaddexp.reduce(Z, axis=1, keepdims=True))
    P[np.arange(Z.shape[0]), y] -= 1.0
    return P / Z.shape[0]


def _data(rng, scale=2.0):
    N, C = int(rng.integers(1, 7)), int(rng.integers(2, 8))
    return rng.standard_normal((N, C)) * scale, rng.integers(0, C, size=N)


def test_value_matches_reference(xp, rng):
    Z, y = _data(rng)
    loss = CrossEntropyLoss().forward(Z, y)
    assert isinstance(loss, float)
    assert_allclose(loss, _reference_loss(Z, y), rtol=1e-12)
    dev = CrossEntropyLoss().forward(xp.asarray(Z), xp.asarray(y))
    assert_allclose(dev, loss, rtol=1e-12)


def test_gradient_matches_finite_differences(xp, rng):
    Z, y = _data(rng)
    crit = CrossEntropyLoss()
    crit.forward(Z, y)
    dZ = crit.backward()
    assert dZ.shape == Z.shape
    assert_allclose(dZ, _reference_grad(Z, y), rtol=1e-10, atol=1e-14)
    check_gradient(lambda: CrossEntropyLoss().forward(Z, y), Z, dZ, rtol=1e-6)
    assert_allclose(dZ.sum(axis=1), 0.0, atol=1e-12)   # softmax rows sum to 1, minus one one-hot
    dev = CrossEntropyLoss()
    dev.forward(xp.asarray(Z), xp.asarray(y))
    assert_allclose(to_numpy(dev.backward()), dZ, rtol=1e-10, atol=1e-14)


def test_dLdloss_scales_the_gradient(rng):
    Z, y = _data(rng)
    s = float(rng.uniform(0.1, 5.0)) * (-1 if rng.integers(2) else 1)
    a, b = CrossEntropyLoss(), CrossEntropyLoss()
    a.forward(Z, y)
    b.forward(Z, y)
    assert_allclose(b.backward(s), s * a.backward(), rtol=1e-12, atol=1e-15)
    c = CrossEntropyLoss()
    c.forward(Z, y)
    check_gradient(lambda: s * CrossEntropyLoss().forward(Z, y), Z, c.backward(dLdloss=s), rtol=1e-6)


def test_large_logits_are_stable(rng):
    N, C = 5, 6
    Z = rng.standard_normal((N, C)) * 10 + 1e4
    Z[1] = -1e4 + rng.standard_normal(C)
    Z[2, 3] = 1e4 + 80.0                     # one logit dominating: p ~ 1 at 3, tiny elsewhere
    y = rng.integers(0, C, size=N)
    y[2] = 0                                  # a target with probability ~ e^-80
    with np.errstate(all="raise"):
        crit = CrossEntropyLoss()
        loss = crit.forward(Z, y)
        dZ = crit.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dZ))
    assert_allclose(loss, _reference_loss(Z, y), rtol=1e-10)
    assert loss > 80 / N - 1                  # row 2 alone contributes about 80 / N
    assert_allclose(dZ, _reference_grad(Z, y), rtol=1e-8, atol=1e-14)


def test_float32_large_logits(rng):
    Z = (rng.standard_normal((4, 5)) * 20 + 1e4).astype(np.float32)
    y = rng.integers(0, 5, size=4)
    crit = CrossEntropyLoss()
    loss = crit.forward(Z, y)
    dZ = crit.backward()
    assert dZ.dtype == np.float32
    assert np.isfinite(loss) and np.all(np.isfinite(dZ))
    assert_allclose(loss, _reference_loss(Z, y), rtol=1e-4)
    assert_allclose(dZ, _reference_grad(Z, y), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)])
def test_inplace_gives_the_same_loss_and_gradient(rng, dtype, tol):
    Z, y = _data(rng, scale=4.0)
    Z = Z.astype(dtype)
    original = Z.copy()
    crit = CrossEntropyLoss(inplace=False)
    loss = crit.forward(Z, y)
    dZ = crit.backward()
    assert_array_equal(Z, original)           # the caller's logits are untouched
    assert not np.shares_memory(dZ, Z)

    Z2 = original.copy()
    crit2 = CrossEntropyLoss(inplace=True)
    loss2 = crit2.forward(Z2, y)
    dZ2 = crit2.backward()
    assert_allclose(loss2, loss, rtol=tol)
    assert_allclose(dZ2, dZ, rtol=tol, atol=tol)
    assert np.shares_memory(dZ2, Z2)          # the documented buffer reuse
    assert_allclose(loss, _reference_loss(original, y), rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_backward_uses_the_latest_forward(rng):
    """Two forward passes in a row: backward uses the latest one."""
    Z1, y1 = _data(rng)
    Z2 = rng.standard_normal(Z1.shape)
    y2 = rng.integers(0, Z1.shape[1], size=Z1.shape[0])
    crit = CrossEntropyLoss()
    crit.forward(Z1, y1)
    crit.forward(Z2, y2)
    assert_allclose(crit.backward(), _reference_grad(Z2, y2), rtol=1e-10, atol=1e-14)


def test_bad_inputs_raise(rng):
    N, C = 4, 5
    Z = rng.standard_normal((N, C))
    y = rng.integers(0, C, size=N)
    crit = CrossEntropyLoss()
    with pytest.raises(ValueError):
        crit.forward(Z[0], y[:1])                           # 1-D logits
    with pytest.raises(ValueError):
        crit.forward(Z.reshape(2, 2, C), y)                 # 3-D logits
    with pytest.raises(ValueError):
        crit.forward(Z, y[:-1])                             # length mismatch
    with pytest.raises(ValueError):
        crit.forward(Z, y[:, None])                         # (N, 1) targets
    with pytest.raises(TypeError):
        crit.forward(Z, y.astype(np.float64))
    for bad in (C, -1):
        yb = y.copy()
        yb[1] = bad
        with pytest.raises(ValueError):
            crit.forward(Z, yb)


# ----------------------------------------------------------------------------- LinearCrossEntropyLoss

def _head_data(rng, dtype=np.float64):
    """A Linear (I -> C) with a random bias, inputs X (N, I) and targets with a repeat."""
    N, I, C = int(rng.integers(2, 9)), int(rng.integers(1, 6)), int(rng.integers(2, 9))
    lin = Linear(I, C, dtype=dtype, rng=rng)
    lin.params["W"][...] = rng.standard_normal((C, I)) * 1.5
    lin.params["b"][...] = rng.standard_normal(C)
    X = rng.standard_normal((N, I)).astype(dtype)
    y = rng.integers(0, C, size=N)
    y[-1] = y[0]                                            # a repeated target: its corrections add up
    return lin, X, y


def test_fused_head_gradients_match_finite_differences(rng):
    """dX, dW, db of CE(X W^T + b, y) against central differences, every entry, float64."""
    lin, X, y = _head_data(rng)
    head = LinearCrossEntropyLoss(lin)
    s = float(rng.uniform(0.5, 2.0))
    loss = head.forward(X, y)
    dX = head.backward(dLdloss=s)
    assert_allclose(loss, _reference_loss(X @ lin.params["W"].T + lin.params["b"], y), rtol=1e-12)

    def f():
        return s * LinearCrossEntropyLoss(lin).forward(X, y)
    check_gradient(f, X, dX, rtol=1e-6)
    check_gradient(f, lin.params["W"], lin.grads["W"], rtol=1e-6)
    check_gradient(f, lin.params["b"], lin.grads["b"], rtol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_fused_head_equals_linear_then_cross_entropy(xp, rng, dtype, tol):
    """The same loss and gradients as Linear.forward -> CrossEntropyLoss -> Linear.backward,
    also when the gradients already hold something (they accumulate) and on the device."""
    with on_host():
        lin, X, y = _head_data(rng, dtype)
    for g in lin.grads.values():
        g[...] = rng.standard_normal(g.shape)
    start = {k: g.copy() for k, g in lin.grads.items()}
    crit = CrossEntropyLoss()
    loss = crit.forward(lin.forward(X), y)
    dX = lin.backward(crit.backward())
    expected = {k: g.copy() for k, g in lin.grads.items()}

    dev = Linear(X.shape[1], lin.out_features, dtype=dtype)
    for k in lin.params:
        dev.params[k] = xp.asarray(lin.params[k])
        dev.grads[k] = xp.asarray(start[k])
    head = LinearCrossEntropyLoss(dev)
    out = xp.empty((X.shape[0], lin.out_features), dtype=dtype)
    loss2 = head.forward(xp.asarray(X), xp.asarray(y), out=out)
    assert head.E is out                                    # the caller's buffer took the logits
    dX2 = head.backward()
    assert dX2.dtype == dtype and dev.grads["W"].dtype == dtype
    assert_allclose(loss2, loss, rtol=tol)
    assert_allclose(to_numpy(dX2), dX, rtol=tol, atol=tol)
    for k in expected:
        assert_allclose(to_numpy(dev.grads[k]), expected[k], rtol=tol, atol=tol)
    assert head.E is None                                   # backward runs once per forward


def test_fused_head_large_logits_are_stable(rng):
    """Logits near 1e4 (and one dominating by 80) give finite, exact results."""
    lin, X, y = _head_data(rng)
    lin.params["b"][...] = 1e4 + rng.standard_normal(lin.out_features)
    lin.params["b"][0] += 80.0
    y[0] = 1 if lin.out_features > 1 else 0                 # a target with probability ~ e^-80
    with np.errstate(all="raise"):
        head = LinearCrossEntropyLoss(lin)
        loss = head.forward(X, y)
        dX = head.backward()
    assert np.isfinite(loss) and np.all(np.isfinite(dX))
    assert_allclose(loss, _reference_loss(X @ lin.params["W"].T + lin.params["b"], y), rtol=1e-10)


def test_fused_head_big_vocabulary_in_cache_blocks(rng, monkeypatch):
    """Enough rows and classes for the threaded, cache-blocked pass (several blocks per thread)."""
    monkeypatch.setenv("MYTORCH_THREADS", "2")
    N, I, C = 40, 3, 20000                                  # 800,000 logits: 2 threads x 4+ blocks
    lin = Linear(I, C, dtype=np.float64, rng=rng)
    lin.params["b"][...] = rng.standard_normal(C)
    X, y = rng.standard_normal((N, I)) * 3, rng.integers(0, C, size=N)
    head = LinearCrossEntropyLoss(lin)
    loss = head.forward(X, y)
    dX = head.backward()
    Z = X @ lin.params["W"].T + lin.params["b"]
    assert_allclose(loss, _reference_loss(Z, y), rtol=1e-12)
    dZ = _reference_grad(Z, y)
    assert_allclose(dX, dZ @ lin.params["W"], rtol=1e-10, atol=1e-15)
    assert_allclose(lin.grads["W"], dZ.T @ X, rtol=1e-10, atol=1e-15)
    assert_allclose(lin.grads["b"], dZ.sum(axis=0), rtol=1e-10, atol=1e-15)


def test_fused_head_bad_inputs_raise(rng):
    lin, X, y = _head_data(rng)
    head = LinearCrossEntropyLoss(lin)
    with pytest.raises(RuntimeError, match="needs a forward first"):
        head.backward()
    with pytest.raises(ValueError, match=r"expected X of shape \(N, "):
        head.forward(X[None], y)
    with pytest.raises(ValueError, match="expected input of shape"):
        head.forward(np.ones((X.shape[0], X.shape[1] + 1)), y)    # one feature too many
    with pytest.raises(ValueError, match="targets of shape"):
        head.forward(X, y[:-1])
    with pytest.raises(TypeError, match="targets must be integers"):
        head.forward(X, y.astype(np.float64))
    with pytest.raises(ValueError, match="targets must lie in"):
        head.forward(X, np.full_like(y, lin.out_features))
    with pytest.raises(ValueError, match="with a bias"):
        LinearCrossEntropyLoss(Linear(2, 3, bias=False))

"""LayerNorm: forward against torch.nn.LayerNorm's formula, backward against central differences.

Shapes: N rows, B batch, T time, D features (normalised over the last axis).
Loss L = sum(Y * G) for a random G, so dL/dY = G; float64 for the checks.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import LayerNorm


def _reference(X, gamma, beta, eps):
    """torch.nn.LayerNorm: (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta, Var biased (ddof=0)."""
    mean = X.mean(axis=-1, keepdims=True)
    var = X.var(axis=-1, keepdims=True, ddof=0)
    return (X - mean) / np.sqrt(var + eps) * gamma + beta


def _layer(D, rng, eps=1e-5):
    """A float64 LayerNorm with random gamma and beta (not the 1 / 0 they start at)."""
    layer = LayerNorm(D, eps=eps, dtype=np.float64)
    layer.params["gamma"][...] = rng.standard_normal(D)
    layer.params["beta"][...] = rng.standard_normal(D)
    return layer


def _shape(rng, lead):
    """lead + (D,), D >= 3: with D = 2 and a small eps, xhat = +-1 whatever x is, dL/dx ~ 1e-6 and the
    central difference is rounding noise (a degenerate check, not a test of the backward)."""
    D = int(rng.integers(3, 7))
    if lead == "random":
        lead = tuple(int(n) for n in rng.integers(1, 4, size=int(rng.integers(1, 3))))
    return lead + (D,)


def test_starts_as_plain_normalisation(rng):
    layer = LayerNorm(6)
    assert layer.params["gamma"].dtype == np.float32
    assert_allclose(layer.params["gamma"], 1.0)
    assert_allclose(layer.params["beta"], 0.0)
    assert sorted(layer.params) == sorted(layer.grads) == ["beta", "gamma"]
    X = (rng.standard_normal((4, 5, 6)) * 3 + 2).astype(np.float32)
    Y = layer.forward(X)
    assert Y.dtype == np.float32
    assert_allclose(Y.mean(-1), 0.0, atol=1e-6)
    assert_allclose(Y.var(-1), 1.0, rtol=1e-4)                # var / (var + eps), var ~ 9


@pytest.mark.parametrize("lead", [(5,), (2, 3), (1, 1), "random"])
def test_forward_matches_torch_formula(rng, lead):
    shape = _shape(rng, lead)
    eps = float(rng.choice([1e-5, 1e-3, 0.1]))
    layer = _layer(shape[-1], rng, eps)
    X = rng.standard_normal(shape) * 2 + 0.5
    assert_allclose(layer.forward(X), _reference(X, layer.params["gamma"], layer.params["beta"], eps),
                    rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("lead", [(5,), (2, 3), (1, 1), "random"])
def test_gradients_match_finite_differences(rng, lead):
    shape = _shape(rng, lead)
    layer = _layer(shape[-1], rng, eps=float(rng.choice([1e-5, 0.1])))
    X = rng.standard_normal(shape) * 1.5 + rng.standard_normal()
    G = rng.standard_normal(shape)
    layer.forward(X)
    dX = layer.backward(G)
    assert dX.shape == X.shape

    def loss():
        return float(np.sum(layer.forward(X) * G))

    check_gradient(loss, X, dX, rtol=1e-6)
    for name in ("gamma", "beta"):
        check_gradient(loss, layer.params[name], layer.grads[name].copy(), rtol=1e-6)


def test_one_feature_gives_beta_and_no_input_gradient(rng):
    """D = 1: x - mean is 0, so y = beta and dL/dx = 0 exactly."""
    layer = _layer(1, rng)
    X = rng.standard_normal((3, 4, 1))
    assert_allclose(layer.forward(X), np.broadcast_to(layer.params["beta"], X.shape), atol=0)
    assert not layer.backward(rng.standard_normal(X.shape)).any()


def test_grads_accumulate_and_zero_grad(rng):
    layer = _layer(4, rng)
    X1, X2 = rng.standard_normal((2, 3, 4)), rng.standard_normal((1, 5, 4))
    G1, G2 = rng.standard_normal(X1.shape), rng.standard_normal(X2.shape)
    want = {}
    for X, G in ((X1, G1), (X2, G2)):
        fresh = _layer(4, rng)
        fresh.params["gamma"][...], fresh.params["beta"][...] = layer.params["gamma"], layer.params["beta"]
        fresh.forward(X)
        fresh.backward(G)
        for k in ("gamma", "beta"):
            want[k] = want.get(k, 0) + fresh.grads[k]
        layer.forward(X)
        layer.backward(G)
    for k in ("gamma", "beta"):
        assert_allclose(layer.grads[k], want[k], rtol=1e-12, atol=1e-14)
    layer.zero_grad()
    assert not layer.grads["gamma"].any() and not layer.grads["beta"].any()


def test_bad_shapes_raise_and_caller_array_is_kept(rng):
    layer = LayerNorm(4, dtype=np.float64)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        layer.forward(np.ones((2, 5)))
    X = rng.standard_normal((2, 4))
    keep = X.copy()
    layer.forward(X)
    layer.backward(np.ones_like(X))
    assert_allclose(X, keep, rtol=0, atol=0)
    with pytest.raises(ValueError, match="dLdY"):
        layer.backward(np.ones((3, 4)))


def test_device_matches_host(xp, rng):
    X = rng.standard_normal((2, 3, 5)) * 2
    G = rng.standard_normal(X.shape)
    with on_host():
        host = _layer(5, rng)
        want = host.forward(X), host.backward(G), host.grads["gamma"], host.grads["beta"]
    dev = LayerNorm(5, dtype=np.float64)
    dev.params["gamma"][...] = xp.asarray(host.params["gamma"])
    dev.params["beta"][...] = xp.asarray(host.params["beta"])
    got = dev.forward(xp.asarray(X)), dev.backward(xp.asarray(G)), dev.grads["gamma"], dev.grads["beta"]
    for g, w in zip(got, want):
        assert_allclose(to_numpy(g), w, rtol=1e-12, atol=1e-13)

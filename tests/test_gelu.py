"""erf and GELU: erf against math.erf, GELU against torch.nn.GELU's formulas, backward against FD.

Shapes: any (the layer is elementwise); the gradient checks draw (B, T, D).
Loss L = sum(Y * G) for a random G, so dL/dY = G; central differences in float64.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import GELU, erf


def _wide_grid():
    """Every 1e-4 over [-10, 10], and magnitudes from 1e-300 up (both signs)."""
    tiny = np.geomspace(1e-300, 10.0, 20001)
    return np.concatenate([np.linspace(-10.0, 10.0, 200001), tiny, -tiny])


def test_erf_matches_math_erf_to_float64_accuracy():
    x = _wide_grid()
    want = np.array([math.erf(v) for v in x])
    got = erf(x)
    assert got.dtype == np.float64 and got.shape == x.shape
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-300)
    assert rel.max() < 1e-15, f"max relative error {rel.max():.2e} at x = {x[rel.argmax()]!r}"
    # exact where exactness is cheap: odd, 0 at 0, +-1 far out; NaN stays NaN
    assert_allclose(erf(-x), -got, rtol=0, atol=0)
    special = erf(np.array([0.0, 6.0, 40.0, -40.0, np.inf, -np.inf, np.nan]))
    assert_allclose(special[:6], [0.0, 1.0, 1.0, -1.0, 1.0, -1.0], rtol=0, atol=0)
    assert np.isnan(special[6])


def test_erf_float32_and_shapes(rng):
    x = rng.uniform(-7, 7, size=(3, 4, 5)).astype(np.float32)
    got = erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    want = np.vectorize(math.erf)(x.astype(np.float64))
    assert_allclose(got, want, rtol=0, atol=3e-7)


def _gelu_reference(x, approximate):
    """torch.nn.GELU's formulas, one math.* call per entry."""
    if approximate == "none":
        f = lambda v: 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))             # noqa: E731
    else:
        f = lambda v: 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi)        # noqa: E731
                                                 * (v + 0.044715 * v ** 3)))
    return np.vectorize(f)(x)


def _gelu_derivative_reference(x, approximate):
    """d GELU / dx written out per entry (the tanh form by the chain rule, independently)."""
    def exact(v):
        return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)

    def tanh_form(v):
        k = math.sqrt(2.0 / math.pi)
        s = 1.0 / math.cosh(k * (v + 0.044715 * v ** 3))                 # sech: 1 - tanh^2 = sech^2
        u = k * (v + 0.044715 * v ** 3)
        return 0.5 * (1.0 + math.tanh(u)) + 0.5 * v * s * s * k * (1 + 0.134145 * v * v)
    return np.vectorize(exact if approximate == "none" else tanh_form)(x)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_forward_and_derivative_match_the_formulas(rng, approximate):
    x = np.concatenate([np.linspace(-12, 12, 4801), rng.standard_normal(500) * 3])
    layer = GELU(approximate)
    y = layer.forward(x)
    assert_allclose(y, _gelu_reference(x, approximate), rtol=1e-13, atol=1e-15)
    dx = layer.backward(np.ones_like(x))
    assert_allclose(dx, _gelu_derivative_reference(x, approximate), rtol=1e-12, atol=1e-14)
    # the two forms differ, but by little (torch documents ~1e-3)
    other = GELU("tanh" if approximate == "none" else "none").forward(x)
    assert 1e-5 < np.abs(other - y).max() < 1e-2


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_gradients_match_finite_differences(rng, approximate, scale):
    """Random (B, T, D), values out to |x| ~ 10 at scale 4 (both tails, where GELU bends)."""
    shape = tuple(int(n) for n in rng.integers(1, 5, size=3))
    X = rng.standard_normal(shape) * scale
    G = rng.standard_normal(shape)
    layer = GELU(approximate)
    Y = layer.forward(X)
    dX = layer.backward(G)
    assert Y.shape == dX.shape == shape

    def loss():
        return float(np.sum(GELU(approximate).forward(X) * G))

    check_gradient(loss, X, dX, rtol=1e-6)


def test_invalid_approximate_raises():
    for bad in ("Tanh", "exact", None, "erf"):
        with pytest.raises(ValueError, match="approximate"):
            GELU(bad)


def test_float32_eval_and_caller_array(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    keep = x.copy()
    for approximate in ("none", "tanh"):
        layer = GELU(approximate)
        y_train = layer.forward(x)
        assert y_train.dtype == np.float32
        assert layer.backward(np.ones_like(x)).dtype == np.float32
        assert_allclose(y_train, _gelu_reference(x.astype(np.float64), approximate), rtol=1e-5, atol=1e-6)
        y_eval = layer.eval().forward(x)                 # no train/eval difference
        assert_allclose(y_eval, y_train, rtol=0, atol=0)
        with pytest.raises(ValueError, match="dLdY"):
            layer.backward(np.ones((2, 3, 5), dtype=np.float32))
    assert_allclose(x, keep, rtol=0, atol=0)
    assert GELU().params == {} and GELU().parameters() == []


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_device_matches_host(xp, rng, approximate):
    X = rng.standard_normal((2, 3, 5)) * 3
    G = rng.standard_normal(X.shape)
    with on_host():
        host = GELU(approximate)
        want_y, want_dx = host.forward(X), host.backward(G)
    dev = GELU(approximate)
    got_y = to_numpy(dev.forward(xp.asarray(X)))
    got_dx = to_numpy(dev.backward(xp.asarray(G)))
    assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-14)
    assert_allclose(got_dx, want_dx, rtol=1e-12, atol=1e-14)
    assert_allclose(to_numpy(erf(xp.asarray(X))), erf(X), rtol=1e-14, atol=1e-15)

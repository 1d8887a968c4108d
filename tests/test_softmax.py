"""Softmax layer and the softmax / log_softmax functions.

Gradients against central differences in float64 on the host (L = sum(A * G));
every test runs once per backend via `xp`, where the device result must match
the host result.
"""
import numpy as np
from numpy.testing import assert_allclose

from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn.softmax import Softmax, log_softmax, softmax


def _random_shape(rng):
    """(..., C) with 0 to 2 leading axes."""
    lead = tuple(int(n) for n in rng.integers(1, 5, size=rng.integers(0, 3)))
    return lead + (int(rng.integers(2, 7)),)


def _reference_softmax(Z, axis=-1):
    """Written independently: log-sum-exp in float64 via logaddexp.reduce."""
    Z = np.asarray(Z, np.float64)
    return np.exp(Z - np.logaddexp.reduce(Z, axis=axis, keepdims=True))


def test_forward_rows_sum_to_one_and_match_reference(xp, rng):
    Z = rng.standard_normal(_random_shape(rng)) * 3
    A = Softmax().forward(Z)
    assert A.shape == Z.shape
    assert_allclose(A.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    assert np.all(A > 0)
    assert_allclose(A, _reference_softmax(Z), rtol=1e-12, atol=1e-15)
    # device vs host
    A_dev = Softmax().forward(xp.asarray(Z))
    assert_allclose(to_numpy(A_dev), A, rtol=1e-12, atol=1e-15)


def test_huge_inputs_are_stable(xp, rng):
    """Entries of size 1e4: exp would overflow without the max shift."""
    Z = rng.standard_normal((3, 5)) * 10.0 + 1e4
    Z[1] = -1e4 + rng.standard_normal(5)
    Z[2, 0] = 1e4 + 50.0          # one entry dominating the rest by far
    with np.errstate(all="raise"):
        A = softmax(Z)
        logA = log_softmax(Z)
    assert np.all(np.isfinite(A)) and np.all(np.isfinite(logA))
    assert_allclose(A.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    assert_allclose(A, _reference_softmax(Z), rtol=1e-10, atol=1e-300)
    # shift invariance: softmax(Z + c) = softmax(Z)
    assert_allclose(A, softmax(Z - Z.mean(axis=-1, keepdims=True)), rtol=1e-10, atol=1e-300)
    # log_softmax keeps the tiny probabilities that exp() underflows to 0
    assert_allclose(logA, Z - np.logaddexp.reduce(Z, axis=-1, keepdims=True), rtol=1e-12, atol=1e-8)
    assert logA[2, 1] < -40
    for f, host in ((softmax, A), (log_softmax, logA)):
        assert_allclose(to_numpy(f(xp.asarray(Z))), host, rtol=1e-10, atol=1e-300)


def test_float32_huge_inputs(xp, rng):
    Z = (rng.standard_normal((4, 6)) * 30 + 1e4).astype(np.float32)
    A = softmax(xp.asarray(Z))
    assert A.dtype == np.float32
    A = to_numpy(A)
    assert np.all(np.isfinite(A))
    assert_allclose(A, _reference_softmax(Z), rtol=1e-4, atol=1e-7)


def test_axis_argument(rng):
    Z = rng.standard_normal((3, 4, 5))
    for axis in (0, 1, -1):
        assert_allclose(softmax(Z, axis=axis), _reference_softmax(Z, axis=axis), rtol=1e-12, atol=1e-15)
        assert_allclose(log_softmax(Z, axis=axis), np.log(_reference_softmax(Z, axis=axis)),
                        rtol=1e-12, atol=1e-12)


def test_backward_matches_finite_differences(xp, rng):
    shape = _random_shape(rng)
    Z = rng.standard_normal(shape) * 2
    G = rng.standard_normal(shape)
    layer = Softmax()
    layer.forward(Z)
    dLdZ = layer.backward(G)
    assert dLdZ.shape == Z.shape
    check_gradient(lambda: float(np.sum(softmax(Z) * G)), Z, dLdZ, rtol=1e-6)
    # a softmax row is invariant to adding a constant, so each gradient row sums to 0
    assert_allclose(dLdZ.sum(axis=-1), 0.0, atol=1e-12)
    # device vs host
    dev = Softmax()
    dev.forward(xp.asarray(Z))
    assert_allclose(to_numpy(dev.backward(xp.asarray(G))), dLdZ, rtol=1e-10, atol=1e-14)


def test_backward_with_large_logits(rng):
    """Near one-hot rows (logits spread ~ 20): gradient still right, none of it NaN."""
    Z = rng.standard_normal((4, 5)) * 20
    G = rng.standard_normal((4, 5))
    layer = Softmax()
    layer.forward(Z)
    dLdZ = layer.backward(G)
    check_gradient(lambda: float(np.sum(softmax(Z) * G)), Z, dLdZ, rtol=1e-6)


def test_fully_masked_row_gives_zeros_and_zero_gradient(xp, rng):
    """A row of all -inf (a query with nothing to attend to): zeros, no NaN, no FP warning."""
    Z = rng.standard_normal((3, 4))
    Z[1] = -np.inf
    Z[2, :2] = -np.inf                 # partly masked: an ordinary softmax over the rest
    G = rng.standard_normal((3, 4))
    with np.errstate(all="raise"):
        layer = Softmax()
        A = layer.forward(Z)
        dLdZ = layer.backward(G)
    assert not np.any(np.isnan(A)) and not np.any(np.isnan(dLdZ))
    assert_allclose(A[1], 0.0, atol=0)
    assert_allclose(dLdZ[1], 0.0, atol=0)
    assert_allclose(A[2, :2], 0.0, atol=0)
    assert_allclose(A[2, 2:], _reference_softmax(Z[2, 2:]), rtol=1e-12)
    assert_allclose(A[[0, 2]].sum(axis=-1), 1.0, atol=1e-12)
    dev = Softmax()
    assert_allclose(to_numpy(dev.forward(xp.asarray(Z))), A, rtol=1e-12, atol=1e-15)
    assert_allclose(to_numpy(dev.backward(xp.asarray(G))), dLdZ, rtol=1e-10, atol=1e-14)

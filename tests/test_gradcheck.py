"""The finite-difference checker itself: it passes true gradients and catches wrong ones."""
import numpy as np
import pytest

from mytorch.gradcheck import check_gradient, numerical_grad, relative_error


def _quartic(rng, shape):
    """f(x) = sum(A * x^2) + sum(x^4) / 4 with its exact gradient 2 A x + x^3."""
    A = rng.standard_normal(shape)
    x = rng.standard_normal(shape)
    return x, (lambda: float(np.sum(A * x * x) + np.sum(x ** 4) / 4)), (lambda: 2 * A * x + x ** 3)


@pytest.mark.parametrize("shape", [(3,), (4, 5), (70, 40)])   # the last goes through random directions
def test_true_gradient_passes(rng, shape):
    x, f, grad = _quartic(rng, shape)
    assert check_gradient(f, x, grad(), rng=rng) < 1e-7


@pytest.mark.parametrize("shape", [(4, 5), (70, 40)])
@pytest.mark.parametrize("bug", ["sign", "scale", "one_entry"])
def test_wrong_gradient_fails(rng, shape, bug):
    x, f, grad = _quartic(rng, shape)
    g = grad()
    if bug == "sign":
        g = -g
    elif bug == "scale":
        g = 1.01 * g
    else:
        g.reshape(-1)[int(np.argmax(np.abs(g)))] *= 1.5
    with pytest.raises(AssertionError, match="gradient mismatch"):
        check_gradient(f, x, g, rng=rng)


def test_numerical_grad_restores_the_input(rng):
    x, f, grad = _quartic(rng, (3, 4))
    before = x.copy()
    numerical_grad(f, x)
    np.testing.assert_array_equal(x, before)


def test_float32_is_refused(rng):
    x = rng.standard_normal(3).astype(np.float32)
    with pytest.raises(TypeError, match="float64"):
        check_gradient(lambda: float(x.sum()), x, np.ones(3))


def test_relative_error_is_scale_free():
    a = np.array([1.0, 2.0, 3.0])
    assert relative_error(a, a) == 0
    assert relative_error(1e-9 * a, 1e-9 * a * 1.1) == pytest.approx(relative_error(a, 1.1 * a))

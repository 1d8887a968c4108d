"""AdaptiveLogSoftmaxWithLoss: gradients against central differences (float64) for the input and
every parameter, the loss against log_prob, log_prob against an independent two-level softmax,
accumulation, and input checks.

Shapes: N rows, D in_features, V n_classes, K head size, H_c / S_c a tail cluster's hidden size and
number of classes.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import AdaptiveLogSoftmaxWithLoss


def _layer(rng, D, V, cutoffs, div_value=2.0, head_bias=True, dtype=np.float64):
    """A layer whose logits are O(1): no distribution near uniform, none saturated (a saturated
    softmax has gradients ~1e-6, below what finite differences of a loss ~10 resolve)."""
    layer = AdaptiveLogSoftmaxWithLoss(D, V, cutoffs, div_value=div_value, head_bias=head_bias,
                                       dtype=dtype, rng=rng)
    for _, p, _ in layer.named_parameters():
        p[...] = rng.standard_normal(p.shape) / np.sqrt(p.shape[-1])
    return layer


def _targets(rng, N, V, cutoffs, skip=None):
    """N targets covering the shortlist and every cluster (but cluster `skip`), the rest random."""
    bounds = [0] + list(cutoffs) + [V]
    bands = [b for b in range(len(bounds) - 1) if skip is None or b != skip + 1]
    allowed = np.concatenate([np.arange(bounds[b], bounds[b + 1]) for b in bands])
    y = rng.choice(allowed, size=N)
    for i, b in enumerate(bands):
        y[i] = rng.integers(bounds[b], bounds[b + 1])
    y[-1] = y[0]                                        # a repeated target
    return rng.permutation(y)


CONFIGS = [  # (N, D, V, cutoffs, div_value, head_bias)
    (7, 5, 9, [4], 1.0, True),
    (9, 8, 20, [5, 12], 2.0, False),
    (11, 9, 26, [3, 9, 17], 1.5, True),
    (6, 16, 15, [2, 6, 10, 13], 2.0, True),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_gradients_match_finite_differences(rng, config):
    """dX and every parameter's gradient, every entry, with targets in the head and each cluster."""
    N, D, V, cutoffs, div, bias = config
    layer = _layer(rng, D, V, cutoffs, div, bias)
    X = rng.standard_normal((N, D)) * 1.2
    y = _targets(rng, N, V, cutoffs)
    s = float(rng.uniform(0.5, 2.0))
    layer.forward(X, y)
    dX = layer.backward(dLdloss=s)
    assert dX.shape == X.shape

    def f():
        return s * layer.forward(X, y)
    check_gradient(f, X, dX, rtol=1e-6)
    names = []
    for name, p, g in layer.named_parameters():
        assert np.abs(g).max() > 0, name                # every cluster had rows: all weights moved
        check_gradient(f, p, g, rtol=1e-6)
        names.append(name)
    assert ("head.b" in names) == bias and len(names) == 1 + bias + 2 * len(cutoffs)


@pytest.mark.parametrize("config", CONFIGS)
def test_log_prob_backward_matches_finite_differences(rng, config):
    """log_prob(X, cache=True) -> log_prob_backward(G): dX and every parameter against central
    differences of sum(G * log_prob(X)), G random (every class, every band weighted)."""
    N, D, V, cutoffs, div, bias = config
    layer = _layer(rng, D, V, cutoffs, div, bias)
    X = rng.standard_normal((N, D)) * 1.2
    G = rng.standard_normal((N, V))
    logp = layer.log_prob(X, cache=True)
    dX = layer.log_prob_backward(G)
    assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)

    def f():
        return float((G * layer.log_prob(X)).sum())
    check_gradient(f, X, dX, rtol=1e-6)
    for name, p, g in layer.named_parameters():
        assert np.abs(g).max() > 0, name
        check_gradient(f, p, g, rtol=1e-6)
    with pytest.raises(RuntimeError, match="log_prob\\(X, cache=True\\) first"):
        layer.log_prob_backward(G)                      # once per log_prob


@pytest.mark.parametrize("config", CONFIGS)
def test_nll_is_the_log_prob_at_the_targets_and_saves_nothing(rng, config):
    N, D, V, cutoffs, div, bias = config
    layer = _layer(rng, D, V, cutoffs, div, bias)
    X, y = rng.standard_normal((N, D)), _targets(rng, N, V, cutoffs)
    loss = layer.forward(X, y)
    expected = layer.backward(dLdloss=1.0)
    layer.forward(X, y)                                 # a pending backward...
    nll = layer.nll(X, y)
    assert_allclose(layer.backward(dLdloss=1.0), expected, rtol=1e-12)   # ...that nll left intact
    assert_allclose(nll, -layer.log_prob(X)[np.arange(N), y], rtol=1e-12)
    assert_allclose(nll.mean(), loss, rtol=1e-12)


def test_cluster_without_rows_gets_no_gradient(rng):
    """A batch with no target in cluster 1: its weights get exactly zero, the rest is still exact."""
    N, D, V, cutoffs = 8, 8, 24, [4, 10, 16]
    layer = _layer(rng, D, V, cutoffs)
    X = rng.standard_normal((N, D))
    y = _targets(rng, N, V, cutoffs, skip=1)
    assert not np.any((y >= 10) & (y < 16))
    layer.forward(X, y)
    dX = layer.backward()

    def f():
        return layer.forward(X, y)
    check_gradient(f, X, dX, rtol=1e-6)
    for name, p, g in layer.named_parameters():
        if name.endswith(".1.W"):
            assert not np.any(g), name
        else:
            assert np.abs(g).max() > 0, name
            check_gradient(f, p, g, rtol=1e-6)


def test_batch_of_one_and_shortlist_only(rng):
    layer = _layer(rng, 6, 12, [3, 7])
    for y in (np.array([1]), np.array([9]), np.array([0, 2, 1, 0])):
        X = rng.standard_normal((y.shape[0], 6))
        layer.zero_grad()
        layer.forward(X, y)
        dX = layer.backward()
        check_gradient(lambda: layer.forward(X, y), X, dX, rtol=1e-6)
        check_gradient(lambda: layer.forward(X, y), layer.head.params["W"], layer.head.grads["W"], rtol=1e-6)


@pytest.mark.parametrize("config", CONFIGS)
def test_loss_equals_log_prob_and_rows_sum_to_one(rng, config):
    N, D, V, cutoffs, div, bias = config
    layer = _layer(rng, D, V, cutoffs, div, bias)
    X = rng.standard_normal((N, D)) * 2.0
    y = _targets(rng, N, V, cutoffs)
    loss = layer.forward(X, y)
    lp = layer.log_prob(X)
    assert isinstance(loss, float) and lp.shape == (N, V)
    assert_allclose(loss, -np.mean(lp[np.arange(N), y]), rtol=1e-12)
    assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.array_equal(layer.predict(X), lp.argmax(axis=1))


def test_log_prob_matches_two_level_reference(rng):
    """One boundary, div_value 1 (hidden = D), head bias: an explicit two-level softmax, row by row."""
    N, D, V, k = 5, 6, 11, 4
    layer = _layer(rng, D, V, [k], div_value=1.0, head_bias=True)
    Wh, bh = layer.head.params["W"], layer.head.params["b"]
    W1, W2 = layer.tail_proj[0].params["W"], layer.tail_out[0].params["W"]
    assert Wh.shape == (k + 1, D) and W1.shape == (D, D) and W2.shape == (V - k, D)
    X = rng.standard_normal((N, D)) * 2.0
    ref = np.empty((N, V))
    for n in range(N):
        h = Wh @ X[n] + bh                              # (k + 1,) shortlist logits, then the tail's
        p_head = np.exp(h) / np.sum(np.exp(h))
        z = W2 @ (W1 @ X[n])                            # (V - k,)
        p_tail = np.exp(z) / np.sum(np.exp(z))
        for v in range(V):
            ref[n, v] = np.log(p_head[v]) if v < k else np.log(p_head[k]) + np.log(p_tail[v - k])
    assert_allclose(layer.log_prob(X), ref, rtol=1e-12, atol=1e-12)
    y = rng.integers(0, V, size=N)
    assert_allclose(layer.forward(X, y), -np.mean(ref[np.arange(N), y]), rtol=1e-12)


def test_large_inputs_are_stable(rng):
    layer = _layer(rng, 6, 14, [4, 9])
    X = rng.standard_normal((6, 6)) * 300.0             # logits in the hundreds
    y = _targets(rng, 6, 14, [4, 9])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = layer.forward(X, y)
        dX = layer.backward()
        lp = layer.log_prob(X)
    assert np.isfinite(loss) and np.all(np.isfinite(dX)) and np.all(np.isfinite(lp))
    assert_allclose(loss, -np.mean(lp[np.arange(6), y]), rtol=1e-10)


def test_gradients_accumulate_and_backward_runs_once(rng):
    layer = _layer(rng, 8, 20, [5, 12])
    X = rng.standard_normal((9, 8))
    y = _targets(rng, 9, 20, [5, 12])
    with pytest.raises(RuntimeError, match="needs a forward first"):
        layer.backward()
    layer.forward(X, y)
    dX1 = layer.backward()
    first = {name: g.copy() for name, _, g in layer.named_parameters()}
    with pytest.raises(RuntimeError, match="needs a forward first"):
        layer.backward()                                # once per forward
    layer.forward(X, y)
    assert_allclose(layer.backward(), dX1, rtol=1e-14)
    for name, _, g in layer.named_parameters():
        assert_allclose(g, 2 * first[name], rtol=1e-14, err_msg=name)
    layer.zero_grad()
    assert all(not np.any(g) for _, _, g in layer.named_parameters())


def test_float32_close_to_float64(rng):
    layer64 = _layer(rng, 8, 20, [5, 12])
    layer32 = AdaptiveLogSoftmaxWithLoss(8, 20, [5, 12], div_value=2.0, head_bias=True)
    for (_, p32, _), (_, p64, _) in zip(layer32.named_parameters(), layer64.named_parameters()):
        p32[...] = p64
    X = rng.standard_normal((9, 8))
    y = _targets(rng, 9, 20, [5, 12])
    loss32 = layer32.forward(X.astype(np.float32), y)
    dX32 = layer32.backward()
    assert dX32.dtype == np.float32 and layer32.log_prob(X.astype(np.float32)).dtype == np.float32
    assert_allclose(loss32, layer64.forward(X, y), rtol=1e-5)
    assert_allclose(dX32, layer64.backward(), rtol=1e-4, atol=1e-6)


def test_device_matches_host(xp, rng):
    with on_host():
        host = _layer(rng, 8, 20, [5, 12])
    X = rng.standard_normal((9, 8))
    y = _targets(rng, 9, 20, [5, 12])
    loss = host.forward(X, y)
    dX = host.backward()
    dev = AdaptiveLogSoftmaxWithLoss(8, 20, [5, 12], div_value=2.0, head_bias=True, dtype=np.float64)
    for (_, pd, _), (_, ph, _) in zip(dev.named_parameters(), host.named_parameters()):
        pd[...] = xp.asarray(ph)
    assert_allclose(dev.forward(xp.asarray(X), xp.asarray(y)), loss, rtol=1e-12)
    assert_allclose(to_numpy(dev.backward()), dX, rtol=1e-10, atol=1e-14)
    for (name, _, gd), (_, _, gh) in zip(dev.named_parameters(), host.named_parameters()):
        assert_allclose(to_numpy(gd), gh, rtol=1e-10, atol=1e-14, err_msg=name)
    assert_allclose(to_numpy(dev.log_prob(xp.asarray(X))), host.log_prob(X), rtol=1e-12, atol=1e-12)


def test_shapes_follow_torch_definition():
    layer = AdaptiveLogSoftmaxWithLoss(128, 33280, [2000, 10000], div_value=4.0)
    shapes = {name: p.shape for name, p, _ in layer.named_parameters()}
    assert shapes == {"head.W": (2002, 128), "tail_proj.0.W": (32, 128), "tail_out.0.W": (8000, 32),
                      "tail_proj.1.W": (8, 128), "tail_out.1.W": (23280, 8)}
    assert layer.head.params["W"].dtype == np.float32


@pytest.mark.parametrize("cutoffs", [[], [0], [10], [12], [-1], [5, 3], [3, 3], [2.5], [4.0], [True]])
def test_bad_cutoffs_raise(cutoffs):
    with pytest.raises(ValueError, match="cutoffs|cutoff"):
        AdaptiveLogSoftmaxWithLoss(8, 10, cutoffs)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="hidden size"):
        AdaptiveLogSoftmaxWithLoss(8, 20, [5, 12], div_value=4.0)    # 8 // 16 = 0
    with pytest.raises(ValueError, match="div_value"):
        AdaptiveLogSoftmaxWithLoss(8, 20, [5], div_value=0.0)
    with pytest.raises(ValueError, match="n_classes"):
        AdaptiveLogSoftmaxWithLoss(8, 1, [1])
    with pytest.raises(ValueError, match="in_features"):
        AdaptiveLogSoftmaxWithLoss(0, 10, [5])


def test_bad_inputs_raise(rng):
    layer = _layer(rng, 6, 12, [3, 7])
    X = rng.standard_normal((4, 6))
    y = np.array([0, 5, 8, 11])
    for bad in (12, -1):
        yb = y.copy()
        yb[2] = bad
        with pytest.raises(ValueError, match="targets must lie in"):
            layer.forward(X, yb)
    with pytest.raises(TypeError, match="integers"):
        layer.forward(X, y.astype(np.float64))
    with pytest.raises(ValueError, match="targets of shape"):
        layer.forward(X, y[:-1])
    with pytest.raises(ValueError, match="expected X of shape"):
        layer.forward(X[None], y)
    with pytest.raises(ValueError, match="expected input of shape"):
        layer.log_prob(np.ones((4, 7)))

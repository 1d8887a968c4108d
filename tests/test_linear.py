"""Linear and Embedding, plus the two backend kernels their backward uses.

Shapes: N rows, B batch, T time, I in, O out, V vocab, D embedding dim.
Gradients against central differences in float64 (L = sum(Z * G), random G);
the `xp` cases compare the device result with the host result.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mytorch import backend
from conftest import on_host
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient
from mytorch.nn import Embedding, Linear


def _leading_shape(rng):
    """(N,) or (B, T): 1-D rows or a 3-D (B, T, I) input."""
    if rng.integers(2):
        return (int(rng.integers(1, 6)),)
    return (int(rng.integers(1, 4)), int(rng.integers(1, 5)))


def _reference_linear_grads(X, W, G):
    """Written out independently: dW = sum_rows G^T X, db = sum_rows G, dX = G W."""
    dW = np.einsum("no,ni->oi", G.reshape(-1, G.shape[-1]), X.reshape(-1, X.shape[-1]))
    db = G.reshape(-1, G.shape[-1]).sum(axis=0)
    return dW, db, G @ W


# -- Linear -------------------------------------------------------------------------------------

@pytest.mark.parametrize("lead", [(5,), (3, 4), (1, 1), "random"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients_match_finite_differences(rng, lead, bias):
    lead = _leading_shape(rng) if lead == "random" else lead
    I, O = (int(n) for n in rng.integers(1, 6, size=2))
    layer = Linear(I, O, bias=bias, dtype=np.float64, rng=rng)
    X = rng.standard_normal(lead + (I,))
    G = rng.standard_normal(lead + (O,))
    Z = layer.forward(X)
    assert Z.shape == lead + (O,)
    ref = X @ layer.params["W"].T + (layer.params["b"] if bias else 0.0)
    assert_allclose(Z, ref, rtol=1e-12, atol=1e-14)

    dX = layer.backward(G)
    assert dX.shape == X.shape

    def f():
        return float(np.sum(layer.forward(X) * G))

    check_gradient(f, X, dX, rtol=1e-6)
    names = ["W", "b"] if bias else ["W"]
    assert sorted(layer.params) == sorted(names) == sorted(layer.grads)
    for name in names:
        check_gradient(f, layer.params[name], layer.grads[name].copy(), rtol=1e-6)


def test_linear_grads_accumulate_and_zero_grad_clears(rng):
    B, T, I, O = 2, 3, 4, 5
    layer = Linear(I, O, dtype=np.float64, rng=rng)
    X1, X2, X3 = (rng.standard_normal((B, T, I)) for _ in range(3))
    G1, G2, G3 = (rng.standard_normal((B, T, O)) for _ in range(3))
    W = layer.params["W"]
    layer.forward(X1)
    dX1 = layer.backward(G1)
    layer.forward(X2)
    dX2 = layer.backward(G2)
    r1, r2 = _reference_linear_grads(X1, W, G1), _reference_linear_grads(X2, W, G2)
    assert_allclose(dX1, r1[2], rtol=1e-12)
    assert_allclose(dX2, r2[2], rtol=1e-12)
    assert_allclose(layer.grads["W"], r1[0] + r2[0], rtol=1e-12)
    assert_allclose(layer.grads["b"], r1[1] + r2[1], rtol=1e-12)

    layer.zero_grad()
    assert not np.any(layer.grads["W"]) and not np.any(layer.grads["b"])
    layer.forward(X3)
    layer.backward(G3)
    r3 = _reference_linear_grads(X3, W, G3)
    assert_allclose(layer.grads["W"], r3[0], rtol=1e-12)
    assert_allclose(layer.grads["b"], r3[1], rtol=1e-12)


def test_linear_backward_accepts_non_contiguous_dLdZ(rng):
    """A strided upstream gradient (a slice of a bigger buffer) must give the same result."""
    layer = Linear(3, 4, dtype=np.float64, rng=rng)
    X = rng.standard_normal((5, 3))
    big = rng.standard_normal((5, 8))
    G = big[:, ::2]
    layer.forward(X)
    dX = layer.backward(G)
    dW, db, ref_dX = _reference_linear_grads(X, layer.params["W"], np.ascontiguousarray(G))
    assert_allclose(dX, ref_dX, rtol=1e-12)
    assert_allclose(layer.grads["W"], dW, rtol=1e-12)
    assert_allclose(layer.grads["b"], db, rtol=1e-12)


def test_linear_wrong_shapes_raise(rng):
    layer = Linear(3, 4, dtype=np.float64, rng=rng)
    with pytest.raises(ValueError):
        layer.forward(rng.standard_normal((2, 5)))
    layer.forward(rng.standard_normal((2, 3)))
    with pytest.raises(ValueError):
        layer.backward(rng.standard_normal((2, 3)))


def test_linear_default_init_is_pytorchs(rng):
    I, O = 50, 40
    layer = Linear(I, O, rng=rng)
    assert layer.params["W"].shape == (O, I) and layer.params["b"].shape == (O,)
    assert layer.params["W"].dtype == np.float32
    bound = 1 / np.sqrt(I)
    W = to_numpy(layer.params["W"])
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.9 * bound


def test_linear_device_matches_host(xp, rng):
    I, O = 4, 3
    X = rng.standard_normal((2, 3, I))
    G = rng.standard_normal((2, 3, O))
    with on_host():
        host = Linear(I, O, dtype=np.float64, rng=np.random.default_rng(1))
    dev = Linear(I, O, dtype=np.float64, rng=np.random.default_rng(1))
    Zh = host.forward(X)
    dXh = host.backward(G)
    Zd = dev.forward(xp.asarray(X))
    dXd = dev.backward(xp.asarray(G))
    assert_allclose(to_numpy(Zd), Zh, rtol=1e-12, atol=1e-14)
    assert_allclose(to_numpy(dXd), dXh, rtol=1e-12, atol=1e-14)
    for name in ("W", "b"):
        assert_allclose(to_numpy(dev.grads[name]), host.grads[name], rtol=1e-12, atol=1e-14)


# -- Embedding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ids_shape", [(2, 7), (12,), (), (1,), (1, 1), "random"])
def test_embedding_forward_and_gradient(rng, ids_shape):
    if ids_shape == "random":
        ids_shape = _leading_shape(rng)
    V, D = int(rng.integers(2, 5)), int(rng.integers(1, 5))  # small V: ids repeat
    emb = Embedding(V, D, dtype=np.float64, rng=rng)
    ids = rng.integers(0, V, size=ids_shape)
    G = rng.standard_normal(ids_shape + (D,))
    Z = emb.forward(ids)
    assert Z.shape == ids_shape + (D,)
    assert_allclose(Z, np.take(emb.params["W"], ids, axis=0), rtol=0, atol=0)
    assert emb.backward(G) is None
    ref = np.zeros((V, D))
    np.add.at(ref, ids.reshape(-1), G.reshape(-1, D))
    assert_allclose(emb.grads["W"], ref, rtol=1e-12, atol=1e-14)
    check_gradient(lambda: float(np.sum(emb.forward(ids) * G)), emb.params["W"],
                   emb.grads["W"].copy(), rtol=1e-6)


def test_embedding_repeated_ids_add_up(rng):
    V, D = 5, 3
    emb = Embedding(V, D, dtype=np.float64, rng=rng)
    ids = np.array([[1, 1, 1, 4], [1, 4, 0, 1]])
    G = rng.standard_normal((2, 4, D))
    emb.forward(ids)
    emb.backward(G)
    g = emb.grads["W"]
    assert_allclose(g[1], G[0, 0] + G[0, 1] + G[0, 2] + G[1, 0] + G[1, 3], rtol=1e-12)
    assert_allclose(g[4], G[0, 3] + G[1, 1], rtol=1e-12)
    assert_allclose(g[0], G[1, 2], rtol=1e-12)
    assert not np.any(g[[2, 3]])


def test_embedding_grads_accumulate_and_zero_grad_clears(rng):
    V, D = 4, 3
    emb = Embedding(V, D, dtype=np.float64, rng=rng)
    ids1, ids2 = rng.integers(0, V, size=(3, 5)), rng.integers(0, V, size=(2, 6))
    G1, G2 = rng.standard_normal((3, 5, D)), rng.standard_normal((2, 6, D))
    emb.forward(ids1)
    emb.backward(G1)
    emb.forward(ids2)
    emb.backward(G2)
    ref = np.zeros((V, D))
    np.add.at(ref, ids1.reshape(-1), G1.reshape(-1, D))
    np.add.at(ref, ids2.reshape(-1), G2.reshape(-1, D))
    assert_allclose(emb.grads["W"], ref, rtol=1e-12)
    emb.zero_grad()
    assert not np.any(emb.grads["W"])


def test_embedding_bad_ids_raise(rng):
    V, D = 6, 2
    emb = Embedding(V, D, dtype=np.float64, rng=rng)
    with pytest.raises(TypeError):
        emb.forward(np.array([0.0, 1.0]))
    with pytest.raises(TypeError):
        emb.forward(np.array([[1.5]], dtype=np.float32))
    for bad in ([0, V], [-1, 2], [[V + 3]]):
        with pytest.raises(ValueError):
            emb.forward(np.array(bad))
    # unsigned ids are fine
    assert_allclose(emb.forward(np.array([5, 0], dtype=np.uint8)), emb.params["W"][[5, 0]], rtol=0)


def test_embedding_wrong_dLdZ_shape_raises(rng):
    V, D = 5, 3
    emb = Embedding(V, D, dtype=np.float64, rng=rng)
    emb.forward(rng.integers(0, V, size=(2, 4)))
    for shape in ((2, 4, D + 1), (8, D), (4, 2, D), (2, 4)):
        with pytest.raises(ValueError):
            emb.backward(rng.standard_normal(shape))
    assert not np.any(emb.grads["W"])  # nothing was added by the failed calls


def test_embedding_init_range(rng):
    emb = Embedding(100, 20, rng=rng, init_range=0.1)
    W = to_numpy(emb.params["W"])
    assert W.dtype == np.float32 and W.shape == (100, 20)
    assert np.abs(W).max() <= 0.1 and np.abs(W).max() > 0.09


def test_embedding_device_matches_host(xp, rng):
    V, D = 5, 4
    ids = rng.integers(0, V, size=(3, 6))
    G = rng.standard_normal((3, 6, D))
    with on_host():
        host = Embedding(V, D, dtype=np.float64, rng=np.random.default_rng(2))
    dev = Embedding(V, D, dtype=np.float64, rng=np.random.default_rng(2))
    Zh = host.forward(ids)
    host.backward(G)
    Zd = dev.forward(xp.asarray(ids))
    dev.backward(xp.asarray(G))
    assert_allclose(to_numpy(Zd), Zh, rtol=0, atol=0)
    assert_allclose(to_numpy(dev.grads["W"]), host.grads["W"], rtol=1e-12, atol=1e-14)


# -- backend kernels -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("value_shape", [(7,), ()])
def test_scatter_add_matches_np_add_at(rng, dtype, value_shape):
    V = int(rng.integers(1, 8))
    n = int(rng.integers(50, 300))                       # many repeats of few rows
    idx = rng.integers(0, V, size=n)
    a = rng.standard_normal((V,) + value_shape).astype(dtype)
    values = rng.standard_normal((n,) + value_shape).astype(dtype)
    ref = a.astype(np.float64)
    np.add.at(ref, idx, values.astype(np.float64))
    out = backend.scatter_add(a, idx, values)
    assert out is a
    tol = 1e-12 if dtype == np.float64 else 1e-4
    assert_allclose(a, ref, rtol=tol, atol=tol)


def test_scatter_add_2d_indices_unsorted_and_empty(rng):
    V, D = 6, 3
    a = rng.standard_normal((V, D))
    idx = rng.integers(0, V, size=(4, 9))
    values = rng.standard_normal((4, 9, D))
    ref = a.copy()
    np.add.at(ref, idx.reshape(-1), values.reshape(-1, D))
    backend.scatter_add(a, idx, values)
    assert_allclose(a, ref, rtol=1e-12)
    before = a.copy()
    backend.scatter_add(a, np.zeros(0, dtype=np.int64), np.zeros((0, D)))
    assert_array_equal(a, before)


def _layout(m, transposed):
    """m itself (C-contiguous) or the same values as a transposed view of a C-contiguous array."""
    return np.ascontiguousarray(m.T).T if transposed else np.ascontiguousarray(m)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("b_t", [False, True])
@pytest.mark.parametrize("shape", [(5, 7, 3), (1, 4, 6), (6, 1, 4), (3, 5, 1), "random"])
def test_matmul_accumulate_matches_out_plus_product(rng, dtype, a_t, b_t, shape):
    M, K, N = (int(n) for n in rng.integers(1, 9, size=3)) if shape == "random" else shape
    a = _layout(rng.standard_normal((M, K)).astype(dtype), a_t)
    b = _layout(rng.standard_normal((K, N)).astype(dtype), b_t)
    if a_t and min(M, K) > 1:
        assert not a.flags.c_contiguous   # really the transposed-view path
    out = rng.standard_normal((M, N)).astype(dtype)
    ref = out.astype(np.float64) + a.astype(np.float64) @ b.astype(np.float64)
    res = backend.matmul_accumulate(out, a, b)
    assert res is out and out.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert_allclose(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ["strided_a", "mixed_dtype", "out_transposed"])
def test_matmul_accumulate_fallback_paths(rng, case):
    M, K, N = 4, 6, 3
    a = rng.standard_normal((M, K))
    b = rng.standard_normal((K, N))
    out = rng.standard_normal((M, N))
    if case == "strided_a":
        a = rng.standard_normal((M, 2 * K))[:, ::2]
    elif case == "mixed_dtype":
        b = b.astype(np.float32)
    else:
        out = np.ascontiguousarray(out.T).T
    ref = out + a.astype(np.float64) @ b.astype(np.float64)
    assert backend.matmul_accumulate(out, a, b) is out
    assert_allclose(out, ref, rtol=1e-6, atol=1e-6)

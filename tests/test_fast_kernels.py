"""mytorch.fast.kernels: the fused GPU kernels give what the NumPy reference code gives.

Runs only where CuPy and a GPU are usable (the `gpu` mark); skips cleanly elsewhere.
Shapes: B batch, H hidden size.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose

from mytorch import backend
from mytorch.fast import kernels
from mytorch.fast.lstm import LSTMCell as FastLSTMCell
from mytorch.nn import LSTMCell
from mytorch import optim
from mytorch.fast import optim as fast_optim

usable, reason = backend.cupy_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not usable, reason=reason)]


@pytest.fixture
def cupy_backend():
    backend.set_backend("cupy")
    yield backend.xp()
    backend.set_backend("numpy")


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_lstm_step_kernels_match_numpy(cupy_backend, rng, dtype, tol, monkeypatch):
    """A cell stepped 4 times forward and back: the fast twin's kernels against the plain cell on NumPy."""
    cp = cupy_backend
    B, I, H, T = 3, 5, 7, 4
    cells = {}
    for name, cls in (("numpy", LSTMCell), ("cupy", FastLSTMCell)):
        backend.set_backend(name)
        cells[name] = cls(I, H, dtype=dtype, rng=np.random.default_rng(1))
    calls = []
    for name in ("lstm_step_forward", "lstm_step_backward"):             # the kernels do run
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    X = rng.standard_normal((T, B, I)).astype(dtype) * 2
    G = rng.standard_normal((T, B, H)).astype(dtype)
    out = {}
    for name, mod in (("numpy", np), ("cupy", cp)):
        cell, state, hs = cells[name], None, []
        for t in range(T):
            state = cell.forward(mod.asarray(X[t]), state)
            hs.append(backend.to_numpy(state[0]))
        dh, dc, dxs = mod.zeros((B, H), dtype), None, []
        for t in reversed(range(T)):
            dx, dh, dc = cell.backward(mod.asarray(G[t]) + dh, dc)
            dxs.append(backend.to_numpy(dx))
        out[name] = hs + dxs + [backend.to_numpy(dh), backend.to_numpy(dc)] + \
            [backend.to_numpy(g) for g in cell.grads.values()]
    for a, b in zip(out["cupy"], out["numpy"]):
        assert a.dtype == dtype
        assert_allclose(a, b, rtol=tol, atol=tol)
    assert calls.count("lstm_step_forward") == T and calls.count("lstm_step_backward") == T


@pytest.mark.parametrize("plain_cls, fast_cls, kw",
                         [(optim.Adam, fast_optim.Adam, dict(lr=0.01)),
                          (optim.Adam, fast_optim.Adam, dict(lr=0.01, weight_decay=0.1)),
                          (optim.AdamW, fast_optim.AdamW, dict(lr=0.01, weight_decay=0.1))])
def test_adam_kernel_matches_numpy(cupy_backend, rng, monkeypatch, plain_cls, fast_cls, kw):
    """fast Adam on CuPy (kernels.adam_update) against the plain Adam on NumPy, 3 steps."""
    cp = cupy_backend
    calls, real = [], kernels.adam_update
    monkeypatch.setattr(kernels, "adam_update", lambda *a: calls.append(1) or real(*a))
    W = rng.standard_normal((6, 5))
    grads = [rng.standard_normal(W.shape) for _ in range(3)]
    results = []
    for mod, opt_cls in ((np, plain_cls), (cp, fast_cls)):
        p, g = mod.asarray(W.copy()), mod.zeros_like(mod.asarray(W))
        opt = opt_cls([({"W": p}, {"W": g})], **kw)
        for gs in grads:
            g[...] = mod.asarray(gs)
            opt.step()
        results.append([backend.to_numpy(a) for a in (p, opt.m[0], opt.v[0])])
    for a, b in zip(*results):
        assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert not np.allclose(results[1][0], W)                        # it did move
    assert len(calls) == 3                                          # the kernel did run

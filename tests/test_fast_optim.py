"""mytorch.fast.optim: each fast optimizer gives what its plain twin in mytorch.optim gives.

The plain classes are checked against PyTorch's formulas in tests/test_optim.py; here every
twin runs beside its plain class on identical copies of the same parameters and gradients
and must stay within rounding of it, step after step. The shapes include one of more than
2^18 elements, which the twins split in row blocks run on the thread pool.
"""
import threading

import numpy as np
import pytest
from numpy.testing import assert_allclose

from mytorch import backend, fast, optim
from mytorch.fast import kernels
from mytorch.fast import optim as fast_optim

BIG = (1024, 300)                                       # 307,200 elements > 2^18: the threaded path
SHAPES = [{"W": (3, 4), "b": (4,)}, {"E": BIG}, {"T": (2, 3, 5)}]
TOLS = {np.float64: 1e-12, np.float32: 1e-6}

CASES = [
    ("sgd", optim.SGD, dict(lr=0.1)),
    ("sgd-wd", optim.SGD, dict(lr=0.1, weight_decay=0.3)),
    ("sgd-momentum", optim.SGD, dict(lr=0.05, momentum=0.9)),
    ("sgd-nesterov-wd", optim.SGD, dict(lr=0.07, momentum=0.5, weight_decay=0.1, nesterov=True)),
    ("adam", optim.Adam, dict(lr=0.01)),
    ("adam-betas", optim.Adam, dict(lr=0.03, betas=(0.5, 0.9), eps=1e-6)),
    ("adam-l2", optim.Adam, dict(lr=0.02, weight_decay=0.2)),
    ("adamw", optim.AdamW, dict(lr=0.02, weight_decay=0.3)),
    ("adamw-default-wd", optim.AdamW, dict(lr=0.05)),
]
TWINS = {optim.SGD: fast_optim.SGD, optim.Adam: fast_optim.Adam, optim.AdamW: fast_optim.AdamW}


def _make_pairs(rng, dtype, shapes=SHAPES):
    """[(params, grads)] with random params and zero grads."""
    return [({k: rng.standard_normal(s).astype(dtype) for k, s in spec.items()},
             {k: np.zeros(s, dtype) for k, s in spec.items()}) for spec in shapes]


def _copy(pairs):
    return [({k: p.copy() for k, p in params.items()}, {k: g.copy() for k, g in grads.items()})
            for params, grads in pairs]


def _params(pairs):
    return [p for params, _ in pairs for p in params.values()]


def _step(opt, pairs, gs):
    for (_, grads), g in zip(pairs, gs):
        for k in grads:
            grads[k][...] = g[k]
    opt.step()


def _grads(rng, pairs, dtype):
    return [{k: rng.standard_normal(g.shape).astype(dtype) for k, g in grads.items()} for _, grads in pairs]


def _assert_same(fast_pairs, plain_pairs, before, tol, step=1):
    """Parameters and the change the step made to them (the sensitive part) agree.

    The change is exact up to the rounding of p: a few ulps of p per step. Step k (1-based) of two
    runs that round differently (a GPU kernel contracts a * b + c into one FMA, NumPy rounds each
    op) may differ by what the k steps so far rounded differently, hence the atol grows with k."""
    for a, b, p0 in zip(_params(fast_pairs), _params(plain_pairs), before):
        assert a.dtype == b.dtype
        assert_allclose(a, b, rtol=tol, atol=tol)
        scale = np.abs(p0).max()
        assert_allclose(a - p0, b - p0, rtol=tol, atol=4 * step * np.finfo(a.dtype).eps * scale)


@pytest.fixture
def spy_blocks(monkeypatch):
    """Record (array shape, block rows, thread) for every block fast.optim's parallel_rows runs."""
    monkeypatch.setenv("MYTORCH_THREADS", "3")          # several threads even on a small machine
    blocks, real = [], fast_optim.parallel_rows

    def spy(fn, *arrays, **kw):
        def counted(*views):
            blocks.append((arrays[0].shape, views[0].shape[0], threading.get_ident()))
            fn(*views)
        real(counted, *arrays, **kw)
    monkeypatch.setattr(fast_optim, "parallel_rows", spy)
    return blocks


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, plain_cls, kw", CASES, ids=[c[0] for c in CASES])
def test_twin_matches_plain_optimizer(rng, spy_blocks, name, plain_cls, kw, dtype):
    steps = 4
    plain_pairs = _make_pairs(rng, dtype)
    fast_pairs = _copy(plain_pairs)
    plain, twin = plain_cls(plain_pairs, **kw), TWINS[plain_cls](fast_pairs, **kw)
    assert isinstance(twin, plain_cls)
    for _ in range(steps):
        gs = _grads(rng, plain_pairs, dtype)
        before = [p.copy() for p in _params(plain_pairs)]
        _step(plain, plain_pairs, gs)
        _step(twin, fast_pairs, gs)
        _assert_same(fast_pairs, plain_pairs, before, TOLS[dtype])
    for a, b in zip(twin.state_dict()["buffers"].values(), plain.state_dict()["buffers"].values()):
        for x, y in zip(a, b):
            assert_allclose(x, y, rtol=TOLS[dtype], atol=TOLS[dtype])
    big = [b for b in spy_blocks if b[0] == BIG]
    assert len(big) >= 2 * steps and sum(b[1] for b in big) == steps * BIG[0]   # >= 2 blocks a step
    assert all(b[1] < BIG[0] for b in big)
    assert any(b[2] != threading.get_ident() for b in big)          # on pool threads
    assert [b[1] for b in spy_blocks if b[0] == (4,)] == [4] * steps  # small arrays: one block


@pytest.mark.parametrize("name, plain_cls, kw",
                         [c for c in CASES if c[0] in ("sgd-nesterov-wd", "adam-l2", "adamw")],
                         ids=["sgd-nesterov-wd", "adam-l2", "adamw"])
@pytest.mark.parametrize("direction", ["plain-to-fast", "fast-to-plain"])
def test_state_saved_by_one_tier_continues_in_the_other(rng, name, plain_cls, kw, direction):
    dtype = np.float64
    classes = [plain_cls, TWINS[plain_cls]]
    if direction == "fast-to-plain":
        classes.reverse()
    pairs = _make_pairs(rng, dtype)
    seq = [_grads(rng, pairs, dtype) for _ in range(5)]
    first = classes[0](pairs, **kw)
    for gs in seq[:3]:
        _step(first, pairs, gs)
    state = first.state_dict()
    resumed_pairs = _copy(pairs)
    second = classes[1](resumed_pairs, **dict(kw, lr=kw["lr"] * 3))   # lr comes back from the state
    second.load_state_dict(state)
    assert second.t == 3 and second.lr == kw["lr"]
    for gs in seq[3:]:
        before = [p.copy() for p in _params(pairs)]
        _step(first, pairs, gs)
        _step(second, resumed_pairs, gs)
        _assert_same(resumed_pairs, pairs, before, TOLS[dtype])


def test_choose_picks_the_twins_unless_switched_off(monkeypatch):
    monkeypatch.delenv("MYTORCH_FAST", raising=False)
    monkeypatch.delenv("MYTORCH_FAST_OPTIM", raising=False)
    for plain, twin in TWINS.items():
        assert twin is not plain and twin.__module__ == "mytorch.fast.optim"
        assert fast.choose(plain) is twin and issubclass(twin, plain)
    for var in ("MYTORCH_FAST_OPTIM", "MYTORCH_FAST"):
        monkeypatch.setenv(var, "0")
        for plain in TWINS:
            assert fast.choose(plain) is plain
        monkeypatch.delenv(var)


def test_fast_adamw_keeps_adamw_defaults(rng):
    pairs = _make_pairs(rng, np.float64, SHAPES[:1])
    twin, plain = fast_optim.AdamW(pairs), optim.AdamW(_copy(pairs))
    assert twin.decoupled and twin.weight_decay == plain.weight_decay == 1e-2
    assert (twin.lr, twin.betas, twin.eps) == (plain.lr, plain.betas, plain.eps)


# -- GPU: the twins on CuPy arrays against the plain classes on NumPy ----------------------------

usable, reason = backend.cupy_status()


@pytest.mark.gpu
@pytest.mark.skipif(not usable, reason=reason)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("name, plain_cls, kw",
                         [c for c in CASES if c[0] in ("sgd-nesterov-wd", "adam", "adam-l2", "adamw")],
                         ids=["sgd-nesterov-wd", "adam", "adam-l2", "adamw"])
def test_twin_on_cupy_matches_plain_on_numpy(rng, monkeypatch, name, plain_cls, kw, dtype, tol):
    cp = backend.cupy_module()
    launches, real = [], kernels.adam_update
    monkeypatch.setattr(kernels, "adam_update", lambda *a: launches.append(1) or real(*a))
    plain_pairs = _make_pairs(rng, dtype)
    gpu_pairs = [({k: cp.asarray(p) for k, p in params.items()}, {k: cp.asarray(g) for k, g in grads.items()})
                 for params, grads in plain_pairs]
    plain, twin = plain_cls(plain_pairs, **kw), TWINS[plain_cls](gpu_pairs, **kw)
    steps = 3
    for step in range(1, steps + 1):
        gs = _grads(rng, plain_pairs, dtype)
        before = [p.copy() for p in _params(plain_pairs)]
        _step(plain, plain_pairs, gs)
        _step(twin, gpu_pairs, [{k: cp.asarray(g) for k, g in d.items()} for d in gs])
        host = [({k: cp.asnumpy(p) for k, p in params.items()}, {}) for params, _ in gpu_pairs]
        _assert_same(host, plain_pairs, before, tol, step)
    n_params = len(_params(plain_pairs))
    assert len(launches) == (steps * n_params if plain_cls is not optim.SGD else 0)  # one launch each

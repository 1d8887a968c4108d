"""SGD, Adam, AdamW, clip_grad_norm and CosineAnnealingLR against PyTorch's formulas.

The reference updates are written out here in plain NumPy on copies of the
parameters (float64), one step at a time, and compared after every step.
Parameters come as (params, grads) dict pairs, what Module.parameters() returns.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mytorch.optim import SGD, Adam, AdamW, CosineAnnealingLR, clip_grad_norm

SHAPES = [{"W": (3, 4), "b": (4,)}, {"E": (5, 2)}]


def _make_pairs(rng, shapes=SHAPES):
    """[(params, grads)] with random params and zero grads, plus the flat list of names."""
    pairs, names = [], []
    for pi, spec in enumerate(shapes):
        params = {k: rng.standard_normal(s) for k, s in spec.items()}
        grads = {k: np.zeros(s) for k, s in spec.items()}
        pairs.append((params, grads))
        names.extend((pi, k) for k in spec)
    return pairs, names


def _grad_sequence(rng, pairs, names, steps):
    return [[rng.standard_normal(pairs[pi][0][k].shape) for pi, k in names] for _ in range(steps)]


def _set_grads(pairs, names, gs):
    for (pi, k), g in zip(names, gs):
        pairs[pi][1][k][...] = g


def _values(pairs, names):
    return [pairs[pi][0][k].copy() for pi, k in names]


class RefSGD:
    """torch.optim.SGD: d = g + wd p; buf = d (t = 1) else mu buf + d; d = d + mu buf | buf."""

    def __init__(self, ps, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
        self.ps = [p.copy() for p in ps]
        self.lr, self.mu, self.wd, self.nesterov = lr, momentum, weight_decay, nesterov
        self.buf, self.t = [None] * len(ps), 0

    def step(self, gs):
        self.t += 1
        for k, g in enumerate(gs):
            d = g + self.wd * self.ps[k]
            if self.mu:
                self.buf[k] = d.copy() if self.t == 1 else self.mu * self.buf[k] + d
                d = d + self.mu * self.buf[k] if self.nesterov else self.buf[k]
            self.ps[k] = self.ps[k] - self.lr * d


class RefAdam:
    """torch.optim.Adam / AdamW (decoupled=True: p *= 1 - lr wd first, no L2 term)."""

    def __init__(self, ps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        self.ps = [p.copy() for p in ps]
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.wd, self.decoupled = weight_decay, decoupled
        self.m = [np.zeros_like(p) for p in ps]
        self.v = [np.zeros_like(p) for p in ps]
        self.t = 0

    def step(self, gs):
        self.t += 1
        b1, b2, lr, t = self.b1, self.b2, self.lr, self.t
        for k, g in enumerate(gs):
            p = self.ps[k]
            if self.decoupled:
                p = p * (1 - lr * self.wd)
            else:
                g = g + self.wd * p
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            denom = np.sqrt(self.v[k]) / np.sqrt(1 - b2 ** t) + self.eps
            self.ps[k] = p - lr / (1 - b1 ** t) * self.m[k] / denom


CASES = [
    ("sgd", SGD, RefSGD, dict(lr=0.1)),
    ("sgd-momentum", SGD, RefSGD, dict(lr=0.05, momentum=0.9)),
    ("sgd-nesterov", SGD, RefSGD, dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("sgd-wd", SGD, RefSGD, dict(lr=0.1, weight_decay=0.3)),
    ("sgd-all", SGD, RefSGD, dict(lr=0.07, momentum=0.5, weight_decay=0.1, nesterov=True)),
    ("adam", Adam, RefAdam, dict(lr=0.01)),
    ("adam-betas", Adam, RefAdam, dict(lr=0.03, betas=(0.5, 0.9), eps=1e-6)),
    ("adam-l2", Adam, RefAdam, dict(lr=0.02, weight_decay=0.2)),
    ("adamw", AdamW, RefAdam, dict(lr=0.02, weight_decay=0.3)),
    ("adamw-default-wd", AdamW, RefAdam, dict(lr=0.05)),
]


def _reference(ref_cls, opt_cls, ps, kw):
    kw = dict(kw)
    if opt_cls is AdamW:
        kw.setdefault("weight_decay", 1e-2)
        return ref_cls(ps, decoupled=True, **kw)
    return ref_cls(ps, **kw)


def _check_close(pairs, names, ref, before):
    """Parameters and the change made to them both match the reference (the change is sensitive)."""
    for k, (pi, key) in enumerate(names):
        p = pairs[pi][0][key]
        assert_allclose(p, ref.ps[k], rtol=1e-6, atol=1e-12, err_msg=f"{pi}.{key}")
        assert_allclose(p - before[k], ref.ps[k] - before[k], rtol=1e-6, atol=1e-12, err_msg=f"{pi}.{key}")


@pytest.mark.parametrize("name, opt_cls, ref_cls, kw", CASES, ids=[c[0] for c in CASES])
def test_updates_match_the_formulas(rng, name, opt_cls, ref_cls, kw):
    pairs, names = _make_pairs(rng)
    steps = int(rng.integers(3, 6))
    ref = _reference(ref_cls, opt_cls, _values(pairs, names), kw)
    opt = opt_cls(pairs, **kw)
    for gs in _grad_sequence(rng, pairs, names, steps):
        before = _values(pairs, names)
        _set_grads(pairs, names, gs)
        opt.step()
        ref.step(gs)
        _check_close(pairs, names, ref, before)
    assert opt.t == steps


@pytest.mark.parametrize("opt_cls, kw", [(SGD, dict(lr=0.1)), (SGD, dict(lr=0.1, momentum=0.9)),
                                         (Adam, dict(lr=0.01)), (AdamW, dict(lr=0.01, weight_decay=0.1))])
def test_tied_parameter_is_updated_once(rng, opt_cls, kw):
    W = rng.standard_normal((4, 3))
    gW = np.zeros_like(W)
    b = rng.standard_normal(4)
    gb = np.zeros_like(b)
    pairs = [({"W": W}, {"W": gW}), ({"W": W, "b": b}, {"W": gW, "b": gb})]  # decoder tied to embedding
    ref = _reference(RefSGD if opt_cls is SGD else RefAdam, opt_cls, [W, b], kw)
    opt = opt_cls(pairs, **kw)
    assert len(opt.params) == 2
    for _ in range(3):
        gs = [rng.standard_normal(W.shape), rng.standard_normal(b.shape)]
        gW[...], gb[...] = gs
        opt.step()
        ref.step(gs)
    assert_allclose(W, ref.ps[0], rtol=1e-10, atol=1e-14)
    assert_allclose(b, ref.ps[1], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name, opt_cls, ref_cls, kw",
                         [c for c in CASES if c[0] in ("sgd-all", "sgd-momentum", "adam-l2", "adamw")],
                         ids=["sgd-all", "sgd-momentum", "adam-l2", "adamw"])
def test_state_dict_round_trip_continues_identically(rng, name, opt_cls, ref_cls, kw):
    pairs, names = _make_pairs(rng)
    seq = _grad_sequence(rng, pairs, names, 5)
    opt = opt_cls(pairs, **kw)
    for gs in seq[:3]:
        _set_grads(pairs, names, gs)
        opt.step()
    state = opt.state_dict()
    saved_params = _values(pairs, names)
    for gs in seq[3:]:                       # the original keeps going (the saved state must not move)
        _set_grads(pairs, names, gs)
        opt.step()

    pairs2, _ = _make_pairs(rng)
    for (pi, k), v in zip(names, saved_params):
        pairs2[pi][0][k][...] = v
    kw2 = dict(kw, lr=kw["lr"] * 3)          # the lr must come back from the state too
    opt2 = opt_cls(pairs2, **kw2)
    opt2.load_state_dict(state)
    assert opt2.t == 3 and opt2.lr == kw["lr"]
    for gs in seq[3:]:
        _set_grads(pairs2, names, gs)
        opt2.step()
    for a, b in zip(_values(pairs2, names), _values(pairs, names)):
        assert_allclose(a, b, rtol=1e-14, atol=1e-15)


def test_load_state_dict_rejects_mismatched_buffers(rng):
    pairs, names = _make_pairs(rng)
    opt = Adam(pairs, lr=0.01)
    _set_grads(pairs, names, _grad_sequence(rng, pairs, names, 1)[0])
    opt.step()
    state = opt.state_dict()
    other_pairs, _ = _make_pairs(rng, [{"W": (3, 4)}])
    with pytest.raises(ValueError):
        Adam(other_pairs, lr=0.01).load_state_dict(state)       # 1 buffer vs 3
    bad = {"t": 1, "lr": 0.01, "buffers": {k: [np.zeros((2, 2))] * 3 for k in ("m", "v")}}
    with pytest.raises(ValueError):
        Adam(pairs, lr=0.01).load_state_dict(bad)


@pytest.mark.parametrize("opt_cls", [SGD, Adam, AdamW])
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_non_positive_lr_raises(rng, opt_cls, lr):
    pairs, _ = _make_pairs(rng)
    with pytest.raises(ValueError):
        opt_cls(pairs, lr=lr)


def test_other_bad_settings_raise(rng):
    pairs, _ = _make_pairs(rng)
    with pytest.raises(ValueError):
        SGD(pairs, lr=0.1, nesterov=True)                        # nesterov needs momentum
    with pytest.raises(ValueError):
        SGD(pairs, lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError):
        Adam(pairs, lr=0.1, betas=(1.0, 0.999))
    with pytest.raises(ValueError):
        SGD([], lr=0.1)                                          # no parameters


def test_zero_grad_clears_every_gradient(rng):
    pairs, names = _make_pairs(rng)
    _set_grads(pairs, names, _grad_sequence(rng, pairs, names, 1)[0])
    opt = SGD(pairs, lr=0.1)
    opt.zero_grad()
    assert all(not np.any(g) for _, grads in pairs for g in grads.values())


# -- clip_grad_norm -------------------------------------------------------------------------------

def _global_norm(gs):
    return float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in gs)))


def test_clip_grad_norm_scales_to_max_norm(rng):
    pairs, names = _make_pairs(rng)
    gs = _grad_sequence(rng, pairs, names, 1)[0]
    _set_grads(pairs, names, gs)
    norm = _global_norm(gs)
    max_norm = norm * float(rng.uniform(0.1, 0.9))
    returned = clip_grad_norm(pairs, max_norm)
    assert_allclose(returned, norm, rtol=1e-12)
    clipped = [pairs[pi][1][k] for pi, k in names]
    assert_allclose(_global_norm(clipped), max_norm, rtol=1e-6)
    for g, g0 in zip(clipped, gs):                       # same direction, one common factor
        assert_allclose(g, g0 * (max_norm / norm), rtol=1e-6)


def test_clip_grad_norm_below_max_changes_nothing(rng):
    pairs, names = _make_pairs(rng)
    gs = _grad_sequence(rng, pairs, names, 1)[0]
    _set_grads(pairs, names, gs)
    norm = _global_norm(gs)
    assert_allclose(clip_grad_norm(pairs, norm * 1.5), norm, rtol=1e-12)
    for (pi, k), g0 in zip(names, gs):
        assert_array_equal(pairs[pi][1][k], g0)
    # an optimizer is accepted in place of the pairs
    opt = SGD(pairs, lr=0.1)
    assert_allclose(clip_grad_norm(opt, norm * 2), norm, rtol=1e-12)


def test_clip_grad_norm_counts_a_tied_gradient_once(rng):
    W, gW = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    b, gb = rng.standard_normal(3), rng.standard_normal(3)
    pairs = [({"W": W}, {"W": gW}), ({"W": W, "b": b}, {"W": gW, "b": gb})]
    assert_allclose(clip_grad_norm(pairs, None), _global_norm([gW, gb]), rtol=1e-12)


@pytest.mark.parametrize("bad, check", [(np.inf, math.isinf), (np.nan, math.isnan)])
def test_clip_grad_norm_reports_non_finite(rng, bad, check):
    pairs, names = _make_pairs(rng)
    _set_grads(pairs, names, _grad_sequence(rng, pairs, names, 1)[0])
    pairs[1][1]["E"][2, 1] = bad
    with np.errstate(invalid="ignore"):     # scaling inf by 0 makes NaN, as in PyTorch
        assert check(clip_grad_norm(pairs, 1.0))


# -- CosineAnnealingLR ----------------------------------------------------------------------------

def _cosine(t, base, eta_min, T_max):
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


@pytest.mark.parametrize("eta_min", [0.0, 0.01])
def test_cosine_schedule_follows_the_closed_form(rng, eta_min):
    pairs, _ = _make_pairs(rng)
    base = 0.3
    T_max = int(rng.integers(1, 8))
    opt = SGD(pairs, lr=base)
    sched = CosineAnnealingLR(opt, T_max, eta_min=eta_min)
    assert opt.lr == base
    for t in range(1, 2 * T_max + 3):
        lr = sched.step()
        assert_allclose(lr, _cosine(t, base, eta_min, T_max), rtol=1e-12, atol=1e-15)
        assert opt.lr == lr
    # the bottom is reached at T_max exactly
    assert_allclose(CosineAnnealingLR(SGD(pairs, lr=base), T_max, eta_min).get_lr(T_max), eta_min, atol=1e-15)


def test_cosine_state_dict_round_trip(rng):
    pairs, _ = _make_pairs(rng)
    T_max, base, eta_min = 7, 0.5, 0.02
    opt = SGD(pairs, lr=base)
    sched = CosineAnnealingLR(opt, T_max, eta_min)
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    opt2 = SGD(pairs, lr=1.0)
    sched2 = CosineAnnealingLR(opt2, 2, 0.0)
    sched2.load_state_dict(state)
    assert_allclose(opt2.lr, _cosine(3, base, eta_min, T_max), rtol=1e-12)
    for t in range(4, 10):
        assert_allclose(sched2.step(), sched.step(), rtol=1e-14)
        assert_allclose(opt2.lr, _cosine(t, base, eta_min, T_max), rtol=1e-12)


@pytest.mark.parametrize("T_max", [0, -3])
def test_cosine_T_max_below_one_raises(rng, T_max):
    pairs, _ = _make_pairs(rng)
    with pytest.raises(ValueError):
        CosineAnnealingLR(SGD(pairs, lr=0.1), T_max)


def _warmup_cosine(t, base, eta_min, T_max, W):
    return base * (t + 1) / W if t < W else _cosine(t - W, base, eta_min, T_max - W)


@pytest.mark.parametrize("eta_min", [0.0, 0.01])
def test_warmup_ramps_linearly_then_follows_the_cosine(rng, eta_min):
    pairs, _ = _make_pairs(rng)
    base, W = 0.3, int(rng.integers(2, 6))
    T_max = W + int(rng.integers(2, 8))
    opt = SGD(pairs, lr=base)
    sched = CosineAnnealingLR(opt, T_max, eta_min=eta_min, warmup=W)
    assert_allclose(opt.lr, base / W, rtol=1e-12)                 # the first step's lr
    lrs = [opt.lr] + [sched.step() for _ in range(T_max)]
    for t, lr in enumerate(lrs):
        assert_allclose(lr, _warmup_cosine(t, base, eta_min, T_max, W), rtol=1e-12, atol=1e-15)
    assert np.all(np.diff(lrs[:W]) > 0) and np.all(np.diff(lrs[W - 1:]) <= 1e-15)   # up, then down
    assert_allclose(lrs[W - 1], base, rtol=1e-12)                # the top, reached twice
    assert_allclose(lrs[W], base, rtol=1e-12)
    assert_allclose(lrs[T_max], eta_min, atol=1e-15)


def test_warmup_survives_a_state_dict_round_trip_and_old_states_have_none(rng):
    pairs, _ = _make_pairs(rng)
    opt = SGD(pairs, lr=0.5)
    sched = CosineAnnealingLR(opt, 9, 0.0, warmup=4)
    sched.step()
    opt2 = SGD(pairs, lr=1.0)
    sched2 = CosineAnnealingLR(opt2, 2)
    sched2.load_state_dict(sched.state_dict())
    assert_allclose(opt2.lr, 0.5 * 2 / 4, rtol=1e-12)
    for _ in range(8):
        assert_allclose(sched2.step(), sched.step(), rtol=1e-14)
    old = {k: v for k, v in CosineAnnealingLR(SGD(pairs, lr=0.5), 9).state_dict().items() if k != "warmup"}
    sched2.load_state_dict(old)                                   # saved before warmup existed
    assert sched2.warmup == 0 and opt2.lr == 0.5


@pytest.mark.parametrize("warmup", [-1, 5, 6])
def test_warmup_outside_0_to_T_max_raises(rng, warmup):
    pairs, _ = _make_pairs(rng)
    with pytest.raises(ValueError, match="warmup must lie in"):
        CosineAnnealingLR(SGD(pairs, lr=0.1), 5, warmup=warmup)

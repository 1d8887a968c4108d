"""AWD-LSTM's regularisers on models.LanguageModel: embedding dropout (dropoute), weight dropout on
W_hh (wdrop), activation regularisation (alpha) and temporal activation regularisation (beta).

Gradient checks in float64 with fixed masks (every dropout draws from the model's one generator,
which lm_helpers.FixedMasks restores), through forward_loss -> backward_loss, whose objective is
the cross-entropy plus model.penalty.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from app import config
from app.errors import UsageError
from models import LanguageModel, load
from mytorch import optim
from mytorch.gradcheck import check_gradient
from mytorch.nn import LSTM, WeightDrop
from lm_helpers import FixedMasks, unique_params

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import train  # noqa: E402

V = 12
ALL = dict(dropoute=0.3, wdrop=0.4, alpha=2.0, beta=1.5)


def _model(seed=0, tied=False, dropout=0.3, **regs):
    m = LanguageModel(V, emsize=4, nhid=5, nlayers=2, tied=tied, dropout=dropout, dropouth=0.2,
                      seed=seed, dtype=np.float64, **regs)
    rng = np.random.default_rng(seed + 100)
    for p in unique_params(m).values():
        p[...] = rng.uniform(-0.6, 0.6, p.shape)
    return m


def _objective(model, ids, targets):
    loss, _ = model.forward_loss(ids, targets)
    return loss + model.penalty


@pytest.mark.parametrize("regs", [dict(dropoute=0.4), dict(wdrop=0.5), dict(alpha=2.0), dict(beta=3.0), ALL,
                                  dict(ALL, tied=True)],
                         ids=["dropoute", "wdrop", "alpha", "beta", "all", "all-tied"])
def test_gradients_match_finite_differences(regs, rng):
    model = _model(seed=int(rng.integers(1000)), **regs)
    B, T = 3, 5
    ids = rng.integers(0, 6, (B, T))               # few ids: repeats, so rows are shared
    targets = rng.integers(0, V, (B, T))
    masks = FixedMasks(model)
    assert {id(model.edrop.rng), *(id(w.rng) for w in model.wdrops)} <= set(masks.rngs)

    masks.restore()
    model.zero_grad()
    value = _objective(model, ids, targets)
    model.backward_loss()
    grads = {name: g.copy() for name, _, g in model.named_parameters()}
    if regs.get("dropoute"):
        assert (model.edrop.mask == 0).any()
    if regs.get("wdrop"):
        assert all((w.mask == 0).any() for w in model.wdrops)
    if regs.get("alpha") or regs.get("beta"):
        assert model.penalty > 0

    def f():
        masks.restore()
        out = _objective(model, ids, targets)
        model.clear_cache()
        return out

    assert f() == pytest.approx(value, rel=1e-12)
    for name, p in unique_params(model).items():
        check_gradient(f, p, grads[name], rtol=1e-6, eps=1e-5)


def test_all_off_is_todays_model_exactly(rng):
    ids, targets = rng.integers(0, V, (3, 4)), rng.integers(0, V, (3, 4))
    out = []
    for kwargs in ({}, dict(dropoute=0.0, wdrop=0.0, alpha=0.0, beta=0.0)):
        m = _model(seed=3, **kwargs)
        m.zero_grad()
        loss, _ = m.forward_loss(ids, targets)
        m.backward_loss()
        out.append((loss, m.penalty, {n: g.copy() for n, _, g in m.named_parameters()},
                    m.drops[0].rng.bit_generator.state, m.config))
    (l0, p0, g0, s0, c0), (l1, p1, g1, s1, c1) = out
    assert l0 == l1 and p0 == p1 == 0.0 and s0 == s1
    assert c0 == c1 and not set(ALL) & set(c0)       # old files and the reference card compare equal
    for name in g0:
        assert_array_equal(g0[name], g1[name])


def test_ar_and_tar_follow_their_formulas(rng):
    model = _model(seed=1, dropout=0.4, alpha=0.7, beta=1.3)
    ids, targets = rng.integers(0, V, (2, 6)), rng.integers(0, V, (2, 6))
    loss, _ = model.forward_loss(ids, targets)
    H, Hd = model._top
    assert not np.array_equal(H, Hd)                 # AR reads the dropped output, TAR the undropped
    ar = 0.7 * np.mean(Hd ** 2)
    tar = 1.3 * np.mean((H[:, 1:] - H[:, :-1]) ** 2)
    assert model.penalty == pytest.approx(ar + tar, rel=1e-12)
    model.backward_loss()
    model.eval()
    val, _ = model.forward_loss(ids, targets)        # validation: pure cross-entropy
    assert model.penalty == 0.0
    model.alpha = model.beta = 0.0
    assert val == model.forward_loss(ids, targets)[0]


def test_embedding_dropout_drops_whole_words_and_eval_is_identity(rng):
    model = _model(seed=2, dropout=0.0, dropoute=0.5)
    ids = np.array([[1, 2, 1, 3, 1], [2, 1, 4, 2, 5]])
    X, _ = model.encode(ids)
    E = model.embedding.params["W"]
    m = model.edrop.mask[:, 0]                       # (V,)
    assert set(np.unique(m)) <= {0.0, 2.0} and (m == 0).any() and (m > 0).any()
    assert model._emask.shape == (2, 5, 1)
    for b in range(2):                               # the same word has the same fate everywhere
        for t in range(5):
            assert_array_equal(model._emask[b, t, 0], m[ids[b, t]])
    model.clear_cache()
    W_before = E.copy()
    model.eval()
    X_eval, _ = model.encode(ids)
    model.clear_cache()
    ref = _model(seed=2, dropout=0.0)
    ref.eval()
    assert_array_equal(X_eval, ref.encode(ids)[0])
    assert_array_equal(E, W_before)


def test_weight_drop_leaves_W_hh_alone_and_eval_uses_it(rng):
    model = _model(seed=4, wdrop=0.5)
    raw = [layer.params["W_hh"] for layer in model.layers]
    before = [w.copy() for w in raw]
    ids, targets = rng.integers(0, V, (2, 4)), rng.integers(0, V, (2, 4))
    model.zero_grad()
    model.forward_loss(ids, targets)
    model.backward_loss()
    for layer, w, b in zip(model.layers, raw, before):
        assert layer.params["W_hh"] is w and layer.grads["W_hh"] is not None
        assert_array_equal(w, b)                     # forward and backward never write it
    opt = optim.SGD(model.parameters(), lr=0.1)
    opt.step()
    for layer, b in zip(model.layers, before):       # only the optimizer moves it
        assert_allclose(layer.params["W_hh"], b - 0.1 * layer.grads["W_hh"], rtol=1e-12)
    model.eval()
    logits = model.predict(ids)
    plain = _model(seed=4)                           # no weight drop, the same (stepped) weights
    plain.load_state_arrays(model.state_arrays())
    assert_array_equal(logits, plain.predict(ids))


def test_weight_drop_on_a_bare_layer(rng):
    """WeightDrop(layer): the same outputs as the layer with W_hh * mask, and dW = dW_used * mask."""
    layer = LSTM(3, 4, dtype=np.float64, rng=rng)
    wd = WeightDrop("W_hh", 0.5, rng=np.random.default_rng(0))
    X, dY = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 4))
    Y, _ = wd.forward(layer, X)
    W = layer.params["W_hh"].copy()
    ref = LSTM(3, 4, dtype=np.float64, rng=rng)
    for k in ref.params:
        ref.params[k][...] = layer.params[k]
    ref.params["W_hh"][...] = W * wd.mask
    assert_allclose(Y, ref.forward(X)[0], rtol=1e-12)
    wd.backward(layer, dY)
    ref.backward(dY)
    assert_allclose(layer.grads["W_hh"], ref.grads["W_hh"] * wd.mask, rtol=1e-12)
    assert_allclose(layer.grads["W_ih"], ref.grads["W_ih"], rtol=1e-12)


def test_dropout_rng_round_trip_resumes_bit_identically(rng):
    """What app.trainer saves (drops[k].rng's state) is all the randomness: a model restored from it
    draws the same masks (locked, embedding and weight) and takes the same steps."""
    ids, targets = rng.integers(0, V, (3, 5)), rng.integers(0, V, (3, 5))

    def steps(model, opt, n):
        for _ in range(n):
            model.zero_grad()
            model.forward_loss(ids, targets)
            model.backward_loss()
            opt.step()

    a = _model(seed=5, **ALL)
    opt_a = optim.SGD(a.parameters(), lr=0.05)
    steps(a, opt_a, 2)
    saved = [d.rng.bit_generator.state for d in a.drops]               # as Run.state_arrays
    weights = {k: v.copy() for k, v in a.state_arrays().items()}
    steps(a, opt_a, 2)
    b = _model(seed=99, **ALL)
    b.load_state_arrays(weights)
    for d, st in zip(b.drops, saved):                                   # as Run's resume
        d.rng.bit_generator.state = st
    steps(b, optim.SGD(b.parameters(), lr=0.05), 2)
    for k, v in a.state_arrays().items():
        assert_array_equal(v, b.state_arrays()[k])


@pytest.mark.parametrize("flag, value", [("--dropoute", "1.0"), ("--wdrop", "-0.1"), ("--alpha", "-1"),
                                         ("--beta", "nan")])
def test_flags_are_validated(flag, value):
    args = train.parse_args([flag, value])
    with pytest.raises(UsageError, match=flag):
        config.validate(config.resolve("default", args))


def test_flags_reach_the_model_and_old_configs_still_build():
    cfg = config.validate(config.resolve("default", train.parse_args(["--wdrop", "0.5", "--alpha", "2"])))
    model = config.build_model(cfg, 40, seed=0)
    assert model.config["wdrop"] == 0.5 and model.alpha == 2.0 and "beta" not in model.config
    old = {k: v for k, v in cfg.items() if k not in ALL}
    today = config.build_model(config.PRESETS["default"], 40, seed=0)
    assert config.build_model(old, 40, seed=0).config == today.config
    with pytest.raises(UsageError, match="--wdrop does not apply"):
        config.resolve("transformer", train.parse_args(["--wdrop", "0.2"]))


def test_a_run_with_all_of_them_trains_resumes_and_saves(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    flags = ["--dropoute", "0.1", "--wdrop", "0.3", "--alpha", "2", "--beta", "1"]
    assert train.main(["--data", str(data_dir), "--emsize", "8", "--nhid", "8", "--batch_size", "4",
                       "--bptt", "5", "--epochs", "1", "--max-batches", "3", "--no-progress", *flags,
                       "--save", str(run_dir)]) == 0
    assert train.main(["--resume", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
    model = load(run_dir / "best.npz")
    assert model.config["wdrop"] == 0.3 and model.config["beta"] == 1.0

"""Both language models with an adaptive softmax as their output layer (models.base): the gradients
of both training paths against central differences in float64, every parameter (the words in a
shuffled frequency order, so word_rank's permutation is exercised), exact log-probabilities for
predict and generate, the word order from counts, files (float16 leaves the order exact), errors.

Shapes: B batch, T time steps, V vocabulary, D the last layer's width.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import models
from conftest import on_host
from lm_helpers import FixedMasks, backprop, ce, unique_params
from models import LanguageModel, TransformerLM
from mytorch.backend import to_numpy
from mytorch.gradcheck import check_gradient

V, CUTOFFS = 20, [4, 11]


def _lstm(seed=0, dropout=0.0, dtype=np.float64, **kw):
    return LanguageModel(V, emsize=4, nhid=6, nlayers=2, dropout=dropout, seed=seed, dtype=dtype,
                         adaptive=CUTOFFS, div_value=2.0, **kw)


def _transformer(seed=0, dropout=0.0, dtype=np.float64):
    return TransformerLM(V, d_model=8, nhead=2, nlayers=1, max_len=6, dropout=dropout, seed=seed,
                         dtype=dtype, adaptive=CUTOFFS, div_value=2.0)


BUILD = {"lstm": _lstm, "transformer": _transformer}


def _model(kind, rng, dropout=0.0, dtype=np.float64):
    """A model with O(1) weights (a visible gradient everywhere) and a shuffled word order."""
    m = BUILD[kind](seed=int(rng.integers(1000)), dropout=dropout, dtype=dtype)
    for name, p in unique_params(m).items():
        p[...] = (1.0 if name.endswith("gamma") else 0.0) + rng.uniform(-0.6, 0.6, p.shape)
    m.set_word_order(rng.permutation(V) * 3 + 1)        # distinct counts: a random frequency order
    return m


@pytest.mark.parametrize("fused", [False, True], ids=["forward-backward", "forward_loss"])
@pytest.mark.parametrize("kind, dropout", [("lstm", 0.0), ("lstm", 0.3), ("transformer", 0.0),
                                           ("transformer", 0.2)])
def test_gradients_match_finite_differences(kind, dropout, fused, rng):
    """Both training paths against central differences of forward -> cross-entropy (forward's
    log-probabilities are scores: the softmax of a log-probability row is the row's exp)."""
    model = _model(kind, rng, dropout)
    B, T = 3, 5
    ids = rng.integers(0, V, (B, T))
    rank = np.asarray(model.word_rank)
    targets = np.argsort(rank)[rng.integers(0, V, (B, T))]         # random words...
    for k, cls in enumerate([0, CUTOFFS[0], CUTOFFS[1]]):          # ...and one in each band
        targets[k, 0] = np.flatnonzero(rank == cls)[0]
    masks = FixedMasks(model)
    masks.restore()
    loss = backprop(model, ids, targets, None, fused)
    grads = {name: g.copy() for name, _, g in model.named_parameters()}

    def f():
        masks.restore()
        out, _ = model.forward(ids)
        model.output._lp_cache = None                   # f runs forwards only
        if kind == "lstm":
            model.clear_cache()
        return ce(out, targets)[0]

    assert f() == pytest.approx(loss, rel=1e-12)
    for name, p in unique_params(model).items():
        if name.endswith("attn.b_k"):                   # softmax ignores a shift shared by a row's scores
            assert np.abs(grads[name]).max() < 1e-12, name
            continue
        assert np.abs(grads[name]).max() > 0, name
        check_gradient(f, p, grads[name], rtol=1e-6, eps=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_scores_are_exact_log_probabilities_in_word_order(kind, rng):
    """predict: the last position of forward; each row's exp sums to 1; column v is word v's
    log-probability, i.e. the layer's class word_rank[v]."""
    model = _model(kind, rng).eval()
    ids = rng.integers(0, V, (4, 5))
    logp, _ = model.forward(ids)
    scores = model.predict(ids)
    assert_allclose(scores, logp[:, -1], rtol=1e-12)
    assert_allclose(np.exp(scores).sum(axis=1), 1.0, rtol=1e-12)
    X, _ = model.encode(ids, cache=False)
    classes = model.output.log_prob(X[:, -1])
    assert_allclose(scores, classes[:, model.word_rank], rtol=1e-12)
    loss, _ = model.forward_loss(ids, ids)
    assert loss == pytest.approx(-np.take_along_axis(logp, ids[..., None], axis=2).mean(), rel=1e-12)


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_greedy_generate_follows_predict(kind, rng):
    model = _model(kind, rng, dtype=np.float32)
    ids = rng.integers(0, V, (2, 3))
    out = model.generate(ids, 3, temperature=0.0, ban_special=False, repetition_penalty=1.0,
                         no_repeat_ngram=0)
    seq = ids
    for k in range(3):
        assert_array_equal(out[:, k], model.predict(seq).argmax(axis=1))
        seq = np.concatenate([seq, out[:, k:k + 1]], axis=1)


def test_word_order_puts_the_frequent_words_in_the_head():
    model = _lstm()
    assert_array_equal(model.word_rank, np.arange(V))   # before set_word_order: the ids' own order
    counts = np.zeros(V)
    counts[[7, 3, 19]] = [50, 40, 40]                   # 7 first, then 3 and 19 (a tie: id order)
    model.set_word_order(counts)
    assert model.word_rank[7] == 0 and model.word_rank[3] == 1 and model.word_rank[19] == 2
    assert sorted(model.word_rank.tolist()) == list(range(V))
    with pytest.raises(ValueError, match=r"counts of shape \(20,\)"):
        model.set_word_order(np.ones(V + 1))
    LanguageModel(V, emsize=4, nhid=4).set_word_order(np.ones(V))    # no adaptive softmax: nothing to do


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
@pytest.mark.parametrize("float16", [False, True])
def test_files_keep_the_word_order(kind, float16, tmp_path, rng):
    model = _model(kind, rng, dtype=np.float32)
    model.set_word_order(rng.permutation(V * 1000)[:V])  # ranks past float16's exact integers too
    path = tmp_path / "m.npz"
    model.save(path, float16=float16)
    back = models.load(path)
    assert back.config == model.config and back.config["adaptive"] == CUTOFFS
    assert back.word_rank.dtype == np.int64
    assert_array_equal(back.word_rank, model.word_rank)
    ids = rng.integers(0, V, (3, 4))
    a, b = model.predict(ids), back.predict(ids)
    if float16:
        assert 0 < np.abs(a - b).max() < 2e-2 * np.abs(a).max()
    else:
        assert_array_equal(a, b)
    with np.load(path) as z:
        assert "param/decoder.W" not in z.files and z["param/word_rank"].dtype == np.int64


def test_a_broken_word_order_in_a_file_is_refused(tmp_path, rng):
    from models.checkpoint import load_npz, save_npz_atomic
    _model("lstm", rng, dtype=np.float32).save(tmp_path / "m.npz")
    arrays = load_npz(tmp_path / "m.npz")
    arrays["param/word_rank"] = np.zeros(V, np.int64)
    save_npz_atomic(tmp_path / "bad.npz", arrays)
    with pytest.raises(models.CheckpointError, match="word_rank is not a permutation"):
        models.load(tmp_path / "bad.npz")


def test_tied_and_adaptive_cannot_go_together():
    with pytest.raises(ValueError, match="use tied=False with adaptive"):
        LanguageModel(V, emsize=4, nhid=4, tied=True, adaptive=CUTOFFS)
    with pytest.raises(ValueError, match="cutoff"):
        LanguageModel(V, emsize=4, nhid=4, adaptive=[4, 30])


def test_device_matches_host(xp, rng):
    """The adaptive training step and scores on the active backend equal the host's (float64)."""
    with on_host():
        host = _model("lstm", rng)
        ids, targets = rng.integers(0, V, (2, 4)), rng.integers(0, V, (2, 4))
        loss = backprop(host, ids, targets, None, True)
        grads = {n: g.copy() for n, _, g in host.named_parameters()}
        scores = host.predict(ids)
    dev = _lstm()
    dev.load_state_arrays(host.state_arrays())
    assert type(dev.word_rank) is type(xp.asarray(ids))
    dloss = backprop(dev, xp.asarray(ids), xp.asarray(targets), None, True)
    assert dloss == pytest.approx(loss, rel=1e-10)
    for n, _, g in dev.named_parameters():
        assert_allclose(to_numpy(g), grads[n], rtol=1e-9, atol=1e-12)
    assert_allclose(to_numpy(dev.predict(xp.asarray(ids))), scores, rtol=1e-9)

"""Adapting while reading: the neural cache, dynamic evaluation, ensembles, cross-fitting (app.adapt).

Shapes: B streams, n words per stream, t words read at once, L cache size, D width, G thetas,
K members, V vocabulary.

The cache is checked against a hand computation (loops over positions, float64), dynamic evaluation
against static reading (lr 0: the same bits) and against one SGD step written here, the ensemble
against its members' probabilities mixed by hand, and the whole reading for causality: changing a
word never changes the probability of any word read before it.
"""
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from app.adapt import candidates, cross_fit, read_stream, with_cache
from app.evaluate import stream_nll
from app.scoring import stream_layout
from models import LanguageModel, TransformerLM
from models.dynamic_eval import DynamicEval
from models.ensemble import Ensemble, fit_weights, mix_logp
from models.neural_cache import NeuralCache
from mytorch.nn.softmax import log_softmax
from mytorch.optim import unique_parameters

V = 13
SOS, EOS = V - 2, V - 1


def _lstm(seed=0, adaptive=None):
    m = LanguageModel(V, emsize=6, nhid=7, nlayers=2, seed=seed, dtype=np.float64, adaptive=adaptive)
    rng = np.random.default_rng(seed + 1)
    for _, p, _ in m.named_parameters():
        p[...] = rng.uniform(-0.6, 0.6, p.shape)         # away from uniform predictions
    return m.eval()


def _transformer(seed=0):
    return TransformerLM(V, d_model=8, nhead=2, nlayers=2, max_len=8, dropout=0.0, seed=seed,
                         dtype=np.float64).eval()


def _stream(rng, streams=3, lengths=(9, 14, 6, 11)):
    articles = [rng.integers(0, SOS, n) for n in lengths]
    return articles, stream_layout(articles, SOS, EOS, streams)


# -- the neural cache -----------------------------------------------------------------------------
def _cache_by_hand(H, Y, size, theta):
    """H (B, n, D) every state of each stream, Y (B, n) the word after each -> (B, n, V) float64,
    each position's cache distribution over the last `size` positions before it (0 with none)."""
    B, n, _ = H.shape
    out = np.zeros((B, n, V))
    for b in range(B):
        for t in range(n):
            window = range(max(0, t - size), t)
            if not window:
                continue
            s = np.array([theta * H[b, t] @ H[b, i] for i in window])
            w = np.exp(s - s.max())
            w /= w.sum()
            for wi, i in zip(w, window):
                out[b, t, Y[b, i]] += wi
    return out


@pytest.mark.parametrize("size, chunks", [(3, [4, 1, 5]), (100, [10]), (1, [2, 3, 5])])
def test_cache_equals_a_hand_computation_and_sums_to_one(size, chunks, rng):
    B, n, D = 2, sum(chunks), 5
    H = rng.normal(size=(B, n, D))
    Y = rng.integers(0, V, (B, n))
    Y[:, 3] = Y[:, 1]                                   # a repeated word: its weights must add up
    want = _cache_by_hand(H, Y, size, theta=0.7)
    cache, probe = NeuralCache(size, [0.7, 0.0]), NeuralCache(size, [0.7, 0.0])
    t0 = 0
    for t in chunks:
        h, y = H[:, t0:t0 + t], Y[:, t0:t0 + t]
        dist = probe.distribution(h, y, V)              # (G, B, t, V), remembers nothing ...
        probe.read(h, y)                                # ... until read
        p, valid = cache.read(h, y)                     # (G, B, t), (t,)
        assert_allclose(dist[0], want[:, t0:t0 + t], rtol=1e-12, atol=1e-15)
        assert_allclose(p[0], np.take_along_axis(want[:, t0:t0 + t], y[..., None], -1)[..., 0], rtol=1e-12)
        assert_allclose(dist.sum(-1)[:, :, valid], 1.0, rtol=1e-12)
        assert np.array_equal(valid, np.arange(t0, t0 + t) > 0)
        t0 += t
    assert cache.keys.shape == (B, min(size, n), D)


def test_cache_theta_zero_is_the_frequency_of_the_window():
    H = np.ones((1, 5, 2))
    Y = np.array([[4, 4, 7, 4, 1]])
    dist = NeuralCache(10, 0.0).distribution(H, Y, V)[0, 0]             # (t, V)
    assert_allclose(dist[4, [4, 7]], [3 / 4, 1 / 4])
    assert not dist[0].any()                                            # nothing before the first


def test_cache_refuses_bad_settings_and_other_streams():
    for size, theta in ((0, 1.0), (2.5, 1.0), (3, -1.0), (3, np.nan)):
        with pytest.raises(ValueError):
            NeuralCache(size, theta)
    cache = NeuralCache(4, 1.0)
    cache.read(np.zeros((2, 3, 4)), np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="reset"):
        cache.read(np.zeros((3, 3, 4)), np.zeros((3, 3), np.int64))


# -- reading a stream: static, dynamic, causal ---------------------------------------------------
def test_static_reading_is_stream_nll(rng):
    articles, (x, y) = _stream(rng)
    for model in (_lstm(), _transformer()):
        rec = read_stream(model, x, y, chunk=4)
        want, count = stream_nll(model, articles, SOS, EOS, streams=3, chunk=4)
        assert rec["nll"].size == count
        assert rec["nll"].mean() == pytest.approx(want, rel=1e-12)


def test_dynamic_with_lr_zero_is_static_to_the_bit(rng):
    _, (x, y) = _stream(rng)
    for model in (_lstm(adaptive=[4]), _transformer()):
        static = read_stream(model, x, y, chunk=3, cache=NeuralCache(5, [0.5, 2.0]))
        dyn = DynamicEval(model, 0.0)
        same = read_stream(model, x, y, chunk=3, cache=NeuralCache(5, [0.5, 2.0]), dynamic=dyn)
        assert np.array_equal(static["nll"], same["nll"]) and np.array_equal(static["cache"], same["cache"])


def test_dynamic_step_is_sgd_on_the_chunk_then_restore(rng):
    _, (x, y) = _stream(rng)
    model = _lstm()
    before = {k: p.copy() for k, p, _ in model.named_parameters()}
    model.zero_grad()
    model.forward_loss(x[:, :4], y[:, :4])
    model.backward_loss()
    grads = {k: g.copy() for k, _, g in model.named_parameters()}
    model.zero_grad()
    dyn = DynamicEval(model, lr=0.5)
    read_stream(model, x[:, :4], y[:, :4], chunk=4, dynamic=dyn)        # one chunk: one step
    for k, p, g in model.named_parameters():
        assert_allclose(p, before[k] - 0.5 * grads[k], rtol=1e-12, atol=1e-15)
        assert not g.any()                                              # cleared after the step
    dyn.restore()
    assert all(np.array_equal(p, before[k]) for k, p, _ in model.named_parameters())


def test_dynamic_decay_pulls_back_to_the_trained_weights():
    model = _lstm()
    dyn = DynamicEval(model, lr=0.0, decay=0.25)
    for (_, p, _), p0 in zip(dyn.params, dyn.theta0):
        p += 1.0
    dyn.step()
    for (_, p, _), p0 in zip(dyn.params, dyn.theta0):
        assert_allclose(p, p0 + 0.75, rtol=1e-12)
    with pytest.raises(ValueError):
        DynamicEval(model, lr=-1.0)


def test_dynamic_evaluation_learns_a_repeated_text(rng):
    """A text read twice: adapting on the first reading makes the second more likely."""
    words = rng.integers(0, SOS, 40)
    x = np.tile(words, 2)[None, :-1]
    y = np.tile(words, 2)[None, 1:]
    model = _lstm(seed=3)
    static = read_stream(model, x, y, chunk=8)["nll"][:, 40:].mean()
    dyn = DynamicEval(model, lr=1.0)
    adapted = read_stream(model, x, y, chunk=8, dynamic=dyn)["nll"][:, 40:].mean()
    dyn.restore()
    assert adapted < static - 0.1


@pytest.mark.parametrize("make", [_lstm, _transformer])
def test_reading_is_causal(make, rng):
    """With the cache and dynamic evaluation on, changing word s of a stream changes no probability
    of a word read before it, in any stream (and does change later ones: the test can fail)."""
    _, (x, y) = _stream(rng, streams=2, lengths=(20, 25, 12))

    def read(x, y):
        model = make(seed=5)
        return read_stream(model, x, y, chunk=3, cache=NeuralCache(6, [1.0]),
                           dynamic=DynamicEval(model, lr=0.3))

    base = read(x, y)
    for b, s in ((0, 7), (1, 13)):                     # word s of stream b: y[b, s - 1], x[b, s]
        x2, y2 = x.copy(), y.copy()
        y2[b, s - 1] = x2[b, s] = (x[b, s] + 1) % SOS
        got = read(x2, y2)
        for key in ("nll", "cache"):
            before = base[key][..., :s - 1]
            assert_allclose(got[key][..., :s - 1], before, rtol=1e-10, atol=1e-14)
        assert not np.allclose(got["nll"][:, s:], base["nll"][:, s:])


# -- ensembles and cross-fitting -------------------------------------------------------------------
def test_an_ensemble_of_one_is_the_model(rng):
    model = _lstm()
    ens = Ensemble([model])
    inp = rng.integers(0, V, (4, 6))
    assert_allclose(ens.predict(inp), log_softmax(model.predict(inp)), rtol=1e-12, atol=1e-12)
    assert np.array_equal(ens.generate(inp, 5, temperature=0), model.generate(inp, 5, temperature=0))


def test_an_ensemble_mixes_probabilities_with_its_weights(rng):
    a, b = _lstm(seed=1), _transformer(seed=2)
    inp = rng.integers(0, V, (3, 5))
    pa, pb = (np.exp(log_softmax(m.predict(inp))) for m in (a, b))
    ens = Ensemble([a, b], weights=[3, 1])
    assert_allclose(np.exp(ens.predict(inp)), 0.75 * pa + 0.25 * pb, rtol=1e-12)
    out = ens.generate(inp, 4, num_beams=2)
    assert out.shape == (3, 4)
    for bad in ([1], [1, -1], [0, 0], [1, np.inf]):
        with pytest.raises(ValueError, match="weights"):
            Ensemble([a, b], weights=bad)


def test_an_ensemble_refuses_another_vocabulary():
    other = LanguageModel(V + 1, emsize=4, nhid=4, nlayers=1)
    with pytest.raises(ValueError, match="vocabulary"):
        Ensemble([_lstm(), other])


def test_em_weights_favour_the_better_member_and_never_lose_likelihood(rng):
    truth = rng.random(500) < 0.7
    lp = np.log(np.stack([np.where(truth, 0.5, 0.01), np.where(truth, 0.01, 0.5)]))   # (2, N)
    likelihood = [mix_logp(lp, fit_weights(lp, steps)).sum() for steps in range(8)]
    assert np.all(np.diff(likelihood) >= -1e-9)
    w = fit_weights(lp)
    assert w[0] == pytest.approx(truth.mean(), abs=0.03)
    grid = max(np.linspace(0.01, 0.99, 99), key=lambda a: mix_logp(lp, [a, 1 - a]).sum())
    assert w[0] == pytest.approx(grid, abs=0.011)


def test_cross_fit_chooses_on_the_other_half(rng):
    """Half 0 of the streams prefers setting A, half 1 setting B: each half is scored with the
    other's choice, so the cross-fitted NLL is the worse one of each half."""
    B, n = 4, 10
    a = np.where(np.arange(B)[:, None] < 2, -1.0, -3.0) * np.ones((B, n))
    b = np.where(np.arange(B)[:, None] < 2, -2.0, -1.5) * np.ones((B, n))
    mean, choices = cross_fit([[("A", a), ("B", b)]], ensemble=False)
    assert mean == pytest.approx((2.0 + 3.0) / 2)
    assert [c["settings"] for c in choices] == [["B"], ["A"]]
    rec = dict(nll=-a, cache=np.ones((1, B, n)), valid=np.ones(n, bool), thetas=[0.5])
    assert_allclose(with_cache(rec, 0.0, 0), a)
    assert [s for s, _ in candidates({0: rec}, (0.1, 0.2))] == [(0, 0.5, 0.1), (0, 0.5, 0.2)]


# -- the command --------------------------------------------------------------------------------------
def test_command_prints_every_combination_and_writes_the_ensembles_predictions(data_dir, tmp_path, capsys):
    from app.evaluate import main, perplexity, window_nll
    from dataset.corpus import load_fixtures, load_hw4p1
    from models import load
    data = load_hw4p1(data_dir)
    Vd = len(data.vocab)
    paths = [str(tmp_path / "lstm.npz"), str(tmp_path / "tfm.npz")]
    LanguageModel(Vd, emsize=6, nhid=7, nlayers=2, seed=5).save(paths[0])
    TransformerLM(Vd, d_model=8, nhead=2, nlayers=1, max_len=8, seed=6).save(paths[1])
    out_file = tmp_path / "ens.npy"
    args = ["--checkpoint", *paths, "--data", str(data_dir), "--ensemble", "--cache", "20", "--dynamic",
            "--dynamic-lr", "0.5", "--streams", "4", "--windows", "50"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("rows adapted to their own words, NLL on 50 validation rows: static ") == 2
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == f"| methods | {paths[0]} | {paths[1]} | ensemble |"
    assert [line.split(" | ")[0] for line in table[1:]] == ["| static", "| cache", "| dynamic",
                                                            "| cache + dynamic"]
    static = [stream_nll(load(p), data.valid, Vd - 2, Vd - 1, streams=4)[0] for p in paths]
    assert table[1].startswith(f"| static | {perplexity(static[0]):.1f} | {perplexity(static[1]):.1f} |")
    fx = load_fixtures(data_dir, Vd)
    assert main(["--checkpoint", *paths, "--data", str(data_dir), "--ensemble", "--windows", "50",
                 "--write-predictions", str(out_file), "--fixtures-only"]) == 0
    out = capsys.readouterr().out
    assert not [line for line in out.splitlines() if line.startswith("| ")]        # no whole-split table
    scores = np.load(out_file)
    card = json.loads(out_file.with_suffix(".json").read_text())
    assert card["members"] == paths and f"--write-predictions {out_file}" in card["command"]
    text = (tmp_path / "ens-generated-texts-test.txt").read_text().splitlines()
    bars = card["generation (static mixture, recommended decoding)"]
    assert len(text) == len(fx["generation_test"])
    assert set(bars) == {"distinct_2", "rows_repeating_4gram", "unk_share"}
    assert scores.shape == (len(fx["prediction_test_inp"]), Vd) and scores.dtype == np.float32
    members = [load(p) for p in paths]
    weights = fit_weights(-np.stack([window_nll(m, data.valid, Vd - 2, rows=50) for m in members]))
    assert f"validation rows: {np.round(weights, 3).tolist()}" in out
    want = Ensemble(members, weights).predict(fx["prediction_test_inp"])
    assert_allclose(scores, want, rtol=1e-5, atol=1e-5)

    bad = [["--ensemble", "1"], ["--write-predictions", "x.npy"], ["--cache", "0"], ["--cache-lambda", "1"],
           ["--dynamic", "--dynamic-lr", "0"], ["--dynamic-decay", "-0.1"]]
    for extra in bad:
        assert main(["--checkpoint", *paths, "--data", str(data_dir), *extra]) == 2
    assert main(["--checkpoint", paths[0], "--data", str(data_dir), "--ensemble"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(bad) + 1 and all(line.startswith("error: --") for line in err)


@pytest.mark.parametrize("make", [_lstm, _transformer])
def test_rows_adapt_alone_on_their_own_words(make, rng):
    from models.dynamic_eval import predict_adapted
    model = make(seed=4)
    inp = rng.integers(0, SOS, (3, 12))
    before = {k: p.copy() for k, p, _ in model.named_parameters()}
    assert_allclose(predict_adapted(model, inp, 0.0), model.predict(inp), rtol=1e-12)   # row by row
    adapted = predict_adapted(model, inp, 0.5)
    alone = predict_adapted(model, inp[1:2], 0.5)                  # row 1 without the others
    assert_allclose(adapted[1:2], alone, rtol=1e-12)
    assert not np.allclose(adapted, model.predict(inp))
    assert all(np.array_equal(p, before[k]) for k, p, _ in model.named_parameters())   # put back
    # by hand: one SGD step on row 0's words (a Transformer's last max_len + 1), then predict
    words = inp[:1, -(getattr(model, "max_len", 11) + 1):]
    model.zero_grad()
    model.forward_loss(words[:, :-1], words[:, 1:])
    model.backward_loss()
    for _, p, g in unique_parameters(model.parameters()):             # a tied matrix once
        p -= 0.5 * g
    assert_allclose(adapted[:1], model.predict(inp[:1]), rtol=1e-10)


def test_predict_and_generate_take_an_ensemble(data_dir, tmp_path, capsys):
    from app import generate, predict
    from dataset.corpus import load_hw4p1
    from models import load
    data = load_hw4p1(data_dir)
    Vd = len(data.vocab)
    paths = [str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    LanguageModel(Vd, emsize=6, nhid=7, nlayers=2, seed=5).save(paths[0], vocab=data.vocab)
    TransformerLM(Vd, d_model=8, nhead=2, nlayers=1, max_len=8, seed=6).save(paths[1], vocab=data.vocab)
    ens = load(paths, weights=[1, 3])
    assert isinstance(ens, Ensemble)
    assert_allclose(ens.weights, [0.25, 0.75])
    prompt = " ".join(data.vocab[:3])
    assert predict.main(["--checkpoint", paths[0], "--checkpoint", paths[1], prompt, "--words", "4",
                         "--top", "2", "--weights", "1", "3"]) == 0
    out = capsys.readouterr().out
    p = np.exp(ens.predict(np.array([[Vd - 2, 0, 1, 2]])).astype(np.float64))[0]
    assert f"{np.sort(p)[-1]:.4f}" in out
    assert generate.main(["--checkpoint", *paths, "--prompt", prompt, "--words", "3",
                          "--temperature", "0"]) == 0
    assert capsys.readouterr().out.count("|") == 1
    from app.adapt_report import ngram_member                    # --ngram: the 4-gram joins, weighted last
    assert predict.main(["--checkpoint", paths[0], "--checkpoint", paths[1], prompt, "--words", "0",
                         "--top", "1", "--weights", "1", "3", "2", "--ngram", "--data", str(data_dir)]) == 0
    with_kn = Ensemble([*ens.members, ngram_member("ngram:4", data)], [1, 3, 2])
    p = np.exp(with_kn.predict(np.array([[Vd - 2, 0, 1, 2]])).astype(np.float64))[0]
    assert f"{np.sort(p)[-1]:.4f}" in capsys.readouterr().out
    assert generate.main(["--checkpoint", *paths, "--ngram", "--prompt", prompt, "--words", "3"]) == 2
    assert "--ngram 4: give --data DIR" in capsys.readouterr().err
    assert generate.main(["--checkpoint", *paths, "--weights", "1", "--prompt", prompt]) == 2
    LanguageModel(Vd + 1, emsize=4, nhid=4, nlayers=1).save(tmp_path / "other.npz")
    assert generate.main(["--checkpoint", paths[0], str(tmp_path / "other.npz"), "--prompt", prompt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --weights") and "vocabulary" in err[1]


def test_a_rows_cache_over_its_own_words_by_hand(rng):
    from models.neural_cache import row_cache_logp
    N, T, D = 3, 6, 4
    H = rng.normal(size=(N, T, D))
    words = rng.integers(0, V, (N, T - 1))
    words[:, 2] = words[:, 0]                                   # a repeated word
    logp = log_softmax(rng.normal(size=(N, V)))
    got = row_cache_logp(H, words, logp, 0.8, 0.3)
    for r in range(N):
        s = 0.8 * H[r, :-1] @ H[r, -1]
        w = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        cache = np.zeros(V)
        np.add.at(cache, words[r], w)
        assert_allclose(got[r], np.log(0.7 * np.exp(logp[r]) + 0.3 * cache), rtol=1e-12)
    assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=1e-12)


def test_an_ngram_member_joins_the_table_and_the_fixtures(data_dir, tmp_path, capsys):
    """--ngram: a Kneser-Ney member counted on the training split; it only reads (the same in every row
    of the table), its weight is fitted with the others', and the predictions are its mixture."""
    from app.adapt_report import ngram_member
    from app.evaluate import main, perplexity
    from dataset.corpus import load_fixtures, load_hw4p1
    from models import load
    data = load_hw4p1(data_dir)
    Vd = len(data.vocab)
    path = str(tmp_path / "lstm.npz")
    LanguageModel(Vd, emsize=6, nhid=7, nlayers=2, seed=5).save(path)
    assert main(["--checkpoint", path, "--data", str(data_dir), "--ensemble", "--ngram", "--cache", "20",
                 "--dynamic", "--dynamic-lr", "0.5", "--streams", "4", "--windows", "50"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == f"| methods | {path} | ngram:4 | ensemble |"
    kn = ngram_member("ngram:4", data)
    want = perplexity(-kn.stream_logp(*stream_layout(data.valid, Vd - 2, Vd - 1, 4)).mean())
    assert {line.split(" | ")[2] for line in table[1:]} == {f"{want:.1f}"}        # static in every row
    out_file = tmp_path / "ens.npy"
    assert main(["--checkpoint", path, "--data", str(data_dir), "--ensemble", "--ngram", "--windows", "50",
                 "--fixtures-only", "--write-predictions", str(out_file)]) == 0
    card = json.loads(out_file.with_suffix(".json").read_text())
    assert card["members"] == [path, "ngram:4"] and card["mixture"] == "static"
    fx = load_fixtures(data_dir, Vd)
    mixed = Ensemble([load(path), kn], card["weights"]).predict(fx["prediction_test_inp"])
    assert_allclose(np.load(out_file), mixed, rtol=1e-5, atol=1e-5)
    for bad in (["--ngram"], ["--ensemble", "--ngram", "0"], ["--ensemble", "1", "--ngram"]):
        assert main(["--checkpoint", path, "--data", str(data_dir), *bad]) == 2
    assert capsys.readouterr().err.count("error: --") == 3

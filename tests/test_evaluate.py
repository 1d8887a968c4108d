"""app.evaluate: the course's fixture NLL, the whole-split NLL and the command line.

Shapes: N rows, V vocabulary, B streams, n words per stream.
Every result is compared with a float64 computation written here from scratch:
stream_nll against reading each stream row in one full forward (no chunks, no
carried state), fixture_nll against forward's last-step logits, window_nll against every
fixture-shaped row of the articles scored one by one.
"""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from models import LanguageModel
from app.evaluate import fixture_nll, perplexity, stream_nll, window_nll
from fixtures.make import window_starts

V = 17
SOS_ID, EOS_ID = 15, 16


def _nll64(logits, targets):
    """-log softmax(logits)[target] in float64, any leading shape."""
    z = np.asarray(logits, np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))
    return lse - np.take_along_axis(z, np.asarray(targets)[..., None], axis=-1)[..., 0]


def _model(dropout=0.0, seed=0, dtype=np.float64):
    m = LanguageModel(V, emsize=4, nhid=5, nlayers=2, dropout=dropout, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed + 1)
    for _, p, _ in m.named_parameters():
        p[...] = rng.uniform(-0.8, 0.8, p.shape)     # away from uniform predictions
    return m


def _articles(rng, lengths):
    return [rng.integers(0, SOS_ID, n) for n in lengths]    # words only: no <sos>/<eos> inside


# ------------------------------------------------------------------ fixture_nll

def test_fixture_nll_is_the_mean_nll_of_the_last_step(rng):
    from fixtures import prediction_nll
    model = _model().eval()
    inp = np.concatenate([np.full((6, 1), SOS_ID), rng.integers(0, V, (6, 5))], axis=1)
    out = rng.integers(0, V, 6)
    got = fixture_nll(model, inp, out)
    logits = model.forward(inp)[0][:, -1]                         # (N, V) after the whole row
    model.clear_cache()
    assert got == pytest.approx(float(np.mean(_nll64(logits, out))), rel=1e-12)
    assert got == pytest.approx(prediction_nll(model.predict(inp), out), rel=1e-12)
    assert fixture_nll(model, inp, (out + 1) % V) != pytest.approx(got, rel=1e-6)   # depends on targets


# ------------------------------------------------------------------ window_nll

def _every_window(model, articles, prompt):
    """-log p(next word | <sos> + prompt words) for every start with prompt + 1 words left in its
    article, each row read by its own forward, float64: (positions,)."""
    out = []
    for a in articles:
        for i in range(len(a) - prompt):
            logits = model.forward(np.concatenate(([SOS_ID], a[i:i + prompt]))[None])[0][0, -1]   # (V,)
            out.append(float(_nll64(logits, a[i + prompt])))
    model.clear_cache()
    return np.array(out)


@pytest.mark.parametrize("prompt", [1, 3])
def test_window_nll_scores_rows_drawn_inside_articles(prompt, rng):
    model = _model(seed=4).eval()
    articles = _articles(rng, [9, 2, 7, 4, 12])                 # 2 words: no row for prompt 3
    every = _every_window(model, articles, prompt)
    assert window_starts(articles, prompt + 1).sum() == len(every)
    for batch in (1, 4, 1000):                                  # all rows: each position once
        got = window_nll(model, articles, SOS_ID, rows=len(every), prompt=prompt, batch=batch)
        assert_allclose(np.sort(got), np.sort(every), rtol=1e-10)
    some = window_nll(model, articles, SOS_ID, rows=5, prompt=prompt, seed=1)
    assert some.shape == (5,) and np.isin(np.round(some, 9), np.round(every, 9)).all()
    assert_allclose(window_nll(model, articles, SOS_ID, rows=5, prompt=prompt, seed=1), some)   # same rows
    assert not np.allclose(window_nll(model, articles, SOS_ID, rows=5, prompt=prompt, seed=2), some)
    with pytest.raises(ValueError, match="too little held-out text"):
        window_nll(model, articles, SOS_ID, rows=len(every) + 1, prompt=prompt)


def test_window_nll_reads_without_dropout(rng):
    model = _model(dropout=0.5, seed=6)
    articles = _articles(rng, [10, 8])
    got = window_nll(model, articles, SOS_ID, rows=6, prompt=3)
    assert_allclose(window_nll(model, articles, SOS_ID, rows=6, prompt=3), got)     # no random masks
    assert_allclose(window_nll(model.eval(), articles, SOS_ID, rows=6, prompt=3), got)


# ------------------------------------------------------------------ stream_nll

def _brute_force(model, articles, streams):
    """Each stream row read in one forward (zero state at its start), NLL of each next word, float64."""
    ids = np.concatenate([np.concatenate(([SOS_ID], a, [EOS_ID])) for a in articles])
    n = (ids.size - 1) // streams
    total = 0.0
    for r in range(streams):
        x, y = ids[r * n:(r + 1) * n], ids[r * n + 1:(r + 1) * n + 1]
        logits = model.forward(x[None])[0][0]                   # (n, V)
        total += float(_nll64(logits, y).sum())
    model.clear_cache()
    return total / (n * streams), n * streams


@pytest.mark.parametrize("streams", [1, 3, 4])
def test_stream_nll_equals_reading_each_row_whole(streams, rng):
    model = _model(seed=streams).eval()
    articles = _articles(rng, [5, 9, 1, 12, 4])
    want, count = _brute_force(model, articles, streams)
    for chunk in (1, 2, 5, 1000):                               # 1000 > n: one chunk
        got, got_count = stream_nll(model, articles, SOS_ID, EOS_ID, streams=streams, chunk=chunk)
        assert got_count == count
        assert got == pytest.approx(want, rel=1e-10)


def test_chunk_size_does_not_change_the_result_in_float32(rng):
    model = _model(seed=7, dtype=np.float32)
    articles = _articles(rng, [20, 7, 30])
    results = [stream_nll(model, articles, SOS_ID, EOS_ID, streams=2, chunk=c) for c in (1, 3, 7, 35)]
    assert len({c for _, c in results}) == 1
    assert_allclose([r for r, _ in results], results[0][0], rtol=1e-5)


def test_stream_nll_carries_state_across_chunks(rng):
    """Not carrying the state (each chunk from zeros) would give another number."""
    model = _model(seed=2).eval()
    articles = _articles(rng, [25, 18])
    got, _ = stream_nll(model, articles, SOS_ID, EOS_ID, streams=2, chunk=4)
    ids = np.concatenate([np.concatenate(([SOS_ID], a, [EOS_ID])) for a in articles])
    n = (ids.size - 1) // 2
    x, y = ids[:2 * n].reshape(2, n), ids[1:2 * n + 1].reshape(2, n)
    fresh = np.mean(np.concatenate([_nll64(model.forward(x[:, t:t + 4])[0], y[:, t:t + 4]).ravel()
                                    for t in range(0, n, 4)]))
    model.clear_cache()
    assert abs(got - fresh) > 1e-4


def test_stream_layout_scores_every_word_but_the_leftovers(rng):
    """The (B, n) layout scores words 1 .. n*B of the wrapped stream: all but < B at the end."""
    articles = _articles(rng, [6, 3, 10])
    total = sum(len(a) + 2 for a in articles)                   # with <sos>, <eos>: 25 ids
    model = _model().eval()
    for streams in (1, 2, 3, 4, 6, 24):
        _, count = stream_nll(model, articles, SOS_ID, EOS_ID, streams=streams, chunk=5)
        assert count == ((total - 1) // streams) * streams
        assert total - 1 - streams < count <= total - 1          # unscored: the first id, < B leftovers
    with pytest.raises(ValueError):
        stream_nll(model, articles, SOS_ID, EOS_ID, streams=25)  # 24 targets cannot fill 25 rows


def test_stream_nll_scores_in_eval_mode_and_restores_the_mode(rng):
    model = _model(dropout=0.5, seed=3)
    articles = _articles(rng, [15, 11])
    assert model.training
    got, _ = stream_nll(model, articles, SOS_ID, EOS_ID, streams=2, chunk=3)
    assert model.training                                       # back in train mode
    model.eval()
    want, _ = _brute_force(model, articles, 2)
    assert got == pytest.approx(want, rel=1e-10)                # no dropout while scoring
    stream_nll(model, articles, SOS_ID, EOS_ID, streams=2)
    assert not model.training


def test_perplexity():
    assert perplexity(math.log(123.0)) == pytest.approx(123.0)
    assert math.isfinite(perplexity(1e6))                       # capped, no OverflowError


# ------------------------------------------------------------------ the command line

def test_command_line_prints_both_numbers(data_dir, tmp_path, capsys):
    from dataset.corpus import load_fixtures, load_hw4p1
    from app.evaluate import main
    data = load_hw4p1(data_dir)
    V = len(data.vocab)
    model = LanguageModel(V, emsize=6, nhid=7, nlayers=2, seed=5)
    model.save(tmp_path / "m.npz")
    assert main(["--checkpoint", str(tmp_path / "m.npz"), "--data", str(data_dir)]) == 0
    out = capsys.readouterr().out
    fx = load_fixtures(data_dir, V)
    val = fixture_nll(model, fx["prediction_inp"], fx["prediction_out"])
    mean, words = stream_nll(model, data.valid, V - 2, V - 1)
    assert f"{val:.4f}" in out and f"perplexity {perplexity(mean):.2f} over {words:,} words" in out
    n = min(4096, window_starts(data.valid, 21).sum())
    rows = window_nll(model, data.valid, V - 2, rows=n)
    assert f"fixture-shaped rows of the validation split ({n}): NLL {rows.mean():.4f} +- " in out

    assert main(["--checkpoint", str(tmp_path / "m.npz"), "--data", str(data_dir), "--windows", "0"]) == 0
    assert "fixture-shaped" not in capsys.readouterr().out
    for bad in ("1", "-3", str(10 ** 9)):                       # no standard error; negative; too many
        assert main(["--checkpoint", str(tmp_path / "m.npz"), "--data", str(data_dir), "--windows", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: --windows ") for line in err)
    assert f"the validation split has {window_starts(data.valid, 21).sum()} fixture-shaped rows" in err[2]

    LanguageModel(V + 1, emsize=6, nhid=7, nlayers=2).save(tmp_path / "other.npz")
    assert main(["--checkpoint", str(tmp_path / "other.npz"), "--data", str(data_dir)]) == 2
    assert main(["--checkpoint", str(tmp_path / "missing.npz"), "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "other.npz predicts" in err[0]


def test_command_line_compares_models_row_by_row(data_dir, tmp_path, capsys):
    """Several models: each one's three numbers, and its paired difference from the first's rows."""
    from dataset.corpus import load_fixtures, load_hw4p1
    from models import load
    from app.evaluate import fixture_nlls, main
    data = load_hw4p1(data_dir)
    V = len(data.vocab)
    paths = []
    for seed in (5, 6):
        paths.append(str(tmp_path / f"m{seed}.npz"))
        LanguageModel(V, emsize=6, nhid=7, nlayers=2, seed=seed).save(paths[-1])
    assert main(["--checkpoint", *paths, "--data", str(data_dir), "--windows", "40"]) == 0
    out = capsys.readouterr().out
    a, b = (window_nll(load(p), data.valid, V - 2, rows=40) for p in paths)
    diff = b - a
    assert out.count("== ") == 2 and out.count("fixture NLL (prediction.npz") == 2
    assert f"minus {paths[0]}'s, row by row: {diff.mean():.4f} +- {diff.std(ddof=1) / np.sqrt(40):.4f}" in out
    fx = load_fixtures(data_dir, V)
    fa, fb = (fixture_nlls(load(p), fx["prediction_inp"], fx["prediction_out"]) for p in paths)
    assert f"fixture NLL (prediction.npz, {len(fa)} rows)  {fa.mean():.4f} +- " in out
    fdiff = fb - fa
    assert (f"minus {paths[0]}'s, row by row: {fdiff.mean():.4f} +- "
            f"{fdiff.std(ddof=1) / np.sqrt(len(fa)):.4f}") in out
    assert out.count("minus") == 2 and out.index(f"== {paths[1]}") < out.index("minus")

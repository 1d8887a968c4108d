"""models.decoding and its logits processors: bans, penalties, beam search, batching, seeds.

Shapes: B rows, V vocabulary (a tiny LanguageModel with V = 7 words, the last two <sos>, <eos>).
"""
import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fixtures.text_metrics import distinct, repeating_rows, share
from mytorch import backend
from models import LanguageModel
from models.decoding import Decoding
from models.sampling import ban_repeated_ngrams, ban_words, penalize_repeats

V = 7
PLAIN = dict(no_repeat_ngram=0, ban_special=False, top_p=None)


def _model(seed=0, scale=2.0):
    m = LanguageModel(V, emsize=4, nhid=5, nlayers=2, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 50)
    for _, p, _ in m.named_parameters():
        p[...] = backend.to_device(rng.uniform(-scale, scale, p.shape), p.dtype)
    return m.eval()


# ------------------------------------------------------------------ processors

def test_ban_repeated_ngrams_by_hand():
    z = np.zeros((2, 6))
    history = np.array([[1, 2, 3, 1, 2],        # "1 2" was followed by 3 -> ban 3
                        [4, 4, 4, 5, 4]])       # "5 4" never seen before -> nothing
    ban_repeated_ngrams(z, history, 3)
    assert np.isneginf(z[0]).tolist() == [False, False, False, True, False, False]
    assert np.isfinite(z[1]).all()
    z = np.zeros((1, 6))
    ban_repeated_ngrams(z, np.array([[0, 5, 5]]), 1)                 # n = 1: every used word
    assert np.isneginf(z[0]).tolist() == [True, False, False, False, False, True]
    z = np.zeros((1, 6))
    ban_repeated_ngrams(z, np.array([[3, 4, 3]]), 2)                 # "3" was followed by 4
    assert np.flatnonzero(np.isneginf(z[0])).tolist() == [4]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    z = np.array([[2.0, -2.0, 2.0, -2.0]])
    penalize_repeats(z, np.array([[1, 0, 1, 1]]), 2.0)          # words 0 and 1 used (1 three times: once)
    assert z.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_ban_words():
    z = np.zeros((2, 4))
    ban_words(z, [1, 3])
    assert np.isneginf(z[:, [1, 3]]).all() and (z[:, [0, 2]] == 0).all()


# ------------------------------------------------------------------ options

def test_unknown_and_bad_options_are_refused(rng):
    model = _model()
    inp = rng.integers(0, 5, (2, 3))
    with pytest.raises(TypeError, match="unknown decoding option.*top_q"):
        model.generate(inp, 2, top_q=0.5)
    for bad in (dict(temperature=-1), dict(top_p=0.0), dict(top_k=0), dict(num_beams=0),
                dict(no_repeat_ngram=-1),
                dict(repetition_penalty=0), dict(seed=1.5), dict(temperature=float("nan"))):
        with pytest.raises(ValueError, match="decoding: "):
            model.generate(inp, 2, **bad)


def test_describe_names_what_differs_from_the_default():
    assert Decoding().describe() == "default"
    assert Decoding.of(num_beams=3).describe() == "num_beams=3"


# ------------------------------------------------------------------ what the options guarantee

def test_special_words_are_never_emitted_by_default(rng):
    model = _model(1)
    model.decoder.params["b"][[V - 2, V - 1]] = 50.0       # the model wants <sos> / <eos> every time
    inp = rng.integers(0, 5, (6, 3))
    assert set(model.generate(inp, 8, temperature=0.0, **{**PLAIN, "ban_special": False}).ravel()) <= {5, 6}
    for options in (dict(), dict(temperature=0.0), dict(num_beams=3)):
        out = model.generate(inp, 8, **options)
        assert not np.isin(out, [V - 2, V - 1]).any()
    model.vocab = np.array(["<unk>", "a", "b", "c", "d", "<sos>", "<eos>"])   # <unk> known: banned too
    assert model.special_ids() == [0, 5, 6]
    model.decoder.params["b"][0] = 60.0
    assert not np.isin(model.generate(inp, 8), [0, 5, 6]).any()


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram_holds_over_prompt_and_continuation(n, rng):
    model = LanguageModel(30, emsize=4, nhid=5, nlayers=1, seed=2)   # 30 words: room to avoid repeats
    inp = rng.integers(0, 28, (5, 4))
    for options in (dict(temperature=0.0), dict(num_beams=3), dict()):
        out = model.generate(inp, 12, no_repeat_ngram=n, **options)
        full = np.concatenate([inp, out], axis=1)
        grams = np.lib.stride_tricks.sliding_window_view(full, n, axis=1)
        for row in grams:
            assert len({tuple(g) for g in row}) == len(row)


def test_a_row_with_every_word_banned_drops_the_ngram_block_but_keeps_the_special_ban():
    model = _model(3)
    inp = np.array([[0, 1, 2, 3, 4]])                          # every ordinary word used: all banned
    model.decoder.params["b"][[V - 2, V - 1]] = 50.0           # and the model wants <sos> / <eos>
    out = model.generate(inp, 1, no_repeat_ngram=1, temperature=0.0)
    assert out[0, 0] == model.predict(inp)[0, :V - 2].argmax()
    sampled = model.generate(inp, 3, no_repeat_ngram=1, seed=0)                  # sampling too: no nan row
    assert not np.isin(sampled, [V - 2, V - 1]).any()


def test_sampling_is_seeded(rng):
    model = _model(4, scale=0.5)
    inp = rng.integers(0, 5, (8, 3))
    a, b = model.generate(inp, 10, seed=3), model.generate(inp, 10, seed=3)
    assert_array_equal(a, b)
    assert not np.array_equal(a, model.generate(inp, 10, seed=4))


@pytest.mark.parametrize("options", [dict(temperature=0.0), dict(num_beams=4),
                                     dict(num_beams=3, no_repeat_ngram=2, repetition_penalty=1.5)])
def test_rows_are_independent(options, rng):
    """Decoding B rows together equals decoding each row alone (deterministic strategies)."""
    model = _model(5)
    inp = rng.integers(0, 5, (4, 3))
    together = model.generate(inp, 6, **options)
    alone = np.concatenate([model.generate(inp[r:r + 1], 6, **options) for r in range(4)])
    assert_array_equal(together, alone)


# ------------------------------------------------------------------ beam search

def test_wide_beam_finds_the_most_likely_continuation(rng):
    """With K >= V^(S-1) beams nothing is pruned: the result is the argmax over all V^S continuations."""
    model = _model(6)
    inp = rng.integers(0, 5, (2, 2))
    S = 3
    out = model.generate(inp, S, num_beams=V ** (S - 1), **PLAIN)
    every = np.array(list(itertools.product(range(V), repeat=S)))               # (V^S, S)
    for r in range(2):
        seqs = np.concatenate([np.tile(inp[r], (len(every), 1)), every], axis=1)
        scores = _logp_after(model, seqs, inp.shape[1])
        assert_array_equal(out[r], every[scores.argmax()])


def _logp_after(model, seqs, L):
    """log P of the words after the first L (the continuation) of each row of seqs."""
    total = np.zeros(len(seqs))
    for t in range(L, seqs.shape[1]):
        z = model.predict(seqs[:, :t])
        z = z - z.max(axis=1, keepdims=True)
        total += z[np.arange(len(seqs)), seqs[:, t]] - np.log(np.exp(z).sum(axis=1))
    return total


def test_one_beam_is_greedy_and_beams_score_at_least_greedy(rng):
    model = _model(7)
    inp = rng.integers(0, 5, (5, 3))
    greedy = model.generate(inp, 5, temperature=0.0, **PLAIN)
    assert_array_equal(model.generate(inp, 5, num_beams=1, temperature=0.0, **PLAIN), greedy)
    beam = model.generate(inp, 5, num_beams=4, **PLAIN)
    lp_beam = _logp_after(model, np.concatenate([inp, beam], 1), 3)
    lp_greedy = _logp_after(model, np.concatenate([inp, greedy], 1), 3)
    assert (lp_beam >= lp_greedy - 1e-9).all() and (lp_beam > lp_greedy + 1e-6).any()


def test_finished_beams_pad_with_eos_and_length_penalty_decides(rng):
    """<eos> allowed: a beam that ends stops growing; a high length penalty prefers long beams."""
    model = _model(8, scale=0.3)
    model.decoder.params["b"][V - 1] = 0.5            # <eos> the likeliest word, but not certain
    inp = rng.integers(0, 5, (6, 2))
    short = model.generate(inp, 6, num_beams=4, ban_special=False, no_repeat_ngram=0, length_penalty=-2.0)
    long = model.generate(inp, 6, num_beams=4, ban_special=False, no_repeat_ngram=0, length_penalty=4.0)
    for out in (short, long):
        for row in out:                                # after the first <eos>, only <eos>
            ends = np.flatnonzero(row == V - 1)
            assert ends.size == 0 or (row[ends[0]:] == V - 1).all()

    def n_words(out):
        return np.where((out == V - 1).any(1), (out == V - 1).argmax(1), out.shape[1])
    assert n_words(long).mean() > n_words(short).mean()


# ------------------------------------------------------------------ text metrics

def test_text_metrics_by_hand():
    out = np.array([[1, 2, 3, 1, 2, 3],       # 3-grams: 123 231 312 123 -> repeats "1 2 3"
                    [4, 4, 5, 6, 7, 8]])
    assert distinct(out, 1) == pytest.approx(8 / 12)          # distinct words {1..8} over 12 words
    assert distinct(out, 2) == pytest.approx(8 / 10)          # 12 23 31 (12 23) 44 45 56 67 78
    assert repeating_rows(out, 3) == 1 and repeating_rows(out, 4) == 0
    assert repeating_rows(np.array([[4, 4, 4, 4, 4]]), 4) == 1
    assert share(out, 4) == pytest.approx(2 / 12)
    with pytest.raises(ValueError):
        distinct(out, 7)
    assert_allclose(distinct(np.arange(10)[None], 2), 1.0)


# ------------------------------------------------------------------ backends

@pytest.mark.parametrize("options", [dict(temperature=0.0), dict(num_beams=3), dict(seed=5)])
def test_decoding_gives_the_same_words_on_every_backend(backend_name, options, rng):
    """The model on the test's backend (CuPy under the gpu mark) decodes as the NumPy one does."""
    from conftest import on_host
    inp = rng.integers(0, 5, (4, 3))
    with on_host():
        want = _model(9).generate(inp, 6, **options)
    device = _model(9)                                   # built on the test's backend, same weights
    assert_array_equal(device.generate(inp, 6, **options), want)

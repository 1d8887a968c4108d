"""models.ngram: interpolated Kneser-Ney, against counts and formulas worked out by hand.

The corpus: a b a b c a c b a b d  (ids a=0, b=1, c=2, d=3; V = 4)

    bigrams   ab ba ab bc ca ac cb ba ab bd       c(ab)=3 c(ba)=2, c(bc)=c(ca)=c(ac)=c(cb)=c(bd)=1
    trigrams  aba bab abc bca cac acb cba bab abd  c(bab)=2, the 7 others 1

Continuation counts N1+(. w) (distinct bigrams ending in w): a 2 (ba ca), b 2 (ab cb),
c 2 (bc ac), d 1 (bd); 7 distinct bigrams in all.
Continuation counts N1+(. v w) (distinct trigrams ending in v w): ba 2 (aba cba), ab bc ca ac
cb bd 1 each; 8 distinct trigrams in all.
"""
from fractions import Fraction as F

import numpy as np
import pytest
from numpy.testing import assert_allclose

from models.ngram import FALLBACK_DISCOUNT, KneserNey, discount, load_or_build, ngram_keys, training_stream

a, b, c, d = range(4)
CORPUS = [a, b, a, b, c, a, c, b, a, b, d]


def _p1():
    """P_1(w) = max(N1+(. w) - D1, 0) / N1+(. .) + D1 * 4 / N1+(. .) / V, D1 = n1 / (n1 + 2 n2)."""
    cont = {a: 2, b: 2, c: 2, d: 1}
    D1 = F(1, 1 + 2 * 3)                                  # n1 = 1 (d), n2 = 3 (a, b, c)
    total = 7
    return {w: max(n - D1, 0) / total + D1 * 4 / total / 4 for w, n in cont.items()}


def test_hand_counted_discounts():
    bigram = KneserNey.build(np.array(CORPUS), 4, order=2)
    assert bigram.discounts == pytest.approx([1 / 7, 5 / 7])        # D2: n1 = 5, n2 = 1 (ba) -> 5 / 7
    trigram = KneserNey.build(np.array(CORPUS), 4, order=3)
    # D2 on continuation counts: n1 = 6, n2 = 1 (ba) -> 6 / 8; D3 on raw counts: n1 = 7, n2 = 1 -> 7 / 9
    assert trigram.discounts == pytest.approx([1 / 7, 6 / 8, 7 / 9])


def test_unigram_is_the_continuation_distribution():
    p1 = _p1()
    assert p1 == {a: F(2, 7), b: F(2, 7), c: F(2, 7), d: F(1, 7)}     # and they sum to 1
    model = KneserNey.build(np.array(CORPUS), 4, order=3)
    assert_allclose(model.unigram, [float(p1[w]) for w in range(4)], rtol=1e-12)


def test_bigram_probabilities_by_hand():
    model = KneserNey.build(np.array(CORPUS), 4, order=2)
    p1, D2 = _p1(), F(5, 7)
    # context a: c(a .) = c(ab) + c(ac) = 4, N1+(a .) = 2
    p_b_a = (3 - D2) / 4 + D2 * 2 / 4 * p1[b]
    p_d_a = 0 + D2 * 2 / 4 * p1[d]
    assert (p_b_a, p_d_a) == (F(33, 49), F(5, 98))
    # context d: never followed by anything -> back off to P_1 entirely
    got = np.exp(model.logprob(np.array([[a], [a], [d]]), np.array([b, d, c])))
    assert_allclose(got, [float(p_b_a), float(p_d_a), float(p1[c])], rtol=1e-12)


def test_trigram_probability_by_hand():
    model = KneserNey.build(np.array(CORPUS), 4, order=3)
    p1, D2, D3 = _p1(), F(6, 8), F(7, 9)
    # middle order, context b, continuation counts: ba 2, bc 1, bd 1 -> total 4, 3 types
    p2_d_b = (1 - D2) / 4 + D2 * 3 / 4 * p1[d]
    assert p2_d_b == F(1, 7)
    # top order, context ab: c(aba) = c(abc) = c(abd) = 1 -> c(ab .) = 3, N1+(ab .) = 3
    p3_d_ab = (1 - D3) / 3 + D3 * 3 / 3 * p2_d_b
    assert p3_d_ab == F(5, 27)
    got = np.exp(model.logprob(np.array([[a, b]]), np.array([d])))[0]
    assert got == pytest.approx(float(p3_d_ab), rel=1e-12)
    # a context missing its first word (negative id) uses the bigram level only
    got = np.exp(model.logprob(np.array([[-1, b]]), np.array([d])))[0]
    assert got == pytest.approx(float(p2_d_b), rel=1e-12)


def test_discount_falls_back_without_singletons_or_doubletons():
    assert discount(np.array([1, 1, 2, 5])) == pytest.approx(2 / 4)
    assert discount(np.array([1, 1, 3])) == FALLBACK_DISCOUNT
    assert discount(np.array([2, 2])) == FALLBACK_DISCOUNT


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_distribution_sums_to_one(order, rng):
    V = int(rng.integers(5, 12))
    stream = rng.integers(0, V, 400) % rng.integers(2, V)   # some words never occur
    model = KneserNey.build(stream, V, order)
    contexts = rng.integers(-1, V, (6, order - 1))          # seen, unseen and partial contexts
    for h in contexts:
        p = np.exp(model.logprob(np.tile(h, (V, 1)), np.arange(V)))
        assert (p > 0).all()
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_ngram_keys_are_base_v_numbers():
    assert ngram_keys([1, 2, 3, 0], 2, 10).tolist() == [12, 23, 30]
    assert ngram_keys([1, 2, 3, 0], 4, 10).tolist() == [1230]
    assert ngram_keys([1, 2], 3, 10).tolist() == []


def test_score_uses_the_prefix_then_the_continuation_as_context(rng):
    V = 9
    model = KneserNey.build(rng.integers(0, V, 300), V, order=4)
    prefix, cont = rng.integers(0, V, (2, 5)), rng.integers(0, V, (2, 3))
    got = model.score(prefix, cont)
    full = np.concatenate([prefix, cont], axis=1)
    for r in range(2):
        for k in range(3):
            t = 5 + k
            want = model.logprob(full[r, t - 3:t][None], full[r, t:t + 1])[0]
            assert got[r, k] == pytest.approx(want, rel=1e-12)
    assert model.perplexity(prefix, cont) == pytest.approx(np.exp(-got.mean()))


def test_save_load_and_rebuild_on_other_data(tmp_path, rng):
    V = 7
    arts = [rng.integers(0, 5, 40) for _ in range(3)]
    path = tmp_path / "kn.npz"
    first = load_or_build(path, arts, V, 5, 6)
    assert path.is_file()
    again = load_or_build(path, arts, V, 5, 6)
    q = (rng.integers(0, V, (20, 3)), rng.integers(0, V, 20))
    assert_allclose(again.logprob(*q), first.logprob(*q), rtol=0)
    assert again.discounts == first.discounts
    messages = []
    other = load_or_build(path, arts[:2], V, 5, 6, log=messages.append)       # other data: rebuilt
    assert messages and "other data" in messages[0]
    assert other.source != first.source


def test_training_stream_wraps_articles():
    assert training_stream([np.array([1, 2]), np.array([3])], 8, 9).tolist() == [8, 1, 2, 9, 8, 3, 9]


@pytest.mark.parametrize("bad", [np.array([0, 1]), np.array([0, 1, 9, 2, 3]), np.array([[0, 1, 2, 3]])])
def test_build_rejects_bad_streams(bad):
    with pytest.raises(ValueError):
        KneserNey.build(bad, 4, order=4)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_a_whole_distribution_is_logprob_of_every_word(order, rng):
    """distribution(context) (N, V): row r, column w = exp(logprob(context r, w)); every row sums to 1,
    for contexts seen in training, unseen and partial (-1: no word)."""
    V = int(rng.integers(6, 14))
    stream = rng.integers(0, V, 500) % rng.integers(3, V)
    stream[::5] = 2                                         # a few frequent contexts
    model = KneserNey.build(stream, V, order)
    ctx = rng.integers(-1, V, (40, order - 1))
    ctx[:8] = np.stack([stream[i:i + order - 1] for i in range(8)]) if order > 1 else ctx[:8]
    P = model.distribution(ctx)
    want = np.exp(np.stack([model.logprob(ctx, np.full(len(ctx), w)) for w in range(V)], axis=1))
    assert_allclose(P, want, rtol=1e-12, atol=1e-15)
    assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)


def test_a_member_of_an_ensemble_predicts_decodes_and_reads_streams(rng):
    """predict (B, T) -> (B, V) log P given the last n-1 words; decode_start / decode_step carry those
    words; stream_logp = score with each stream's first input as the prefix."""
    from app.scoring import stream_layout
    from models.ensemble import Ensemble
    V = 11
    model = KneserNey.build(rng.integers(0, V - 2, 600), V, 4)
    inp = rng.integers(0, V - 2, (5, 7))
    lp = model.predict(inp)
    assert lp.shape == (5, V) and lp.dtype == np.float32
    assert_allclose(lp, np.log(model.distribution(inp[:, -3:])), rtol=1e-6)
    assert_allclose(model.predict(inp[:, -1:]), np.log(model.distribution(
        np.concatenate([np.full((5, 2), -1), inp[:, -1:]], axis=1))), rtol=1e-6)   # short rows back off
    z, state = model.decode_start(inp[:, :-1])
    z2, state = model.decode_step(inp[:, -1], model.select_state(state, np.arange(5)))
    assert_allclose(z2, lp) and np.array_equal(state, inp[:, -3:])
    articles = [rng.integers(0, V - 2, n) for n in (30, 17, 25)]
    x, y = stream_layout(articles, V - 2, V - 1, 3)
    assert_allclose(model.stream_logp(x, y), model.score(x[:, :1], y))
    assert_allclose(model.stream_logp(x, y)[:, 3:], np.stack([model.logprob(x[:, t - 2:t + 1], y[:, t])
                                                              for t in range(3, x.shape[1])], axis=1))
    out = Ensemble([model, model], [0.3, 0.7]).generate(inp, 4, top_p=None)
    assert out.shape == (5, 4) and out.max() < V - 2            # <sos> and <eos> banned

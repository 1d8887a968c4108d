"""choose_next: greedy, temperature, top-k and top-p (nucleus) choice of the next word.

Shapes: B rows, V vocabulary. Frequencies are measured over many rows at once
(one (N, V) call draws N independent words), seeded, against softmax(z / T)
computed here in float64, with a tolerance of about 5 standard errors.
"""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from models.sampling import choose_next

N = 20000   # draws per frequency test: standard error <= 0.0036 per word


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _freqs(logits, n=N, seed=0, **kw):
    """Word frequencies of n draws from the 1-D logits (V,)."""
    ids = choose_next(np.tile(logits, (n, 1)), rng=np.random.default_rng(seed), **kw)
    assert ids.shape == (n,) and ids.dtype == np.int64
    return np.bincount(ids, minlength=len(logits)) / n


def test_greedy_is_argmax_per_row(rng):
    logits = rng.standard_normal((7, 11)).astype(np.float32)
    out = choose_next(logits)
    assert out.dtype == np.int64 and out.shape == (7,)
    assert_array_equal(out, logits.argmax(axis=1))
    assert_array_equal(choose_next(logits, 0.0, top_k=3, top_p=0.5), out)   # T = 0 ignores top_k/top_p


def test_top_k_1_is_greedy_whatever_the_temperature(rng):
    logits = rng.standard_normal((50, 9))
    for T in (0.5, 1.0, 100.0):
        assert_array_equal(choose_next(logits, T, top_k=1, rng=rng), logits.argmax(axis=1))


def test_top_k_restricts_to_the_k_best_and_renormalises(rng):
    z = rng.standard_normal(10)
    k = 3
    best = np.argsort(-z)[:k]
    f = _freqs(z, temperature=1.0, top_k=k)
    assert set(np.flatnonzero(f)) == set(best)                 # only the k best, and all of them
    want = np.zeros(10)
    want[best] = _softmax(z[best])
    assert_allclose(f, want, atol=0.018)
    assert np.count_nonzero(_freqs(z, temperature=1.0, top_k=10)) > k   # k = V: no restriction


def test_top_k_is_per_row(rng):
    z = rng.standard_normal((2, 8))
    z[1] = -z[0]                                               # opposite preferences
    ids = choose_next(np.repeat(z, 2000, axis=0), 3.0, top_k=2, rng=rng).reshape(2, 2000)
    for r in range(2):
        assert set(ids[r].tolist()) == set(np.argsort(-z[r])[:2].tolist())


def test_small_top_p_keeps_only_the_best_word(rng):
    z = rng.standard_normal((40, 12))
    for T in (1.0, 10.0):
        assert_array_equal(choose_next(z, T, top_p=1e-6, rng=rng), z.argmax(axis=1))


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    p = np.array([0.05, 0.5, 0.15, 0.3])                        # sorted: 0.5, 0.3, 0.15, 0.05
    z = np.log(p)
    f = _freqs(z, temperature=1.0, top_p=0.6)                    # 0.5 < 0.6 <= 0.8: words 1 and 3
    assert_allclose(f, [0, 0.5 / 0.8, 0, 0.3 / 0.8], atol=0.018)
    assert f[0] == 0 and f[2] == 0
    f = _freqs(z, temperature=1.0, top_p=0.9)                    # 0.8 < 0.9 <= 0.95: words 1, 3, 2
    assert f[0] == 0 and f[2] > 0
    assert_allclose(f, [0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95], atol=0.018)
    f = _freqs(z, temperature=1.0, top_p=1.0)                    # everything
    assert_allclose(f, p, atol=0.018)


def test_top_p_exactly_reached_stops_there():
    """Mass exactly top_p is enough: binary fractions 1/2, 1/4, 1/8, 1/8 make the sums exact."""
    z = np.log([0.5, 0.25, 0.125, 0.125])
    assert (_freqs(z, n=2000, temperature=1.0, top_p=0.5) == [1, 0, 0, 0]).all()
    f = _freqs(z, n=2000, temperature=1.0, top_p=0.75)
    assert f[0] > 0 and f[1] > 0 and f[2] == 0 and f[3] == 0


def test_top_p_applies_to_the_tempered_distribution():
    z = np.log(np.array([0.6, 0.3, 0.1]))
    # T = 0.5 squares the odds: (0.36, 0.09, 0.01) / 0.46 -> 0.783, 0.196, 0.022; top_p 0.75 keeps word 0 only
    assert (_freqs(z, temperature=0.5, top_p=0.75) == [1, 0, 0]).all()
    assert _freqs(z, temperature=1.0, top_p=0.75)[1] > 0        # untempered 0.6 < 0.75: word 1 too


@pytest.mark.parametrize("T", [0.5, 1.0, 2.5])
def test_temperature_frequencies_match_softmax(T):
    z = np.array([1.0, 0.2, -0.7])
    assert_allclose(_freqs(z, temperature=T, seed=int(T * 10)), _softmax(z / T), atol=0.018)


def test_a_seeded_generator_is_reproducible(rng):
    z = rng.standard_normal((30, 6))
    a = choose_next(z, 1.0, rng=np.random.default_rng(4))
    assert_array_equal(a, choose_next(z, 1.0, rng=np.random.default_rng(4)))
    assert not np.array_equal(a, choose_next(z, 1.0, rng=np.random.default_rng(5)))


def test_the_callers_logits_are_left_unchanged(rng):
    z = rng.standard_normal((4, 7))
    before = z.copy()
    choose_next(z, 0.8, top_k=3, top_p=0.7, rng=rng)
    assert_array_equal(z, before)


def test_huge_and_masked_logits_are_safe(rng):
    z = np.array([[1e4, 1e4 - 1, -np.inf, 0.0]] * 1000)
    ids = choose_next(z, 1.0, top_p=0.99, rng=rng)
    assert set(ids.tolist()) == {0, 1}                         # no nan, never the masked word


@pytest.mark.parametrize("kwargs", [
    dict(logits=np.zeros(5)),                     # not (B, V)
    dict(logits=np.zeros((2, 3, 4))),
    dict(temperature=-0.1),
    dict(temperature=None),
    dict(top_k=0),
    dict(top_p=0.0),
    dict(top_p=1.5),
    dict(top_p=-0.2),
])
def test_bad_arguments_raise(kwargs):
    args = dict(logits=np.zeros((2, 5)), temperature=1.0) | kwargs
    with pytest.raises(ValueError):
        choose_next(args.pop("logits"), **args)


def test_nan_temperature_raises():
    with pytest.raises(ValueError):
        choose_next(np.array([[0.0, 5.0, 1.0]]), float("nan"), rng=np.random.default_rng(0))

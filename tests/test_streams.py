"""dataset.streams.StreamLoader on small synthetic articles: contiguous streams, AWD-LSTM's lengths,
a fixed number of batches per epoch, seeded and resumable plans, clear errors.

Shapes: B = batch, L = ids per stream (row), N = batches per epoch, T_k = words in batch k.
"""
import numpy as np
import pytest

from dataset import LanguageModelLoader, StreamLoader

SOS_ID, EOS_ID = 100_000, 100_001


def make_articles(n=12, seed=0, low=3, high=40):
    """n articles of random lengths whose ids are unique (0, 1, 2, ...): every token is traceable."""
    lengths = np.random.default_rng(seed).integers(low, high, size=n)
    ends = np.cumsum(lengths)
    return [np.arange(e - k, e, dtype=np.int64) for e, k in zip(ends, lengths)]


def loader(articles=None, batch_size=3, bptt=5, **kw):
    return StreamLoader(make_articles() if articles is None else articles, batch_size, bptt, SOS_ID, EOS_ID,
                        **kw)


@pytest.mark.parametrize("batch_size, bptt", [(3, 5), (1, 1), (2, 2), (4, 7), (2, 12)])
def test_batches_walk_down_contiguous_streams(batch_size, bptt):
    ld = loader(make_articles(30), batch_size, bptt, seed=4)
    rows = ld.rows()                                            # (B, L)
    B, L = rows.shape
    np.testing.assert_array_equal(rows.reshape(-1), ld.stream()[:B * L])   # row b = stream[b*L:(b+1)*L]
    batches = list(ld)
    assert len(batches) == len(ld) == (L - 1) // bptt
    for x, y in batches:
        assert x.shape == y.shape and x.shape[0] == B and x.dtype == y.dtype == np.int64
        assert x.flags.c_contiguous and y.flags.c_contiguous
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])     # the target is the next word
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        np.testing.assert_array_equal(x1[:, 0], y0[:, -1])     # batch k+1 starts where batch k ended
    read = sum(x.shape[1] for x, _ in batches)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches], axis=1), rows[:, :read])
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches], axis=1), rows[:, 1:read + 1])


def test_the_stream_is_the_window_loaders():
    """The same articles, seed and epoch give the same stream as dataset.loader (only the cutting differs)."""
    arts = make_articles(20)
    ld, windows = loader(arts, seed=9), LanguageModelLoader(arts, 3, 5, SOS_ID, EOS_ID, seed=9)
    for e in (0, 3):
        np.testing.assert_array_equal(ld.stream(e), windows.stream(e))
    assert not np.array_equal(ld.stream(0), ld.stream(1))
    fixed = loader(arts, shuffle=False)
    np.testing.assert_array_equal(fixed.stream(0), fixed.stream(5))
    np.testing.assert_array_equal(fixed.stream(0)[:2], [SOS_ID, 0])


@pytest.mark.parametrize("batch_size, bptt, n", [(3, 5, 12), (2, 5, 5), (4, 3, 30), (1, 8, 3), (5, 2, 40)])
def test_every_epoch_yields_exactly_len_batches(batch_size, bptt, n):
    """Where the draws run long (small epochs, bptt < 8) the cap shortens the last batches instead."""
    ld = loader(make_articles(n, seed=n), batch_size, bptt, seed=1)
    N = len(ld)
    for e in range(25):
        ld.set_epoch(e)
        offsets, lengths = ld.plan()
        assert len(lengths) == len([x for x, _ in ld]) == N
        assert lengths.min() >= ld.min_len and lengths.max() <= ld.max_len
        np.testing.assert_array_equal(offsets, np.cumsum(lengths) - lengths)
        assert offsets[-1] + lengths[-1] <= ld.stream_len - 1   # every target lies inside its row


@pytest.mark.parametrize("bptt", [1, 2])
def test_draws_that_run_long_are_capped_to_keep_n_batches(bptt):
    """Draws averaging over bptt (2.26 for bptt 2; bptt 1 draws 1 or 2) would run out of columns before
    N batches: once the cap binds, every later batch has min_len words and the last input column is read."""
    ld = loader(make_articles(30), batch_size=3, bptt=bptt, seed=5)
    for e in range(5):
        offsets, lengths = ld.plan(e)
        assert len(lengths) == len(ld) == (ld.stream_len - 1) // bptt
        assert offsets[-1] + lengths[-1] == ld.stream_len - 1
        assert (lengths[-3:] == ld.min_len).all() and lengths.min() == ld.min_len == 1
        if bptt == 2:
            assert lengths.max() > bptt                          # not every draw was cut


def test_lengths_follow_awd_lstms_rule():
    """base = bptt (p 0.95) or bptt / 2, T = clip(int(normal(base, 5)), min_len, 2 bptt)."""
    bptt = 70
    ld = loader(make_articles(400, high=1000), batch_size=4, bptt=bptt, seed=2)
    lengths = np.concatenate([ld.plan(e)[1] for e in range(5)])              # about 3,500 draws
    assert lengths.size > 3000
    assert 66.5 < lengths.mean() < 69.5                                      # 67.8 expected
    near_half = np.mean(np.abs(lengths - bptt / 2) <= 12)                   # within 2.4 sd of 35
    assert 0.03 < near_half < 0.075                                          # 5% expected
    assert np.mean(np.abs(lengths - bptt) <= 12) > 0.85
    assert lengths.min() >= 5 and lengths.max() <= 2 * bptt
    assert len(np.unique(lengths)) > 20                                      # it varies


@pytest.mark.parametrize("bptt, min_len", [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (9, 4), (10, 5), (20, 5),
                                           (70, 5)])
def test_the_floor_is_awd_lstms_5_and_lower_for_short_bptt(bptt, min_len):
    ld = loader(make_articles(200, high=100), batch_size=2, bptt=bptt)
    assert (ld.min_len, ld.max_len) == (min_len, 2 * bptt)
    lengths = np.concatenate([ld.plan(e)[1] for e in range(3)])
    assert lengths.min() >= min_len and lengths.max() <= 2 * bptt
    if bptt >= 4:                                                            # short ones happen
        assert (lengths < bptt).any() and (lengths > bptt).any()


def test_plans_are_deterministic_per_seed_and_epoch():
    def epoch(seed, e):
        ld = loader(seed=seed)
        ld.set_epoch(e)
        return [x for x, _ in ld], ld.plan(e)[1]

    for seed, e in ((0, 0), (7, 3)):
        (a, la), (b, lb) = epoch(seed, e), epoch(seed, e)
        np.testing.assert_array_equal(la, lb)
        for x1, x2 in zip(a, b):
            np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(epoch(0, 0)[1], epoch(0, 1)[1])
    assert not np.array_equal(epoch(0, 0)[1], epoch(1, 0)[1])
    fixed = loader(seed=0, shuffle=False)                      # the same stream, other lengths
    assert not np.array_equal(fixed.plan(0)[1], fixed.plan(1)[1])


def test_iterating_advances_the_epoch():
    ld = loader(seed=3)
    first = [x for x, _ in ld]
    assert ld.epoch == 1
    second = [x for x, _ in ld]
    ref = loader(seed=3)
    ref.set_epoch(1)
    for a, b in zip(second, [x for x, _ in ref]):
        np.testing.assert_array_equal(a, b)
    assert len(second) == len(first) and ld.epoch == 2


def test_batches_from_start_equal_the_tail_of_an_epoch():
    ld = loader(batch_size=2, bptt=4, seed=11)
    ld.set_epoch(4)
    full = list(ld.batches())
    assert ld.epoch == 5
    for k in (0, 1, len(full) // 2, len(full) - 1, len(full)):
        ld.set_epoch(4)
        tail = list(ld.batches(start=k))
        assert len(tail) == len(full) - k and ld.epoch == 5
        for (x1, y1), (x2, y2) in zip(tail, full[k:]):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="start must be <= "):
        ld.batches(start=len(full) + 1)


def test_bad_arguments_are_clear_errors():
    arts = make_articles()
    for kw, match in ((dict(batch_size=0), "batch_size must be an integer >= 1"),
                      (dict(bptt=0), "bptt must be an integer >= 1"),
                      (dict(bptt=True), "bptt must be an integer >= 1, got True"),
                      (dict(bptt=2.5), "bptt must be an integer"),
                      (dict(seed=-1), "seed must be an integer >= 0")):
        with pytest.raises(ValueError, match=match):
            loader(arts, **{**dict(batch_size=2, bptt=3), **kw})
    with pytest.raises(ValueError, match="articles is empty"):
        loader([])
    with pytest.raises(ValueError, match="article 1 must be a 1-D integer array"):
        loader([np.arange(5), np.ones(3)])
    with pytest.raises(ValueError, match="start must be an integer >= 0"):
        loader().batches(start=-1)
    with pytest.raises(ValueError, match="epoch must be an integer >= 0"):
        loader().set_epoch(-2)


def test_too_little_data_says_so():
    arts = [np.arange(8)]                                       # 10 ids with <sos>, <eos>
    assert len(loader(arts, batch_size=1, bptt=9)) == 1         # one row of 10: 9 inputs, 9 targets
    with pytest.raises(ValueError, match=r"too little data: 10 ids with <sos>/<eos> make 1 streams of 10 "
                                         r"ids, too short for one batch of bptt \+ 1 = 11 ids per stream"):
        loader(arts, batch_size=1, bptt=10)
    with pytest.raises(ValueError, match="make 11 streams of 0 ids"):
        loader(arts, batch_size=11, bptt=1)
    assert " (" not in str(pytest.raises(ValueError, loader, arts, 4, 3).value)  # train.py keeps all of it

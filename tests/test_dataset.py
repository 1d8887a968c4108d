"""dataset.loader on small synthetic articles; dataset.corpus on temporary files and on the real handout.

Shapes: B = batch, T = seq_len, W = windows per epoch.
"""
import functools
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataset import (EOL, EOS, HW4P1, SOS, DataError, LanguageModelLoader, Vocabulary, fingerprint,
                     load_fixtures, load_hw4p1)
from fixtures import make_fixtures

SOS_ID, EOS_ID = 1000, 1001


def make_articles(n=12, seed=0, low=3, high=40):
    """n articles of random lengths whose ids are unique (0, 1, 2, ...): every token is traceable."""
    lengths = np.random.default_rng(seed).integers(low, high, size=n)
    ends = np.cumsum(lengths)
    return [np.arange(e - n_, e, dtype=np.int64) for e, n_ in zip(ends, lengths)]


def wrapped(articles):
    return np.concatenate([np.concatenate([[SOS_ID], a, [EOS_ID]]) for a in articles]).astype(np.int64)


def loader(articles=None, batch_size=3, seq_len=5, **kw):
    return LanguageModelLoader(make_articles() if articles is None else articles, batch_size, seq_len,
                               SOS_ID, EOS_ID, **kw)


def as_rows(arr):
    return Counter(map(tuple, arr.tolist()))


# ----------------------------------------------------------------------------- loader

@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_have_shape_dtype_and_next_word_targets(shuffle):
    ld = loader(batch_size=3, seq_len=5, shuffle=shuffle)
    batches = list(ld)
    assert len(batches) == len(ld) == ld.n_windows // 3
    for x, y in batches:
        assert x.shape == y.shape == (3, 5)
        assert x.dtype == y.dtype == np.int64
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # target = the next word


def test_windows_are_consecutive_cuts_of_the_stream():
    ld = loader(seq_len=7, shuffle=False)
    stream = ld.stream()
    x, y = ld.windows()
    T = 7
    assert ld.n_windows == (stream.size - 1) // T
    for k in range(ld.n_windows):
        np.testing.assert_array_equal(x[k], stream[k * T:k * T + T])
        np.testing.assert_array_equal(y[k], stream[k * T + 1:k * T + T + 1])


def test_stream_wraps_each_article_in_sos_eos():
    arts = make_articles()
    np.testing.assert_array_equal(loader(arts, shuffle=False).stream(), wrapped(arts))
    # Shuffled: the same wrapped articles in another order.
    stream = loader(arts, shuffle=True).stream(epoch=3)
    pieces = np.split(stream, np.flatnonzero(stream == EOS_ID)[:-1] + 1)
    assert all(p[0] == SOS_ID and p[-1] == EOS_ID for p in pieces)
    got = sorted(tuple(p[1:-1].tolist()) for p in pieces)
    assert got == sorted(tuple(a.tolist()) for a in arts)


@pytest.mark.parametrize("drop_last", [True, False])
def test_every_window_appears_once_and_covers_the_stream(drop_last):
    ld = loader(batch_size=4, seq_len=6, shuffle=True, drop_last=drop_last, seed=5)
    ld.set_epoch(2)
    stream = ld.stream()
    T, W = 6, ld.n_windows
    cuts = stream[:W * T].reshape(W, T)
    x = np.concatenate([b[0] for b in ld.batches()])
    n_kept = W if not drop_last else (W // 4) * 4
    assert x.shape == (n_kept, T)
    got = as_rows(x)
    assert all(c == 1 for c in got.values())           # no window twice (ids are unique within articles)
    assert got.keys() <= as_rows(cuts).keys()           # each is one of the non-overlapping cuts
    if not drop_last:
        assert got == as_rows(cuts)                     # all of them: the stream up to < T + 1 ids
        assert stream.size - W * T <= T


def test_seeded_shuffle_is_reproducible_and_changes_between_epochs():
    def epoch(seed, e):
        ld = loader(seed=seed)
        ld.set_epoch(e)
        return np.concatenate([x for x, _ in ld])

    np.testing.assert_array_equal(epoch(0, 0), epoch(0, 0))
    np.testing.assert_array_equal(epoch(7, 3), epoch(7, 3))
    assert not np.array_equal(epoch(0, 0), epoch(0, 1))
    assert not np.array_equal(epoch(0, 0), epoch(1, 0))
    ld = loader(seed=0)
    assert not np.array_equal(ld.stream(0), ld.stream(1))   # article order too, not only windows


def test_iterating_advances_the_epoch():
    ld = loader(seed=3)
    first = [x for x, _ in ld]
    assert ld.epoch == 1
    second = [x for x, _ in ld]
    ref = loader(seed=3)
    ref.set_epoch(1)
    for a, b in zip(second, [x for x, _ in ref]):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("drop_last", [True, False])
def test_batches_from_start_equal_the_tail_of_an_epoch(drop_last):
    ld = loader(batch_size=2, seq_len=4, seed=11, drop_last=drop_last)
    ld.set_epoch(4)
    full = list(ld.batches())
    for k in (0, 1, len(full) // 2, len(full) - 1, len(full)):
        ld.set_epoch(4)
        tail = list(ld.batches(start=k))
        assert len(tail) == len(full) - k
        for (x1, y1), (x2, y2) in zip(tail, full[k:]):
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match="start"):
        ld.batches(start=len(full) + 1)


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_sos_first_puts_sos_in_place_of_some_windows_first_word(p):
    """sos_first=p: each window's first input becomes <sos> with probability p (seeded); its other
    inputs, its targets and the window order stay those of sos_first=0, which draws nothing."""
    arts = make_articles(n=60, seed=2)
    plain = loader(arts, batch_size=4, seq_len=6, seed=9)
    lead = loader(arts, batch_size=4, seq_len=6, seed=9, sos_first=p)
    for epoch in (0, 3):
        (x0, y0), (x1, y1) = plain.windows(epoch), lead.windows(epoch)
        np.testing.assert_array_equal(y1, y0)
        np.testing.assert_array_equal(x1[:, 1:], x0[:, 1:])
        led = x1[:, 0] == SOS_ID
        np.testing.assert_array_equal(x1[~led, 0], x0[~led, 0])
        share = led.mean()
        assert share == 1.0 if p == 1.0 else abs(share - p) < 0.1, share
    np.testing.assert_array_equal(loader(arts, seed=9, sos_first=0.0).windows()[0],
                                  loader(arts, seed=9).windows()[0])
    if p < 1:                                         # each epoch draws its own windows to lead
        assert not np.array_equal(lead.windows(0)[0][:, 0] == SOS_ID, lead.windows(1)[0][:, 0] == SOS_ID)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_sos_first_outside_0_1_is_refused(p):
    with pytest.raises(ValueError, match="sos_first must lie in"):
        loader(sos_first=p)


def test_drop_last_false_yields_the_remainder():
    arts = make_articles()
    keep = loader(arts, batch_size=5, seq_len=3, drop_last=False)
    drop = loader(arts, batch_size=5, seq_len=3, drop_last=True)
    W = keep.n_windows
    assert W % 5 != 0, "pick sizes that leave a remainder"
    assert len(drop) == W // 5 and len(keep) == W // 5 + 1
    shapes = [x.shape for x, _ in keep]
    assert shapes[:-1] == [(5, 3)] * (W // 5) and shapes[-1] == (W % 5, 3)
    assert all(x.shape == (5, 3) for x, _ in drop)


def test_edge_sizes_t1_b1_and_empty_article():
    arts = [np.array([4, 5, 6]), np.array([], dtype=np.int64), np.array([7])]
    ld = loader(arts, batch_size=1, seq_len=1, shuffle=False)
    stream = wrapped(arts)
    x = np.concatenate([b[0] for b in ld])
    y = np.concatenate([b[1] for b in ld])
    assert x.shape == (stream.size - 1, 1)
    np.testing.assert_array_equal(x[:, 0], stream[:-1])
    np.testing.assert_array_equal(y[:, 0], stream[1:])


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=-2), "batch_size"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(seq_len=0), "seq_len"), (dict(seq_len=True), "seq_len"), (dict(seed=-1), "seed"),
    (dict(batch_size=10_000), "too little data"), (dict(seq_len=10_000), "too little data"),
])
def test_bad_arguments_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        loader(**kw)


def test_bad_articles_raise():
    with pytest.raises(ValueError, match="empty"):
        loader([])
    with pytest.raises(ValueError, match="1-D integer"):
        loader([np.zeros((2, 3), dtype=np.int64)])
    with pytest.raises(ValueError, match="1-D integer"):
        loader([np.array([0.5, 1.5])])
    with pytest.raises(ValueError, match="epoch"):
        loader().set_epoch(-1)


# ----------------------------------------------------------------------------- vocabulary

def test_vocabulary_encode_decode():
    voc = Vocabulary(np.array(["<unk>", "a", "b", EOL, SOS, EOS]))
    ids = voc.encode("a b <eol> zzz")
    np.testing.assert_array_equal(ids, [1, 2, 3, 0])
    assert ids.dtype == np.int64
    assert voc.decode(ids) == "a b <eol> <unk>"
    assert voc.decode(np.array([[4, 1], [2, 5]])) == "<sos> a b <eos>"
    assert (voc.sos_id, voc.eos_id, voc.eol_id, len(voc)) == (4, 5, 3, 6)
    with pytest.raises(KeyError, match="zzz"):
        Vocabulary(np.array(["a", SOS, EOS])).encode(["zzz"])
    with pytest.raises(DataError, match="repeated"):
        Vocabulary(["a", "a"])


# ----------------------------------------------------------------------------- files on disk

def write_layout(root, vocab_size=50, seed=0):
    """A small valid HW4P1 layout under root: dataset/*.npy and fixtures/*."""
    vocab = np.array([f"w{i:02d}" for i in range(vocab_size - 3)] + [EOL, SOS, EOS])
    rng = np.random.default_rng(seed)
    arts = {s: [rng.integers(0, vocab_size - 2, size=n) for n in rng.integers(150, 250, size=6)]
            for s in ("train", "valid")}
    (root / "dataset").mkdir(parents=True)
    np.save(root / "dataset" / "vocab.npy", vocab)
    for s, a in arts.items():
        arr = np.empty(len(a), dtype=object)
        arr[:] = a
        np.save(root / "dataset" / f"wiki.{s}.npy", arr, allow_pickle=True)
    make_fixtures(arts["valid"], vocab_size - 2, seed, root / "fixtures")
    return vocab, arts


def test_load_hw4p1_reads_a_valid_layout(tmp_path):
    vocab, arts = write_layout(tmp_path)
    data = load_hw4p1(tmp_path)
    np.testing.assert_array_equal(data.vocab, vocab)
    assert len(data.train) == 6 and all(a.dtype == np.int64 for a in data.train + data.valid)
    for a, b in zip(data.valid, arts["valid"]):
        np.testing.assert_array_equal(a, b)
    assert load_hw4p1(tmp_path / "dataset").vocab.shape == vocab.shape  # the dataset dir itself works too
    fx = load_fixtures(tmp_path)
    assert fx["prediction_inp"].shape == (128, 21) and fx["generation_test"].shape == (128, 31)


@pytest.mark.parametrize("name", ["vocab.npy", "wiki.train.npy", "wiki.valid.npy"])
def test_missing_file_names_it_and_the_fix(tmp_path, name):
    write_layout(tmp_path)
    (tmp_path / "dataset" / name).unlink()
    with pytest.raises(DataError) as err:
        load_hw4p1(tmp_path)
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    assert "python train.py without --data" in msg and "python -m dataset.prepare --out DIR" in msg


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_hw4p1(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["vocab.npy", "wiki.train.npy"])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_npy_raises_data_error(tmp_path, name, damage):
    write_layout(tmp_path)
    path = tmp_path / "dataset" / name
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2] if damage == "truncate" else b"not a numpy file at all" * 10)
    with pytest.raises(DataError, match=name.replace(".", r"\.")) as err:
        load_hw4p1(tmp_path)
    assert "\n" not in str(err.value)


def test_bad_ids_raise_data_error(tmp_path):
    write_layout(tmp_path, vocab_size=50)
    path = tmp_path / "dataset" / "wiki.valid.npy"
    bad = np.empty(2, dtype=object)
    bad[:] = [np.array([1, 2, 50]), np.array([3])]
    np.save(path, bad, allow_pickle=True)
    with pytest.raises(DataError, match=r"wiki\.valid\.npy.*must lie in \[0, 50\)"):
        load_hw4p1(tmp_path)
    bad[:] = [np.array([1.0, 2.0]), np.array([3.0])]
    np.save(path, bad, allow_pickle=True)
    with pytest.raises(DataError, match="integer"):
        load_hw4p1(tmp_path)


def test_fixture_errors(tmp_path):
    write_layout(tmp_path, vocab_size=50)
    fdir = tmp_path / "fixtures"
    with pytest.raises(DataError, match="must lie in"):
        load_fixtures(tmp_path, vocab_size=10)
    (fdir / "prediction.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"prediction\.npz"):
        load_fixtures(tmp_path)
    (fdir / "generation.npy").unlink()
    with pytest.raises(DataError, match=r"missing file: .*generation\.npy.*dataset\.prepare"):
        load_fixtures(tmp_path)


# ----------------------------------------------------------------------------- the real handout

@functools.lru_cache(maxsize=None)
def real(path):
    """Load the real handout once per test session (it is 2 M ids)."""
    return load_hw4p1(path)


@pytest.mark.data
def test_real_hw4p1_counts(hw4p1_dir):
    data = real(hw4p1_dir)
    assert data.vocab.shape == (33280,) and data.vocab.dtype == np.dtype("<U20")
    assert data.vocab[-2:].tolist() == [SOS, EOS]
    assert Vocabulary(data.vocab).eol_id == 1417
    assert len(data.train) == 629 and sum(a.size for a in data.train) == 2_075_677
    assert len(data.valid) == 59 and sum(a.size for a in data.valid) == 216_347
    assert all(a.dtype == np.int64 for a in data.train)


@pytest.mark.data
def test_real_fixtures_shapes(hw4p1_dir):
    fx = load_fixtures(hw4p1_dir, vocab_size=33280)
    shapes = {k: v.shape for k, v in fx.items()}
    assert shapes == {"prediction_inp": (128, 21), "prediction_out": (128,), "prediction_test_inp": (128, 21),
                      "generation": (32, 21), "generation_test": (128, 31)}
    for key in ("prediction_inp", "prediction_test_inp", "generation", "generation_test"):
        assert (fx[key][:, 0] == 33278).all() and fx[key].dtype == np.int64


@pytest.mark.data
def test_real_loader_epoch(hw4p1_dir):
    data = real(hw4p1_dir)
    voc = Vocabulary(data.vocab)
    ld = LanguageModelLoader(data.train, 64, 35, voc.sos_id, voc.eos_id, seed=0)
    n = 2_075_677 + 2 * 629
    assert ld.n_windows == (n - 1) // 35 and len(ld) == ld.n_windows // 64
    x, y = next(iter(ld))
    assert x.shape == y.shape == (64, 35)
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])


# ----------------------------------------------------------------------------- fingerprint

def small_corpus():
    return HW4P1(vocab=np.array(["a", "b", EOL, SOS, EOS]),
                 train=[np.array([0, 1, 2]), np.array([1, 1, 2])], valid=[np.array([0, 2])])


def test_fingerprint_is_pinned_and_ignores_containers_and_dtypes():
    data = small_corpus()
    # Pinned: a run stores it and --resume compares it, so it must not change between versions.
    assert fingerprint(data) == "a4e020f7e0ad2996"
    same = HW4P1(vocab=list(data.vocab), train=tuple(a.astype(np.int32) for a in data.train),
                 valid=[a.astype(">i8") for a in data.valid])
    assert fingerprint(same) == fingerprint(data)


def test_fingerprint_changes_with_any_word_id_or_cut():
    data = small_corpus()
    base = fingerprint(data)
    vocab = data.vocab.copy()
    vocab[1] = "c"
    changed = [
        data._replace(vocab=vocab),                                                  # a word
        data._replace(train=[np.array([0, 1, 2]), np.array([1, 0, 2])]),            # one training id
        data._replace(train=[np.array([0, 1]), np.array([2, 1, 1, 2])]),            # same ids, other cut
        data._replace(train=data.train[::-1]),                                       # another article order
        data._replace(valid=[np.array([1, 2])]),                                     # one validation id
        data._replace(train=data.valid, valid=data.train),                           # splits swapped
    ]
    prints = [fingerprint(d) for d in changed]
    assert base not in prints and len(set(prints)) == len(prints)


def test_fingerprint_is_the_same_in_another_process(tmp_path):
    vocab, _ = write_layout(tmp_path)
    here = fingerprint(load_hw4p1(tmp_path))
    root = Path(__file__).resolve().parents[1]
    code = ("import sys; from dataset import fingerprint, load_hw4p1; "
            "print(fingerprint(load_hw4p1(sys.argv[1])))")
    env = dict(os.environ, PYTHONHASHSEED="123",  # str hashing differs between processes: must not matter
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout.strip()
    assert out == here and len(here) == 16 and int(here, 16) >= 0


@pytest.mark.data
def test_fingerprint_of_the_real_handout(hw4p1_dir):
    data = real(hw4p1_dir)
    assert fingerprint(data) == fingerprint(data._replace(train=[a.copy() for a in data.train]))

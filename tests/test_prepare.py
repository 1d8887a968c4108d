"""dataset.prepare against the real handout and on a tiny synthetic WikiText; fixtures.* helpers."""
import lzma
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dataset.prepare as prepare_module
from dataset import EOL, EOS, SOS, DataError, Vocabulary, fingerprint, load_fixtures, load_hw4p1
from dataset.prepare import main, prepare, read_lines, split_articles, token_file
from fixtures import format_generation, make_fixtures, prediction_nll

_PREPARED = {}


@pytest.fixture
def prepared(wikitext_dir, tmp_path_factory):
    """prepare() run once on the real WikiText-2 (about a second), shared by the tests below."""
    if wikitext_dir not in _PREPARED:
        out = tmp_path_factory.mktemp("hw4p1")
        prepare(wikitext_dir, out, log=lambda *a: None)
        _PREPARED[wikitext_dir] = load_hw4p1(out), out
    return _PREPARED[wikitext_dir]


@pytest.fixture
def handout(hw4p1_dir):
    return load_hw4p1(hw4p1_dir)


# ----------------------------------------------------------------------------- real data

@pytest.mark.data
def test_vocab_and_valid_equal_the_handout(prepared, handout):
    built, _ = prepared
    assert built.vocab.dtype == handout.vocab.dtype
    np.testing.assert_array_equal(built.vocab, handout.vocab)
    assert len(built.valid) == len(handout.valid) == 59
    for a, b in zip(built.valid, handout.valid):
        assert a.dtype == b.dtype == np.int64
        np.testing.assert_array_equal(a, b)


@pytest.mark.data
def test_train_has_the_handout_words(prepared, handout):
    built, _ = prepared
    ours, theirs = np.concatenate(built.train), np.concatenate(handout.train)
    assert ours.size == theirs.size == 2_075_677
    V = len(handout.vocab)
    np.testing.assert_array_equal(np.bincount(ours, minlength=V), np.bincount(theirs, minlength=V))
    assert len(built.train) == 579  # the course's cuts; the handout's file is cut at all 629 titles


@pytest.mark.data
def test_title_rule_counts(wikitext_dir):
    lines = read_lines(wikitext_dir / "wiki.train.tokens")
    assert len(split_articles(lines, min_title_words=2)) == 579
    assert len(split_articles(lines, min_title_words=1)) == 629


@pytest.mark.data
def test_generated_fixtures_load(prepared):
    built, out = prepared
    fx = load_fixtures(out)
    assert {k: v.shape for k, v in fx.items()} == {
        "prediction_inp": (128, 21), "prediction_out": (128,), "prediction_test_inp": (128, 21),
        "generation": (32, 21), "generation_test": (128, 31)}
    assert np.load(out / "fixtures" / "prediction.npz")["out"].dtype == np.int32  # as the course's file
    sos = Vocabulary(built.vocab).sos_id
    assert all((fx[k][:, 0] == sos).all() for k in ("prediction_inp", "generation", "generation_test"))


# ----------------------------------------------------------------------------- synthetic WikiText

TRAIN = """ 
 = Alpha Beta = 
 
 Some words here . 
 
 = = Section = = 
 
 More words . 
 
 
 = Gamma = 
 
 One word title stays . 
 
 = Delta Epsilon Zeta = 
 
 Last article , more words . 
"""
VALID = """ 
 = Some words = 
 
 Last words . 
 
 = Alpha = 
 
 here . 
"""


def write_wikitext(root, train=TRAIN, valid=VALID):
    root.mkdir(parents=True, exist_ok=True)
    (root / "wiki.train.tokens").write_text(train, encoding="utf-8")
    (root / "wiki.valid.tokens").write_text(valid, encoding="utf-8")
    return root


def test_prepare_splits_articles_and_builds_vocab(tmp_path):
    prepare(write_wikitext(tmp_path / "wt"), tmp_path / "out", fixtures_from="none", log=lambda *a: None)
    data = load_hw4p1(tmp_path / "out")
    words = sorted(set(TRAIN.split()) | {EOL})
    assert data.vocab.tolist() == words + [SOS, EOS]
    voc = Vocabulary(data.vocab)
    assert [voc.decode(a) for a in data.train] == [
        "= Alpha Beta = <eol> Some words here . <eol> = = Section = = <eol> More words . <eol> "
        "= Gamma = <eol> One word title stays . <eol>",
        "= Delta Epsilon Zeta = <eol> Last article , more words . <eol>",
    ]
    assert [voc.decode(a) for a in data.valid] == [
        "= Some words = <eol> Last words . <eol> = Alpha = <eol> here . <eol>"]
    assert not (tmp_path / "out" / "fixtures").exists()


def test_split_every_title_with_min_words_1():
    arts = split_articles(TRAIN.split("\n"), min_title_words=1)
    assert [a[:3] for a in arts] == [["=", "Alpha", "Beta"], ["=", "Gamma", "="], ["=", "Delta", "Epsilon"]]


def test_prepare_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepare(tmp_path / "nowhere", tmp_path / "out")
    wt = write_wikitext(tmp_path / "wt")
    (wt / "wiki.valid.tokens").unlink()
    with pytest.raises(DataError, match=r"missing WikiText-2 file: .*wiki\.valid\.tokens"):
        prepare(wt, tmp_path / "out")
    write_wikitext(wt, valid=" = New Words = \n unseen word \n")
    with pytest.raises(DataError, match="'New' is not in the training vocabulary"):
        prepare(wt, tmp_path / "out", fixtures_from="none")


def test_main_exits_2_with_one_line(tmp_path, capsys):
    rc = main(["--wikitext", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: WikiText-2 directory not found") and err.count("\n") == 1
    assert "leave --wikitext out" in err  # says what to do
    wt = write_wikitext(tmp_path / "wt")
    (tmp_path / "file").write_text("")
    rc = main(["--wikitext", str(wt), "--out", str(tmp_path / "file" / "out")])  # cannot be written
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"error: cannot write {tmp_path / 'file' / 'out'}")
    assert main(["--wikitext", str(wt), "--out", str(tmp_path / "out"), "--fixtures-from", "none"]) == 0


@pytest.mark.parametrize("args, phrase", [
    (["--wikitext", "nowhere", "--out", "out"], "error: WikiText-2 directory not found: nowhere"),
    (["--out", "out", "--title-min-words", "0"], "--title-min-words must be >= 1"),   # argparse
    (["--wikitext", "nowhere"], "the following arguments are required: --out"),       # argparse
])
def test_command_exit_code_is_2_on_a_users_mistake(tmp_path, args, phrase):
    """Run as a user would (python -m dataset.prepare), in an empty folder."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "dataset.prepare", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and phrase in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_main_defaults_to_the_bundled_text(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(prepare_module, "prepare", lambda wikitext, out, *a: seen.update(wikitext=wikitext))
    assert main(["--out", str(tmp_path / "out")]) == 0
    assert Path(seen["wikitext"]) == prepare_module.BUNDLED_WIKITEXT


def test_prepare_reads_xz_files_like_plain_ones(tmp_path):
    plain = write_wikitext(tmp_path / "plain")
    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("wiki.train.tokens", "wiki.valid.tokens"):
        (packed / (name + ".xz")).write_bytes(lzma.compress((plain / name).read_bytes()))
        assert read_lines(packed / (name + ".xz")) == read_lines(plain / name)
    assert token_file(packed, "train").name == "wiki.train.tokens.xz"
    assert token_file(plain, "train").name == "wiki.train.tokens"
    quiet = dict(fixtures_from="none", log=lambda *a: None)
    prepare(plain, tmp_path / "a", **quiet)
    prepare(packed, tmp_path / "b", **quiet)
    assert fingerprint(load_hw4p1(tmp_path / "a")) == fingerprint(load_hw4p1(tmp_path / "b"))
    (packed / "wiki.valid.tokens.xz").write_bytes(b"\xfd7zXZ\x00 truncated")
    with pytest.raises(DataError, match=r"cannot read .*wiki\.valid\.tokens\.xz: LZMAError"):
        prepare(packed, tmp_path / "c", **quiet)


def long_wikitext(rng, n_articles=4, n_lines=8, n_words=20):
    """A synthetic WikiText split with enough text for the 416 fixture rows."""
    vocab = [f"w{i}" for i in range(50)]
    out = [" "]
    for k in range(n_articles):
        out += [f" = Title number {k} = ", " "]
        out += [" " + " ".join(rng.choice(vocab, size=n_words)) + " " for _ in range(n_lines)]
        out += [" "]
    return "\n".join(out) + "\n"


def test_prepare_writes_deterministic_fixtures_and_keeps_existing(tmp_path):
    rng = np.random.default_rng(0)
    text = long_wikitext(rng)
    wt = write_wikitext(tmp_path / "wt", train=text, valid=text)
    quiet = dict(log=lambda *a: None)
    a = prepare(wt, tmp_path / "a", seed=3, **quiet)["fixtures"]
    b = prepare(wt, tmp_path / "b", seed=3, **quiet)["fixtures"]
    c = prepare(wt, tmp_path / "c", seed=4, **quiet)["fixtures"]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["prediction_inp"], c["prediction_inp"])
    on_disk = load_fixtures(tmp_path / "a")
    for k in a:
        np.testing.assert_array_equal(on_disk[k], a[k])
    # A second run into the same place keeps the fixtures already there...
    assert prepare(wt, tmp_path / "a", seed=4, **quiet)["fixtures"] is None
    np.testing.assert_array_equal(load_fixtures(tmp_path / "a")["generation"], a["generation"])
    # ...unless asked to replace them.
    d = prepare(wt, tmp_path / "a", seed=4, overwrite_fixtures=True, **quiet)["fixtures"]
    np.testing.assert_array_equal(d["generation"], c["generation"])


def test_make_fixtures_rows_are_contiguous_text(tmp_path):
    rng = np.random.default_rng(1)
    arts = [np.arange(1000 * k, 1000 * k + n) for k, n in enumerate(rng.integers(60, 200, size=8))]
    fx = make_fixtures(arts, sos_id=99_999, seed=0, out_dir=tmp_path)
    assert (fx["prediction_inp"][:, 0] == 99_999).all()
    # Ids are consecutive inside an article, so a contiguous window is an arithmetic run of step 1.
    for key in ("prediction_inp", "prediction_test_inp", "generation", "generation_test"):
        words = fx[key][:, 1:]
        assert (np.diff(words, axis=1) == 1).all()
        assert (words[:, -1] % 1000 < np.array([len(arts[w // 1000]) for w in words[:, 0]])).all()
    np.testing.assert_array_equal(fx["prediction_out"], fx["prediction_inp"][:, -1] + 1)  # the next word
    keys = ("prediction_inp", "prediction_test_inp", "generation", "generation_test")
    starts = np.concatenate([fx[k][:, 1] for k in keys])
    assert np.unique(starts).size == 416  # all rows start at distinct positions
    with pytest.raises(ValueError, match="too little held-out text"):
        make_fixtures([np.arange(40)], 0, 0, tmp_path / "small")


# ----------------------------------------------------------------------------- evaluation helpers

def test_prediction_nll_by_hand():
    scores = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    targets = np.array([1, 0])
    # row 0: uniform over 2 words -> log 2; row 1: p(word 0) = 3 / (3 + 1) -> -log(3/4)
    expected = (np.log(2.0) - np.log(0.75)) / 2
    np.testing.assert_allclose(prediction_nll(scores, targets), expected, rtol=1e-12)
    # Shift-invariant and stable for huge scores.
    np.testing.assert_allclose(prediction_nll(scores + 1e4, targets), expected, rtol=1e-9)


def test_prediction_nll_matches_a_direct_float64_computation(rng):
    scores = rng.normal(size=(7, 11)).astype(np.float32)
    targets = rng.integers(0, 11, size=7)
    s = scores.astype(np.float64)
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(prediction_nll(scores, targets), -np.log(p[np.arange(7), targets]).mean(),
                               rtol=1e-12)


@pytest.mark.parametrize("scores, targets", [
    (np.zeros((3, 4)), np.zeros(2, dtype=int)), (np.zeros(4), np.zeros(4, dtype=int)),
    (np.zeros((3, 4)), np.array([0, 1, 4])), (np.zeros((3, 4)), np.zeros(3)),
])
def test_prediction_nll_rejects_bad_shapes(scores, targets):
    with pytest.raises(ValueError):
        prediction_nll(scores, targets)


def test_format_generation():
    vocab = np.array(["a", "b", "c"])
    text = format_generation(vocab, np.array([[0, 1], [2, 2]]), np.array([[1], [0]]))
    assert text == "Input | Output #0: a b | b\nInput | Output #1: c c | a\n"
    assert format_generation(Vocabulary(vocab), [[0]], [[2, 1]]) == "Input | Output #0: a | c b\n"
    with pytest.raises(ValueError):
        format_generation(vocab, np.zeros((2, 3), dtype=int), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError):
        format_generation(vocab, np.zeros(3, dtype=int), np.zeros((3, 1), dtype=int))

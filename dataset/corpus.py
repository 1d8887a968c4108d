"""Reading and checking the HW4P1 files (the CMU 11-785 layout).

Shapes: V = vocabulary size, N = fixture rows, L = words per fixture row.

    DATA_DIR/dataset/vocab.npy          (V,) str: sorted(train words + '<eol>') + ['<sos>', '<eos>']
    DATA_DIR/dataset/wiki.train.npy     object array of 1-D int arrays (articles)
    DATA_DIR/dataset/wiki.valid.npy     the same for the validation split
    DATA_DIR/fixtures/prediction.npz    inp (N, L) ids starting with <sos>, out (N,) the next word
    DATA_DIR/fixtures/prediction_test.npz  inp (N, L)
    DATA_DIR/fixtures/generation.npy       (N, L) prompts
    DATA_DIR/fixtures/generation_test.npy  (N, L) prompts

Every problem with these files (missing, unreadable, wrong dtype or shape, ids
out of range) raises ``DataError`` with one line naming the file and the fix.
``fingerprint(data)`` names a loaded corpus (16 hex digits), so a run can tell its data apart.
"""
import hashlib
from collections import namedtuple
from pathlib import Path

import numpy as np

from mytorch.nn.module import check_ids

SOS = "<sos>"
EOS = "<eos>"
EOL = "<eol>"
UNK = "<unk>"

# What to do about a missing or damaged data folder, appended to every DataError below.
BUILD_HINT = ("run python train.py without --data to use the WikiText-2 bundled with the package, "
              "or build the folder with: python -m dataset.prepare --out DIR")

HW4P1 = namedtuple("HW4P1", ["vocab", "train", "valid"])
HW4P1.__doc__ = """The HW4P1 corpus.

vocab: ndarray of shape (V,) of str; train, valid: lists of int64 arrays of shape (n_words,),
one per article (articles are *not* wrapped in <sos>/<eos>: the loader does that)."""


class DataError(ValueError):
    """A data file is missing, unreadable or inconsistent (one-line message naming the file)."""


class Vocabulary:
    """Word <-> id mapping over a vocabulary array of shape (V,).

    encode(words) -> int64 ids of shape (n,); decode(ids) -> the words joined by spaces.
    """

    def __init__(self, words):
        self.words = np.asarray(words)
        self.index = {str(w): i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise DataError("vocabulary has repeated words (each word must appear once; "
                            f"{BUILD_HINT})")

    def __len__(self):
        return len(self.words)

    def __contains__(self, word):
        return word in self.index

    @property
    def sos_id(self):
        return self.index[SOS]

    @property
    def eos_id(self):
        return self.index[EOS]

    @property
    def eol_id(self):
        return self.index[EOL]

    def encode(self, words):
        """Ids of shape (n,) int64 for a string (split on whitespace) or a sequence of words.

        A word not in the vocabulary maps to <unk> when the vocabulary has it, else KeyError.
        """
        if isinstance(words, str):
            words = words.split()
        unk = self.index.get(UNK)
        ids = []
        for w in words:
            i = self.index.get(w, unk)
            if i is None:
                raise KeyError(f"word not in vocabulary (and no {UNK}): {w!r}")
            ids.append(i)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids):
        """The words of ids (any shape, flattened) joined by single spaces."""
        ids = np.asarray(ids).ravel()
        return " ".join(self.words[ids].tolist())


# ----------------------------------------------------------------------------- file reading

def _bad(path, problem):
    """DataError 'PATH: problem (what to do)' for a file whose content is wrong."""
    return DataError(f"{path}: {problem} ({BUILD_HINT})")


def _require(path):
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path} ({BUILD_HINT})")
    return path


def _np_load(path, allow_pickle=False):
    """np.load that turns every failure (truncated, corrupt, wrong kind) into a DataError.

    A .npz path gives a dict of arrays (all members read now), any other path an ndarray.
    """
    path = _require(path)
    want_npz = path.suffix == ".npz"
    try:
        data = np.load(path, allow_pickle=allow_pickle)
        if isinstance(data, np.lib.npyio.NpzFile):  # members load lazily: read them now
            with data:
                data = {k: data[k] for k in data.files}
    except Exception as err:
        reason = " ".join(str(err).split())  # keep the message on one line
        raise DataError(f"cannot read {path}: {type(err).__name__}: {reason} ({BUILD_HINT})") from err
    if want_npz != isinstance(data, dict):
        raise DataError(f"cannot read {path}: expected {'an .npz archive' if want_npz else 'one .npy array'}"
                        f" ({BUILD_HINT})")
    return data


def _check_ids(path, ids, vocab_size):
    """ids: integer array of any shape with 0 <= id < vocab_size, else a DataError naming the file."""
    try:
        check_ids(ids, vocab_size, str(path))
    except (TypeError, ValueError) as err:
        raise DataError(f"{err} ({BUILD_HINT})") from None


def _dataset_dir(data_dir):
    """DATA_DIR/dataset, or DATA_DIR itself when it already holds vocab.npy."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir} ({BUILD_HINT})")
    if not (data_dir / "dataset").is_dir() and (data_dir / "vocab.npy").is_file():
        return data_dir
    return data_dir / "dataset"


def load_vocab(data_dir):
    """ndarray of shape (V,) of str from DATA_DIR/dataset/vocab.npy (must hold <sos> and <eos>)."""
    path = _dataset_dir(data_dir) / "vocab.npy"
    vocab = _np_load(path)
    if vocab.ndim != 1 or vocab.dtype.kind != "U":
        raise _bad(path, f"expected a 1-D array of str, got {vocab.dtype} {vocab.shape}")
    for word in (SOS, EOS):
        if word not in vocab:
            raise _bad(path, f"vocabulary lacks {word}")
    return vocab


def _load_articles(path, vocab_size):
    """List of int64 arrays of shape (n_words,) from an object array of articles."""
    arr = _np_load(path, allow_pickle=True)
    if (arr.dtype == object and arr.ndim == 1) or arr.ndim == 2:  # 2-D: equal-length articles
        articles = list(arr)
    else:
        raise _bad(path, f"expected an object array of articles, got {arr.dtype} {arr.shape}")
    if not articles:
        raise _bad(path, "holds no articles")
    out = []
    for k, art in enumerate(articles):
        art = np.asarray(art)
        if art.ndim != 1:
            raise _bad(path, f"article {k} has shape {art.shape}, expected (n_words,)")
        out.append(art)
    _check_ids(path, np.concatenate(out), vocab_size)
    return [a.astype(np.int64, copy=False) for a in out]


def load_hw4p1(data_dir):
    """Load DATA_DIR/dataset/{vocab,wiki.train,wiki.valid}.npy, checked, as an HW4P1 tuple."""
    ddir = _dataset_dir(data_dir)
    for name in ("vocab.npy", "wiki.train.npy", "wiki.valid.npy"):  # report a missing file first
        _require(ddir / name)
    vocab = load_vocab(data_dir)
    train = _load_articles(ddir / "wiki.train.npy", len(vocab))
    valid = _load_articles(ddir / "wiki.valid.npy", len(vocab))
    return HW4P1(vocab=vocab, train=train, valid=valid)


def word_counts(articles, vocab_size, sos_id=None, eos_id=None):
    """(V,) int64: how often each id occurs in articles (1-D id arrays); with sos_id / eos_id, each
    article's <sos> and <eos> too (once per article, as the loaders wrap them)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for a in articles:
        counts += np.bincount(np.asarray(a, dtype=np.int64), minlength=vocab_size)
    for special in (sos_id, eos_id):
        if special is not None:
            counts[special] += len(articles)
    return counts


def fingerprint(data):
    """A 16-hex-digit name for a loaded corpus (HW4P1 tuple): the same words and ids, the same name.

    sha256 over the vocabulary words (in order), then, for train and valid, the article lengths
    and all ids as little-endian int64. Any changed word, id or article cut changes it; it does
    not depend on the process, the platform or the files' format. A run stores it so that
    --resume can refuse other data. (About 50 ms on the full WikiText-2.)
    """
    h = hashlib.sha256(b"mytorch hw4p1 corpus v1\0")
    words = [str(w) for w in np.asarray(data.vocab).tolist()]
    h.update(len(words).to_bytes(8, "little") + "\0".join(words).encode("utf-8") + b"\0")
    for name in ("train", "valid"):
        articles = [np.asarray(a) for a in getattr(data, name)]
        lengths = np.array([a.size for a in articles], dtype="<i8")                # (n_articles,)
        h.update(name.encode() + lengths.size.to_bytes(8, "little") + lengths.tobytes())
        for art in articles:
            h.update(art.astype("<i8", copy=False).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- fixtures

FIXTURE_FILES = ("prediction.npz", "prediction_test.npz", "generation.npy", "generation_test.npy")


def load_fixtures(data_dir, vocab_size=None):
    """Load DATA_DIR/fixtures/* as int64 arrays, checked against the vocabulary size.

    Returns {'prediction_inp': (N, L), 'prediction_out': (N,), 'prediction_test_inp': (N, L),
    'generation': (N, L), 'generation_test': (N, L)}. vocab_size defaults to len(vocab.npy).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir} ({BUILD_HINT})")
    fdir = data_dir / "fixtures"
    for name in FIXTURE_FILES:
        _require(fdir / name)
    if vocab_size is None:
        vocab_size = len(load_vocab(data_dir))

    pred = _np_load(fdir / "prediction.npz")
    pred_test = _np_load(fdir / "prediction_test.npz")
    for name, npz, keys in (("prediction.npz", pred, ("inp", "out")),
                            ("prediction_test.npz", pred_test, ("inp",))):
        for key in keys:
            if key not in npz:
                raise _bad(fdir / name, f"lacks array {key!r} (has {sorted(npz)})")
    arrays = [  # (key, file, array, ndim)
        ("prediction_inp", "prediction.npz", pred["inp"], 2),
        ("prediction_out", "prediction.npz", pred["out"], 1),
        ("prediction_test_inp", "prediction_test.npz", pred_test["inp"], 2),
        ("generation", "generation.npy", _np_load(fdir / "generation.npy"), 2),
        ("generation_test", "generation_test.npy", _np_load(fdir / "generation_test.npy"), 2),
    ]
    out = {}
    for key, name, arr, ndim in arrays:
        if arr.ndim != ndim:
            raise _bad(fdir / name, f"{key} has shape {arr.shape}, expected {ndim}-D")
        _check_ids(fdir / name, arr, vocab_size)
        out[key] = arr.astype(np.int64, copy=False)
    if out["prediction_out"].shape[0] != out["prediction_inp"].shape[0]:
        raise _bad(fdir / "prediction.npz", f"inp has {out['prediction_inp'].shape[0]} rows "
                   f"but out has {out['prediction_out'].shape[0]}")
    return out

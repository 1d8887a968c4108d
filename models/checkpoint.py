"""Versioned, atomic .npz files for models (and, through `extra`, training state).

This module knows the file layout, not the models (models.load builds the model a file
describes), so every model class can import it. A model file holds:
    __format__   format version (int)
    __config__   the LanguageModel configuration as JSON
    __meta__     free JSON metadata (vocabulary size, metrics, ...)
    __vocab__    optional (V,) str array, so a model file alone can read and write words
    param/NAME   each parameter (a tied matrix once), float32 or float16; an adaptive softmax's
                 word_rank (V,) int64 (never narrowed)

Writes go to a temporary file in the same directory, are flushed to disk, then
renamed over the target: a crash or a full disk mid-write leaves the previous
file intact.
"""
import json
import os
import tempfile

import numpy as np

from mytorch import backend

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or of an unknown format."""


def _mkstemp_like_open(folder, suffix):
    """tempfile.mkstemp, but with the permissions open() would give (mkstemp's are 0600)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
    except OSError:  # a filesystem without permissions: keep mkstemp's
        pass
    return fd, tmp


def _write_atomic(path, suffix, write):
    """write(file) into a temp file beside `path`, flush it to disk, then rename it over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _mkstemp_like_open(folder, suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_npz_atomic(path, arrays):
    """np.savez `arrays` to `path` atomically (temp file + fsync + rename)."""
    _write_atomic(path, ".npz", lambda f: np.savez(f, **arrays))


def write_text_atomic(path, text):
    """Write `text` to `path` atomically, like save_npz_atomic."""
    write_bytes_atomic(path, text.encode("utf-8"), ".txt")


def write_bytes_atomic(path, data, suffix=".bin"):
    """Write the bytes `data` to `path` atomically, like save_npz_atomic."""
    _write_atomic(path, suffix, lambda f: f.write(data))


def load_npz(path):
    """{name: array} from an .npz, with one clear error for a missing or damaged file.

    Every way a file can be bad raises CheckpointError with a one-line message: a directory
    ("is a directory, not a model file"), a file that is no .npz at all (text, a pickle, a
    plain .npy: "is not a mytorch checkpoint"), an empty, truncated or damaged archive ("is
    corrupt or truncated").
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        best = os.path.join(path, "best.npz")
        hint = f": the model of a run is {best}" if os.path.isfile(best) else ": give the .npz file itself"
        raise CheckpointError(f"{path} is a directory, not a model file{hint}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    _check_kind(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"holds one {type(z).__name__}, not an .npz archive")
        with z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001 - any failure to read is the same problem for the caller
        reason = " ".join(str(err).split())[:200]  # one line
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated "
                              f"({type(err).__name__}: {reason})") from None


NPZ_MAGIC = b"PK"            # an .npz is a zip archive
NPY_MAGIC = b"\x93NUMPY"


def _check_kind(path):
    """CheckpointError unless the file begins like an .npz (a zip archive); an empty file is corrupt."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path} ({err.strerror or err})") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (an empty file)")
    if head.startswith(NPZ_MAGIC):
        return
    if head.startswith(NPY_MAGIC):
        what = "a single NumPy array (.npy), not an .npz archive"
    elif _is_text(head):
        what = "a text file"
    else:
        what = "not an .npz archive"
    raise CheckpointError(f"{path} is not a mytorch checkpoint ({what}; a model file is the .npz that "
                          "training writes, such as best.npz, or that models.save_model writes)")


def _is_text(head):
    try:
        return all(c.isprintable() or c.isspace() for c in head.decode("utf-8"))
    except UnicodeDecodeError:           # (or a multi-byte character cut at byte 64: rare, and harmless)
        return False


def _json(obj):
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)


def _unjson(arr):
    return json.loads(bytes(arr).decode())


def model_arrays(model, float16=False, meta=None, vocab=None):
    arrays = {"__format__": np.array(FORMAT_VERSION), "__config__": _json(model.config),
              "__meta__": _json(meta or {})}
    if vocab is not None:
        vocab = np.asarray(getattr(vocab, "words", vocab))
        if vocab.shape != (model.vocab_size,):
            raise ValueError(f"vocabulary of shape {vocab.shape} does not match the model's "
                             f"{model.vocab_size} words")
        arrays["__vocab__"] = vocab.astype(str)
    for name, a in model.state_arrays().items():
        arrays["param/" + name] = a.astype(np.float16) if float16 and a.dtype.kind == "f" else a
    return arrays


def parameter_arrays(model):
    """{name: host array} of every parameter of model; a tied one (one array under two names) once, under
    its first name."""
    out, seen = {}, set()
    for name, p, _ in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out[name] = backend.to_numpy(p)
    return out


def load_parameters(model, arrays):
    """Fill every parameter of model from {name: array} (parameter_arrays' names); ValueError naming a
    missing parameter or a wrong shape."""
    missing = [name for name in parameter_arrays(model) if name not in arrays]
    if missing:
        raise ValueError(f"checkpoint lacks parameters: {', '.join(missing)}")
    for name, p, _ in model.named_parameters():
        if name not in arrays:
            continue  # a tied parameter is stored once, under its first name
        a = arrays[name]
        if tuple(a.shape) != tuple(p.shape):
            raise ValueError(f"checkpoint parameter {name} has shape {tuple(a.shape)}, "
                             f"the model expects {tuple(p.shape)}")
        p[...] = backend.to_device(a, p.dtype)


def save_model(model, path, float16=False, meta=None, vocab=None):
    """Write model configuration, weights (and optionally the vocabulary) to one versioned file."""
    save_npz_atomic(path, model_arrays(model, float16, meta, vocab))


def read_model_file(arrays, path="checkpoint"):
    """(config, meta, params) from loaded arrays, checking the format."""
    if "__format__" not in arrays or "__config__" not in arrays:
        raise CheckpointError(f"{path} is not a mytorch model file (no __format__/__config__)")
    try:
        version = int(arrays["__format__"])
        config = _unjson(arrays["__config__"])
        meta = _unjson(arrays["__meta__"]) if "__meta__" in arrays else {}
    except (TypeError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
        raise CheckpointError(f"{path} has an unreadable header ({type(err).__name__}: {err})") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}; this code reads up to {FORMAT_VERSION}")
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path} has an unreadable header (configuration is not a JSON object)")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    return config, meta, params


def average_model_files(paths):
    """The arrays of one model file whose every floating parameter is the mean of the files' (checkpoint
    averaging: the last epochs of one run, Vaswani et al. 2017). The files must hold the same model:
    the same configuration, parameter names and shapes, and equal non-float arrays (a vocabulary, a
    subword model). The header and meta are the first file's, meta["averaged"] the files' names; the
    means are taken in float64 and stored in the first file's dtypes."""
    paths = [os.fspath(p) for p in paths]
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two model files, got {len(paths)}")
    first = load_npz(paths[0])
    config, meta, _ = read_model_file(first, paths[0])
    sums = {k: v.astype(np.float64) for k, v in first.items() if _averaged(k, v)}
    for path in paths[1:]:
        arrays = load_npz(path)
        other, _, _ = read_model_file(arrays, path)
        if other != config:
            raise CheckpointError(f"{path} holds another model than {paths[0]} (configurations differ)")
        if set(arrays) != set(first):
            raise CheckpointError(f"{path} and {paths[0]} hold different arrays "
                                  f"({', '.join(sorted(set(arrays) ^ set(first)))})")
        for k, v in arrays.items():
            if k in sums:
                if v.shape != first[k].shape:
                    raise CheckpointError(f"{path}: {k} has shape {v.shape}, {paths[0]} {first[k].shape}")
                sums[k] += v
            elif k != "__meta__" and not np.array_equal(v, first[k]):
                raise CheckpointError(f"{path} and {paths[0]} differ in {k} (not a parameter: it must match)")
    out = dict(first)
    out.update({k: (s / len(paths)).astype(first[k].dtype) for k, s in sums.items()})
    out["__meta__"] = _json({**meta, "averaged": [os.path.basename(p) for p in paths]})
    return out


def _averaged(name, array):
    """A parameter the mean is taken of: param/NAME holding floats (not an int table, not the
    subword model's bytes)."""
    return name.startswith("param/") and array.dtype.kind == "f"

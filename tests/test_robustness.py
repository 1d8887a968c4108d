"""Bad input is rejected clearly: one "error:" line and exit 2 from train.py, a ValueError or
TypeError that says what is wrong from the library. Nothing here should ever show a traceback.
"""
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tinydata import WORDS, make_tiny_hw4p1

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train  # noqa: E402
import models  # noqa: E402
from models import CheckpointError, LanguageModel  # noqa: E402
from models.checkpoint import load_npz, save_npz_atomic  # noqa: E402
from models.language_model import MAX_GENERATE_STEPS  # noqa: E402
from mytorch import backend  # noqa: E402
from mytorch.nn import CrossEntropyLoss, Embedding, Linear, LSTMCell  # noqa: E402

TINY = ["--emsize", "8", "--nhid", "8", "--batch_size", "4", "--bptt", "5", "--epochs", "2",
        "--save-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A finished two-epoch run (state.npz, best.npz, ...). Tests copy it before changing it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train.main(["--data", str(data_dir), "--save", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "run"))


def one_error_line(capsys, rc, *phrases, code=2):
    """Assert exit `code` and exactly one stderr line "error: ..." holding every phrase; return it."""
    out = capsys.readouterr()
    assert rc == code, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.err
    assert "Traceback" not in out.err + out.out
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- flags

@pytest.mark.parametrize("flags, phrase", [
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--lr", "-0.001"], "--lr must be a finite number > 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0"),
    (["--batch_size", "0"], "--batch_size must be >= 1"),
    (["--bptt", "0"], "--bptt must be >= 1"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--dropout", "1"], "--dropout must lie in [0, 1)"),
    (["--dropout", "-0.1"], "--dropout must lie in [0, 1)"),
    (["--dropouth", "1.5"], "--dropouth must lie in [0, 1)"),
    (["--nhid", "0"], "--nhid"),
    (["--clip", "-1"], "--clip must be"),
    (["--save-every", "0"], "--save-every must be >= 1"),
    (["--max-batches", "0"], "--max-batches must be >= 1"),
    (["--lr", "fast"], "invalid float value: 'fast'"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--batch_size", "500"], "use a smaller --batch_size or --bptt"),
])
def test_impossible_settings(data_dir, tmp_path, capsys, flags, phrase):
    rc = train.main(["--data", str(data_dir), "--save", str(tmp_path / "run"), *TINY, *flags])
    one_error_line(capsys, rc, phrase)
    assert not (tmp_path / "run").exists()          # nothing written for a rejected command


def test_backend_cupy_without_cupy(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_CUPY_IMPORT_ERROR", ImportError("No module named 'cupy'"))
    rc = train.main(["--data", str(data_dir), "--save", str(tmp_path / "run"), *TINY, "--backend", "cupy"])
    one_error_line(capsys, rc, "--backend cupy is not available", "not installed")
    assert backend.get_backend() == "numpy"


def test_backend_cupy_without_gpu(data_dir, tmp_path, capsys, monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    runtime = types.SimpleNamespace(getDeviceCount=no_device)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setattr(backend, "_cupy", fake)
    rc = train.main(["--data", str(data_dir), "--save", str(tmp_path / "run"), *TINY, "--backend", "cupy"])
    one_error_line(capsys, rc, "--backend cupy is not available", "no CUDA GPU is usable")
    assert backend.get_backend() == "numpy"


def test_save_into_an_existing_run_is_refused(run_copy, data_dir, capsys):
    before = (run_copy / "state.npz").read_bytes()
    rc = train.main(["--data", str(data_dir), "--save", str(run_copy), *TINY])
    one_error_line(capsys, rc, "already holds a run", f"--resume {run_copy}")
    assert (run_copy / "state.npz").read_bytes() == before


# ----------------------------------------------------------------------------- data directory

def test_missing_data_directory(tmp_path, capsys):
    rc = train.main(["--data", str(tmp_path / "nowhere"), "--save", str(tmp_path / "run"), *TINY])
    one_error_line(capsys, rc, "data directory not found", "nowhere", "python -m dataset.prepare")


@pytest.mark.parametrize("name", ["dataset/vocab.npy", "dataset/wiki.train.npy", "dataset/wiki.valid.npy",
                                  "fixtures/prediction.npz", "fixtures/generation_test.npy"])
def test_incomplete_data_directory(data_dir, tmp_path, capsys, name):
    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    (data / name).unlink()
    rc = train.main(["--data", str(data), "--save", str(tmp_path / "run"), *TINY])
    one_error_line(capsys, rc, f"missing file: {data / name}", "python -m dataset.prepare")


@pytest.mark.parametrize("name, damage", [
    ("dataset/wiki.train.npy", "truncate"), ("dataset/vocab.npy", "garbage"),
    ("fixtures/prediction.npz", "truncate"), ("fixtures/prediction_test.npz", "garbage"),
    ("fixtures/generation.npy", "empty"),
])
def test_corrupt_data_file(data_dir, tmp_path, capsys, name, damage):
    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    damage_file(data / name, damage)
    rc = train.main(["--data", str(data), "--save", str(tmp_path / "run"), *TINY])
    one_error_line(capsys, rc, f"cannot read {data / name}", "python -m dataset.prepare")


def test_token_ids_out_of_range_in_data(data_dir, tmp_path, capsys):
    data = Path(shutil.copytree(data_dir, tmp_path / "data"))
    np.save(data / "fixtures" / "generation.npy", np.full((4, 21), 10_000, dtype=np.int64))
    rc = train.main(["--data", str(data), "--save", str(tmp_path / "run"), *TINY])
    one_error_line(capsys, rc, "generation.npy", "must lie in [0,")


def damage_file(path, how):
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"not numpy at all " * 20,
                      "empty": b""}[how])


# ----------------------------------------------------------------------------- --resume

@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "model file", "npy", "bad run record"])
def test_resume_from_a_bad_checkpoint(run_copy, capsys, damage):
    state = run_copy / "state.npz"
    if damage == "model file":
        shutil.copy(run_copy / "best.npz", state)
        phrase = "not a training state file"
    elif damage == "npy":
        with open(state, "wb") as f:
            np.save(f, np.arange(10))
        phrase = "is not a mytorch checkpoint (a single NumPy array"
    elif damage == "bad run record":
        arrays = load_npz(state)
        arrays["__run__"] = np.frombuffer(b"{not json", dtype=np.uint8)
        save_npz_atomic(state, arrays)
        phrase = "unreadable training state"
    else:
        damage_file(state, damage)
        phrase = "is not a mytorch checkpoint (a text file" if damage == "garbage" else "corrupt or truncated"
    rc = train.main(["--resume", str(run_copy)])
    one_error_line(capsys, rc, str(state), phrase, "cannot be resumed")


def test_resume_with_different_flags(run_copy, capsys):
    rc = train.main(["--resume", str(run_copy), "--nhid", "16", "--lr", "0.5", "--emsize", "8"])
    line = one_error_line(capsys, rc, "flags differ from the saved run", "--nhid 16 (saved: 8)",
                          "--lr 0.5 (saved: 0.002)")
    assert "--emsize" not in line                            # the same value is no difference


def test_resume_into_another_directory(run_copy, tmp_path, capsys):
    rc = train.main(["--resume", str(run_copy), "--save", str(tmp_path / "elsewhere")])
    one_error_line(capsys, rc, "name different directories")


def test_resume_with_fewer_epochs_than_trained(run_copy, capsys):
    rc = train.main(["--resume", str(run_copy), "--epochs", "1"])
    one_error_line(capsys, rc, "already trained 2 epochs", "--epochs > 2")


def test_resume_a_finished_run_then_extend_it(run_copy, capsys):
    assert train.main(["--resume", str(run_copy)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert train.main(["--resume", str(run_copy), "--epochs", "3"]) == 0
    rows = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((run_copy / "config.json").read_text())["epochs"] == 3


def test_resume_without_a_state(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for where in (tmp_path / "nowhere", tmp_path / "empty"):
        rc = train.main(["--resume", str(where)])
        one_error_line(capsys, rc, "no state.npz there")


def test_resume_against_a_different_vocabulary(run_copy, tmp_path, capsys):
    other = make_tiny_hw4p1(tmp_path / "other", words=WORDS[:-5])
    rc = train.main(["--resume", str(run_copy), "--data", str(other)])
    line = one_error_line(capsys, rc, "was trained with a vocabulary of", "resume with the --data")
    assert str(other) in line


# ----------------------------------------------------------------------------- models.load

@pytest.mark.parametrize("damage, phrase", [
    ("truncate", "corrupt or truncated"), ("garbage", r"is not a mytorch checkpoint \(a text file"),
    ("empty", "corrupt or truncated"),
    ("npy", r"is not a mytorch checkpoint \(a single NumPy array"), ("no header", "not a mytorch model file"),
    ("future format", "format version 99"), ("bad config", "unknown model configuration"),
    ("wrong shape", "has shape"), ("missing parameter", "lacks parameters"),
    ("bad vocabulary", "vocabulary of shape"),
])
def test_load_a_bad_model_file(trained, tmp_path, damage, phrase):
    path = tmp_path / "model.npz"
    shutil.copy(trained / "best.npz", path)
    arrays = load_npz(path)
    if damage in ("truncate", "garbage", "empty"):
        damage_file(path, damage)
    elif damage == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(3))
    else:
        if damage == "no header":
            del arrays["__format__"]
        elif damage == "future format":
            arrays["__format__"] = np.array(99)
        elif damage == "bad config":
            arrays["__config__"] = np.frombuffer(json.dumps({"vocab_size": 5, "nhid": -1}).encode(), np.uint8)
        elif damage == "wrong shape":
            arrays["param/decoder.b"] = np.zeros(3, np.float32)
        elif damage == "missing parameter":
            del arrays[next(k for k in arrays if k.startswith("param/"))]
        elif damage == "bad vocabulary":
            arrays["__vocab__"] = arrays["__vocab__"][:3]
        save_npz_atomic(path, arrays)
    with pytest.raises(CheckpointError, match=phrase) as info:
        models.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_a_missing_model_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        models.load(tmp_path / "nope.npz")


# ----------------------------------------------------------------------------- token ids

V = 11


@pytest.fixture(scope="module")
def model():
    return LanguageModel(V, emsize=4, nhid=5, nlayers=2, seed=0).eval()


BAD_IDS = [
    (np.array([[1, 2, V]]), ValueError, r"must lie in \[0, 11\), got values in \[1, 11\]"),
    (np.array([[1, -1, 2]]), ValueError, r"must lie in \[0, 11\)"),
    (np.array([[1.0, 2.0]]), TypeError, "must be integers, got dtype float64"),
    (np.array([[True, False]]), TypeError, "must be integers, got dtype bool"),
    (np.array([1, 2, 3]), ValueError, r"shape \(B, T\).*got \(3,\)"),
    (np.zeros((2, 3, 4), dtype=np.int64), ValueError, r"shape \(B, T\).*got \(2, 3, 4\)"),
    (np.zeros((0, 3), dtype=np.int64), ValueError, r"B, T >= 1"),
    ([[1, 2, 3]], TypeError, "must be an integer array of shape"),
]


@pytest.mark.parametrize("ids, error, message", BAD_IDS)
@pytest.mark.parametrize("call", ["forward", "predict", "generate"])
def test_bad_token_ids(model, call, ids, error, message):
    fn = {"forward": lambda x: model.forward(x), "predict": lambda x: model.predict(x),
          "generate": lambda x: model.generate(x, 2)}[call]
    with pytest.raises(error, match=message):
        fn(ids)


@pytest.mark.parametrize("steps", [0, -1, MAX_GENERATE_STEPS + 1, 2.0, True, "3"])
def test_generate_timesteps_must_be_reasonable(model, steps):
    with pytest.raises(ValueError, match=rf"timesteps must be an integer in \[1, {MAX_GENERATE_STEPS}\]"):
        model.generate(np.array([[1, 2]]), steps)


def test_generate_at_the_limit_is_allowed(model, monkeypatch):
    import models.decoding
    monkeypatch.setattr(models.decoding, "MAX_GENERATE_STEPS", 3)
    assert model.generate(np.array([[1, 2]]), 3).shape == (1, 3)
    with pytest.raises(ValueError):
        model.generate(np.array([[1, 2]]), 4)


# ----------------------------------------------------------------------------- layer shapes

def _lstm_bad_state():
    cell = LSTMCell(3, 4, rng=np.random.default_rng(0))
    cell.forward(np.zeros((2, 3), np.float32), (np.zeros((2, 5), np.float32), np.zeros((2, 4), np.float32)))


def _linear_bad_backward():
    layer = Linear(3, 4, rng=np.random.default_rng(0))
    layer.forward(np.zeros((2, 3), np.float32))
    layer.backward(np.zeros((2, 5), np.float32))


LAYER_CASES = {
    "Linear input": (lambda: Linear(3, 4).forward(np.zeros((2, 5), np.float32)), ValueError,
                     r"Linear: expected input of shape \(\.\.\., 3\), got \(2, 5\)"),
    "Linear dLdZ": (_linear_bad_backward, ValueError, r"shape \(\.\.\., 4\), got \(2, 5\)"),
    "LSTMCell x width": (lambda: LSTMCell(3, 4).forward(np.zeros((2, 5), np.float32)), ValueError,
                         r"LSTMCell.*\(2, 5\)"),
    "LSTMCell x rank": (lambda: LSTMCell(3, 4).forward(np.zeros((2, 7, 3), np.float32)), ValueError,
                        r"LSTMCell: expected x of shape \(B, 3\), got \(2, 7, 3\)"),
    "LSTMCell state": (_lstm_bad_state, ValueError, r"LSTMCell: expected h of shape \(2, 4\)"),
    "Embedding float ids": (lambda: Embedding(10, 4).forward(np.array([[1.5]])), TypeError,
                            "Embedding: token ids must be integers"),
    "Embedding id too big": (lambda: Embedding(10, 4).forward(np.array([[10]])), ValueError,
                             r"Embedding: token ids must lie in \[0, 10\)"),
    "Embedding negative id": (lambda: Embedding(10, 4).forward(np.array([[-1]])), ValueError,
                              r"Embedding: token ids must lie in \[0, 10\)"),
    "CE logits rank": (lambda: CrossEntropyLoss().forward(np.zeros(5, np.float32), np.zeros(5, np.int64)),
                       ValueError, r"CrossEntropyLoss: expected logits of shape \(N, C\)"),
    "CE targets length": (lambda: CrossEntropyLoss().forward(np.zeros((4, 3), np.float32),
                                                             np.zeros(5, np.int64)),
                          ValueError, r"expected targets of shape \(4,\), got \(5,\)"),
    "CE float targets": (lambda: CrossEntropyLoss().forward(np.zeros((4, 3), np.float32), np.zeros(4)),
                         TypeError, "targets must be integers"),
    "CE target range": (lambda: CrossEntropyLoss().forward(np.zeros((2, 3), np.float32), np.array([0, 3])),
                        ValueError, r"targets must lie in \[0, 3\)"),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layers_reject_wrong_shapes(case):
    fn, error, message = LAYER_CASES[case]
    with pytest.raises(error, match=message):
        fn()

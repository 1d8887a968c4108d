"""The commands that use a model file: python -m app.generate (continuations of a prompt or of a
fixtures file), and what every command shares: checkpoint errors in the project's words, one line
and exit 2 for a mistake, no abbreviated flags, a quiet end on a closed pipe, a long prompt
echoed once and shortened.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import models
from dataset.corpus import SOS, UNK, Vocabulary
from fixtures import format_generation
from models import LanguageModel

ROOT = Path(__file__).resolve().parents[1]
V = 20
WORDS = np.array([f"w{i}" for i in range(V - 3)] + [UNK, SOS, "<eos>"])


@pytest.fixture
def model_file(tmp_path):
    model = LanguageModel(V, emsize=4, nhid=5, nlayers=2, dropout=0.4, seed=0)  # eval mode matters
    path = tmp_path / "tiny.npz"
    model.save(path, vocab=WORDS)
    return path


def run_generate(argv, capsys):
    from app import generate
    code = generate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code, out, err, *phrases):
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


# ----------------------------------------------------------------------------- app.generate

def test_generate_a_prompt_is_the_library_continuation(model_file, capsys):
    code, out, err = run_generate(["--checkpoint", model_file, "--prompt", "w1 w2 cat", "--words", 6], capsys)
    assert code == 0, err
    assert "unknown words (read as <unk>): cat" in err                      # a note, not in the text
    prompt, cont = out.rstrip("\n").split(" | ")
    assert prompt == "w1 w2 cat" and out.count("\n") == 1
    model, vocab = models.load(model_file), Vocabulary(WORDS)
    ids = vocab.encode(f"{SOS} w1 w2 cat")[None]
    assert cont == vocab.decode(model.generate(ids, 6))
    again = run_generate(["--checkpoint", model_file, "--prompt", "w1 w2 cat", "--words", 6], capsys)
    assert again[1] == out                                                  # seeded: the same text


def test_generate_a_fixtures_file_in_the_course_format(model_file, tmp_path, capsys):
    rows = np.random.default_rng(0).integers(0, V - 3, (4, 7))
    rows[:, 0] = V - 2                                                      # <sos> first, as the course's
    np.save(tmp_path / "gen.npy", rows)
    argv = ["--checkpoint", model_file, "--fixtures", tmp_path / "gen.npy", "--words", 5, "--temperature", 0]
    code, out, err = run_generate(argv, capsys)
    assert code == 0, err
    model = models.load(model_file)
    assert out == format_generation(WORDS, rows, model.generate(rows, 5, temperature=0.0))
    assert out.splitlines()[2].startswith("Input | Output #2: <sos> ")
    code, out2, err = run_generate(argv + ["--outf", tmp_path / "out" / "gen.txt"], capsys)
    assert code == 0 and out2 == "" and "wrote" in err
    assert (tmp_path / "out" / "gen.txt").read_text() == out


def test_generate_reads_the_vocabulary_from_data_for_a_bare_model_file(tmp_path, capsys):
    LanguageModel(V, emsize=4, nhid=5, nlayers=1, seed=0).save(tmp_path / "bare.npz")
    code, out, err = run_generate(["--checkpoint", tmp_path / "bare.npz", "--prompt", "w1"], capsys)
    one_error(code, out, err, "--data")
    np.save(tmp_path / "vocab.npy", WORDS)
    code, out, err = run_generate(["--checkpoint", tmp_path / "bare.npz", "--prompt", "w1",
                                   "--data", tmp_path, "--words", 3], capsys)
    assert code == 0 and out.startswith("w1 | ") and len(out.split(" | ")[1].split()) == 3, err


@pytest.mark.parametrize("case, phrase", [
    ("neither", "one of the arguments --prompt --fixtures is required"),
    ("both", "not allowed with argument"),
    ("empty prompt", "the prompt is empty"),
    ("words 0", "--words must lie in [1,"),
    ("float fixtures", "expected (N, L) word ids, got float64"),
    ("1-D fixtures", "expected (N, L) word ids, got int64 (5,)"),
    ("ids out of range", f"word ids must lie in [0, {V})"),
    ("missing fixtures", "missing file"),
    ("bad decoding flag", "--top-p must be"),
    ("abbreviated flag", "unrecognized arguments: --wor 3"),
])
def test_generate_mistakes_are_one_line(model_file, tmp_path, capsys, case, phrase):
    np.save(tmp_path / "float.npy", np.zeros((2, 3)))
    np.save(tmp_path / "flat.npy", np.zeros(5, np.int64))
    np.save(tmp_path / "big.npy", np.full((2, 3), V))
    base = ["--checkpoint", model_file]
    argv = {"neither": base, "both": base + ["--prompt", "w1", "--fixtures", tmp_path / "flat.npy"],
            "empty prompt": base + ["--prompt", "  "], "words 0": base + ["--prompt", "w1", "--words", 0],
            "float fixtures": base + ["--fixtures", tmp_path / "float.npy"],
            "1-D fixtures": base + ["--fixtures", tmp_path / "flat.npy"],
            "ids out of range": base + ["--fixtures", tmp_path / "big.npy"],
            "missing fixtures": base + ["--fixtures", tmp_path / "nope.npy"],
            "bad decoding flag": base + ["--prompt", "w1", "--top-p", 0],
            "abbreviated flag": base + ["--prompt", "w1", "--wor", 3]}[case]
    one_error(*run_generate(argv, capsys), phrase)


# ----------------------------------------------------------------------------- checkpoint errors

@pytest.mark.parametrize("command", ["predict", "generate", "evaluate"])
@pytest.mark.parametrize("what, phrase", [
    ("text", "is not a mytorch checkpoint (a text file"),
    ("directory", "is a directory, not a model file"),
    ("run directory", "is a directory, not a model file: the model of a run is"),
    ("npy", "is not a mytorch checkpoint (a single NumPy array"),
])
def test_a_wrong_checkpoint_is_named_as_such(command, what, phrase, model_file, tmp_path, capsys):
    import importlib
    path = {"text": tmp_path / "notes.txt", "directory": tmp_path / "empty",
            "run directory": tmp_path / "run", "npy": tmp_path / "scores.npy"}[what]
    (tmp_path / "notes.txt").write_text("epoch 1: loss 6.42\nthese are my notes\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.npz").write_bytes(model_file.read_bytes())
    np.save(tmp_path / "scores.npy", np.zeros((2, 3), np.float32))
    argv = {"predict": ["--checkpoint", path, "w1"], "generate": ["--checkpoint", path, "--prompt", "w1"],
            "evaluate": ["--checkpoint", path, "--data", tmp_path]}[command]
    code = importlib.import_module(f"app.{command}").main([str(a) for a in argv])
    out, err = capsys.readouterr()
    one_error(code, out, err, str(path), phrase)
    assert "allow_pickle" not in err


# ----------------------------------------------------------------------------- prompts and pipes

def test_a_long_prompt_is_echoed_once_and_shortened(model_file, capsys):
    from app import predict
    words = [f"w{i % (V - 3)}" for i in range(3000)]
    code = predict.main(["--checkpoint", str(model_file), " ".join(words), "--words", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(out) < 1000 and all(len(line) < 300 for line in out.splitlines())
    tail = " ".join(words[-20:])
    assert f"next words after: ... {tail}" in out and f"... {tail} | " in out
    argv = ["--checkpoint", model_file, "--prompt", " ".join(words), "--words", 4]
    code, out, err = run_generate(argv, capsys)
    assert code == 0 and out.startswith(f"... {tail} | ") and len(out) < 300


def test_unknown_words_are_listed_once_each_and_at_most_ten(model_file, capsys):
    from app import predict
    prompt = " ".join(f"x{i % 30}" for i in range(300))
    assert predict.main(["--checkpoint", str(model_file), prompt, "--words", "0", "--top", "1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "unknown words (read as <unk>): " + " ".join(f"x{i}" for i in range(10)) + " and 20 more"


@pytest.mark.parametrize("argv", [
    ["-m", "app.predict", "--checkpoint", "checkpoints/reference.npz", "The cat is on the", "--words", "30"],
    ["-m", "app.generate", "--checkpoint", "checkpoints/reference.npz", "--prompt", "The cat",
     "--words", "30"],
])
def test_a_closed_pipe_ends_quietly(argv):
    """`... | head -1`: the reader is gone before the command writes; no traceback, exit 128 + SIGPIPE."""
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                                    # long before the model is loaded
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_head_takes_the_first_line_without_a_traceback():
    cmd = (f"{sys.executable} -m app.predict --checkpoint checkpoints/reference.npz 'The cat' --top 5000 "
           f"--words 0 | head -1")
    done = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout == "next words after: The cat\n" and done.stderr == "", done.stderr

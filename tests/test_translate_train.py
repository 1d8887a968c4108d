"""python train.py --task translate end to end on a tiny English-Chinese TSV written here (the course's
other variant; the Ding file is GPL and never copied into a test): the files of a run, resuming after
SIGKILL bit-identically, the user's mistakes as one line and exit 2, and app.translate's commands."""
import json
import signal

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import train
from app import translate as translate_cmd
from models import Translator, load
from models.checkpoint import load_npz
from test_train import run_child

TINY = ["--task", "translate", "--langs", "en-zh", "--vocab", "40", "--emsize", "32", "--nhead", "2",
        "--enc-layers", "1", "--dec-layers", "1", "--d-ff", "64", "--batch_size", "400", "--epochs", "2",
        "--lr-warmup", "2", "--lr", "3e-3", "--save-every", "3", "--no-progress"]


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = "the cat dog house green red big small sees eats a runs".split()
    zh = dict(zip(words, "这 猫 狗 房子 绿色 红色 大 小 看见 吃 一个 跑".split()))
    lines = []
    for _ in range(600):
        s = list(rng.choice(words, int(rng.integers(3, 7))))
        lines.append(" ".join(s) + "\t" + "".join(zh[w] for w in s) + "\n")
    path = tmp_path_factory.mktemp("tsv") / "en-zh.tsv"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tsv, tmp_path_factory):
    out = tmp_path_factory.mktemp("translate") / "run"
    assert train.main(["--data", str(tsv), "--save", str(out), *TINY]) == 0
    return out


def test_a_run_writes_metrics_and_a_model_that_translates(reference, tsv, capsys):
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["valid_sentences"] > 0 and 0 <= r["valid_bleu"] <= 100 for r in rows)
    assert (reference / "curves.png").stat().st_size > 1000
    assert (reference / "valid-translations-2.txt").exists()
    model = load(reference / "best.npz")
    assert isinstance(model, Translator) and (model.source, model.target) == ("en", "zh")
    assert model.meta["valid_bleu"] == max(r["valid_bleu"] for r in rows)
    assert all(isinstance(t, str) for t in model.translate(["the cat sees a dog"], beams=2))
    assert translate_cmd.main(["evaluate", "--checkpoint", str(reference / "best.npz"), "--data", str(tsv),
                               "--split", "valid", "--beams", "2"]) == 0
    assert "BLEU" in capsys.readouterr().out


def test_sigkill_then_resume_equals_uninterrupted(tsv, reference, tmp_path):
    argv = ["--data", str(tsv), "--save", str(tmp_path / "run"), *TINY]
    batches = json.loads((reference / "metrics.jsonl").read_text().splitlines()[0])["batches"]
    rc, out, err = run_child(argv, batches + 4, signal.SIGKILL)      # killed in epoch 2, after a save
    assert rc == -signal.SIGKILL, err
    assert train.main(["--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    for name in ("best.npz", "state.npz"):
        a, b = load_npz(reference / name), load_npz(tmp_path / "run" / name)
        for key in a:
            if key != "__run__":
                assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")


@pytest.mark.parametrize("flags, phrase", [
    (["--emsize", "33"], "--emsize (33) must be a multiple of --nhead (2)"),
    (["--langs", "english"], "--langs must be SOURCE-TARGET"),
    (["--label-smoothing", "1"], "--label-smoothing must lie in [0, 1)"),
    (["--phrases", "-1"], "--phrases must be >= 0"),
    (["--vocab", "3"], "--vocab must be >= 16"),
])
def test_impossible_settings_are_one_line(tsv, tmp_path, capsys, flags, phrase):
    rc = train.main(["--data", str(tsv), "--save", str(tmp_path / "r"), *TINY, *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and phrase in err, err


def test_data_and_command_mistakes_are_one_line(tsv, reference, tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "none.tsv"), "--save", str(tmp_path / "r"), *TINY]) == 2
    assert "no translation data at" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nno tab here\n", encoding="utf-8")
    assert train.main(["--data", str(bad), "--save", str(tmp_path / "r"), *TINY]) == 2
    assert "bad.tsv:2: expected `source<TAB>target`" in capsys.readouterr().err
    model = str(reference / "best.npz")
    assert translate_cmd.main(["translate", "--checkpoint", model, "--beams", "0", "x"]) == 2
    assert "--beams must be >= 1 and --no-repeat >= 0" in capsys.readouterr().err
    assert train.main(["--task", "translate", "--preset", "list"]) == 0
    assert capsys.readouterr().out.startswith("translate ")

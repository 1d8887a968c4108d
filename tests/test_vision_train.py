"""python train.py --task vit end to end on a tiny Fashion-MNIST folder (tests/fashiondata.py): the files
of a run, resuming after SIGKILL bit-identically, the resume reading the task from the run, the
user's mistakes as one line and exit 2, and the vision commands (evaluate, classify, export).
"""
import json
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import train
from fashiondata import label_images, write_fashion
from models import load
from models.checkpoint import load_npz
from test_train import run_child

TINY = ["--task", "vit", "--patch", "7", "--emsize", "8", "--nhead", "2", "--nlayers", "1", "--d-ff", "8",
        "--batch_size", "16", "--epochs", "2", "--lr-warmup", "3", "--save-every", "4", "--no-progress"]
BATCHES = 13                    # 220 training images // 16


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion") / "f")


@pytest.fixture(scope="module")
def reference(fashion, tmp_path_factory):
    """A tiny run never interrupted."""
    out = tmp_path_factory.mktemp("vit") / "run"
    assert train.main(["--data", str(fashion), "--save", str(out), *TINY]) == 0
    return out


def test_a_run_writes_metrics_curves_and_a_model_that_classifies(reference, fashion):
    rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["valid_acc"] <= 1 and r["valid_images"] == 20 and r["batches"] == BATCHES for r in rows)
    assert (reference / "curves.png").stat().st_size > 1000
    cfg = json.loads((reference / "config.json").read_text())
    assert cfg["task"] == "vit" and cfg["patch"] == 7 and cfg["data_fingerprint"]
    model = load(reference / "best.npz")
    assert model.meta["valid_acc"] == max(r["valid_acc"] for r in rows)
    probs = model.predict(label_images(np.arange(10), np.random.default_rng(0)))
    assert probs.shape == (10, 10) and np.allclose(probs.sum(1), 1, rtol=1e-5)
    assert model.classes[9] == "Ankle boot"


def test_sigkill_then_resume_equals_uninterrupted(fashion, reference, tmp_path):
    argv = ["--data", str(fashion), "--save", str(tmp_path / "run"), *TINY]
    rc, out, err = run_child(argv, BATCHES + 6, signal.SIGKILL)       # killed in epoch 2, after a save
    assert rc == -signal.SIGKILL, err
    assert train.main(["--resume", str(tmp_path / "run"), "--no-progress"]) == 0   # --task from the run
    for name in ("best.npz", "state.npz"):
        a, b = load_npz(reference / name), load_npz(tmp_path / "run" / name)
        for key in a:
            if key != "__run__":
                assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    drop = ("train_seconds", "eval_seconds")
    rows = [[{k: v for k, v in json.loads(line).items() if k not in drop}
             for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (reference, tmp_path / "run")]
    assert rows[0] == rows[1]


def test_a_finished_run_trains_further_with_more_epochs(reference, tmp_path, capsys):
    run = shutil.copytree(reference, tmp_path / "run")
    assert train.main(["--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    assert "| end of epoch   3" in capsys.readouterr().out
    assert train.main(["--resume", str(run), "--patch", "4"]) == 2     # a flag of the run, changed
    assert "flags differ from the saved run: --patch 4 (saved: 7)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, phrase", [
    (["--patch", "5"], "--patch must divide the 28-pixel images"),
    (["--emsize", "9"], "--emsize (9) must be a multiple of --nhead (2)"),
    (["--pad", "-1"], "--pad must be >= 0"),
    (["--lr", "0"], "--lr must be a finite number > 0"),
    (["--batch_size", "500"], "fewer than one batch of 500"),
    (["--lr-warmup", "99"], "warm up over fewer"),
])
def test_impossible_settings_are_one_line(fashion, tmp_path, capsys, flags, phrase):
    rc = train.main(["--data", str(fashion), "--save", str(tmp_path / "r"), *TINY, *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and phrase in err, err


def test_data_problems_are_one_line(fashion, tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "none"), *TINY]) == 2
    assert "no such folder" in capsys.readouterr().err
    broken = shutil.copytree(fashion, tmp_path / "broken")
    (broken / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip, not idx")
    assert train.main(["--data", str(broken), "--save", str(tmp_path / "r"), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not an IDX file" in err and err.count("\n") == 1
    assert train.main(["--data", str(fashion), "--task", "vit", "--nhid", "8"]) == 2    # an LM flag
    assert "unrecognized arguments: --nhid" in capsys.readouterr().err


def test_the_presets_of_each_task(capsys):
    assert train.main(["--task", "vit", "--preset", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vit ") and "--patch 4" in out
    assert train.main(["--task", "vit", "--preset", "default"]) == 2    # an LM preset
    assert "invalid choice: 'default'" in capsys.readouterr().err


def _vision(*argv):
    return subprocess.run([sys.executable, "-m", "app.vision", *map(str, argv)], capture_output=True,
                          text=True)


def test_evaluate_prints_accuracy_per_class_and_the_confusion_matrix(reference, fashion, tmp_path):
    r = _vision("evaluate", "--checkpoint", reference / "best.npz", "--data", fashion, "--pictures", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "of 60 images)" in r.stdout
    per_class = [int(n) for n in re.findall(r"%  \((\d+) images\)", r.stdout)]
    assert len(per_class) == 10 and sum(per_class) == 60
    assert "Ankle boot" in r.stdout and "confusion matrix" in r.stdout
    for name in ("confusion.png", "errors.png", "attention.png"):
        assert (tmp_path / name).stat().st_size > 1000
    r = _vision("evaluate", "--checkpoint", reference / "best.npz", "--data", fashion, "--limit", "0")
    assert r.returncode == 2 and r.stderr.startswith("error: --limit must be >= 1")


def test_classify_reads_png_and_idx_files(reference, fashion, tmp_path):
    from PIL import Image
    img = label_images(np.array([3]), np.random.default_rng(0))[0]
    Image.fromarray(img).resize((56, 56)).save(tmp_path / "a.png")           # resized to 28 x 28
    r = _vision("classify", "--checkpoint", reference / "best.npz", tmp_path / "a.png",
                fashion / "t10k-images-idx3-ubyte.gz", "--top", "2")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 61 and lines[0].startswith(f"{tmp_path / 'a.png'}: ") and lines[0].count("%") == 2
    assert lines[1].startswith(f"{fashion / 't10k-images-idx3-ubyte.gz'}[0]: ")
    (tmp_path / "b.txt").write_text("hello")
    r = _vision("classify", "--checkpoint", reference / "best.npz", tmp_path / "b.txt")
    assert r.returncode == 2 and "neither an image Pillow can read nor an IDX image file" in r.stderr
    r = _vision("classify", "--checkpoint", reference / "best.npz", tmp_path / "none.png")
    assert r.returncode == 2 and "no such file" in r.stderr


def test_export_writes_the_model_and_a_card_of_the_file_as_written(reference, fashion, tmp_path):
    r = _vision("export", reference / "best.npz", "--out", tmp_path / "vit", "--data", fashion)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "vit.json").read_text())
    model = load(tmp_path / "vit.npz")
    from dataset import fashion_mnist
    test = fashion_mnist.load(fashion, ("test",))["test"]
    predicted = model.predict(test.images).argmax(1)
    assert card["test_acc"] == pytest.approx(float(np.mean(predicted == test.labels)))
    assert card["test_slice"]["correct"] == int(np.sum(predicted[:1000] == test.labels[:1000]))
    r = _vision("evaluate", "--checkpoint", "checkpoints/reference.npz", "--data", fashion)
    assert r.returncode == 2 and "holds a lstm model, not a ViT" in r.stderr

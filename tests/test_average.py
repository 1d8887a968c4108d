"""Checkpoint averaging (models.checkpoint.average_model_files, python -m app.average): each float
parameter the mean of the files', everything else the first file's and checked equal; the trainer's
--keep-epochs keeps the last K epochs' model files to average."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import train
from app import average
from models import ViT, load
from models.checkpoint import CheckpointError, average_model_files, load_npz
from test_translate_train import TINY, tsv  # noqa: F401  (the fixture)


def small_vit(seed, d_model=8):
    return ViT(patch=7, d_model=d_model, nhead=2, nlayers=1, d_ff=16, seed=seed)


def test_the_mean_of_three_files_is_each_parameters_mean(tmp_path):
    paths = []
    for seed in (1, 2, 3):
        paths.append(tmp_path / f"m{seed}.npz")
        small_vit(seed).save(paths[-1], meta=dict(seed=seed))
    assert average.main([*map(str, paths), "--out", str(tmp_path / "avg.npz")]) == 0
    files = [load_npz(p) for p in paths]
    avg = load_npz(tmp_path / "avg.npz")
    params = [k for k in avg if k.startswith("param/")]
    assert params and set(avg) == set(files[0])
    for k in params:
        assert avg[k].dtype == files[0][k].dtype
        assert_allclose(avg[k], np.mean([f[k].astype(np.float64) for f in files], axis=0), rtol=1e-6)
        assert not np.array_equal(avg[k], files[0][k]) or np.all(files[0][k] == files[1][k])
    model = load(tmp_path / "avg.npz")
    assert model.meta["averaged"] == ["m1.npz", "m2.npz", "m3.npz"] and model.meta["seed"] == 1
    probs = model.predict(np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1)


def test_files_of_different_models_or_too_few_are_refused(tmp_path, capsys):
    small_vit(1).save(tmp_path / "a.npz")
    small_vit(2, d_model=12).save(tmp_path / "b.npz")
    with pytest.raises(CheckpointError, match="configurations differ"):
        average_model_files([tmp_path / "a.npz", tmp_path / "b.npz"])
    with pytest.raises(CheckpointError, match="at least two"):
        average_model_files([tmp_path / "a.npz"])
    assert average.main([str(tmp_path / "a.npz"), str(tmp_path / "none.npz"), "--out",
                         str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint not found") and "\n" not in err
    assert not (tmp_path / "c.npz").exists()


def test_keep_epochs_keeps_the_last_k_model_files_and_they_average(tsv, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    assert train.main(["--data", str(tsv), "--save", str(run), *TINY, "--epochs", "3",      # (the last wins)
                       "--keep-epochs", "2"]) == 0
    assert sorted(p.name for p in run.glob("epoch-*.npz")) == ["epoch-2.npz", "epoch-3.npz"]
    assert load(run / "epoch-3.npz").meta["epoch"] == 3
    epochs = [str(run / "epoch-2.npz"), str(run / "epoch-3.npz")]
    assert average.main([*epochs, "--out", str(run / "avg.npz")]) == 0
    a, b, m = (load_npz(run / n) for n in ("epoch-2.npz", "epoch-3.npz", "avg.npz"))
    assert_array_equal(m["param/subwords"], a["param/subwords"])
    key = next(k for k in m if k.startswith("param/") and m[k].dtype.kind == "f")
    assert_allclose(m[key], (a[key].astype(np.float64) + b[key]) / 2, rtol=1e-6)
    assert isinstance(load(run / "avg.npz").translate(["the cat"], beams=1)[0], str)
    # a resumed run may keep more (the flag changes no weight): epoch 4 added, none removed
    assert train.main(["--resume", str(run), "--epochs", "4", "--keep-epochs", "3", "--no-progress"]) == 0
    assert sorted(p.name for p in run.glob("epoch-*.npz")) == ["epoch-2.npz", "epoch-3.npz", "epoch-4.npz"]
    # and fewer: epoch 5 added, every file older than the last two removed
    assert train.main(["--resume", str(run), "--epochs", "5", "--keep-epochs", "2", "--no-progress"]) == 0
    assert sorted(p.name for p in run.glob("epoch-*.npz")) == ["epoch-4.npz", "epoch-5.npz"]


def test_keep_epochs_must_not_be_negative(tsv, tmp_path, capsys):  # noqa: F811
    assert train.main(["--data", str(tsv), "--save", str(tmp_path / "r"), *TINY, "--keep-epochs", "-1"]) == 2
    assert "--keep-epochs must be >= 0" in capsys.readouterr().err

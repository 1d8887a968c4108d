"""app.export: the published files agree with the model file, and float16 is measured."""
import json

import numpy as np
import pytest

import models
from dataset.corpus import load_fixtures, load_hw4p1
from fixtures import prediction_nll
from app.export import export, main
from tinydata import make_tiny_hw4p1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    data_dir = make_tiny_hw4p1(root)
    V = len(load_hw4p1(data_dir).vocab)
    model_path = root / "best.npz"
    model = models.LanguageModel(V, emsize=6, nhid=7, nlayers=2, tied=True, seed=3)
    model.save(model_path, meta={"epoch": 1})
    return data_dir, model_path


@pytest.mark.parametrize("float16", [False, True])
def test_export_writes_consistent_files(tiny, tmp_path, float16):
    data_dir, model_path = tiny
    card = export(model_path, data_dir, tmp_path / "ref", float16=float16)
    model = models.load(tmp_path / "ref.npz")
    fx = load_fixtures(data_dir, model.vocab_size)
    assert card["val_nll"] == pytest.approx(prediction_nll(model.predict(fx["prediction_inp"]),
                                                           fx["prediction_out"]), abs=1e-6)
    assert (card["storage"] == "float16") == float16
    assert abs(card["val_nll"] - card["val_nll_float32"]) < (0.01 if float16 else 1e-9)
    scores = np.load(tmp_path / "ref-predictions-test.npy")
    np.testing.assert_allclose(scores, model.predict(fx["prediction_test_inp"]), rtol=0, atol=1e-6)
    lines = (tmp_path / "ref-generated-texts-test.txt").read_text().splitlines()
    assert len(lines) == fx["generation_test"].shape[0] and lines[0].startswith("Input | Output #0: ")
    assert json.loads((tmp_path / "ref.json").read_text())["val_nll"] == card["val_nll"]
    assert model.vocab is not None and card["config"] == model.config


def test_export_missing_model_is_one_line(tiny, tmp_path, capsys):
    data_dir, _ = tiny
    assert main([str(tmp_path / "nope.npz"), "--data", str(data_dir), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")

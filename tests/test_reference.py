"""The committed models (checkpoints/NAME.*) do what their cards say.

Each card (NAME.json) is written by `python -m app.export`; these tests recompute its fixture
NLL and its test-fixture predictions from the committed files, so a checkpoint and its numbers
can never drift apart. NAME: reference (the default recipe), best (issue 13's awd recipe) and transformer (the
transformer preset, issue 11).
"""
import json
from pathlib import Path

import numpy as np
import pytest

import models
from dataset.corpus import load_fixtures
from fixtures import prediction_nll

REF = Path(__file__).resolve().parents[1] / "checkpoints"


PUBLISHED = ["reference", "best", "transformer"]


@pytest.fixture(scope="module", params=PUBLISHED)
def published(request):
    """(name, model, card) of one committed checkpoint."""
    name = request.param
    path = REF / f"{name}.npz"
    assert path.is_file(), f"checkpoints/{name}.npz is missing (python -m app.export RUN/best.npz --out ...)"
    return name, models.load(path), json.loads((REF / f"{name}.json").read_text())


def test_card_nll_is_what_the_file_scores(published, hw4p1_dir):
    _, model, card = published
    fx = load_fixtures(hw4p1_dir, model.vocab_size)
    nll = prediction_nll(model.predict(fx["prediction_inp"]), fx["prediction_out"])
    assert nll == pytest.approx(card["val_nll"], abs=1e-4)
    assert abs(card["val_nll"] - card["val_nll_float32"]) < 0.005      # storage moved it by < 0.005


def test_committed_predictions_match_the_model(published, hw4p1_dir):
    name, model, _ = published
    fx = load_fixtures(hw4p1_dir, model.vocab_size)
    committed = np.load(REF / f"{name}-predictions-test.npy")
    assert committed.shape == (fx["prediction_test_inp"].shape[0], model.vocab_size)
    assert committed.dtype == np.float32
    np.testing.assert_allclose(committed, model.predict(fx["prediction_test_inp"]), atol=1e-4, rtol=0)


def test_model_file_carries_its_vocabulary(published):
    _, model, card = published
    assert model.vocab is not None and model.vocab.shape == (model.vocab_size,)
    assert list(model.vocab[-2:]) == ["<sos>", "<eos>"]
    assert model.config == card["config"]
    assert not model.training                                           # loaded ready for inference


def _continuations(path, vocab):
    """(N, K) ids of the outputs in a course-format generation file."""
    from dataset.corpus import Vocabulary
    voc = Vocabulary(vocab)
    return np.stack([voc.encode(line.rsplit(" | ", 1)[1]) for line in path.read_text().splitlines()])


def test_committed_continuations_read_as_text(published, hw4p1_dir):
    """The generated text beside the model (default decoding) meets the generation targets."""
    from fixtures.text_metrics import distinct, repeating_rows, share
    name, model, _ = published
    fx = load_fixtures(hw4p1_dir, model.vocab_size)
    unk = int(np.flatnonzero(model.vocab == "<unk>")[0])
    committed = _continuations(REF / f"{name}-generated-texts-test.txt", model.vocab)
    fresh = model.generate(fx["generation_test"], 10)          # the default decoding, as export writes it
    for out in (committed, fresh):
        assert out.shape == (fx["generation_test"].shape[0], 10)
        assert repeating_rows(out, 4) == 0
        assert distinct(out, 2) >= 0.6
        assert share(out, unk) <= 0.10


def test_the_ensembles_predictions_are_what_its_card_says(hw4p1_dir):
    """checkpoints/ensemble-predictions-test.npy: recomputed from the card's members, weights and
    row settings (app.evaluate --ensemble --cache --fixtures-only), and its fixture NLL."""
    from app.adapt_report import row_scores
    from models import Ensemble, load
    from app.adapt_report import ngram_member
    from dataset.corpus import load_hw4p1
    card = json.loads((REF / "ensemble-predictions-test.json").read_text())
    members = [ngram_member(p, load_hw4p1(hw4p1_dir)) if p.startswith("ngram:") else load(REF.parent / p)
               for p in card["members"]]
    ens = Ensemble(members, card["weights"])
    fx = load_fixtures(hw4p1_dir, ens.vocab_size)
    settings = [tuple(s) for s in card["row_settings (lr, cache theta, cache lambda)"]]

    def scores(inp):
        return ens.mix([row_scores(m, inp, s) for m, s in zip(members, settings)])
    committed = np.load(REF / "ensemble-predictions-test.npy")
    np.testing.assert_allclose(committed, scores(fx["prediction_test_inp"]), rtol=1e-4, atol=1e-4)
    nll = prediction_nll(scores(fx["prediction_inp"]), fx["prediction_out"])
    assert nll == pytest.approx(card["fixture_nll"][f"ensemble {card['mixture']}"], abs=1e-4)

"""The committed translator (checkpoints/translate-de-en.*) does what its card says, and the README's
Python block for it runs as written.

The card is written by `python -m app.translate export`; this test translates the first TEST_SLICE
sentences of the test split from the committed file and recomputes their BLEU, so the checkpoint and
its numbers cannot drift apart. The Ding file is read where it lies (GPL: never copied here).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import models
from app.tasks.translate import corpus_scores, load_splits
from app.translate import TEST_SLICE
from conftest import require_shared
from test_python_api import readme_block

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "checkpoints"


def test_the_card_is_what_the_file_scores_on_a_slice_of_the_test_split():
    data = require_shared("ding", "de-en")
    model = models.load(REF / "translate-de-en.npz")
    card = json.loads((REF / "translate-de-en.json").read_text())
    assert card["config"] == model.config and card["test_slice"]["sentences"] == TEST_SLICE
    pairs = load_splits(str(data), "de-en")["test"]["sentences"][:TEST_SLICE]
    hyps = model.translate([s for s, _ in pairs], beams=card["beams"], alpha=card["alpha"],
                           no_repeat=card["no_repeat"])
    bleu, _ = corpus_scores(hyps, [r for _, r in pairs], "en")
    assert bleu == pytest.approx(card["test_slice"]["bleu"], abs=1e-6)


def test_the_readme_translation_block_runs_and_prints_what_it_says():
    code = readme_block("Translation")
    assert "models.load(" in code and ".translate(" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, done.stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in lines:
        assert line in readme, line                                   # the output the README shows

"""The committed ViT (checkpoints/vit-fashion.*) does what its card says, and the README's Python block
for it runs as written.

The card is written by `python -m app.vision export`; this test re-scores the first TEST_SLICE test
images from the committed file (as they are, and with test-time augmentation) and compares the counts
with the card's, so the checkpoint and its
numbers cannot drift apart.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import models
from app.vision import TEST_SLICE
from conftest import require_shared
from dataset import fashion_mnist
from test_python_api import readme_block

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "checkpoints"


def test_the_card_is_what_the_file_scores_on_a_slice_of_the_test_images():
    folder = require_shared("fashion-mnist")
    model = models.load(REF / "vit-fashion.npz")
    card = json.loads((REF / "vit-fashion.json").read_text())
    assert card["config"] == model.config and card["test_slice"]["images"] == TEST_SLICE
    test = fashion_mnist.load(folder, ("test",))["test"]
    for tta, key in ((False, "correct"), (True, "correct_tta")):
        predicted = model.predict(test.images[:TEST_SLICE], tta=tta).argmax(axis=1)
        assert int(np.sum(predicted == test.labels[:TEST_SLICE])) == card["test_slice"][key]
    assert model.classes == list(fashion_mnist.CLASSES)


def test_the_readme_vision_block_runs_and_prints_what_it_says():
    require_shared("fashion-mnist")
    code = readme_block("Vision Transformer")
    assert "models.load(" in code and ".predict(" in code
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 8, done.stdout
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for line in lines:
        assert line in readme, line                                   # the output the README shows

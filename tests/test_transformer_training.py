"""The Transformer through the application: its preset and flags, training, resume and the files.

Runs use tests/tinydata.py's corpus and a tiny model, so each takes seconds.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from app import config  # noqa: E402
from app.errors import UsageError  # noqa: E402
from models import LanguageModel, TransformerLM, load  # noqa: E402
from models.checkpoint import load_npz  # noqa: E402

TINY = ["--emsize", "8", "--nhead", "2", "--nlayers", "1", "--batch_size", "4", "--bptt", "6",
        "--epochs", "2", "--no-progress", "--save-every", "3"]


def resolve(argv):
    args = train.parse_args(argv)
    return config.resolve(config.preset_for(args.preset, args.model), args)


def test_model_flag_picks_the_transformer_preset_and_flags_override_it():
    cfg = resolve(["--model", "transformer", "--nhead", "8"])
    assert cfg["model"] == "transformer" and cfg["nhead"] == 8
    preset = config.PRESETS["transformer"]
    assert {k: v for k, v in cfg.items() if k != "nhead"} == {k: v for k, v in preset.items() if k != "nhead"}
    assert resolve(["--preset", "transformer"])["model"] == "transformer"
    assert resolve([])["model"] == "lstm"


@pytest.mark.parametrize("argv, phrase", [
    (["--model", "transformer", "--nhid", "64"], "--nhid does not apply to --model transformer"),
    (["--nhead", "2"], "--nhead does not apply to --model lstm"),
    (["--preset", "notebook", "--model", "transformer"], "--model transformer with --preset notebook"),
])
def test_flags_of_the_other_family_are_refused(argv, phrase):
    with pytest.raises(UsageError, match=phrase):
        resolve(argv)


def test_heads_must_divide_the_width():
    cfg = resolve(["--model", "transformer", "--emsize", "30", "--nhead", "4"])
    with pytest.raises(UsageError, match="multiple of --nhead"):
        config.validate(cfg)


def test_build_model_builds_the_family_the_config_names():
    cfg = config.validate(resolve(["--model", "transformer", "--emsize", "8", "--nhead", "2", "--bptt", "6"]))
    model = config.build_model(cfg, 40, seed=0)
    assert isinstance(model, TransformerLM) and model.max_len == 6 and model.config["nhead"] == 2
    old = {k: v for k, v in config.PRESETS["default"].items() if k != "model"}   # a run saved before --model
    assert isinstance(config.build_model(old, 40, seed=0), LanguageModel)


def test_a_transformer_trains_resumes_and_saves_a_model_file(data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert train.main(["--data", str(data_dir), "--model", "transformer", *TINY, "--max-batches", "4",
                       "--save", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Transformer(d_model 8, 2 heads, 1 blocks, context 6)" in out
    model = load(run_dir / "best.npz")
    assert isinstance(model, TransformerLM)
    scores = model.predict(np.array([[1, 2, 3]]))
    assert scores.shape == (1, model.vocab_size) and np.all(np.isfinite(scores))
    state = load_npz(run_dir / "state.npz")
    assert train.main(["--resume", str(run_dir), "--epochs", "3", "--no-progress"]) == 0
    assert load_npz(run_dir / "state.npz")["__run__"].tobytes() != state["__run__"].tobytes()

"""bench: the JSON contract, the phases from the model's own timer, the FLOP count, presets.

Tiny shapes only (V = 500, D = H = 8): these check the script, not the machine's speed.
PyTorch is optional: its case is skipped where ``import torch`` fails.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:      # bench/ and train.py sit in the repository root, not in the package
    sys.path.insert(0, str(ROOT))

from bench import timing  # noqa: E402
from bench import train_step as bench  # noqa: E402
from bench.report import PHASES  # noqa: E402
from models import LanguageModel  # noqa: E402
from mytorch import backend, fast, optim  # noqa: E402

TINY = ["--vocab", "500", "--steps", "2", "--warmup", "1", "--batch-size", "4", "--bptt", "3",
        "--emsize", "8", "--nhid", "8", "--gemm-reps", "2"]
TINY_TRANSFORMER = ["--preset", "transformer", "--vocab", "500", "--emsize", "16", "--nhead", "2",
                    "--nlayers", "1", "--bptt", "4", "--batch-size", "2", "--steps", "2", "--warmup", "1",
                    "--gemm-reps", "2"]
# V = 500, D = 16, T = 4, one block: embedding V D, positions T D, LayerNorms 2 x 2D, attention 4 (D^2 + D),
# MLP D 4D + 4D + 4D D + D; final LayerNorm 2D; the tied projection's own bias V
TINY_TRANSFORMER_PARAMS = (500 * 16 + 4 * 16 + (4 * 16 + 4 * (16 * 16 + 16) + 8 * 16 * 16 + 5 * 16)
                           + 2 * 16 + 500)
KEYS = {"tokens_per_s", "torch_tokens_per_s", "ratio", "gemm_gflops", "floor_tokens_per_s",
        "floor_fraction", "gemm_floor_tokens_per_s", "bandwidth_gbs", "optimizer_mb", "n_params",
        "phases", "config", "backend", "peak_rss_mb", "plain_tokens_per_s",
        "fast_speedup", "fast", "processor", "variants_tokens_per_s"}


def _run(capsys, argv):
    code = bench.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.rstrip("\n").split("\n")
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_main_prints_table_then_json_last(capsys):
    env_before = os.environ.get("MYTORCH_THREADS")
    t0 = time.perf_counter()
    result, table = _run(capsys, TINY + ["--no-torch"])
    assert time.perf_counter() - t0 < 60                                 # a smoke run, not a timing
    assert KEYS <= result.keys()
    assert result["tokens_per_s"] > 0 and result["gemm_gflops"] > 0 and result["floor_tokens_per_s"] > 0
    fraction = result["tokens_per_s"] / result["floor_tokens_per_s"]  # JSON: 4 places
    assert result["floor_fraction"] == pytest.approx(fraction, rel=1e-2, abs=1e-4)
    assert result["floor_tokens_per_s"] < result["gemm_floor_tokens_per_s"]     # the optimizer adds time
    # V = 500, D = H = 8, untied, two layers: embedding, projection + bias, 2 x (4H (I + H) + 8H)
    assert result["n_params"] == 500 * 8 * 2 + 500 + 2 * (32 * 16 + 64)
    assert result["optimizer_mb"] == pytest.approx(7 * 4 * result["n_params"] / 1e6, abs=0.1)
    assert set(result["phases"]) == {key for key, _ in PHASES}
    assert all(ms >= 0 for ms in result["phases"].values()) and sum(result["phases"].values()) > 0
    assert result["torch_tokens_per_s"] is None and result["ratio"] is None and result["torch"] is None
    assert result["backend"] == "numpy"
    assert result["plain_tokens_per_s"] > 0 and result["processor"]
    assert set(result["fast"]) == {"loss", "lstm", "optim", "threads"}
    assert result["config"]["vocab"] == 500 and result["config"]["tokens_per_step"] == 12
    assert result["peak_rss_mb"] is None or result["peak_rss_mb"] > 0
    for label in ("LSTM forward", "LSTM backward", "projection", "softmax + loss", "optimizer",
                  "sum of phases", "full step", "GFLOP/s", "not timed (--no-torch)", "mytorch, plain",
                  "processor "):
        assert label in table
    assert os.environ.get("MYTORCH_THREADS") == env_before          # the thread setting is restored
    assert backend.get_backend() == "numpy"


@pytest.mark.parametrize("cfg", [
    dict(emsize=8, nhid=8, nlayers=2, tied=False, B=4, T=3),
    dict(emsize=6, nhid=10, nlayers=3, tied=True, B=3, T=4),        # tied: last layer is emsize wide
])
def test_the_models_timer_sees_every_phase_in_order(cfg):
    """The phases come from the model's own step: every phase is marked, in the step's order."""
    from app.step import train_step
    model = LanguageModel(40, cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"], dropout=0.2, seed=3)
    opt = optim.Adam(model.parameters())
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (cfg["B"], cfg["T"])), rng.integers(0, 40, (cfg["B"], cfg["T"]))
    marks = []
    model.timer = marks.append
    train_step(model, opt, x, y)
    assert marks == list(LanguageModel.PHASES) == [
        "zero_grad", "embedding", "layers_forward", "projection", "softmax_loss", "projection",
        "layers_backward", "embedding", "optimizer"]
    assert {key for key, _ in PHASES} == set(marks)
    model.timer = None
    model.predict(x)                                                # inference: no timer, no marks
    assert len(marks) == 9


def test_timed_steps_charge_every_phase_and_leave_no_timer():
    cfg, _ = bench.resolve_config(bench.parse_args(TINY))
    batches = timing.random_batches(cfg, 2)
    model, opt = timing.build_mytorch(cfg)
    for batch in batches:
        lap = timing.Laps(lambda: None)                             # no device to sync
        step_ms, loss = timing.time_step(model, opt, cfg, batch, lambda: None, lap)
        assert np.isfinite(loss) and set(lap.ms) == {key for key, _ in PHASES}
        assert min(lap.ms.values()) > 0
        assert sum(lap.ms.values()) <= step_ms * 1.05 + 0.5        # the phases add up to (about) the step
        assert model.timer is None


def test_every_variant_runs_under_its_own_switches(monkeypatch):
    """The round-robin times each variant with its switches set: the plain one builds plain layers."""
    cfg, _ = bench.resolve_config(bench.parse_args(TINY))
    built = []
    real = timing.build_mytorch
    monkeypatch.setattr(timing, "build_mytorch", lambda cfg: built.append(fast.settings()) or real(cfg))
    out = timing.time_mytorch(cfg, timing.random_batches(cfg, 2))
    assert set(out["step_ms"]) == {"default", "plain"} | {f"no {n}" for n in timing.LM_PIECES}
    assert all(len(v) == cfg["steps"] for v in out["step_ms"].values())
    assert built[0] == fast.settings() and all(built[0].values())    # the default first, all on
    assert not any(built[1].values())                                 # then the plain tier
    assert [sum(not v for v in b.values()) for b in built[2:]] == [1] * len(timing.LM_PIECES)


def test_flops_and_floor_of_the_reference_model():
    cfg, _ = bench.resolve_config(bench.parse_args([]))
    model = (cfg["vocab"], cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"])
    assert model == (33280, 128, 128, 2, False)
    assert (cfg["batch_size"], cfg["bptt"], cfg["optimizer"]) == (32, 10, "adam")
    # 6 * (128 * 33280 + 2 * (4*128*128 + 4*128*128)) = 27.1 MFLOP a token
    assert bench.matmul_flops_per_token(cfg) == 6 * (128 * 33280 + 2 * (2 * 4 * 128 * 128)) == 27_131_904
    assert 190e9 / bench.matmul_flops_per_token(cfg) == pytest.approx(7000, rel=0.01)
    tied = dict(cfg, nhid=384, tied=True)                            # layers 128 -> 384 -> 128
    layers = 4 * 384 * (128 + 384) + 4 * 128 * (384 + 128)
    assert bench.matmul_flops_per_token(tied) == 6 * (128 * 33280 + layers)


def test_preset_reads_train_presets_and_flags_override():
    import train
    cfg, _ = bench.resolve_config(bench.parse_args(["--preset", "default", "--bptt", "7"]))
    preset = train.PRESETS["default"]
    for key in ("emsize", "nhid", "nlayers", "tied", "batch_size", "optimizer", "clip", "dropout"):
        assert cfg[key] == preset[key], key
    assert cfg["bptt"] == 7 and cfg["tokens_per_step"] == preset["batch_size"] * 7
    with pytest.raises(bench.UsageError, match="the presets are"):
        bench.resolve_config(bench.parse_args(["--preset", "no-such-preset"]))


def test_bad_flags_exit_2(capsys):
    assert bench.main(TINY + ["--steps", "0"]) == 2
    assert bench.main(TINY + ["--torch-variants", "gru"]) == 2
    assert bench.main(TINY + ["--torch-variants", "lstm,mha"]) == 2              # a Transformer's variant
    assert bench.main(TINY_TRANSFORMER + ["--torch-variants", "lstmcell"]) == 2   # an LSTM's variant
    assert "error:" in capsys.readouterr().err


def test_torch_variants_default_to_the_models_own():
    assert bench.resolve_config(bench.parse_args(TINY))[1] == ["lstmcell", "lstm"]
    assert bench.resolve_config(bench.parse_args(TINY_TRANSFORMER))[1] == ["transformer", "mha"]
    args = bench.parse_args(TINY_TRANSFORMER + ["--torch-variants", " mha,mha ,"])
    assert bench.resolve_config(args)[1] == ["mha"]


def test_transformer_runs_end_to_end_without_torch(capsys):
    result, table = _run(capsys, TINY_TRANSFORMER + ["--no-torch"])
    assert KEYS <= result.keys()
    assert result["tokens_per_s"] > 0 and result["floor_tokens_per_s"] > 0
    assert result["n_params"] == TINY_TRANSFORMER_PARAMS
    assert set(result["phases"]) == {key for key, _ in PHASES}
    assert result["torch"] is None and result["ratio"] is None
    config = result["config"]
    assert (config["model"], config["nhead"], config["tokens_per_step"]) == ("transformer", 2, 8)
    assert "nhid" not in config
    for label in ("Transformer(d_model 16, 2 heads, 1 blocks, context 4)", "blocks forward",
                  "not timed (--no-torch)"):
        assert label in table


def test_library_never_needs_torch():
    """torch is a benchmark-only dependency: no library module imports it, nor does importing the bench."""
    pattern = re.compile(r"^\s*(import torch|from torch)\b", re.M)
    files = [ROOT / "train.py"] + [p for d in ("mytorch", "models", "dataset", "fixtures")
                                   for p in (ROOT / d).rglob("*.py")]
    assert not [str(p) for p in files if pattern.search(p.read_text())]
    code = "import sys, bench.train_step; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.slow
def test_torch_comparison_when_importable(capsys):
    pytest.importorskip("torch")
    result, table = _run(capsys, TINY)
    assert result["torch_tokens_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["tokens_per_s"] / result["torch_tokens_per_s"], rel=1e-2)
    assert set(result["torch"]["tokens_per_s"]) == {"lstmcell", "lstm"}
    assert "nn.LSTMCell loop" in table and "nn.LSTM" in table and "ratio" in table


@pytest.mark.slow
def test_transformer_torch_comparison_when_importable(capsys):
    pytest.importorskip("torch")
    result, table = _run(capsys, TINY_TRANSFORMER + ["--torch-variants", "transformer"])
    assert result["torch_tokens_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["tokens_per_s"] / result["torch_tokens_per_s"], rel=1e-2)
    assert set(result["torch"]["tokens_per_s"]) == {"transformer"}
    assert result["torch"]["fastest"] == "transformer"
    assert "torch.nn Transformer (pre-LN GPT" in table and "ratio" in table


@pytest.mark.parametrize("variant", ["transformer", "mha"])
def test_torch_transformer_is_mytorchs_architecture(variant):
    """As many parameters as mytorch's TransformerLM, the projection tied, and causal."""
    torch = pytest.importorskip("torch")
    from bench.torch_reference import build_torch_transformer
    cfg, _ = bench.resolve_config(bench.parse_args(TINY_TRANSFORMER))
    model, opt = build_torch_transformer(torch, cfg, variant, "cpu")
    assert sum(p.numel() for p in model.parameters()) == TINY_TRANSFORMER_PARAMS
    assert model.head.decoder.weight is model.embedding.weight and type(opt).__name__ == "AdamW"
    model.eval()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    changed = ids.clone()
    changed[:, -1] = 9
    with torch.no_grad():                                   # forward: (B, T, D); the head: logits
        a, b = model.head.decoder(model(ids)), model.head.decoder(model(changed))
    assert a.shape == (2, 4, 500)
    assert torch.allclose(a[:, :-1], b[:, :-1]) and not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.gpu
def test_cupy_backend(capsys):
    usable, reason = backend.cupy_status()
    if not usable:
        pytest.skip(reason)
    result, _ = _run(capsys, TINY + ["--backend", "cupy", "--no-torch"])
    assert result["backend"] == "cupy" and result["tokens_per_s"] > 0 and result["gpu_pool_mb"] is not None
    assert backend.get_backend() == "numpy"


def test_the_ufunc_timer_prints_every_ufunc(capsys):
    from bench import ufuncs
    assert ufuncs.main([]) == 0
    out = capsys.readouterr().out
    for name in ufuncs.UFUNCS:
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert float(line.split()[1]) > 0

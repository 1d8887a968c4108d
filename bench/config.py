"""The benchmark's configuration: the reference model, train.py's presets, the flags, the FLOP count.

Shapes: D embedding size, H_k hidden size of LSTM layer k, I_k its input size, V vocabulary.
"""
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:       # app/ sits in the repository root beside bench/
    sys.path.insert(0, str(ROOT))

from app.config import OPTIMIZERS, PRESETS, add_model_flags, resolve, validate  # noqa: E402, F401
from app.errors import Parser, UsageError  # noqa: E402, F401  (the bench's user errors are the app's)
from models import LanguageModel, TransformerLM  # noqa: E402

DESCRIPTION = "Time training steps of the word-level LSTM language model, and put the figure in context."
# The reference model of the issue that asked for this benchmark: the course notebook's model,
# batch and optimizer (app.config.PRESETS["notebook"]).
REFERENCE_PRESET = "notebook"
WIKITEXT2_VOCAB = 33280
# the PyTorch variants each model family may time (bench/torch_reference.py); all of them by default
TORCH_VARIANTS = {"lstm": ("lstmcell", "lstm"), "transformer": ("transformer", "mha")}
TORCH_NAMES = {"lstmcell": "nn.LSTMCell loop", "lstm": "nn.LSTM",
               "transformer": "torch.nn Transformer (pre-LN GPT, explicit attention)",
               "mha": "torch.nn Transformer (pre-LN GPT, nn.MultiheadAttention)"}


def parse_args(argv=None):
    p = Parser(prog="python -m bench.train_step", description=DESCRIPTION)
    p.add_argument("--preset", help="take the model, batch and optimizer from app.config.PRESETS[NAME] "
                                    f"(e.g. default) instead of the reference model ({REFERENCE_PRESET}); "
                                    "flags override it")
    add_model_flags(p, preset=REFERENCE_PRESET)
    p.add_argument("--vocab", type=int, default=WIKITEXT2_VOCAB, help="vocabulary size V")
    p.add_argument("--steps", type=int, default=20, help="timed steps (full steps, phased steps, and torch)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed series")
    p.add_argument("--gemm-reps", type=int, default=10, help="timed GEMMs for the GEMM rate")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="BLAS threads, mytorch row-block threads (MYTORCH_THREADS) and torch threads")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="mytorch array backend")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--torch-variants",
                   help="PyTorch variants to time, comma-separated (default: all of the model's). LSTM: "
                        "lstmcell (Python loop over nn.LSTMCell), lstm (nn.LSTM); Transformer: transformer "
                        "(attention written out, causal mask), mha (nn.MultiheadAttention)")
    p.add_argument("--seed", type=int, default=1111, help="random seed (weights and token ids)")
    return p.parse_args(argv)


def resolve_config(args):
    """The reference model, or another preset, overridden by the flags given; validated."""
    cfg = validate(resolve(args.preset or REFERENCE_PRESET, args))
    cfg.pop("epochs")
    allowed = TORCH_VARIANTS[cfg.get("model", "lstm")]
    given = ",".join(allowed) if args.torch_variants is None else args.torch_variants
    torch_variants = list(dict.fromkeys(v.strip() for v in given.split(",") if v.strip()))
    cfg.update(preset=args.preset or "reference", vocab=args.vocab, steps=args.steps, warmup=args.warmup,
               threads=args.threads, backend=args.backend, seed=args.seed, gemm_reps=args.gemm_reps,
               dtype="float32", tokens_per_step=cfg["batch_size"] * cfg["bptt"])
    checks = [
        (cfg["vocab"] >= 2, f"--vocab must be >= 2, got {cfg['vocab']}"),
        (cfg["steps"] >= 1, f"--steps must be >= 1, got {cfg['steps']}"),
        (cfg["warmup"] >= 0, f"--warmup must be >= 0, got {cfg['warmup']}"),
        (cfg["gemm_reps"] >= 1, f"--gemm-reps must be >= 1, got {cfg['gemm_reps']}"),
        (cfg["threads"] >= 1, f"--threads must be >= 1, got {cfg['threads']}"),
        (all(v in allowed for v in torch_variants),
         f"--torch-variants for a {cfg.get('model', 'lstm')} model: choose from {', '.join(allowed)}, "
         f"got {given!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return cfg, torch_variants


def is_transformer(cfg):
    return cfg.get("model", "lstm") == "transformer"


def layer_sizes(cfg):
    """[D, H_1, ..., H_L]: input size of layer 0, then each layer's width (LanguageModel's; D for
    every block of a Transformer)."""
    if is_transformer(cfg):
        return [cfg["emsize"]] * (cfg["nlayers"] + 1)
    return LanguageModel.layer_sizes(cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"])


def matmul_flops_per_token(cfg):
    """FLOP per token of the step's matrix products: 3 GEMMs x 2 FLOP x weights touched.

    Projection D_last x V, and per LSTM layer k: W_ih 4H_k x I_k (input side) and W_hh 4H_k x H_k
    (recurrent side). Each is used once forward (Z = X W^T) and twice backward (dX = dZ W,
    dW = dZ^T X). The embedding is a row gather, not a product. A Transformer's count is
    TransformerLM.matmul_flops_per_token's (its attention products included).
    With --adaptive the projection's D_last x V is the adaptive softmax's expected count instead
    (output_macs_per_token: the head, and each cluster's two products for the targets in it).
    """
    V, D = cfg["vocab"], layer_sizes(cfg)[-1]
    adaptive = output_macs_per_token(cfg) - D * V       # 0 for the full softmax
    if is_transformer(cfg):
        blocks = TransformerLM.matmul_flops_per_token(V, cfg["emsize"], cfg["nlayers"], cfg["bptt"])
        return blocks + 6 * adaptive
    sizes = layer_sizes(cfg)
    touched = output_macs_per_token(cfg)
    for k in range(cfg["nlayers"]):
        touched += 4 * sizes[k + 1] * (sizes[k] + sizes[k + 1])
    return 6 * touched


def zipf_probabilities(V):
    """(V,) P(id) proportional to 1 / (id + 1): word frequencies by rank, roughly (Zipf's law); the
    benchmark's random targets follow it, so an adaptive softmax meets its clusters as often as in text."""
    p = 1.0 / np.arange(1, V + 1)
    return p / p.sum()


def output_macs_per_token(cfg):
    """Multiply-adds a token costs in the output layer (forward): D V for the full softmax; for the
    adaptive softmax D (k_0 + C) for the head plus, for each cluster c, P(c) (D H_c + H_c S_c),
    P(c) the Zipf probability of a target in it."""
    V, D = cfg["vocab"], layer_sizes(cfg)[-1]
    cutoffs = cfg.get("adaptive")
    if not cutoffs:
        return D * V
    p, bounds = zipf_probabilities(V), list(cutoffs) + [V]
    macs = D * (cutoffs[0] + len(cutoffs))
    for c in range(len(cutoffs)):
        H = int(D // cfg.get("div_value", 4.0) ** (c + 1))
        macs += p[bounds[c]:bounds[c + 1]].sum() * (D * H + H * (bounds[c + 1] - bounds[c]))
    return macs


# arrays an optimizer's update must read and write, per parameter, at the least (one pass):
# Adam reads p, g, m, v and writes p, m, v; SGD without momentum reads p, g and writes p
ARRAYS_PER_PARAM = {"adam": 7, "adamw": 7, "sgd": 3}


def optimizer_bytes_per_step(cfg, n_params):
    """The least memory traffic of one optimizer update over n_params float32 parameters."""
    return ARRAYS_PER_PARAM[cfg["optimizer"]] * 4 * n_params

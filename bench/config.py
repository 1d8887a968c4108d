"""The benchmark's configuration: the reference model, train.py's presets, the flags, the FLOP count.

Shapes: D embedding size, H_k hidden size of LSTM layer k, I_k its input size, V vocabulary.
"""
import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTION = "Time training steps of the word-level LSTM language model, and put the figure in context."

# The reference model of the issue (= train.PRESETS["notebook"] at the time of writing).
REFERENCE = dict(emsize=128, nhid=128, nlayers=2, tied=False, dropout=0.0, dropouth=0.0,
                 bptt=10, batch_size=32, lr=1e-3, optimizer="adam", wdecay=0.0, clip=0.0)
WIKITEXT2_VOCAB = 33280
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
TORCH_VARIANTS = ("lstmcell", "lstm")


class UsageError(Exception):
    """A bad flag: printed as one line, exit code 2."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", help="take the model, batch and optimizer from train.PRESETS[NAME] (e.g. "
                                    "default, notebook) instead of the reference model; flags override it")
    p.add_argument("--batch", "--batch_size", "--batch-size", dest="batch_size", type=int,
                   help="sequences per batch (reference 32)")
    p.add_argument("--bptt", type=int, help="words per sequence (reference 10)")
    p.add_argument("--emsize", type=int, help="embedding size (reference 128)")
    p.add_argument("--nhid", type=int, help="hidden units per LSTM layer (reference 128)")
    p.add_argument("--nlayers", type=int, help="LSTM cells (reference 2)")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help="share the embedding and the projection (reference: untied)")
    p.add_argument("--dropout", type=float, help="locked dropout on embeddings and top layer (reference 0)")
    p.add_argument("--dropouth", type=float, help="locked dropout between LSTM layers (reference 0)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="optimizer (reference adam)")
    p.add_argument("--lr", type=float, help="learning rate (reference 1e-3)")
    p.add_argument("--clip", type=float, help="gradient-norm clipping, 0: norm computed, no clipping "
                                              "(reference 0, as train.py with --clip 0)")
    p.add_argument("--vocab", type=int, default=WIKITEXT2_VOCAB, help="vocabulary size V")
    p.add_argument("--steps", type=int, default=20, help="timed steps (full steps, phased steps, and torch)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed series")
    p.add_argument("--gemm-reps", type=int, default=10, help="timed GEMMs for the GEMM rate")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="BLAS threads, mytorch row-block threads (MYTORCH_THREADS) and torch threads")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="mytorch array backend")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS),
                   help="PyTorch recurrences to time: lstmcell (Python loop over nn.LSTMCell), "
                        "lstm (nn.LSTM)")
    p.add_argument("--seed", type=int, default=1111, help="random seed (weights and token ids)")
    return p.parse_args(argv)


def load_presets():
    """train.PRESETS (train.py lives in the repository root, not in an installed package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import train
    return train.PRESETS


def resolve_config(args):
    """The reference model, or a train.py preset, overridden by the flags given; validated."""
    if args.preset is None:
        cfg, preset = dict(REFERENCE), "reference"
    else:
        presets = load_presets()
        if args.preset not in presets:
            raise UsageError(f"--preset {args.preset}: train.PRESETS has {', '.join(sorted(presets))}")
        cfg, preset = {k: presets[args.preset].get(k, v) for k, v in REFERENCE.items()}, args.preset
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    torch_variants = [v.strip() for v in args.torch_variants.split(",") if v.strip()]
    cfg.update(preset=preset, vocab=args.vocab, steps=args.steps, warmup=args.warmup, threads=args.threads,
               backend=args.backend, seed=args.seed, gemm_reps=args.gemm_reps, dtype="float32",
               tokens_per_step=cfg["batch_size"] * cfg["bptt"])
    checks = [
        (cfg["vocab"] >= 2, f"--vocab must be >= 2, got {cfg['vocab']}"),
        (min(cfg["emsize"], cfg["nhid"], cfg["nlayers"]) >= 1, "--emsize, --nhid and --nlayers must be >= 1"),
        (cfg["batch_size"] >= 1 and cfg["bptt"] >= 1, "--batch and --bptt must be >= 1"),
        (cfg["steps"] >= 1, f"--steps must be >= 1, got {cfg['steps']}"),
        (cfg["warmup"] >= 0, f"--warmup must be >= 0, got {cfg['warmup']}"),
        (cfg["gemm_reps"] >= 1, f"--gemm-reps must be >= 1, got {cfg['gemm_reps']}"),
        (cfg["threads"] >= 1, f"--threads must be >= 1, got {cfg['threads']}"),
        (0 <= cfg["dropout"] < 1 and 0 <= cfg["dropouth"] < 1, "--dropout and --dropouth must lie in [0, 1)"),
        (cfg["lr"] > 0 and cfg["clip"] >= 0, "--lr must be > 0 and --clip >= 0"),
        (cfg["optimizer"] in OPTIMIZERS, f"optimizer {cfg['optimizer']!r} is not one of "
                                         f"{', '.join(sorted(OPTIMIZERS))}"),
        (all(v in TORCH_VARIANTS for v in torch_variants),
         f"--torch-variants: choose from {', '.join(TORCH_VARIANTS)}, got {args.torch_variants!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return cfg, torch_variants


def layer_sizes(cfg):
    """[D, H_1, ..., H_L]: input size of layer 0, then each layer's hidden size (as LanguageModel)."""
    L = cfg["nlayers"]
    return [cfg["emsize"]] + [cfg["nhid"]] * (L - 1) + [cfg["emsize"] if cfg["tied"] else cfg["nhid"]]


def matmul_flops_per_token(cfg):
    """FLOP per token of the step's matrix products: 3 GEMMs x 2 FLOP x weights touched.

    Projection D_last x V, and per LSTM layer k: W_ih 4H_k x I_k (input side) and W_hh 4H_k x H_k
    (recurrent side). Each is used once forward (Z = X W^T) and twice backward (dX = dZ W,
    dW = dZ^T X). The embedding is a row gather, not a product.
    """
    sizes = layer_sizes(cfg)
    touched = sizes[-1] * cfg["vocab"]
    for k in range(cfg["nlayers"]):
        touched += 4 * sizes[k + 1] * (sizes[k] + sizes[k + 1])
    return 6 * touched

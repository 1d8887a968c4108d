"""Presets, the model and optimizer flags, and building both: one place for train.py and the bench.

A configuration (cfg) is a flat dict: a preset's values, overridden by the flags given.

    emsize, nhid, nlayers, tied, dropout, dropouth     the model (models.LanguageModel)
    optimizer, lr, wdecay, clip                        the optimizer and gradient clipping
    batch_size, bptt, epochs                           the data and the schedule
"""
import argparse
import math

from models import LanguageModel
from mytorch import fast, optim

from .errors import UsageError

PRESETS = {
    # the recipe that reaches the quality bar (README: "Results")
    "default": dict(emsize=128, nhid=384, nlayers=2, tied=True, dropout=0.1, dropouth=0.1,
                    bptt=20, batch_size=32, lr=2e-3, optimizer="adam", wdecay=0.0, clip=0.5,
                    epochs=8),
    # the course notebook: 128-dim embedding, two 128-unit cells, untied, 10-word windows, Adam, cosine
    "notebook": dict(emsize=128, nhid=128, nlayers=2, tied=False, dropout=0.0, dropouth=0.0,
                     bptt=10, batch_size=32, lr=1e-3, optimizer="adam", wdecay=0.0, clip=0.0,
                     epochs=5),
}
DRY_RUN_BATCHES = 3         # train.py --dry-run: batches per phase, one epoch
OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}


def add_model_flags(p, preset="default"):
    """The model, optimizer and batch flags on parser p, each with its value in PRESETS[preset] as help.

    Every flag defaults to None: resolve() fills what was not given from the preset.
    """
    d = PRESETS[preset]
    p.add_argument("--emsize", type=int, help=f"embedding size ({preset}: {d['emsize']})")
    p.add_argument("--nhid", type=int, help=f"hidden units per LSTM layer, the last is emsize when tied "
                                            f"({preset}: {d['nhid']})")
    p.add_argument("--nlayers", type=int, help=f"number of LSTM layers ({preset}: {d['nlayers']})")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help=f"share the embedding and the output projection ({preset}: {d['tied']})")
    p.add_argument("--dropout", type=float, help=f"locked dropout on the embeddings and the top layer "
                                                 f"({preset}: {d['dropout']})")
    p.add_argument("--dropouth", type=float,
                   help=f"locked dropout between LSTM layers ({preset}: {d['dropouth']})")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"optimizer ({preset}: {d['optimizer']})")
    p.add_argument("--lr", type=float, help=f"initial learning rate ({preset}: {d['lr']})")
    p.add_argument("--wdecay", type=float, help=f"weight decay ({preset}: {d['wdecay']})")
    p.add_argument("--clip", type=float,
                   help=f"global gradient-norm clipping, 0: off ({preset}: {d['clip']})")
    p.add_argument("--batch_size", "--batch-size", type=int,
                   help=f"sequences per batch ({preset}: {d['batch_size']})")
    p.add_argument("--bptt", type=int, help=f"words per training sequence ({preset}: {d['bptt']})")


def resolve(preset, args):
    """PRESETS[preset] with every flag of args that is not None applied (a copy)."""
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: the presets are {', '.join(sorted(PRESETS))}")
    cfg = dict(PRESETS[preset])
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    return cfg


def validate(cfg):
    """cfg itself, or UsageError naming the first impossible model, optimizer or batch setting."""
    checks = [
        (math.isfinite(cfg["lr"]) and cfg["lr"] > 0, f"--lr must be a finite number > 0, got {cfg['lr']}"),
        (cfg["batch_size"] >= 1, f"--batch_size must be >= 1, got {cfg['batch_size']}"),
        (cfg["bptt"] >= 1, f"--bptt must be >= 1, got {cfg['bptt']}"),
        (min(cfg["emsize"], cfg["nhid"], cfg["nlayers"]) >= 1, "--emsize, --nhid and --nlayers must be >= 1"),
        (0 <= cfg["dropout"] < 1, f"--dropout must lie in [0, 1), got {cfg['dropout']}"),
        (0 <= cfg["dropouth"] < 1, f"--dropouth must lie in [0, 1), got {cfg['dropouth']}"),
        (math.isfinite(cfg["clip"]) and cfg["clip"] >= 0,
         f"--clip must be a finite number >= 0, got {cfg['clip']}"),
        (math.isfinite(cfg["wdecay"]) and cfg["wdecay"] >= 0,
         f"--wdecay must be a finite number >= 0, got {cfg['wdecay']}"),
        (cfg["optimizer"] in OPTIMIZERS, f"--optimizer must be one of {', '.join(sorted(OPTIMIZERS))}, "
                                         f"got {cfg['optimizer']!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return cfg


def validate_run(cfg):
    """validate(cfg) and the training run's own settings (epochs, max_batches, save_every)."""
    checks = [
        (cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}"),
        (cfg["max_batches"] is None or cfg["max_batches"] >= 1, "--max-batches must be >= 1"),
        (cfg["save_every"] >= 1, f"--save-every must be >= 1, got {cfg['save_every']}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return validate(cfg)


def build_model(cfg, vocab_size, seed):
    """The LanguageModel cfg describes, its weights drawn from `seed`."""
    return LanguageModel(vocab_size, cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"],
                         cfg["dropout"], cfg["dropouth"], seed=seed)


def build_optimizer(cfg, model):
    """cfg's optimizer over the model's parameters: the plain class, or its fast twin (mytorch.fast)."""
    cls = fast.choose(OPTIMIZERS[cfg["optimizer"]])
    return cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])

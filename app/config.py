"""Presets, the model and optimizer flags, and building both: one place for train.py and the bench.

A configuration (cfg) is a flat dict: a preset's values, overridden by the flags given.

    model                                     "lstm" (models.LanguageModel) or "transformer" (TransformerLM)
    emsize, nlayers, dropout                  both models (emsize is the Transformer's d_model)
    nhid, tied, dropouth                      the LSTM only
    dropoute, wdrop, alpha, beta              the LSTM only: AWD-LSTM's regularisers, 0 = off
    nhead                                     the Transformer only (its context length is bptt)
    adaptive, div_value                       both models: an adaptive softmax's cutoffs (None: the
                                              full softmax) and its width divisor
    optimizer, lr, wdecay, clip               the optimizer and gradient clipping
    batch_size, bptt, epochs, lr_warmup       the data and the schedule (lr_warmup: batches of linear
                                              warmup before the cosine, 0 = none)
    carry                                     the LSTM only: train on a carried state (train.py --carry)
    sos_first                                 the probability that a training window starts with <sos>
                                              in place of its first word (the fixtures' shape), 0 = never
"""
import argparse
import math

from models import LanguageModel, TransformerLM
from mytorch import fast, optim

from .errors import UsageError

# AWD-LSTM's regularisers (models.LanguageModel), all off: runs saved before they existed lack the keys
AWD_OFF = dict(dropoute=0.0, wdrop=0.0, alpha=0.0, beta=0.0)
# the output layer: the full softmax (adaptive=None), or an adaptive one with these cutoffs
FULL_SOFTMAX = dict(adaptive=None, div_value=4.0)
PRESETS = {
    # the recipe that reaches the quality bar (README: "Results")
    "default": dict(model="lstm", emsize=128, nhid=384, nlayers=2, tied=True, dropout=0.1, dropouth=0.1,
                    bptt=20, batch_size=32, lr=2e-3, optimizer="adam", wdecay=0.0, clip=0.5,
                    epochs=8, lr_warmup=0, carry=False, sos_first=0.0, **AWD_OFF, **FULL_SOFTMAX),
    # the course notebook: 128-dim embedding, two 128-unit cells, untied, 10-word windows, Adam, cosine
    "notebook": dict(model="lstm", emsize=128, nhid=128, nlayers=2, tied=False, dropout=0.0, dropouth=0.0,
                     bptt=10, batch_size=32, lr=1e-3, optimizer="adam", wdecay=0.0, clip=0.0,
                     epochs=5, lr_warmup=0, carry=False, sos_first=0.0, **AWD_OFF, **FULL_SOFTMAX),
    # a small GPT: d_model 128, 4 heads, 4 pre-LayerNorm blocks, tied, 32-word context, half the
    # windows led by <sos> as the fixtures are, AdamW's weight decay 0.1 (0.01 overfit: README "The
    # LSTM beside the Transformer"; 7 epochs, 108 minutes with evaluation at about 2,400 tokens/s on
    # the AVX2 EPYC, 72 on the AVX-512 one; 4 blocks beat 2 at 0.8x the speed)
    "transformer": dict(model="transformer", emsize=128, nhead=4, nlayers=4, dropout=0.1,
                        bptt=32, batch_size=32, lr=2e-3, optimizer="adamw", wdecay=0.1, clip=0.5,
                        epochs=7, lr_warmup=0, carry=False, sos_first=0.5, **FULL_SOFTMAX),
    # the best LSTM this CPU trains in 150 minutes (issue 13): AWD-LSTM's regularisers, an adaptive
    # softmax paying for a wider, untied model; fresh-state windows, not --carry (README: "The AWD
    # recipe": carrying the state bought 2-4 perplexity but cost 0.15-0.2 fixture NLL)
    "awd": dict(model="lstm", emsize=256, nhid=512, nlayers=2, tied=False, dropout=0.2, dropouth=0.15,
                bptt=35, batch_size=32, lr=2e-3, optimizer="adamw", wdecay=0.01, clip=0.25,
                epochs=8, lr_warmup=0, carry=False, sos_first=0.0, dropoute=0.025, wdrop=0.15, alpha=2.0,
                beta=1.0,
                adaptive=[2000, 10000], div_value=4.0),
}
# which flags each model reads; --model X without --preset starts from MODEL_PRESETS[X]
MODEL_FLAGS = {"lstm": ("nhid", "tied", "dropouth", *AWD_OFF), "transformer": ("nhead",)}
MODEL_PRESETS = {"lstm": "default", "transformer": "transformer"}
PRESET_NOTES = {
    "default": "the recipe that reaches the quality bar (README: Results); about 10 min an epoch on 2 cores",
    "notebook": "the course notebook's model, batches and optimizer, for comparison",
    "transformer": "a small GPT-style Transformer from mytorch's own attention; 72-108 min on 2 cores",
    "awd": "AWD-LSTM's regularisers and an adaptive softmax: a wider LSTM in 150 minutes on 2 cores",
}
DRY_RUN_BATCHES = 3         # train.py --dry-run: batches per phase, one epoch
OPTIMIZERS = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}


def add_model_flags(p, preset="default"):
    """The model, optimizer and batch flags on parser p (or an argument group), each with its value
    in PRESETS[preset] as its default in the help.

    Every flag defaults to None: resolve() fills what was not given from the preset.
    """
    d = PRESETS[preset]

    def default(key):
        if key == "adaptive" and d.get(key) is None:
            return "default: none, the full softmax"
        return f"default: {d[key]}" if key in d else f"{preset} does not use it"
    p.add_argument("--model", choices=sorted(MODEL_FLAGS),
                   help=f"the model family; without --preset it picks that family's preset "
                        f"({default('model')})")
    p.add_argument("--emsize", type=int,
                   help=f"embedding size, the Transformer's d_model ({default('emsize')})")
    p.add_argument("--nhid", type=int, help=f"hidden units per LSTM layer, the last is emsize when tied "
                                            f"({default('nhid')})")
    p.add_argument("--nlayers", type=int,
                   help=f"number of LSTM layers or Transformer blocks ({default('nlayers')})")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help=f"share the embedding and the output projection ({default('tied')})")
    p.add_argument("--dropout", type=float, help=f"locked dropout on the embeddings and the top layer "
                                                 f"({default('dropout')})")
    p.add_argument("--nhead", type=int, help=f"attention heads per Transformer block ({default('nhead')})")
    p.add_argument("--dropouth", type=float,
                   help=f"locked dropout between LSTM layers ({default('dropouth')})")
    p.add_argument("--dropoute", type=float,
                   help=f"embedding dropout: whole words dropped from the embedding ({default('dropoute')})")
    p.add_argument("--wdrop", type=float,
                   help=f"DropConnect on each LSTM layer's recurrent weights W_hh ({default('wdrop')})")
    p.add_argument("--alpha", type=float,
                   help=f"activation regularisation: alpha * mean(h^2) of the dropped top-layer output "
                        f"({default('alpha')})")
    p.add_argument("--beta", type=float,
                   help=f"temporal activation regularisation: beta * mean((h_t+1 - h_t)^2) of the "
                        f"top-layer output ({default('beta')})")
    p.add_argument("--adaptive", type=parse_cutoffs, metavar="CUTOFFS",
                   help=f"adaptive softmax: the cutoffs of its frequency bands, e.g. 2000,10000 (the head "
                        f"holds the 2000 most frequent words); needs --no-tied; 'none': the full softmax "
                        f"({default('adaptive')})")
    p.add_argument("--div-value", "--div_value", dest="div_value", type=float,
                   help=f"adaptive softmax: each band's projection is this many times narrower than "
                        f"the one before ({default('div_value')})")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"optimizer ({default('optimizer')})")
    p.add_argument("--lr", type=float, help=f"initial learning rate ({default('lr')})")
    p.add_argument("--wdecay", type=float, help=f"weight decay ({default('wdecay')})")
    p.add_argument("--clip", type=float,
                   help=f"global gradient-norm clipping, 0: off ({default('clip')})")
    p.add_argument("--batch_size", "--batch-size", type=int,
                   help=f"sequences per batch ({default('batch_size')})")
    p.add_argument("--bptt", type=int,
                   help=f"words per training sequence, the Transformer's context length ({default('bptt')})")


def parse_cutoffs(text):
    """'2000,10000' -> [2000, 10000]; 'none' -> [] (the full softmax); anything else: an argparse error."""
    if text.strip().lower() in ("none", "off", ""):
        return []
    try:
        cutoffs = [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing integers such as 2000,10000, got {text!r}") \
            from None
    if cutoffs[0] < 1 or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
        raise argparse.ArgumentTypeError(f"cutoffs must be increasing integers >= 1, got {text!r}")
    return cutoffs


def describe_presets(presets=PRESETS, notes=PRESET_NOTES, dashed=("div_value",)):
    """Each preset: its name and what it is, then its values as flags (python train.py --preset list).
    dashed: the keys whose flag is spelled with dashes (--div-value), the others as the key is."""
    def flag(key, value):
        if isinstance(value, bool):
            return f"--{key}" if value else f"--no-{key}"
        if isinstance(value, list):
            value = ",".join(map(str, value))
        return f"--{key.replace('_', '-') if key in dashed else key} {value}"
    width = max(map(len, presets))
    return "\n".join(f"{name:<{width}}  {notes[name]}\n{'':<{width}}  "
                     + " ".join(flag(k, v) for k, v in values.items() if v is not None)
                     for name, values in presets.items())


def preset_for(preset, model):
    """The preset a command line starts from: --preset if given, else --model's, else "default"."""
    if preset is not None:
        return preset
    return MODEL_PRESETS[model] if model is not None else "default"


def resolve(preset, args):
    """PRESETS[preset] with every flag of args that is not None applied (a copy).

    A flag of the other model family (--nhid for a Transformer, --nhead for an LSTM), or a --model
    that is not the preset's, is a UsageError: it would be silently ignored otherwise.
    """
    if preset not in PRESETS:
        raise UsageError(f"--preset {preset}: the presets are {', '.join(sorted(PRESETS))}")
    cfg = dict(PRESETS[preset])
    model = getattr(args, "model", None)
    if model is not None and model != cfg["model"]:
        raise UsageError(f"--model {model} with --preset {preset} (a {cfg['model']} preset): drop one, or "
                         f"use --preset {MODEL_PRESETS[model]}")
    foreign = [key for other, keys in MODEL_FLAGS.items() if other != cfg["model"]
               for key in keys if getattr(args, key, None) is not None]
    if foreign:
        raise UsageError(f"--{foreign[0]} does not apply to --model {cfg['model']} (--preset {preset})")
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if cfg.get("adaptive") == []:                       # --adaptive none
        cfg["adaptive"] = None
    return cfg


def optimizer_checks(cfg):
    """(ok, message) pairs for the settings every task's optimizer and batches have."""
    return [
        (math.isfinite(cfg["lr"]) and cfg["lr"] > 0, f"--lr must be a finite number > 0, got {cfg['lr']}"),
        (cfg["batch_size"] >= 1, f"--batch_size must be >= 1, got {cfg['batch_size']}"),
        (math.isfinite(cfg["clip"]) and cfg["clip"] >= 0,
         f"--clip must be a finite number >= 0, got {cfg['clip']}"),
        (math.isfinite(cfg["wdecay"]) and cfg["wdecay"] >= 0,
         f"--wdecay must be a finite number >= 0, got {cfg['wdecay']}"),
        (cfg["optimizer"] in OPTIMIZERS, f"--optimizer must be one of {', '.join(sorted(OPTIMIZERS))}, "
                                         f"got {cfg['optimizer']!r}"),
    ]


def run_checks(cfg):
    """(ok, message) pairs for a training run's own settings, every task's."""
    return [
        (cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}"),
        (cfg.get("lr_warmup", 0) >= 0, f"--lr-warmup must be >= 0 batches, got {cfg.get('lr_warmup')}"),
        (cfg["max_batches"] is None or cfg["max_batches"] >= 1, "--max-batches must be >= 1"),
        (cfg["save_every"] >= 1, f"--save-every must be >= 1, got {cfg['save_every']}"),
        (cfg.get("keep_epochs", 0) >= 0, f"--keep-epochs must be >= 0, got {cfg.get('keep_epochs')}"),
    ]


def resolve_preset(presets, flags, preset, args, task):
    """presets[preset] with every one of `flags` that args gives (not None) applied (a copy); UsageError
    naming --task's presets for an unknown one."""
    if preset not in presets:
        raise UsageError(f"--preset {preset}: the presets of --task {task} are {', '.join(sorted(presets))}")
    cfg = dict(presets[preset])
    cfg.update({key: getattr(args, key) for key in flags if getattr(args, key, None) is not None})
    return cfg


def check(cfg, checks):
    """cfg itself, or UsageError with the message of the first (ok, message) of checks that failed."""
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return cfg


def validate(cfg):
    """cfg itself, or UsageError naming the first impossible model, optimizer or batch setting."""
    return check(cfg, optimizer_checks(cfg) + [
        (cfg["bptt"] >= 1, f"--bptt must be >= 1, got {cfg['bptt']}"),
        (min(cfg["emsize"], cfg["nlayers"], cfg.get("nhid", 1), cfg.get("nhead", 1)) >= 1,
         "--emsize, --nhid, --nhead and --nlayers must be >= 1"),
        (cfg["emsize"] % cfg.get("nhead", 1) == 0,
         f"--emsize ({cfg['emsize']}) must be a multiple of --nhead ({cfg.get('nhead')})"),
        (0 <= cfg["dropout"] < 1, f"--dropout must lie in [0, 1), got {cfg['dropout']}"),
        (0 <= cfg.get("dropouth", 0) < 1, f"--dropouth must lie in [0, 1), got {cfg.get('dropouth')}"),
        (all(0 <= cfg.get(k, 0) < 1 for k in ("dropoute", "wdrop")),
         f"--dropoute and --wdrop must lie in [0, 1), got {cfg.get('dropoute')}, {cfg.get('wdrop')}"),
        (all(math.isfinite(cfg.get(k, 0)) and cfg.get(k, 0) >= 0 for k in ("alpha", "beta")),
         f"--alpha and --beta must be finite numbers >= 0, got {cfg.get('alpha')}, {cfg.get('beta')}"),
        (not (cfg.get("adaptive") and cfg.get("tied")),
         "--adaptive needs --no-tied: an adaptive softmax has no (V, D) matrix to share with the embedding"),
        (math.isfinite(cfg.get("div_value", 4.0)) and cfg.get("div_value", 4.0) >= 1,
         f"--div-value must be a finite number >= 1, got {cfg.get('div_value')}"),
    ])


def validate_run(cfg):
    """validate(cfg) and the training run's own settings (epochs, max_batches, save_every)."""
    check(cfg, run_checks(cfg) + [
        (0 <= cfg.get("sos_first", 0.0) <= 1, f"--sos-first must lie in [0, 1], got {cfg.get('sos_first')}"),
        (not (cfg.get("carry") and cfg.get("model", "lstm") == "transformer"),
         "--carry: the Transformer has no recurrent state to carry (it reads windows of --bptt words); "
         "drop --carry"),
        (not (cfg.get("sos_first") and cfg.get("carry")),
         "--sos-first needs fresh-state windows: a carried state reads contiguous streams; drop one"),
    ])
    return validate(cfg)


def build_model(cfg, vocab_size, seed):
    """The model cfg describes (runs saved before --model existed are LSTMs), weights drawn from `seed`."""
    output = dict(adaptive=cfg.get("adaptive"), div_value=cfg.get("div_value", 4.0))
    if output["adaptive"] and output["adaptive"][-1] >= vocab_size:
        raise UsageError(f"--adaptive {','.join(map(str, output['adaptive']))}: every cutoff must be below "
                         f"the vocabulary's {vocab_size} words")
    if cfg.get("model", "lstm") == "transformer":
        return TransformerLM(vocab_size, d_model=cfg["emsize"], nhead=cfg["nhead"], nlayers=cfg["nlayers"],
                             max_len=cfg["bptt"], dropout=cfg["dropout"], seed=seed, **output)
    return LanguageModel(vocab_size, cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"],
                         cfg["dropout"], cfg["dropouth"], seed=seed,
                         **{k: cfg.get(k, 0.0) for k in AWD_OFF}, **output)


def describe_model(cfg):
    """One phrase: '2 x LSTM(128->384) tied=True', or for a Transformer
    'Transformer(d_model 128, 4 heads, 2 blocks, context 32)'."""
    out = (f", adaptive softmax {','.join(map(str, cfg['adaptive']))} / {cfg.get('div_value', 4.0):g}"
           if cfg.get("adaptive") else "")
    if cfg.get("model", "lstm") == "transformer":
        return (f"Transformer(d_model {cfg['emsize']}, {cfg['nhead']} heads, {cfg['nlayers']} blocks, "
                f"context {cfg['bptt']}){out}")
    return f"{cfg['nlayers']} x LSTM({cfg['emsize']}->{cfg['nhid']}) tied={cfg['tied']}{out}"


def build_optimizer(cfg, model):
    """cfg's optimizer over the model's parameters: the plain class, or its fast twin (mytorch.fast)."""
    cls = fast.choose(OPTIMIZERS[cfg["optimizer"]])
    return cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])

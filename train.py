"""Train the word-level LSTM language model on WikiText-2 (the HW4P1 layout).

    python train.py                                   # the default recipe, into runs/default-<time>
    python train.py --preset notebook                 # the course notebook's configuration
    python train.py --dry-run                         # a few batches of each phase, in seconds
    python train.py --resume runs/default-<time>      # continue an interrupted run
    python train.py --resume DIR --epochs 10          # train a finished run further

Every epoch prints and records: mean train loss, the course's validation NLL on
fixtures/prediction.npz, perplexity over the whole validation split, and a few
generated continuations. The experiment directory (--save) holds:

    config.json                   the resolved flags
    metrics.jsonl                 one JSON object per epoch
    state.npz                     everything needed to resume (written atomically every
                                  --save-every batches, at each epoch end, and on SIGINT/SIGTERM)
    best.npz                      the model with the best validation NLL so far
    predictions-test-<epoch>.npy  (128, V) float32 scores for fixtures/prediction_test.npz
    generated-texts-test-<epoch>.txt   continuations of fixtures/generation_test.npy
    curves.png                    train loss and validation NLL per epoch

When things go wrong: SIGINT/SIGTERM save state.npz and exit (128 + signal number) with the
--resume command to run (a second Ctrl-C quits at once, keeping the last checkpoint); a resumed
run ends bit-identical (on the CPU) to one never interrupted; a non-finite loss or gradient
stops training (exit 3) naming the epoch and batch; a failed save warns and keeps the previous
file; a user's mistake (bad flag, data, checkpoint) is one "error:" line on stderr, exit 2.
"""
import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import mytorch  # noqa: F401  (first: it tunes OpenBLAS before NumPy loads it)
from dataset.corpus import DataError, load_fixtures, load_hw4p1
from models.checkpoint import CheckpointError, load_npz, write_text_atomic
from models.trainer import Run, TrainingDiverged, run_record, where
from mytorch import backend

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
DRY_RUN_BATCHES = 3


class UsageError(Exception):
    """A user's mistake: printed as one line, exit code 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """A malformed flag: one line, like every other user error (argparse also prints the usage)."""
        self.exit(2, f"error: {message} (python train.py --help lists the flags)\n")


def build_parser():
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data/hw4p1", help="HW4P1 directory (dataset/ and fixtures/)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="named recipe; flags override it")
    p.add_argument("--emsize", type=int, help="embedding size")
    p.add_argument("--nhid", type=int, help="hidden units per LSTM layer (the last is emsize when tied)")
    p.add_argument("--nlayers", type=int, help="number of LSTM cells")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help="share the embedding and the output projection")
    p.add_argument("--dropout", type=float, help="locked dropout on the embeddings and the top layer")
    p.add_argument("--dropouth", type=float, help="locked dropout between LSTM layers")
    p.add_argument("--lr", type=float, help="initial learning rate (cosine-annealed to 0 per batch)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], help="optimizer")
    p.add_argument("--wdecay", type=float, help="weight decay")
    p.add_argument("--clip", type=float, help="global gradient-norm clipping (0: off)")
    p.add_argument("--epochs", type=int, help="epochs")
    p.add_argument("--batch_size", "--batch-size", type=int, help="sequences per batch")
    p.add_argument("--bptt", type=int, help="words per training sequence")
    p.add_argument("--seed", type=int, default=1111, help="random seed")
    p.add_argument("--save", help="experiment directory (default runs/<preset>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--save-every", type=int, default=200, help="write state.npz every N batches")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="array backend")
    p.add_argument("--max-batches", type=int, help="stop each epoch after N batches (smoke runs, timing)")
    p.add_argument("--dry-run", action="store_true", help=f"{DRY_RUN_BATCHES} batches per phase, 1 epoch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def given_flags(argv=None):
    """{dest: value} of the flags actually written on the command line (defaults left out)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return vars(p.parse_args(argv))


def resolve_config(args):
    """Preset values overridden by the flags given; validated."""
    cfg = dict(PRESETS[args.preset])
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    cfg.update(preset=args.preset, seed=args.seed, data=str(args.data), backend=args.backend,
               max_batches=args.max_batches, dry_run=args.dry_run, save_every=args.save_every)
    if args.dry_run:
        cfg["epochs"], cfg["max_batches"] = 1, DRY_RUN_BATCHES
    return validate_config(cfg)


def validate_config(cfg):
    """cfg itself, or UsageError naming the first impossible setting."""
    checks = [
        (math.isfinite(cfg["lr"]) and cfg["lr"] > 0, f"--lr must be a finite number > 0, got {cfg['lr']}"),
        (cfg["batch_size"] >= 1, f"--batch_size must be >= 1, got {cfg['batch_size']}"),
        (cfg["bptt"] >= 1, f"--bptt must be >= 1, got {cfg['bptt']}"),
        (cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}"),
        (min(cfg["emsize"], cfg["nhid"], cfg["nlayers"]) >= 1, "--emsize, --nhid and --nlayers must be >= 1"),
        (0 <= cfg["dropout"] < 1, f"--dropout must lie in [0, 1), got {cfg['dropout']}"),
        (0 <= cfg["dropouth"] < 1, f"--dropouth must lie in [0, 1), got {cfg['dropouth']}"),
        (math.isfinite(cfg["clip"]) and cfg["clip"] >= 0,
         f"--clip must be a finite number >= 0, got {cfg['clip']}"),
        (math.isfinite(cfg["wdecay"]) and cfg["wdecay"] >= 0,
         f"--wdecay must be a finite number >= 0, got {cfg['wdecay']}"),
        (cfg["max_batches"] is None or cfg["max_batches"] >= 1, "--max-batches must be >= 1"),
        (cfg["save_every"] >= 1, f"--save-every must be >= 1, got {cfg['save_every']}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return cfg


# ----------------------------------------------------------------------------- entry point

def _load(cfg):
    data = load_hw4p1(cfg["data"])
    return data, load_fixtures(cfg["data"], len(data.vocab))


# flags that may differ from the saved run on --resume: they change neither the model nor its
# trajectory (epochs stretches the schedule: see resume_config)
RESUME_OVERRIDES = ("epochs", "save_every", "backend", "data")
RESUME_IGNORED = ("resume", "no_progress", "save")


def resume_config(saved, given, exp_dir):
    """The saved run's configuration with the allowed flags of this command line applied.

    A flag that would change the run (--nhid, --lr, --seed, ...) and differs from the saved
    value is a UsageError: the run would no longer be the one that was saved.
    """
    cfg = dict(saved)
    if "save" in given and Path(given["save"]).resolve() != Path(exp_dir).resolve():
        raise UsageError(f"--save {given['save']} and --resume {exp_dir} name different directories: "
                         "drop --save to continue the saved run")
    if given.get("dry_run"):
        given = dict(given, epochs=1, max_batches=DRY_RUN_BATCHES)
    differ = []
    for key, value in given.items():
        if key in RESUME_IGNORED or key == "dry_run":
            continue
        if key in RESUME_OVERRIDES:
            cfg[key] = str(value) if key == "data" else value
        elif key not in saved:
            raise CheckpointError(f"{exp_dir / 'state.npz'}: the saved configuration lacks {key!r}")
        elif value != saved[key]:
            differ.append(f"--{key} {value} (saved: {saved[key]})")
    if differ:
        raise UsageError(f"--resume {exp_dir}: flags differ from the saved run: {', '.join(differ)}; "
                         "drop them to continue it, or start a new run with another --save")
    try:
        return validate_config(cfg)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{exp_dir / 'state.npz'}: unusable saved configuration ({err!r})") from None


def setup(argv):
    """(run, exp_dir, args) ready to train, from a command line; raises the user-facing errors."""
    args = parse_args(argv)
    state = None
    if args.resume:
        exp_dir = Path(args.resume)
        if not (exp_dir / "state.npz").is_file():
            raise UsageError(f"--resume {exp_dir}: no state.npz there (give the --save directory of a run)")
        try:
            state = load_npz(exp_dir / "state.npz")
            saved_cfg = run_record(state, exp_dir / "state.npz")["cfg"]
        except CheckpointError as err:
            hint = "it cannot be resumed: start a new run with another --save"
            raise CheckpointError(f"{err}; {hint}") from None
        cfg = resume_config(saved_cfg, given_flags(argv), exp_dir)
    else:
        cfg = resolve_config(args)
        exp_dir = Path(args.save or f"runs/{cfg['preset']}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (exp_dir / "state.npz").exists():
            raise UsageError(f"{exp_dir} already holds a run (state.npz): continue it with "
                             f"--resume {exp_dir}, or choose another --save")
    backend.set_backend(cfg["backend"])
    data, fixtures = _load(cfg)
    try:
        run = Run(cfg, exp_dir, data, fixtures)
    except ValueError as err:  # too little data for one batch of --batch_size x --bptt
        reason = " ".join(str(err).split(" (")[0].split())
        raise UsageError(f"{reason} in {cfg['data']}: use a smaller --batch_size or --bptt") from None
    if state is not None:
        run.load_state(state, exp_dir / "state.npz")
        done = run.pos["epoch"]
        if done >= cfg["epochs"] and cfg["epochs"] != saved_cfg["epochs"]:
            raise UsageError(f"--epochs {cfg['epochs']}: {exp_dir} has already trained {done} epochs; "
                             f"give --epochs > {done} to train further")
        if cfg["epochs"] != saved_cfg["epochs"]:   # stretch the cosine over the new length
            run.sched.T_max = cfg["epochs"] * run.batches_per_epoch
            run.opt.lr = run.sched.get_lr()
        for stale in exp_dir.glob(".tmp-*"):       # left by a kill during a write
            stale.unlink()
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(exp_dir / "config.json", json.dumps(cfg, indent=2) + "\n")
    return run, exp_dir, args


def main(argv=None):
    try:
        run, exp_dir, args = setup(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a malformed flag (2), already printed
        return exit_.code
    except (UsageError, DataError, CheckpointError, backend.BackendError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was changed", file=sys.stderr)
        return 130
    cfg = run.cfg
    if run.pos["epoch"] >= cfg["epochs"]:
        print(f"nothing to do: {exp_dir} has already trained its {cfg['epochs']} epochs "
              f"(give --epochs N to train further)")
        return 0
    if run.saved_at is not None:
        print(f"resuming {exp_dir} from {where(run.pos['epoch'], run.pos['batch'])}")

    n_params = sum(p.size for p in {id(p): p for _, p, _ in run.model.named_parameters()}.values())
    print(f"model: {cfg['nlayers']} x LSTM({cfg['emsize']}->{cfg['nhid']}) tied={cfg['tied']} "
          f"| {n_params / 1e6:.2f}M parameters | {run.batches_per_epoch} batches of "
          f"{cfg['batch_size']}x{cfg['bptt']} per epoch | {cfg['epochs']} epochs -> {exp_dir}", flush=True)

    def on_signal(signum, frame):
        if run.stop_signal is None:  # the first: finish this batch, save, exit
            run.stop_signal = signum
            os.write(2, f"\n{signal.Signals(signum).name}: stopping after this step and saving "
                        "(send it again to quit at once)\n".encode())
        else:                        # the second: quit now, without saving
            raise KeyboardInterrupt
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stopped = run.train(progress=not args.no_progress)
        if stopped is not None:
            saved = run.save_state()
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nquit without saving; {run.last_checkpoint()}: resume with: "
              f"python train.py --resume {exp_dir}", file=sys.stderr)
        return 128 + (run.stop_signal or signal.SIGINT)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stopped is not None:
        name = signal.Signals(stopped).name
        if saved:
            print(f"{name}: stopped at {where(run.pos['epoch'], run.pos['batch'])}; state saved. "
                  f"Resume with: python train.py --resume {exp_dir}", file=sys.stderr)
        else:
            print(f"{name}: stopped at {where(run.pos['epoch'], run.pos['batch'])} but could not save; "
                  f"{run.last_checkpoint()}: resume with: python train.py --resume {exp_dir}",
                  file=sys.stderr)
        return 128 + stopped
    best = run.pos["best_nll"]
    print(f"done: best validation NLL {best:.4f}; model in {exp_dir / 'best.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

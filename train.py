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
import os
import signal
import sys
import time
from pathlib import Path

import mytorch  # noqa: F401  (first: it tunes OpenBLAS before NumPy loads it)
from app.config import DRY_RUN_BATCHES, PRESETS, add_model_flags, resolve, validate_run
from app.errors import USER_ERRORS, UsageError, one_line
from app.resume import resume
from app.trainer import Run, TrainingDiverged, where
from dataset.corpus import load_fixtures, load_hw4p1
from models.checkpoint import write_text_atomic
from mytorch import backend


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """A malformed flag: one line, like every other user error (argparse also prints the usage)."""
        self.exit(2, f"error: {message} (python train.py --help lists the flags)\n")


def build_parser():
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data/hw4p1", help="HW4P1 directory (dataset/ and fixtures/)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="named recipe (app.config.PRESETS); flags override it")
    add_model_flags(p)
    p.add_argument("--epochs", type=int, help=f"epochs; the learning rate is cosine-annealed to 0 over them "
                                              f"(default: {PRESETS['default']['epochs']})")
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
    """The preset overridden by the flags given, with the run's own settings; validated."""
    cfg = resolve(args.preset, args)
    cfg.update(preset=args.preset, seed=args.seed, data=str(args.data), backend=args.backend,
               max_batches=args.max_batches, dry_run=args.dry_run, save_every=args.save_every)
    if args.dry_run:
        cfg["epochs"], cfg["max_batches"] = 1, DRY_RUN_BATCHES
    return validate_run(cfg)


def open_run(cfg, exp_dir):
    """A fresh Run for cfg, its data loaded; too little data for one batch is a UsageError."""
    backend.set_backend(cfg["backend"])
    data = load_hw4p1(cfg["data"])
    fixtures = load_fixtures(cfg["data"], len(data.vocab))
    try:
        return Run(cfg, exp_dir, data, fixtures)
    except ValueError as err:  # too little data for one batch of --batch_size x --bptt
        reason = " ".join(str(err).split(" (")[0].split())
        raise UsageError(f"{reason} in {cfg['data']}: use a smaller --batch_size or --bptt") from None


def setup(argv):
    """(run, exp_dir, args) ready to train, from a command line; raises the user-facing errors."""
    args = parse_args(argv)
    if args.resume:
        exp_dir = Path(args.resume)
        run = resume(exp_dir, given_flags(argv), lambda cfg: open_run(cfg, exp_dir))
    else:
        cfg = resolve_config(args)
        exp_dir = Path(args.save or f"runs/{cfg['preset']}-{time.strftime('%Y%m%d-%H%M%S')}")
        if (exp_dir / "state.npz").exists():
            raise UsageError(f"{exp_dir} already holds a run (state.npz): continue it with "
                             f"--resume {exp_dir}, or choose another --save")
        run = open_run(cfg, exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(exp_dir / "config.json", json.dumps(run.cfg, indent=2) + "\n")
    return run, exp_dir, args


def main(argv=None):
    try:
        run, exp_dir, args = setup(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a malformed flag (2), already printed
        return exit_.code
    except USER_ERRORS + (OSError,) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
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

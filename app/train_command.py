"""Train a model: the word-level language model on WikiText-2 (the HW4P1 layout), with --task vit the
Vision Transformer on Fashion-MNIST, with --task translate the encoder-decoder on German-English pairs
(app.tasks.vision and app.tasks.translate say what differs).

    python train.py                                   # the default recipe, into runs/default-<time>
    python train.py --task vit                        # the ViT's preset, into runs/vit-<time>
    python train.py --task translate                  # translation's preset, into runs/translate-<time>
    python train.py --preset notebook                 # the course notebook's configuration
    python train.py --preset list                     # the presets, one line each
    python train.py --preset notebook --help          # every flag, with that preset's defaults
    python train.py --dry-run                         # a few batches of each phase, in seconds
    python train.py --resume runs/default-<time>      # continue an interrupted run
    python train.py --resume DIR --epochs 10          # train a finished run further
    python train.py --carry                           # train on a carried state (AWD-LSTM's truncated BPTT)

(`mytorch-train` is the same command once the package is installed: pip install -e .)

By default every training sequence is a window of --bptt words read from a zero state
(dataset.loader), as the course's fixtures are scored. --carry (the LSTM only) walks down
--batch_size contiguous streams instead (dataset.streams), AWD-LSTM's way: sequences of about
--bptt words (AWD-LSTM's random lengths), the state carried from batch to batch (cut from the
graph), reset at each epoch start, and each step's learning rate scaled by its length / --bptt.

Without --data it trains on the WikiText-2 text bundled with the package, built into the HW4P1
layout in a cache on first use (dataset.bundled); --data DIR reads the course's handout.

Every epoch prints and records: mean train loss, the course's validation NLL on
fixtures/prediction.npz, perplexity over the whole validation split, and a few
generated continuations. While it trains: tqdm bars on a terminal, else a log line every
--log-interval batches (app.progress). The experiment directory (--save; default
runs/<preset>-<time> under the current directory, and for a --dry-run a temporary directory
removed at exit) holds:

    config.json                   the resolved flags and the data's fingerprint
    metrics.jsonl                 one JSON object per epoch
    state.npz                     everything needed to resume (written atomically every
                                  --save-every batches, at each epoch end, and on SIGINT/SIGTERM)
    best.npz                      the model with the best validation NLL so far
    predictions-test-<epoch>.npy  (128, V) float32 scores for fixtures/prediction_test.npz
    generated-texts-test-<epoch>.txt   continuations of fixtures/generation_test.npy
    curves.png                    train loss and validation NLL per epoch
    .lock                         while a process trains there (a second one is refused)

When things go wrong: SIGINT/SIGTERM save state.npz and exit (128 + signal number) with the
--resume command to run, within a second, an end-of-epoch evaluation included (the epoch is
then evaluated again on resume); a second Ctrl-C quits at once, keeping the last checkpoint. A
resumed run ends bit-identical (on the CPU) to one never interrupted; a non-finite loss or
gradient stops training (exit 3) naming the epoch and batch; a failed save warns and keeps the
previous file; a user's mistake (bad flag, data, checkpoint, a directory in use) is one
"error:" line on stderr, exit 2.
"""
import argparse
import builtins
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import mytorch  # noqa: F401  (first: it tunes OpenBLAS before NumPy loads it)
from models.checkpoint import write_text_atomic
from mytorch import backend, communicator

from . import tasks
from .config import DRY_RUN_BATCHES
from .errors import USER_ERRORS, Parser, UsageError, broken_pipe, one_line, prog as command_name
from .resume import resume
from .rundir import RunLock, default_run_dir, remove_run_dir, temporary_run_dir
from .trainer import EvaluationInterrupted, Run, TrainingDiverged, where


def prog():
    """How the user called the trainer, for messages: mytorch-train, or python train.py."""
    return command_name("python train.py")


def build_parser(preset="default", task="lm"):
    """The trainer's flags for `task`, their help showing its PRESETS[preset]'s values as the defaults."""
    mod = tasks.module(task)
    presets = "; ".join(f"{name}: {note}" for name, note in mod.PRESET_NOTES.items())
    p = Parser(prog=prog(), description=__doc__.split("\n\n")[0],
               epilog=f"Presets of --task {task} ({prog()} --task {task} --preset list shows their values): "
                      f"{presets}.")
    p.add_argument("--task", choices=tasks.TASKS,
                   help="what to train: lm, the language model on WikiText-2; vit, the Vision Transformer on "
                        "Fashion-MNIST; translate, the encoder-decoder on German-English pairs (default: lm)")
    p.add_argument("--data", help=mod.DATA_HELP)
    p.add_argument("--preset", choices=[*mod.PRESETS, "list"],
                   help="named recipe, flags override it; 'list' describes each (default: "
                        f"{mod.DEFAULT_PRESET_HELP})")
    g = p.add_argument_group(f"model, optimizer and schedule (defaults: --preset {preset})")
    mod.add_flags(g, preset)
    g.add_argument("--epochs", type=int, help=f"epochs; the learning rate is cosine-annealed to 0 over them "
                                              f"(default: {mod.PRESETS[preset]['epochs']})")
    g.add_argument("--lr-warmup", "--lr_warmup", dest="lr_warmup", type=int, metavar="N",
                   help=f"raise the learning rate linearly over the first N batches, then anneal it "
                        f"(default: {mod.PRESETS[preset]['lr_warmup']})")
    p.add_argument("--seed", type=int, default=1111, help="random seed")
    p.add_argument("--save", metavar="DIR", help="experiment directory (default: runs/<preset>-<time> under "
                                                 "the current directory; a --dry-run: a temporary directory "
                                                 "removed at exit)")
    p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")
    p.add_argument("--allow-other-data", action="store_true",
                   help="with --resume: continue on --data whose vocabulary or training articles differ")
    p.add_argument("--save-every", type=int, default=200, help="write state.npz every N batches")
    p.add_argument("--keep-epochs", type=int, default=0, metavar="K",
                   help="also keep the model of each of the last K epochs, epoch-N.npz (python -m "
                        "app.average averages them); 0: only best.npz")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="array backend")
    p.add_argument("--max-batches", type=int, help="stop each epoch after N batches (smoke runs, timing)")
    p.add_argument("--dry-run", action="store_true",
                   help=f"{DRY_RUN_BATCHES} batches per phase, 1 epoch (not with --epochs or --max-batches)")
    p.add_argument("--log-interval", type=int, default=200, metavar="N",
                   help="a log line every N batches where there are no bars (0: at epoch ends only)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars: the log lines instead, on a terminal too")
    return p


class _PresetOnly(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def choice_of(argv):
    """(task, preset) that argv starts from: --task (else the --resume directory's, else "lm"), and
    --preset (else --model's, else the task's default): they choose the flags and the defaults --help
    shows."""
    p = _PresetOnly(add_help=False, allow_abbrev=False)
    for flag in ("--preset", "--model", "--task", "--resume"):
        p.add_argument(flag)
    try:
        args = p.parse_known_args(argv)[0]
    except ValueError:
        return "lm", "default"
    task = args.task or saved_task(args.resume)
    if task not in tasks.TASKS:
        return "lm", "default"
    mod = tasks.module(task)
    try:
        name = mod.preset_for(args.preset, args.model)
    except (ValueError, KeyError):
        return task, mod.DEFAULT_PRESET
    return task, (name if name in mod.PRESETS else mod.DEFAULT_PRESET)


def saved_task(exp_dir):
    """The task of the run saved in exp_dir (its config.json), "lm" when there is none to read."""
    if exp_dir is None:
        return "lm"
    try:
        return json.loads((Path(exp_dir) / "config.json").read_text()).get("task", "lm")
    except (OSError, ValueError, AttributeError):
        return "lm"


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    return build_parser(*reversed(choice_of(argv))).parse_args(argv)


def given_flags(argv=None):
    """{dest: value} of the flags actually written on the command line (defaults left out)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = build_parser(*reversed(choice_of(argv)))
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return vars(p.parse_args(argv))


def resolve_config(args):
    """The task's preset overridden by the flags given, with the run's own settings; validated."""
    task = args.task or "lm"
    mod = tasks.module(task)
    preset = mod.preset_for(args.preset, getattr(args, "model", None))
    cfg = mod.resolve(preset, args)
    cfg.update(task=task, preset=preset, seed=args.seed, data=None, backend=args.backend,
               max_batches=args.max_batches, dry_run=args.dry_run, save_every=args.save_every,
               keep_epochs=args.keep_epochs)
    if args.dry_run:                    # a smoke test: the warmup shortened to fit its few batches
        cfg["epochs"], cfg["max_batches"] = 1, DRY_RUN_BATCHES
        cfg["lr_warmup"] = min(cfg["lr_warmup"], DRY_RUN_BATCHES - 1)
    mod.validate_run(cfg)
    cfg["data"] = str(args.data if args.data is not None else mod.default_data())
    return cfg


def open_run(cfg, exp_dir, comm):
    """A fresh Run for cfg, its task's data loaded (UsageError / DataError for data that cannot serve)."""
    backend.set_backend(cfg["backend"])
    return Run(cfg, exp_dir, tasks.module(cfg).open_task(cfg, exp_dir), comm)


def _holds_a_run(exp_dir):
    if (exp_dir / "state.npz").exists():
        raise UsageError(f"{exp_dir} already holds a run (state.npz): continue it with "
                         f"--resume {exp_dir}, or choose another --save")


def setup(args, argv, stack, comm):
    """(run, exp_dir, temporary) ready to train; the lock and a dry run's directory are left on
    `stack` (an ExitStack) to release. Raises the user-facing errors. With several ranks
    (mytorch.communicator) rank 0 chooses the directory, takes the lock and writes config.json."""
    lead = comm.rank == 0
    given = given_flags(argv)
    if args.dry_run and {"epochs", "max_batches"} & set(given):
        raise UsageError(f"--dry-run trains {DRY_RUN_BATCHES} batches of one epoch: drop --epochs and "
                         "--max-batches, or drop --dry-run")
    if args.dry_run and args.resume:
        raise UsageError("--dry-run starts a new run in a temporary directory; it does not go with --resume "
                         f"(it would train {args.resume}'s saved run further): drop one")
    if args.allow_other_data and not args.resume:
        raise UsageError("--allow-other-data goes with --resume DIR (a new run records the data it is given)")
    if args.log_interval < 0:
        raise UsageError(f"--log-interval must be >= 0, got {args.log_interval}")
    temporary = False
    if args.resume:
        exp_dir = Path(args.resume)
        if exp_dir.is_dir() and lead:
            stack.enter_context(RunLock(exp_dir))
        warn = lambda line: lead and print(line, file=sys.stderr, flush=True)    # noqa: E731
        run = resume(exp_dir, given, lambda cfg: open_run(cfg, exp_dir, comm), warn, writer=lead)
    else:
        cfg = resolve_config(args)
        if args.save:
            exp_dir = Path(args.save)
            _holds_a_run(exp_dir)
        elif args.dry_run:
            exp_dir, temporary = comm.share(temporary_run_dir() if lead else None), True
            if lead:
                stack.callback(remove_run_dir, exp_dir)
        else:
            exp_dir = comm.share(default_run_dir(cfg["preset"]) if lead else None)
        run = open_run(cfg, exp_dir, comm)
        if lead:
            exp_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(RunLock(exp_dir))
            _holds_a_run(exp_dir)                  # again, now that no one else can start one there
    if lead:
        write_text_atomic(exp_dir / "config.json", json.dumps(run.cfg, indent=2) + "\n")
    return run, exp_dir, temporary


def main(argv=None):
    """The trainer's command line -> its exit code (0, 2 for a mistake, 3 diverged, 128 + signal)."""
    try:
        return _main(argv)
    except BrokenPipeError:                      # stdout closed before training (`--preset list | head -1`)
        return broken_pipe()


def _main(argv):
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a malformed flag (2), already printed
        return exit_.code
    if args.preset == "list":
        print(tasks.module(args.task or "lm").describe_presets())
        return 0
    try:
        comm = communicator.create()             # MPI under mpiexec -n N, else one process
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        failed = 0
        try:
            run, exp_dir, temporary = setup(args, argv, stack, comm)
        except USER_ERRORS + (OSError,) as err:
            print(f"error: {one_line(err)}", file=sys.stderr)
            failed = 2
        except KeyboardInterrupt:
            print("interrupted before training started; nothing was changed", file=sys.stderr)
            return 130
        if comm.sum([failed])[0]:                # a rank that could not start stops them all
            return 2
        try:
            return train(run, exp_dir, args, temporary)
        except Exception as err:                 # several ranks: end the whole job (one: as before)
            comm.fail(err)
        except BrokenPipeError:                  # stdout closed (`| head`): quit, the last checkpoint kept
            code = broken_pipe()
            with contextlib.suppress(OSError):
                print(f"stdout was closed: quit without saving; {run.last_checkpoint()}", file=sys.stderr)
            return code


def train(run, exp_dir, args, temporary):
    """Train the prepared run under the signal handlers; the exit code."""
    cfg, lead = run.cfg, run.comm.rank == 0
    print = builtins.print if lead else (lambda *a, **k: None)              # only rank 0 speaks
    resume_hint = ("a dry run in a temporary directory, removed at exit: nothing to resume" if temporary
                   else f"resume with: {prog()} --resume {exp_dir}")
    if run.pos["epoch"] >= cfg["epochs"]:
        print(f"nothing to do: {exp_dir} has already trained its {cfg['epochs']} epochs "
              f"(give --epochs N to train further)")
        return 0
    if run.saved_at is not None:
        print(f"resuming {exp_dir} from {where(run.pos['epoch'], run.pos['batch'])}")
    if temporary:
        print(f"dry run: its files go to {exp_dir}, removed at exit (give --save DIR to keep them)")

    n_params = sum(p.size for p in {id(p): p for _, p, _ in run.model.named_parameters()}.values())
    ranks = f" | {run.comm.size} processes (MPI)" if run.comm.size > 1 else ""
    print(f"model: {run.task.describe(run.batches_per_epoch, n_params)}{ranks} | {cfg['epochs']} epochs -> "
          f"{exp_dir}", flush=True)

    def on_signal(signum, frame):
        if run.stop_signal is None:  # the first: finish this batch (or drop the evaluation), save, exit
            run.stop_signal = signum
            drop = run.evaluating and run.comm.size == 1   # ranks finish a split evaluation together
            what = ("the evaluation" if drop else "after the evaluation" if run.evaluating
                    else "after this step")
            if lead:
                os.write(2, f"\n{signal.Signals(signum).name}: stopping {what} and saving "
                            "(send it again to quit at once)\n".encode())
            if drop:
                raise EvaluationInterrupted
        else:                        # the second: quit now, without saving
            raise KeyboardInterrupt
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stopped = run.train(progress=not args.no_progress, log_interval=args.log_interval)
        if stopped is not None:
            saved = run.save_state()
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nquit without saving; {run.last_checkpoint()}: {resume_hint}", file=sys.stderr)
        return 128 + (run.stop_signal or signal.SIGINT)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stopped is not None:
        name, pos = signal.Signals(stopped).name, run.pos
        at = where(pos["epoch"], pos["batch"])
        if pos["batch"] >= run.batches_per_epoch:
            at += f" (the end of its training: epoch {pos['epoch'] + 1} is evaluated on resume)"
        if saved:
            print(f"{name}: stopped at {at}; state saved. {resume_hint[0].upper()}{resume_hint[1:]}",
                  file=sys.stderr)
        else:
            print(f"{name}: stopped at {at} but could not save; {run.last_checkpoint()}: {resume_hint}",
                  file=sys.stderr)
        return 128 + stopped
    where_model = "(a dry run: nothing kept)" if temporary else f"model in {exp_dir / 'best.npz'}"
    if lead:
        print(f"done: best {run.task.metric_name} {run.task.format_metric(run.pos['best'])}; {where_model}")
    return 0

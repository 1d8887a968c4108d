"""Continuing a run from its state.npz: every rule and every step of a resume, in one place.

    python train.py --resume DIR                    continue an interrupted run
    python train.py --resume DIR --epochs N         train a finished run further
    python train.py --resume DIR --data OTHER       the same data in another place (checked)

Run.state_arrays / Run.load_state (app.trainer) write and read the file. This module decides
whether the command line still describes the saved run, rebuilds and restores the Run,
stretches the cosine schedule when --epochs grows, checks that --data holds the data the run
was trained on, and removes the temporary files a kill during a write left behind.

The data's identity is dataset.corpus.fingerprint(data) (its vocabulary and training
articles), saved as cfg["data_fingerprint"] in state.npz and config.json. Another
fingerprint is refused unless --allow-other-data is given; a state.npz saved before
fingerprints existed resumes with a warning, and records the data's fingerprint from then on.
A resumed run ends bit-identical (on the CPU) to one never interrupted.
"""
from pathlib import Path

from models.checkpoint import CheckpointError, load_npz

from . import tasks
from .errors import UsageError
from .trainer import run_record

# flags that may differ from the saved run: they change neither the model nor its trajectory
# (--epochs stretches the schedule: see resume); flags that are not part of a run at all
OVERRIDES = ("epochs", "save_every", "keep_epochs", "backend", "data")
IGNORED = ("resume", "no_progress", "save", "dry_run", "log_interval", "allow_other_data")
# keys that language-model runs saved before they existed lack, with the value those runs trained with
ADDED_LATER = dict(task="lm", carry=False, lr_warmup=0, sos_first=0.0)


def resume_config(saved, given, exp_dir):
    """The saved run's configuration with the allowed flags of this command line applied.

    given: {flag: value} of the flags written on the command line. A flag that would change
    the run (--nhid, --lr, --seed, ...) and differs from the saved value is a UsageError:
    the run would no longer be the one that was saved.
    """
    if saved.get("task", "lm") == "lm":
        saved = {**ADDED_LATER, **saved}
    cfg = dict(saved)
    if "save" in given and Path(given["save"]).resolve() != Path(exp_dir).resolve():
        raise UsageError(f"--save {given['save']} and --resume {exp_dir} name different directories: "
                         "drop --save to continue the saved run")
    differ = []
    for key, value in given.items():
        if key in IGNORED:
            continue
        if key in OVERRIDES:
            cfg[key] = str(value) if key == "data" else value
        elif key not in saved:
            raise CheckpointError(f"{Path(exp_dir) / 'state.npz'}: the saved configuration lacks {key!r}")
        elif value != saved[key]:
            differ.append(f"--{key} {value} (saved: {saved[key]})")
    if differ:
        raise UsageError(f"--resume {exp_dir}: flags differ from the saved run: {', '.join(differ)}; "
                         "drop them to continue it, or start a new run with another --save")
    try:
        return tasks.module(cfg).validate_run(cfg)
    except (KeyError, TypeError) as err:
        path = Path(exp_dir) / "state.npz"
        raise CheckpointError(f"{path}: unusable saved configuration ({err!r})") from None


def read_state(exp_dir):
    """(arrays of DIR/state.npz, the saved configuration); one-line errors for a missing or bad file."""
    path = Path(exp_dir) / "state.npz"
    if not path.is_file():
        raise UsageError(f"--resume {exp_dir}: no state.npz there (give the --save directory of a run)")
    try:
        state = load_npz(path)
        return state, run_record(state, path)["cfg"]
    except CheckpointError as err:
        raise CheckpointError(f"{err}; it cannot be resumed: start a new run with another --save") from None


def check_data(run, saved, given, exp_dir, warn):
    """Refuse other training data than the saved run's (UsageError) unless --allow-other-data (the Run
    recorded the fingerprint of the data it was opened on in run.cfg)."""
    now, before = run.cfg["data_fingerprint"], saved.get("data_fingerprint")
    if before is None:
        warn(f"warning: {Path(exp_dir) / 'state.npz'} records no data fingerprint (saved by an older "
             f"version): {run.cfg['data']} cannot be checked against the data it was trained on")
    elif now != before:
        if not given.get("allow_other_data"):
            raise UsageError(f"--resume {exp_dir}: {run.cfg['data']} holds other training data than the run "
                             f"was trained on (fingerprint {now}, saved {before}): give the --data it was "
                             "trained on, or --allow-other-data to continue on this data anyway")
        warn(f"warning: continuing {exp_dir} on other data ({run.cfg['data']}, fingerprint {now}; "
             f"trained so far on {before}): --allow-other-data")


def resume(exp_dir, given, open_run, warn=print, writer=True):
    """The run saved in exp_dir, restored and ready to continue.

    given: the flags written on the command line ({dest: value}); open_run(cfg) builds a fresh
    Run for a configuration (it loads the data); warn(line) reports what is allowed but worth
    knowing; writer: this process writes the run's files (rank 0 of several: only it removes the
    temporary files a kill left, the others could remove the one it is writing). Raises
    UsageError / CheckpointError.
    """
    exp_dir = Path(exp_dir)
    state, saved = read_state(exp_dir)
    cfg = resume_config(saved, given, exp_dir)
    run = open_run(cfg)
    run.load_state(state, exp_dir / "state.npz")
    check_data(run, saved, given, exp_dir, warn)
    if cfg["epochs"] != saved["epochs"]:
        done = run.pos["epoch"]
        if done >= cfg["epochs"]:
            raise UsageError(f"--epochs {cfg['epochs']}: {exp_dir} has already trained {done} epochs; "
                             f"give --epochs > {done} to train further")
        run.sched.T_max = cfg["epochs"] * run.batches_per_epoch   # stretch the cosine over the new length
        run.opt.lr = run.sched.get_lr()
    for stale in exp_dir.glob(".tmp-*") if writer else ():        # left by a kill during a write
        stale.unlink()
    return run

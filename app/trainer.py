"""The training loop: one run's task, optimizer, schedule, data position and experiment directory.

train.py turns a command line into a configuration and a task (app.tasks: the language model, the
Vision Transformer) and calls this; tests and notebooks can drive a Run directly. The loop knows
nothing of words or images: it asks the task for its batches, its training step, its evaluation
and the metric that picks the best epoch (app.tasks's interface).

A Run is fully described by its arrays (model, optimizer moments, the task's own state such as a
carried LSTM state) and one JSON record (position, metrics, schedule, RNG states); ``state_arrays``
/ ``load_state`` write and read both, so a run restored from state.npz continues bit-identically
(on the CPU).
"""
import json
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from models.checkpoint import (CheckpointError, model_arrays, read_model_file, save_npz_atomic,
                               write_text_atomic)
from mytorch import optim

from .config import build_optimizer
from .step import ONE_PROCESS
from .errors import UsageError
from .progress import Progress, plot_curves


class Run:
    """One training run: model, optimizer, schedule, data, and the experiment directory.

    Everything that changes during training is in ``self.pos`` (epoch, batch, running sums,
    metrics) or in arrays saved by ``state_arrays``, so a run restored from state.npz
    continues exactly where it stopped.
    """

    def __init__(self, cfg, exp_dir, task, comm=ONE_PROCESS):
        self.cfg, self.dir, self.task, self.comm = cfg, Path(exp_dir), task, comm
        task.comm = comm                                 # each rank steps on its share of every batch
        if (task.rows_per_batch or 0) % comm.size:
            raise UsageError(f"--batch_size {cfg['batch_size']} cannot be shared by {comm.size} processes: "
                             f"give a multiple of {comm.size}, or another process count")
        cfg["data_fingerprint"] = task.fingerprint()     # the data's identity: --resume checks it
        self.model, self.loader = task.model, task.loader
        self.batches_per_epoch = len(self.loader)
        if cfg["max_batches"]:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg["max_batches"])
        self.opt = build_optimizer(cfg, self.model)
        total, warmup = cfg["epochs"] * self.batches_per_epoch, cfg.get("lr_warmup", 0)
        if warmup >= total:
            raise UsageError(f"--lr-warmup {warmup}: the run has {total} batches in all ({cfg['epochs']} "
                             f"epochs of {self.batches_per_epoch}); warm up over fewer")
        self.sched = optim.CosineAnnealingLR(self.opt, T_max=total, warmup=warmup)
        self.pos = dict(epoch=0, batch=0, loss_sum=0.0, loss_count=0, best=None, metrics=[],
                        train_seconds=0.0)
        self.stop_signal = None
        self.evaluating = False  # True during the end-of-epoch evaluation (a signal then interrupts it)
        self.saved_at = None     # (epoch, batch) of the state.npz on disk
        self.view = None         # the Progress of train(), while it runs

    # -- persistence -------------------------------------------------------------
    def state_arrays(self):
        """Everything needed to continue, as one dict of arrays (state.npz):

            __format__, __config__, __meta__, param/*   the model (models.checkpoint's layout)
            opt/<buffer>/<i>                            optimizer moments (Adam m, v; SGD momentum)
            the task's own (task.extra_arrays)          e.g. the LM's carried state, carry/<k>/h, c
            __run__    JSON: position (epoch, batch, running loss, metrics, best metric), the flags,
                       optimizer step count and lr, the schedule, the dropout RNG states
        The data order needs no state: the loader rebuilds any epoch from (seed, epoch).
        """
        arrays = model_arrays(self.model, meta=self.task.meta())
        opt_state = self.opt.state_dict()
        for key, bufs in opt_state["buffers"].items():
            for i, b in enumerate(bufs):
                arrays[f"opt/{key}/{i}"] = b
        arrays.update(self.task.extra_arrays())
        rngs = [d.rng.bit_generator.state for d in self.model.drops]
        run = dict(pos=self.pos, cfg=self.cfg, opt_t=opt_state["t"], opt_lr=opt_state["lr"],
                   sched=self.sched.state_dict(), dropout_rngs=rngs)
        arrays["__run__"] = np.frombuffer(json.dumps(run).encode(), dtype=np.uint8)
        return arrays

    def save_state(self):
        """Write state.npz atomically. Returns True, or False (with a message) if it failed."""
        path = self.dir / "state.npz"
        arrays = self.state_arrays()                    # every rank: it gathers a carried state
        self.comm.agree([p for _, p, _ in self.opt.params], "weights")
        if self.comm.rank != 0:                         # only rank 0 writes
            self.saved_at = (self.pos["epoch"], self.pos["batch"])
            return True
        try:
            save_npz_atomic(path, arrays)
        except OSError as err:
            self.say(f"warning: could not write {path} ({err.strerror or err}); {self.last_checkpoint()}",
                     err=True)
            return False
        self.saved_at = (self.pos["epoch"], self.pos["batch"])
        return True

    def last_checkpoint(self):
        """One phrase saying which checkpoint is on disk, for messages."""
        if self.saved_at is None:
            return "no checkpoint has been written yet"
        return f"the previous checkpoint {self.dir / 'state.npz'} ({where(*self.saved_at)}) is intact"

    def load_state(self, arrays, path):
        """Restore everything state_arrays saved (arrays: read_state's first result)."""
        run = run_record(arrays, path)
        config, meta, params = read_model_file(arrays, path)
        self.task.check_meta(meta, path)
        try:
            self.model.load_state_arrays(params)
            buffers = {}
            for key in self.opt.state_dict()["buffers"]:
                n = len([k for k in arrays if k.startswith(f"opt/{key}/")])
                buffers[key] = [arrays[f"opt/{key}/{i}"] for i in range(n)]
            self.opt.load_state_dict(dict(t=run["opt_t"], lr=run["opt_lr"], buffers=buffers))
            self.sched.load_state_dict(run["sched"])
            self.opt.lr = run["opt_lr"]
            if len(run["dropout_rngs"]) != len(self.model.drops):
                raise ValueError(f"{len(run['dropout_rngs'])} dropout RNG states for "
                                 f"{len(self.model.drops)} layers")
            for d, st in zip(self.model.drops, run["dropout_rngs"]):
                d.rng.bit_generator.state = st
            self.task.load_extra(arrays)
            pos = dict(run["pos"])
            if "best_nll" in pos:               # saved before tasks: the language model's best NLL
                pos["best"] = pos.pop("best_nll")
            missing = set(self.pos) - set(pos)
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: unusable training state ({type(err).__name__}: {err})") from None
        self.pos = pos
        self.saved_at = (pos["epoch"], pos["batch"])

    # -- one training step ------------------------------------------------------------
    def train_step(self, x, y):
        """The task's step (forward, backward, clip, optimizer) and one tick of the per-batch schedule."""
        loss, norm = self.task.train_step(self.opt, x, y, self.cfg["clip"])
        if math.isfinite(loss) and math.isfinite(norm):
            self.sched.step()
        return loss, norm

    # -- the loop ---------------------------------------------------------------------
    def train(self, progress=True, log_interval=200):
        """Train to the end of cfg["epochs"] -> None, or the signal number that stopped it (state unsaved).

        progress: tqdm bars when stderr is a terminal; log_interval: a log line every N batches
        where there are no bars (app.progress). A signal (stop_signal set) stops after the current
        batch; during the evaluation the signal handler raises EvaluationInterrupted, which stops
        it at once and leaves the run as at the end of the epoch's training.
        """
        cfg, pos = self.cfg, self.pos
        self.start_ranks()
        evals = [m["eval_seconds"] for m in pos["metrics"] if "eval_seconds" in m]
        done = pos["epoch"] * self.batches_per_epoch + min(pos["batch"], self.batches_per_epoch)
        quiet = self.comm.rank != 0                     # only rank 0 shows progress
        unit = self.task.unit + "/s" + (f" on {self.comm.size} ranks" if self.comm.size > 1 else "")
        self.view = Progress(cfg["epochs"], self.batches_per_epoch, self.task.items_per_batch, done,
                             bars=progress, log_interval=log_interval, quiet=quiet,
                             unit=unit, eval_seconds=evals[-1] if evals else None)
        try:
            return self._train()
        finally:
            self.view.close()
            self.view = None

    def start_ranks(self):
        """Several processes (mytorch.communicator): rank 0's weights on every rank, the same data
        checked, and each rank's dropout its own stream of the run's seed (rank 0 keeps the run's own,
        which state.npz saves). One process: nothing changes."""
        self.comm.broadcast([p for _, p, _ in self.opt.params])
        self.comm.agree([np.frombuffer(self.cfg["data_fingerprint"].encode(), np.uint8)], "training data")
        if self.comm.rank:
            at = (self.cfg["seed"], self.comm.rank, self.pos["epoch"], self.pos["batch"])
            for k, d in enumerate(self.model.drops):
                d.rng.bit_generator.state = np.random.default_rng([*at, k]).bit_generator.state

    def shard(self, x, y):
        """This rank's rows of a batch: x, y (B, ...) -> views of its share (one process: all of them)."""
        rows = self.comm.rows(len(x))
        return x[rows], y[rows]

    def should_stop(self):
        """Whether any rank was sent a signal: every rank then stops after the same batch."""
        if self.comm.sum([self.stop_signal is not None])[0] and self.stop_signal is None:
            self.stop_signal = signal.SIGTERM           # another rank's: mpiexec passes one to all
        return self.stop_signal is not None

    def _train(self):
        cfg, pos = self.cfg, self.pos
        while pos["epoch"] < cfg["epochs"]:
            epoch = pos["epoch"]
            self.loader.set_epoch(epoch)
            self.view.start_epoch(epoch, pos["batch"])
            t_epoch = time.time()
            for x, y in self.loader.batches(pos["batch"]):
                if pos["batch"] >= self.batches_per_epoch:
                    break
                loss, norm = self.train_step(*self.shard(x, y))
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    raise TrainingDiverged(
                        f"non-finite {what} ({loss if what == 'loss' else norm}) at epoch {epoch + 1}, "
                        f"batch {pos['batch'] + 1}: training stopped, nothing saved; "
                        f"{self.last_checkpoint()} (try a lower --lr or a --clip)")
                pos["batch"] += 1
                pos["loss_sum"] += loss
                pos["loss_count"] += 1
                self.view.step(pos["batch"], pos["loss_sum"] / pos["loss_count"], self.opt.lr)
                if self.should_stop():
                    pos["train_seconds"] += time.time() - t_epoch
                    return self.stop_signal
                if pos["batch"] % cfg["save_every"] == 0 and pos["batch"] < self.batches_per_epoch:
                    pos["train_seconds"] += time.time() - t_epoch
                    t_epoch = time.time()
                    self.save_state()
            pos["train_seconds"] += time.time() - t_epoch
            self.view.end_epoch()
            if self.should_stop():              # a signal between the last step and the evaluation
                return self.stop_signal
            try:
                self.end_epoch(epoch)
            except EvaluationInterrupted:       # the run is as at the end of the epoch's training
                self.model.train()
                return self.stop_signal
            if self.should_stop():
                return self.stop_signal
        return None

    def say(self, text, err=False):
        """Print a line (stdout, or stderr for warnings) without breaking the bars; rank 0's only."""
        if self.comm.rank != 0:
            return
        if self.view is not None:
            self.view.write(text, err)
        else:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def end_epoch(self, epoch):
        """Every rank evaluates its share of the epoch (the task splits the work through the
        communicator), rank 0 writes the files; then every rank starts the next epoch together.
        A signal during one process's evaluation interrupts it (EvaluationInterrupted); several
        ranks finish it (a rank leaving the split would leave the others waiting) and stop after."""
        pos, task = self.pos, self.task
        self.evaluate_epoch(epoch)
        pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_count=0, train_seconds=0.0)
        task.end_epoch()
        if self.comm.rank == 0:
            try_write(self.dir / "metrics.jsonl", lambda path: write_text_atomic(
                path, "".join(json.dumps(r) + "\n" for r in pos["metrics"])), self.say)
        self.save_state()
        if self.comm.rank == 0:
            try_write(self.dir / "curves.png", lambda path: plot_curves(pos["metrics"], path, **task.curves),
                      self.say)

    def evaluate_epoch(self, epoch):
        """The task's evaluation of the epoch, on every rank: its metrics row (rank 0's, shared), the
        log lines, best.npz (and epoch-N.npz with --keep-epochs)."""
        pos, task = self.pos, self.task
        try:
            self.evaluating = True
            t0 = time.time()
            ev = task.evaluate(epoch + 1, self.say)
            ev["eval_seconds"] = time.time() - t0
        finally:
            self.evaluating = False
        ev = self.comm.share(ev)
        if self.view is not None:
            self.view.evaluated(ev["eval_seconds"])
        samples = ev.pop("samples", None)
        row = dict(epoch=epoch + 1, train_loss=pos["loss_sum"] / max(pos["loss_count"], 1),
                   lr=self.opt.lr, batches=pos["loss_count"], train_seconds=round(pos["train_seconds"], 2),
                   **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in ev.items()})
        pos["metrics"].append(row)
        self.say(f"| end of epoch {row['epoch']:3d} | train loss {row['train_loss']:.4f} | "
                 f"{task.epoch_scores(row)} | {row['train_seconds']:.0f}s train, "
                 f"{row['eval_seconds']:.0f}s eval")
        if samples:
            self.say(samples.rstrip("\n"))
        value = row[task.metric]
        if pos["best"] is None or (value > pos["best"] if task.higher_is_better else value < pos["best"]):
            pos["best"] = value
            if self.comm.rank == 0:
                try_write(self.dir / "best.npz", lambda path: task.save_best(path, row), self.say)
        keep = self.cfg.get("keep_epochs", 0)
        if keep and self.comm.rank == 0:                 # epoch-N.npz for the last K epochs (app.average)
            try_write(self.dir / f"epoch-{row['epoch']}.npz", lambda path: task.save_best(path, row),
                      self.say)
            for old in self.dir.glob("epoch-*.npz"):     # every older one (K may have shrunk on --resume)
                number = old.stem[len("epoch-"):]
                if number.isdigit() and int(number) <= row["epoch"] - keep:
                    old.unlink(missing_ok=True)


def where(epoch, batch):
    """'epoch 3, batch 40' for pos (epoch=2, batch=40); 'the end of epoch 2' for (2, 0)."""
    return f"the end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"


def try_write(path, write, say=None):
    """write(path); on OSError (full disk, no permission) warn and go on: training outlives a failed write."""
    try:
        write(path)
        return True
    except OSError as err:
        kept = "the previous file is intact" if Path(path).exists() else "it was not written"
        message = f"warning: could not write {path} ({err.strerror or err}); {kept}"
        if say is not None:
            say(message, err=True)
        else:
            print(message, file=sys.stderr, flush=True)
        return False


class TrainingDiverged(Exception):
    pass


class EvaluationInterrupted(Exception):
    """Raised by the trainer's signal handler when a signal arrives during the end-of-epoch evaluation."""


def run_record(arrays, path):
    """The __run__ JSON of a state.npz (see Run.state_arrays)."""
    if "__run__" not in arrays:
        raise CheckpointError(f"{path} is not a training state file (no __run__; a model file such as "
                              "best.npz cannot be resumed)")
    try:
        run = json.loads(bytes(arrays["__run__"]).decode())
        if not isinstance(run, dict) or not isinstance(run.get("cfg"), dict):
            raise ValueError("no configuration")
    except ValueError as err:
        raise CheckpointError(f"{path}: unreadable training state ({err})") from None
    return run

"""The training loop: one run's model, optimizer, schedule, data position and experiment directory.

train.py turns a command line into a configuration and calls this; tests and notebooks can
drive a Run directly. Shapes: B batch, T words per sequence (bptt), V vocabulary.

A Run is fully described by its arrays (model, optimizer moments, the carried LSTM state) and
one JSON record (position, metrics, schedule, RNG states); ``state_arrays`` / ``load_state``
write and read both, so a run restored from state.npz continues bit-identically (on the CPU).

Two ways to batch the training split (cfg["carry"]):

    False  dataset.loader.LanguageModelLoader: shuffled windows of bptt words, each from a zero state
    True   dataset.streams.StreamLoader: batches walking down B contiguous streams with AWD-LSTM's
           random lengths T_k; the final LSTM state of batch k is the initial state of batch k+1
           (a copy, cut from the graph: truncated BPTT), None (zeros) at each epoch start, and the
           step's learning rate is the scheduled one times T_k / bptt (AWD-LSTM), so a short batch
           moves the weights less; the schedule itself is unchanged.
"""
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from dataset.corpus import fingerprint, word_counts
from dataset.loader import LanguageModelLoader
from dataset.streams import StreamLoader
from fixtures import format_generation
from models.checkpoint import (CheckpointError, model_arrays, read_model_file, save_npz_atomic,
                               write_text_atomic)
from mytorch import backend, optim

from .config import build_model, build_optimizer
from .errors import UsageError
from .evaluate import fixture_nll, perplexity, stream_nll
from .progress import Progress, plot_curves
from .step import train_step, train_step_state


class Run:
    """One training run: model, optimizer, schedule, data, and the experiment directory.

    Everything that changes during training is in ``self.pos`` (epoch, batch, running sums,
    metrics) or in arrays saved by ``state_arrays``, so a run restored from state.npz
    continues exactly where it stopped.
    """

    def __init__(self, cfg, exp_dir, data, fixtures):
        self.cfg, self.dir = cfg, Path(exp_dir)
        self.data, self.fx = data, fixtures
        cfg["data_fingerprint"] = fingerprint(data)     # the data's identity: --resume checks it
        V = len(data.vocab)
        self.sos, self.eos = V - 2, V - 1
        self.model = build_model(cfg, V, seed=cfg["seed"])
        self.model.vocab = data.vocab               # so generated samples leave out <unk> too
        self.model.set_word_order(word_counts(data.train, V, self.sos, self.eos))  # adaptive softmax only
        if cfg.get("carry", False):                 # runs saved before --carry existed lack the key
            self.loader = StreamLoader(data.train, cfg["batch_size"], cfg["bptt"], self.sos, self.eos,
                                       seed=cfg["seed"], shuffle=True)
        else:
            self.loader = LanguageModelLoader(data.train, cfg["batch_size"], cfg["bptt"], self.sos, self.eos,
                                              shuffle=True, drop_last=True, seed=cfg["seed"],
                                              sos_first=cfg.get("sos_first", 0.0))
        self.carried = None      # --carry: the state [(h, c)] * L, each (B, H), the next batch starts from
        self.batches_per_epoch = len(self.loader)
        if cfg["max_batches"]:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg["max_batches"])
        self.opt = build_optimizer(cfg, self.model)
        total, warmup = cfg["epochs"] * self.batches_per_epoch, cfg.get("lr_warmup", 0)
        if warmup >= total:
            raise UsageError(f"--lr-warmup {warmup}: the run has {total} batches in all ({cfg['epochs']} "
                             f"epochs of {self.batches_per_epoch}); warm up over fewer")
        self.sched = optim.CosineAnnealingLR(self.opt, T_max=total, warmup=warmup)
        self.pos = dict(epoch=0, batch=0, loss_sum=0.0, loss_count=0, best_nll=None, metrics=[],
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
            carry/<k>/h, carry/<k>/c                    --carry: layer k's state (B, H) the next batch
                                                        starts from (absent when it is zeros)
            __run__    JSON: position (epoch, batch, running loss, metrics, best NLL), the flags,
                       optimizer step count and lr, the schedule, the dropout RNG states
        The data order needs no state: the loader rebuilds any epoch from (seed, epoch).
        """
        arrays = model_arrays(self.model, meta={"vocab_size": len(self.data.vocab)})
        opt_state = self.opt.state_dict()
        for key, bufs in opt_state["buffers"].items():
            for i, b in enumerate(bufs):
                arrays[f"opt/{key}/{i}"] = b
        for k, (h, c) in enumerate(self.carried or []):
            arrays[f"carry/{k}/h"], arrays[f"carry/{k}/c"] = backend.to_numpy(h), backend.to_numpy(c)
        rngs = [d.rng.bit_generator.state for d in self.model.drops]
        run = dict(pos=self.pos, cfg=self.cfg, opt_t=opt_state["t"], opt_lr=opt_state["lr"],
                   sched=self.sched.state_dict(), dropout_rngs=rngs)
        arrays["__run__"] = np.frombuffer(json.dumps(run).encode(), dtype=np.uint8)
        return arrays

    def save_state(self):
        """Write state.npz atomically. Returns True, or False (with a message) if it failed."""
        path = self.dir / "state.npz"
        try:
            save_npz_atomic(path, self.state_arrays())
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
        if meta.get("vocab_size") != len(self.data.vocab):
            raise CheckpointError(f"{path} was trained with a vocabulary of {meta.get('vocab_size')} words "
                                  f"but {self.cfg['data']} has {len(self.data.vocab)}: resume with the "
                                  "--data it was trained on")
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
            carried = self._carried_from(arrays)
            pos = dict(run["pos"])
            missing = set(self.pos) - set(pos)
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: unusable training state ({type(err).__name__}: {err})") from None
        self.pos, self.carried = pos, carried
        self.saved_at = (pos["epoch"], pos["batch"])

    def _carried_from(self, arrays):
        """The carried state saved in arrays (carry/<k>/h, carry/<k>/c), or None; ValueError if it does not
        fit the run (one (B, H_k) pair per layer, and --carry)."""
        n = len([k for k in arrays if k.startswith("carry/") and k.endswith("/h")])
        if n == 0:
            return None
        layers = getattr(self.model, "layers", [])
        if not self.cfg.get("carry", False) or n != len(layers):
            raise ValueError(f"a carried state of {n} layers for a run of {len(layers)} LSTM layers "
                             f"with carry={self.cfg.get('carry', False)}")
        carried = []
        for k, layer in enumerate(layers):
            h, c = arrays[f"carry/{k}/h"], arrays[f"carry/{k}/c"]
            want = (self.cfg["batch_size"], layer.hidden_size)
            if tuple(h.shape) != want or tuple(c.shape) != want:
                raise ValueError(f"carry/{k}: shapes {tuple(h.shape)}, {tuple(c.shape)}, expected {want}")
            carried.append((backend.to_device(h), backend.to_device(c)))
        return carried

    # -- one training step ------------------------------------------------------------
    def train_step(self, x, y):
        """One step (app.step) and one tick of the per-batch cosine schedule.

        With --carry: from the carried state, which becomes this step's final state, at the
        scheduled lr times T / bptt for x, y of shape (B, T); the scheduled lr is restored after.
        """
        if not self.cfg.get("carry", False):
            loss, norm = train_step(self.model, self.opt, x, y, self.cfg["clip"])
        else:
            scheduled = self.opt.lr
            self.opt.lr = scheduled * x.shape[1] / self.cfg["bptt"]
            try:
                loss, norm, self.carried = train_step_state(self.model, self.opt, x, y, self.cfg["clip"],
                                                            self.carried)
            finally:
                self.opt.lr = scheduled
        if math.isfinite(loss) and math.isfinite(norm):
            self.sched.step()
        return loss, norm

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self, epoch):
        model = self.model.eval()
        t0 = time.time()
        val_nll = fixture_nll(model, self.fx["prediction_inp"], self.fx["prediction_out"])
        valid = self.data.valid if not self.cfg["dry_run"] else self.data.valid[:1]
        mean_nll, n_words = stream_nll(model, valid, self.sos, self.eos)
        pred_test = backend.to_numpy(model.predict(self.fx["prediction_test_inp"])).astype(np.float32)
        try_write(self.dir / f"predictions-test-{epoch}.npy", lambda path: np.save(path, pred_test), self.say)
        gen_test = model.generate(self.fx["generation_test"], 10)
        try_write(self.dir / f"generated-texts-test-{epoch}.txt", lambda path: path.write_text(
            format_generation(self.data.vocab, self.fx["generation_test"], gen_test)), self.say)
        gen = model.generate(self.fx["generation"][:3], 10)
        model.train()
        return dict(val_nll=val_nll, valid_nll=mean_nll, valid_ppl=perplexity(mean_nll),
                    valid_words=n_words, eval_seconds=time.time() - t0,
                    samples=format_generation(self.data.vocab, self.fx["generation"][:3], gen))

    # -- the loop ---------------------------------------------------------------------
    def train(self, progress=True, log_interval=200):
        """Train to the end of cfg["epochs"] -> None, or the signal number that stopped it (state unsaved).

        progress: tqdm bars when stderr is a terminal; log_interval: a log line every N batches
        where there are no bars (app.progress). A signal (stop_signal set) stops after the current
        batch; during the evaluation the signal handler raises EvaluationInterrupted, which stops
        it at once and leaves the run as at the end of the epoch's training.
        """
        cfg, pos = self.cfg, self.pos
        evals = [m["eval_seconds"] for m in pos["metrics"] if "eval_seconds" in m]
        done = pos["epoch"] * self.batches_per_epoch + min(pos["batch"], self.batches_per_epoch)
        self.view = Progress(cfg["epochs"], self.batches_per_epoch, cfg["batch_size"] * cfg["bptt"], done,
                             bars=progress, log_interval=log_interval,
                             eval_seconds=evals[-1] if evals else None)
        try:
            return self._train()
        finally:
            self.view.close()
            self.view = None

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
                loss, norm = self.train_step(x, y)
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
                if self.stop_signal is not None:
                    pos["train_seconds"] += time.time() - t_epoch
                    return self.stop_signal
                if pos["batch"] % cfg["save_every"] == 0 and pos["batch"] < self.batches_per_epoch:
                    pos["train_seconds"] += time.time() - t_epoch
                    t_epoch = time.time()
                    self.save_state()
            pos["train_seconds"] += time.time() - t_epoch
            self.view.end_epoch()
            if self.stop_signal is not None:    # a signal between the last step and the evaluation
                return self.stop_signal
            try:
                self.end_epoch(epoch)
            except EvaluationInterrupted:       # the run is as at the end of the epoch's training
                self.model.train()
                return self.stop_signal
            if self.stop_signal is not None:
                return self.stop_signal
        return None

    def say(self, text, err=False):
        """Print a line (stdout, or stderr for warnings) without breaking the progress bars."""
        if self.view is not None:
            self.view.write(text, err)
        else:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def end_epoch(self, epoch):
        pos = self.pos
        try:
            self.evaluating = True
            ev = self.evaluate(epoch + 1)
        finally:
            self.evaluating = False
        if self.view is not None:
            self.view.evaluated(ev["eval_seconds"])
        samples = ev.pop("samples")
        row = dict(epoch=epoch + 1, train_loss=pos["loss_sum"] / max(pos["loss_count"], 1),
                   lr=self.opt.lr, batches=pos["loss_count"], train_seconds=round(pos["train_seconds"], 2),
                   **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in ev.items()})
        pos["metrics"].append(row)
        self.say(f"| end of epoch {epoch + 1:3d} | train loss {row['train_loss']:.4f} | val NLL (fixtures) "
                 f"{row['val_nll']:.4f} | valid ppl {row['valid_ppl']:.2f} "
                 f"| {row['train_seconds']:.0f}s train, {row['eval_seconds']:.0f}s eval")
        self.say(samples.rstrip("\n"))
        if pos["best_nll"] is None or row["val_nll"] < pos["best_nll"]:
            pos["best_nll"] = row["val_nll"]
            try_write(self.dir / "best.npz", lambda path: self.model.save(
                path, meta=dict(vocab_size=len(self.data.vocab), epoch=epoch + 1, val_nll=row["val_nll"]),
                vocab=self.data.vocab), self.say)
        pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_count=0, train_seconds=0.0)
        self.carried = None                     # --carry: each epoch starts from a zero state
        try_write(self.dir / "metrics.jsonl", lambda path: write_text_atomic(
            path, "".join(json.dumps(r) + "\n" for r in pos["metrics"])), self.say)
        self.save_state()
        try_write(self.dir / "curves.png", lambda path: plot_curves(pos["metrics"], path), self.say)


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

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

import numpy as np

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
    p = _Parser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data/hw4p1", help="HW4P1 directory (dataset/ and fixtures/)")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named recipe; flags override it")
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


# ----------------------------------------------------------------------------- the run

class Run:
    """One training run: model, optimizer, schedule, data, and the experiment directory.

    Everything that changes during training is in ``self.pos`` (epoch, batch, running sums,
    metrics) or in arrays saved by ``state_arrays``, so a run restored from state.npz
    continues exactly where it stopped.
    """

    def __init__(self, cfg, exp_dir, data, fixtures):
        from models import LanguageModel
        from mytorch import optim
        from dataset.loader import LanguageModelLoader

        self.cfg, self.dir = cfg, Path(exp_dir)
        self.data, self.fx = data, fixtures
        V = len(data.vocab)
        self.sos, self.eos = V - 2, V - 1
        self.model = LanguageModel(V, cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"],
                                   cfg["dropout"], cfg["dropouth"], seed=cfg["seed"])
        self.loader = LanguageModelLoader(data.train, cfg["batch_size"], cfg["bptt"], self.sos, self.eos,
                                          shuffle=True, drop_last=True, seed=cfg["seed"])
        self.batches_per_epoch = len(self.loader)
        if cfg["max_batches"]:
            self.batches_per_epoch = min(self.batches_per_epoch, cfg["max_batches"])
        opt_cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}[cfg["optimizer"]]
        self.opt = opt_cls(self.model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])
        self.sched = optim.CosineAnnealingLR(self.opt, T_max=cfg["epochs"] * self.batches_per_epoch)
        self.pos = dict(epoch=0, batch=0, loss_sum=0.0, loss_count=0, best_nll=None, metrics=[],
                        train_seconds=0.0)
        self.stop_signal = None
        self.saved_at = None     # (epoch, batch) of the state.npz on disk

    # -- persistence -------------------------------------------------------------
    def state_arrays(self):
        """Everything needed to continue, as one dict of arrays (state.npz):

            __format__, __config__, __meta__, param/*   the model (models.checkpoint's layout)
            opt/<buffer>/<i>                            optimizer moments (Adam m, v; SGD momentum)
            __run__    JSON: position (epoch, batch, running loss, metrics, best NLL), the flags,
                       optimizer step count and lr, the schedule, the dropout RNG states
        The data order needs no state: the loader rebuilds any epoch from (seed, epoch).
        """
        from models.checkpoint import model_arrays
        arrays = model_arrays(self.model, meta={"vocab_size": len(self.data.vocab)})
        opt_state = self.opt.state_dict()
        for key, bufs in opt_state["buffers"].items():
            for i, b in enumerate(bufs):
                arrays[f"opt/{key}/{i}"] = b
        rngs = [d.rng.bit_generator.state for d in self.model.drops]
        run = dict(pos=self.pos, cfg=self.cfg, opt_t=opt_state["t"], opt_lr=opt_state["lr"],
                   sched=self.sched.state_dict(), dropout_rngs=rngs)
        arrays["__run__"] = np.frombuffer(json.dumps(run).encode(), dtype=np.uint8)
        return arrays

    def save_state(self):
        """Write state.npz atomically. Returns True, or False (with a message) if it failed."""
        from models.checkpoint import save_npz_atomic
        path = self.dir / "state.npz"
        try:
            save_npz_atomic(path, self.state_arrays())
        except OSError as err:
            print(f"\nwarning: could not write {path} ({err.strerror or err}); {self.last_checkpoint()}",
                  file=sys.stderr)
            return False
        self.saved_at = (self.pos["epoch"], self.pos["batch"])
        return True

    def last_checkpoint(self):
        """One phrase saying which checkpoint is on disk, for messages."""
        if self.saved_at is None:
            return "no checkpoint has been written yet"
        return f"the previous checkpoint {self.dir / 'state.npz'} ({_where(*self.saved_at)}) is intact"

    def load_state(self, arrays, path):
        """Restore everything state_arrays saved (arrays: read_state's first result)."""
        from models.checkpoint import CheckpointError, read_model_file
        run = _run_record(arrays, path)
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
            pos = dict(run["pos"])
            missing = set(self.pos) - set(pos)
            if missing:
                raise KeyError(", ".join(sorted(missing)))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: unusable training state ({type(err).__name__}: {err})") from None
        self.pos = pos
        self.saved_at = (pos["epoch"], pos["batch"])

    # -- one training step ------------------------------------------------------------
    def train_step(self, x, y):
        """One step (models.step) and one tick of the per-batch cosine schedule."""
        from models.step import train_step
        loss, norm = train_step(self.model, self.opt, x, y, self.cfg["clip"])
        if math.isfinite(loss) and math.isfinite(norm):
            self.sched.step()
        return loss, norm

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self, epoch):
        from fixtures import format_generation
        from models.evaluate import fixture_nll, perplexity, stream_nll
        from mytorch import backend
        model = self.model.eval()
        t0 = time.time()
        val_nll = fixture_nll(model, self.fx["prediction_inp"], self.fx["prediction_out"])
        valid = self.data.valid if not self.cfg["dry_run"] else self.data.valid[:1]
        mean_nll, n_words = stream_nll(model, valid, self.sos, self.eos)
        pred_test = backend.to_numpy(model.predict(self.fx["prediction_test_inp"])).astype(np.float32)
        _try_write(self.dir / f"predictions-test-{epoch}.npy", lambda path: np.save(path, pred_test))
        gen_test = model.generate(self.fx["generation_test"], 10)
        _try_write(self.dir / f"generated-texts-test-{epoch}.txt", lambda path: path.write_text(
            format_generation(self.data.vocab, self.fx["generation_test"], gen_test)))
        gen = model.generate(self.fx["generation"][:3], 10)
        model.train()
        return dict(val_nll=val_nll, valid_nll=mean_nll, valid_ppl=perplexity(mean_nll),
                    valid_words=n_words, eval_seconds=time.time() - t0,
                    samples=format_generation(self.data.vocab, self.fx["generation"][:3], gen))

    # -- the loop ---------------------------------------------------------------------
    def train(self, progress=True):
        cfg, pos = self.cfg, self.pos
        while pos["epoch"] < cfg["epochs"]:
            epoch = pos["epoch"]
            self.loader.set_epoch(epoch)
            bar = Progress(self.batches_per_epoch, cfg["batch_size"] * cfg["bptt"], f"epoch {epoch + 1}",
                           start=pos["batch"], enabled=progress)
            t_epoch = time.time()
            for x, y in self.loader.batches(pos["batch"]):
                if pos["batch"] >= self.batches_per_epoch:
                    break
                loss, norm = self.train_step(x, y)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    bar.close()
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    raise TrainingDiverged(
                        f"non-finite {what} ({loss if what == 'loss' else norm}) at epoch {epoch + 1}, "
                        f"batch {pos['batch'] + 1}: training stopped, nothing saved; "
                        f"{self.last_checkpoint()} (try a lower --lr or a --clip)")
                pos["batch"] += 1
                pos["loss_sum"] += loss
                pos["loss_count"] += 1
                bar.update(pos["loss_sum"] / pos["loss_count"], self.opt.lr)
                if self.stop_signal is not None:
                    pos["train_seconds"] += time.time() - t_epoch
                    bar.close()
                    return self.stop_signal
                if pos["batch"] % cfg["save_every"] == 0 and pos["batch"] < self.batches_per_epoch:
                    pos["train_seconds"] += time.time() - t_epoch
                    t_epoch = time.time()
                    self.save_state()
            bar.close()
            pos["train_seconds"] += time.time() - t_epoch
            self.end_epoch(epoch)
            if self.stop_signal is not None:
                return self.stop_signal
        return None

    def end_epoch(self, epoch):
        from models.checkpoint import write_text_atomic
        pos = self.pos
        ev = self.evaluate(epoch + 1)
        samples = ev.pop("samples")
        row = dict(epoch=epoch + 1, train_loss=pos["loss_sum"] / max(pos["loss_count"], 1),
                   lr=self.opt.lr, batches=pos["loss_count"], train_seconds=round(pos["train_seconds"], 2),
                   **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in ev.items()})
        pos["metrics"].append(row)
        print(f"| epoch {epoch + 1:3d} | train loss {row['train_loss']:.4f} | val NLL (fixtures) "
              f"{row['val_nll']:.4f} | valid ppl {row['valid_ppl']:.2f} | {row['train_seconds']:.0f}s train, "
              f"{row['eval_seconds']:.0f}s eval")
        print(samples, end="")
        if pos["best_nll"] is None or row["val_nll"] < pos["best_nll"]:
            pos["best_nll"] = row["val_nll"]
            _try_write(self.dir / "best.npz", lambda path: self.model.save(
                path, meta=dict(vocab_size=len(self.data.vocab), epoch=epoch + 1, val_nll=row["val_nll"]),
                vocab=self.data.vocab))
        pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_count=0, train_seconds=0.0)
        _try_write(self.dir / "metrics.jsonl", lambda path: write_text_atomic(
            path, "".join(json.dumps(r) + "\n" for r in pos["metrics"])))
        self.save_state()
        _try_write(self.dir / "curves.png", lambda path: plot_curves(pos["metrics"], path))


def _where(epoch, batch):
    """'epoch 3, batch 40' for pos (epoch=2, batch=40); 'the end of epoch 2' for (2, 0)."""
    return f"the end of epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"


def _try_write(path, write):
    """write(path); on OSError (full disk, no permission) warn and go on: training outlives a failed write."""
    try:
        write(path)
        return True
    except OSError as err:
        kept = "the previous file is intact" if Path(path).exists() else "it was not written"
        print(f"\nwarning: could not write {path} ({err.strerror or err}); {kept}", file=sys.stderr)
        return False


class TrainingDiverged(Exception):
    pass


class Progress:
    """A one-line progress bar on stderr: batches, loss, lr, tokens/s and time left."""

    def __init__(self, total, tokens_per_batch, label, start=0, enabled=True):
        self.total, self.tpb, self.label, self.n = total, tokens_per_batch, label, start
        self.start_n, self.t0, self.last = start, time.time(), 0.0
        self.enabled = enabled and sys.stderr.isatty() or os.environ.get("MYTORCH_PROGRESS") == "1"

    def update(self, loss, lr):
        self.n += 1
        now = time.time()
        if not self.enabled or (now - self.last < 0.5 and self.n < self.total):
            return
        self.last = now
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
        left = (self.total - self.n) / max(rate, 1e-9)
        width = 24
        fill = int(width * self.n / max(self.total, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {self.n}/{self.total} "
                         f"loss {loss:.3f} lr {lr:.2e} {rate * self.tpb:,.0f} tok/s "
                         f"{int(left // 60)}:{int(left % 60):02d} left ")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def plot_curves(metrics, path):
    """curves.png: train loss and validation NLL per epoch (skipped quietly without matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train loss (mean over epoch)")
    ax.plot(epochs, [m["val_nll"] for m in metrics], "s-", label="validation NLL (fixtures)")
    ax.plot(epochs, [m["valid_nll"] for m in metrics], "^-", label="validation NLL (whole split)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per word")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point

def _load(cfg):
    from dataset.corpus import load_fixtures, load_hw4p1
    data = load_hw4p1(cfg["data"])
    return data, load_fixtures(cfg["data"], len(data.vocab))


def _run_record(arrays, path):
    """The __run__ JSON of a state.npz (see Run.state_arrays)."""
    from models.checkpoint import CheckpointError
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


# flags that may differ from the saved run on --resume: they change neither the model nor its
# trajectory (epochs stretches the schedule: see resume_config)
RESUME_OVERRIDES = ("epochs", "save_every", "backend", "data")
RESUME_IGNORED = ("resume", "no_progress", "save")


def resume_config(saved, given, exp_dir):
    """The saved run's configuration with the allowed flags of this command line applied.

    A flag that would change the run (--nhid, --lr, --seed, ...) and differs from the saved
    value is a UsageError: the run would no longer be the one that was saved.
    """
    from models.checkpoint import CheckpointError
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
    from models.checkpoint import CheckpointError, load_npz, write_text_atomic
    from mytorch import backend
    args = parse_args(argv)
    state = None
    if args.resume:
        exp_dir = Path(args.resume)
        if not (exp_dir / "state.npz").is_file():
            raise UsageError(f"--resume {exp_dir}: no state.npz there (give the --save directory of a run)")
        try:
            state = load_npz(exp_dir / "state.npz")
            saved_cfg = _run_record(state, exp_dir / "state.npz")["cfg"]
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
    from dataset.corpus import DataError
    from models.checkpoint import CheckpointError
    from mytorch import backend
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
        print(f"resuming {exp_dir} from {_where(run.pos['epoch'], run.pos['batch'])}")

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
            print(f"{name}: stopped at {_where(run.pos['epoch'], run.pos['batch'])}; state saved. "
                  f"Resume with: python train.py --resume {exp_dir}", file=sys.stderr)
        else:
            print(f"{name}: stopped at {_where(run.pos['epoch'], run.pos['batch'])} but could not save; "
                  f"{run.last_checkpoint()}: resume with: python train.py --resume {exp_dir}",
                  file=sys.stderr)
        return 128 + stopped
    best = run.pos["best_nll"]
    print(f"done: best validation NLL {best:.4f}; model in {exp_dir / 'best.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

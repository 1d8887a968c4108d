"""Train the word-level LSTM language model on WikiText-2 (the HW4P1 layout).

    python train.py                                   # the default recipe, into runs/default-<time>
    python train.py --preset notebook                 # the course notebook's configuration
    python train.py --dry-run                         # a few batches of each phase, in seconds
    python train.py --resume runs/default-<time>      # continue an interrupted run

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
                    bptt=20, batch_size=64, lr=2e-3, optimizer="adam", wdecay=0.0, clip=0.5,
                    epochs=7),
    # the course notebook: 128-dim embedding, two 128-unit cells, untied, 10-word windows, Adam, cosine
    "notebook": dict(emsize=128, nhid=128, nlayers=2, tied=False, dropout=0.0, dropouth=0.0,
                     bptt=10, batch_size=32, lr=1e-3, optimizer="adam", wdecay=0.0, clip=0.0,
                     epochs=5),
}
DRY_RUN_BATCHES = 3


class UsageError(Exception):
    """A user's mistake: printed as one line, exit code 2, no traceback."""


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
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
        (cfg["lr"] > 0, f"--lr must be > 0, got {cfg['lr']}"),
        (cfg["batch_size"] >= 1, f"--batch_size must be >= 1, got {cfg['batch_size']}"),
        (cfg["bptt"] >= 1, f"--bptt must be >= 1, got {cfg['bptt']}"),
        (cfg["epochs"] >= 1, f"--epochs must be >= 1, got {cfg['epochs']}"),
        (min(cfg["emsize"], cfg["nhid"], cfg["nlayers"]) >= 1, "--emsize, --nhid and --nlayers must be >= 1"),
        (0 <= cfg["dropout"] < 1, f"--dropout must lie in [0, 1), got {cfg['dropout']}"),
        (0 <= cfg["dropouth"] < 1, f"--dropouth must lie in [0, 1), got {cfg['dropouth']}"),
        (cfg["clip"] >= 0, f"--clip must be >= 0, got {cfg['clip']}"),
        (cfg["wdecay"] >= 0, f"--wdecay must be >= 0, got {cfg['wdecay']}"),
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

    # -- persistence -------------------------------------------------------------
    def state_arrays(self):
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
        try:
            save_npz_atomic(self.dir / "state.npz", self.state_arrays())
            return True
        except OSError as err:
            print(f"\nwarning: could not write {self.dir / 'state.npz'} ({err.strerror or err}); "
                  "the previous checkpoint is intact", file=sys.stderr)
            return False

    def load_state(self, path):
        from models.checkpoint import CheckpointError, load_npz, read_model_file
        arrays = load_npz(path)
        if "__run__" not in arrays:
            raise CheckpointError(f"{path} is not a training state file (no __run__)")
        run = json.loads(bytes(arrays["__run__"]).decode())
        config, meta, params = read_model_file(arrays, path)
        if meta.get("vocab_size") != len(self.data.vocab):
            raise CheckpointError(f"{path} was trained with a vocabulary of {meta.get('vocab_size')} words "
                                  f"but the data has {len(self.data.vocab)}")
        try:
            self.model.load_state_arrays(params)
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None
        buffers = {}
        for key in self.opt.state_dict()["buffers"]:
            n = len([k for k in arrays if k.startswith(f"opt/{key}/")])
            buffers[key] = [arrays[f"opt/{key}/{i}"] for i in range(n)]
        self.opt.load_state_dict(dict(t=run["opt_t"], lr=run["opt_lr"], buffers=buffers))
        self.sched.load_state_dict(run["sched"])
        self.opt.lr = run["opt_lr"]
        for d, st in zip(self.model.drops, run["dropout_rngs"]):
            d.rng.bit_generator.state = st
        self.pos = run["pos"]

    # -- one training step ------------------------------------------------------------
    def train_step(self, x, y):
        from mytorch.nn import CrossEntropyLoss
        from mytorch import backend, optim
        xp = backend.xp()
        model, opt = self.model, self.opt
        model.train()
        model.zero_grad()
        x, y = backend.to_device(x), backend.to_device(y)
        logits, _ = model.forward(x)                                    # (B, T, V)
        B, T, V = logits.shape
        loss_fn = CrossEntropyLoss(inplace=True)                         # logits buffer -> gradient
        loss = loss_fn.forward(logits.reshape(B * T, V), y.reshape(-1))
        model.backward(loss_fn.backward().reshape(B, T, V))
        norm = optim.clip_grad_norm(opt, self.cfg["clip"] or None)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return loss, norm
        opt.step()
        self.sched.step()
        del xp
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
        np.save(self.dir / f"predictions-test-{epoch}.npy", pred_test)
        gen_test = model.generate(self.fx["generation_test"], 10)
        (self.dir / f"generated-texts-test-{epoch}.txt").write_text(
            format_generation(self.data.vocab, self.fx["generation_test"], gen_test))
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
                    raise TrainingDiverged(
                        f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} at epoch "
                        f"{epoch + 1}, batch {pos['batch'] + 1}: training stopped; the last good checkpoint "
                        f"{self.dir / 'state.npz'} is intact (try a lower --lr or a --clip)")
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
            self.model.save(self.dir / "best.npz", meta=dict(vocab_size=len(self.data.vocab), epoch=epoch + 1,
                                                              val_nll=row["val_nll"]),
                            vocab=self.data.vocab)
        pos.update(epoch=epoch + 1, batch=0, loss_sum=0.0, loss_count=0, train_seconds=0.0)
        with open(self.dir / "metrics.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in pos["metrics"])
        self.save_state()
        plot_curves(pos["metrics"], self.dir / "curves.png")


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


def main(argv=None):
    from dataset.corpus import DataError
    from models.checkpoint import CheckpointError
    from mytorch import backend
    args = parse_args(argv)
    try:
        if args.resume:
            exp_dir = Path(args.resume)
            if not (exp_dir / "config.json").is_file() or not (exp_dir / "state.npz").is_file():
                raise UsageError(f"--resume {exp_dir}: no config.json/state.npz there (is it a --save directory?)")
            try:
                cfg = json.loads((exp_dir / "config.json").read_text())
            except (OSError, ValueError) as err:
                raise CheckpointError(f"{exp_dir / 'config.json'} is unreadable ({err})") from None
        else:
            cfg = resolve_config(args)
            exp_dir = Path(args.save or f"runs/{cfg['preset']}-{time.strftime('%Y%m%d-%H%M%S')}")
        backend.set_backend(cfg["backend"])
        data, fixtures = _load(cfg)
        run = Run(cfg, exp_dir, data, fixtures)
        if args.resume:
            run.load_state(exp_dir / "state.npz")
            print(f"resuming {exp_dir} at epoch {run.pos['epoch'] + 1}, batch {run.pos['batch']}")
        else:
            exp_dir.mkdir(parents=True, exist_ok=True)
            (exp_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    except (UsageError, DataError, CheckpointError, backend.BackendError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    n_params = sum(p.size for p in {id(p): p for _, p, _ in run.model.named_parameters()}.values())
    print(f"model: {cfg['nlayers']} x LSTM({cfg['emsize']}->{cfg['nhid']}) tied={cfg['tied']} "
          f"| {n_params / 1e6:.2f}M parameters | {run.batches_per_epoch} batches of "
          f"{cfg['batch_size']}x{cfg['bptt']} per epoch | {cfg['epochs']} epochs -> {exp_dir}")

    def on_signal(signum, frame):
        run.stop_signal = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stopped = run.train(progress=not args.no_progress)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stopped is not None:
        saved = run.save_state()
        name = signal.Signals(stopped).name
        if saved:
            print(f"{name}: stopped at epoch {run.pos['epoch'] + 1}, batch {run.pos['batch']}; state saved. "
                  f"Resume with: python train.py --resume {exp_dir}", file=sys.stderr)
        return 128 + stopped
    best = run.pos["best_nll"]
    print(f"done: best validation NLL {best:.4f}; model in {exp_dir / 'best.npz'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The language-model task: word-level LSTM or Transformer on WikiText-2 (the HW4P1 layout).

Shapes: B batch, T words per sequence (bptt), V vocabulary.

Two ways to batch the training split (cfg["carry"]):

    False  dataset.loader.LanguageModelLoader: shuffled windows of bptt words, each from a zero state
    True   dataset.streams.StreamLoader: batches walking down B contiguous streams with AWD-LSTM's
           random lengths T_k; the final LSTM state of batch k is the initial state of batch k+1
           (a copy, cut from the graph: truncated BPTT), None (zeros) at each epoch start, and the
           step's learning rate is the scheduled one times T_k / bptt (AWD-LSTM), so a short batch
           moves the weights less; the schedule itself is unchanged.

Each epoch is scored by the course's validation NLL on fixtures/prediction.npz (the best epoch's,
lowest, picks best.npz) and perplexity over the whole validation split; the test fixtures'
predictions and continuations are written beside (predictions-test-<epoch>.npy,
generated-texts-test-<epoch>.txt).
"""
import argparse

import numpy as np

from dataset.corpus import fingerprint, load_fixtures, load_hw4p1, word_counts
from dataset.loader import LanguageModelLoader
from dataset.streams import StreamLoader
from fixtures import format_generation
from models.checkpoint import CheckpointError
from mytorch import backend

from ..config import (PRESET_NOTES, PRESETS, add_model_flags, build_model, describe_model,  # noqa: F401
                      describe_presets, preset_for, resolve, validate_run)    # (the task's API: app.tasks)
from ..errors import UsageError
from ..scoring import STREAMS, fixture_nll, perplexity, stream_nll
from ..step import ONE_PROCESS, train_step, train_step_state
from ..trainer import try_write

DEFAULT_PRESET = "default"
DEFAULT_PRESET_HELP = "--model's preset, else default"
DATA_HELP = ("HW4P1 directory, with dataset/ and fixtures/ (default: the bundled WikiText-2, built into a "
             "cache on first use)")
CURVES = dict(left=[("train_loss", "train loss (mean over epoch)"), ("val_nll", "validation NLL (fixtures)"),
                    ("valid_nll", "validation NLL (whole split)")], ylabel="nats per word")


def add_flags(g, preset):
    """The language model's flags on the argument group g (defaults shown from PRESETS[preset])."""
    add_model_flags(g, preset)
    g.add_argument("--sos-first", "--sos_first", dest="sos_first", type=float, metavar="P",
                   help="the probability that a training window's first input is <sos> in place of its "
                        "word, as in the course fixtures (<sos>, then words from inside an article) "
                        f"(default: {PRESETS[preset]['sos_first']})")
    g.add_argument("--carry", action=argparse.BooleanOptionalAction, default=None,
                   help="train on a carried state: contiguous streams, AWD-LSTM's random sequence lengths "
                        "around --bptt, the LSTM state carried between batches, the lr scaled by length / "
                        f"bptt; the LSTM only (default: {PRESETS[preset]['carry']})")


def default_data():
    """dataset.bundled.hw4p1_dir(): the HW4P1 layout built from the bundled WikiText-2 (cached)."""
    try:
        from dataset.bundled import hw4p1_dir
    except ModuleNotFoundError as err:
        if err.name not in ("dataset.bundled", "dataset"):
            raise
        raise UsageError("no --data given and this installation has no bundled WikiText-2 (dataset.bundled): "
                         "give --data DIR, the HW4P1 layout") from None
    return hw4p1_dir(log=lambda msg: print(msg, flush=True))


def open_task(cfg, exp_dir):
    """The Task for cfg, its data loaded; too little data for one batch is a UsageError."""
    data = load_hw4p1(cfg["data"])
    fixtures = load_fixtures(cfg["data"], len(data.vocab))
    try:
        return Task(cfg, exp_dir, data, fixtures)
    except ValueError as err:  # too little data for one batch of --batch_size x --bptt
        reason = " ".join(str(err).split(" (")[0].split())
        raise UsageError(f"{reason} in {cfg['data']}: use a smaller --batch_size or --bptt") from None


class Task:
    """The language model, its batches, its data and fixtures (see app.tasks for the interface)."""

    unit, metric, higher_is_better, metric_name = "tok", "val_nll", False, "validation NLL"
    curves = CURVES
    comm = ONE_PROCESS      # the trainer's communicator (mytorch.communicator): x, y are this rank's rows

    @property
    def rows_per_batch(self):
        """Rows (streams) in every batch, which the ranks must share evenly."""
        return self.cfg["batch_size"]

    def __init__(self, cfg, exp_dir, data, fixtures):
        self.cfg, self.dir, self.data, self.fx = cfg, exp_dir, data, fixtures
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
        self.items_per_batch = cfg["batch_size"] * cfg["bptt"]
        self.carried = None      # --carry: the state [(h, c)] * L, each (B, H), the next batch starts from

    def fingerprint(self):
        return fingerprint(self.data)

    def meta(self):
        return {"vocab_size": len(self.data.vocab)}

    def check_meta(self, meta, path):
        if meta.get("vocab_size") != len(self.data.vocab):
            raise CheckpointError(f"{path} was trained with a vocabulary of {meta.get('vocab_size')} words "
                                  f"but {self.cfg['data']} has {len(self.data.vocab)}: resume with the "
                                  "--data it was trained on")

    def describe(self, batches, n_params):
        return (f"{describe_model(self.cfg)} | {n_params / 1e6:.2f}M parameters | {batches} batches of "
                f"{self.cfg['batch_size']}x{self.cfg['bptt']} per epoch"
                f"{' (lengths about bptt, state carried)' if self.cfg.get('carry') else ''}")

    @staticmethod
    def format_metric(value):
        return f"{value:.4f}"

    # -- state beyond the model: the carried LSTM state ----------------------------------
    def extra_arrays(self):
        """carry/<k>/h, carry/<k>/c: layer k's state (B, H) the next batch starts from (none when zeros);
        with several ranks, every rank's rows gathered (a collective: every rank calls it)."""
        arrays = {}
        for k, (h, c) in enumerate(self.carried or []):
            arrays[f"carry/{k}/h"], arrays[f"carry/{k}/c"] = map(self.comm.gather_rows, (h, c))
        return arrays

    def load_extra(self, arrays):
        """The carried state saved in arrays, or None; ValueError if it does not fit the run (one
        (B, H_k) pair per layer, and --carry)."""
        n = len([k for k in arrays if k.startswith("carry/") and k.endswith("/h")])
        if n == 0:
            self.carried = None
            return
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
            rows = self.comm.rows(want[0])                                             # this rank's streams
            carried.append((backend.to_device(h[rows]), backend.to_device(c[rows])))
        self.carried = carried

    def end_epoch(self):
        self.carried = None                     # --carry: each epoch starts from a zero state

    # -- one training step ------------------------------------------------------------
    def train_step(self, opt, x, y, clip):
        """One step (app.step). With --carry: from the carried state, which becomes this step's final
        state, at the scheduled lr times T / bptt for x, y of shape (B, T); the scheduled lr restored after.
        """
        if not self.cfg.get("carry", False):
            return train_step(self.model, opt, x, y, clip, comm=self.comm, items=len(x))
        scheduled = opt.lr
        opt.lr = scheduled * x.shape[1] / self.cfg["bptt"]
        try:
            loss, norm, self.carried = train_step_state(self.model, opt, x, y, clip, self.carried,
                                                        comm=self.comm, items=len(x))
        finally:
            opt.lr = scheduled
        return loss, norm

    # -- evaluation ---------------------------------------------------------------
    def evaluate(self, epoch, say):
        """The whole validation split read as 32 streams, each rank its share of them; then rank 0
        alone the fixtures (NLL, test predictions) and the generated texts."""
        model = self.model.eval()
        valid = self.data.valid if not self.cfg["dry_run"] else self.data.valid[:1]
        mean_nll, n_words = stream_nll(model, valid, self.sos, self.eos, rows=self.comm.rows(STREAMS))
        total, n_words = self.comm.sum([mean_nll * n_words, n_words])
        if self.comm.rank:
            model.train()
            return {}
        val_nll = fixture_nll(model, self.fx["prediction_inp"], self.fx["prediction_out"])
        pred_test = backend.to_numpy(model.predict(self.fx["prediction_test_inp"])).astype(np.float32)
        try_write(self.dir / f"predictions-test-{epoch}.npy", lambda path: np.save(path, pred_test), say)
        gen_test = model.generate(self.fx["generation_test"], 10)
        try_write(self.dir / f"generated-texts-test-{epoch}.txt", lambda path: path.write_text(
            format_generation(self.data.vocab, self.fx["generation_test"], gen_test)), say)
        gen = model.generate(self.fx["generation"][:3], 10)
        model.train()
        return dict(val_nll=val_nll, valid_nll=total / n_words, valid_ppl=perplexity(total / n_words),
                    valid_words=int(n_words),
                    samples=format_generation(self.data.vocab, self.fx["generation"][:3], gen))

    @staticmethod
    def epoch_scores(row):
        return f"val NLL (fixtures) {row['val_nll']:.4f} | valid ppl {row['valid_ppl']:.2f}"

    def save_best(self, path, row):
        meta = dict(vocab_size=len(self.data.vocab), epoch=row["epoch"], val_nll=row["val_nll"])
        self.model.save(path, meta=meta, vocab=self.data.vocab)

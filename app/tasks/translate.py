"""The translation task: a Transformer encoder-decoder (models.Translator) on German-English pairs.

    python train.py --task translate                     # the preset, de-en, into runs/translate-<time>
    python train.py --task translate --langs en-de       # the course's direction
    python train.py --task translate --data FILE.tsv --langs en-zh     # any `source<TAB>target` file
    python train.py --task translate --dry-run           # a few batches, in seconds

Data (dataset.pairs): the Ding file's aligned sentence pairs, split by a hash of the German side,
plus --phrases x as many of its training phrase pairs, drawn afresh each epoch. One sentencepiece
vocabulary for both languages (--vocab pieces) is trained on the training pairs (sentences and
phrases) when the run starts, written to the run directory (subwords.model, which --resume reads
back) and stored inside every model file. Batches of about --batch_size tokens, of similar lengths.

Each epoch is scored on the validation sentences: the plain NLL per target token, and greedy
decoding's corpus BLEU and chrF (sacreBLEU, its default tokenisation; "zh" for a Chinese target);
the best BLEU picks best.npz. The test sentences are never read here: python -m app.translate
evaluate scores a model on them.
"""
import numpy as np

from dataset import ding, pairs
from dataset.subwords import BOS, Subwords, require
from models import Translator
from models.checkpoint import CheckpointError, write_bytes_atomic
from mytorch import fast

from .. import config
from ..config import OPTIMIZERS
from ..errors import UsageError
from .stateless import StatelessTask
from ..trainer import try_write

DEFAULT_PRESET = "translate"
DEFAULT_PRESET_HELP = "translate"
DATA_HELP = (f"the Ding de-en file (default: {ding.DEFAULT_FILE}, where `apt-get install trans-de-en` puts "
             "it), or a TSV of source<TAB>target pairs")
PRESETS = {
    # the anchor size (d 256, 4 heads, 3 + 3 pre-LN blocks, FFN 1024, tied joint subwords) with the
    # low-resource recipe of Sennrich and Zhang 2019 / Araabi and Monz 2020: a small BPE vocabulary, dropout
    # 0.3, label smoothing 0.1; AdamW 1e-3, 5% warmup then cosine; the sentence pairs alone (measured at
    # the full budget: validation BLEU 7.67 against 6.40 with one phrase pair per sentence per epoch,
    # docs/translation.md), 57 epochs in the 40 epochs' minutes
    "translate": dict(vocab=4000, emsize=256, nhead=4, enc_layers=3, dec_layers=3, d_ff=1024, dropout=0.3,
                      label_smoothing=0.1, tied=True, phrases=0.0, optimizer="adamw", lr=1e-3, wdecay=0.01,
                      clip=1.0, batch_size=4096, epochs=57, lr_warmup=175, langs="de-en"),
}
PRESET_NOTES = {"translate": "the 6.6 M-parameter Transformer (d 256, 3 + 3 blocks) on Ding's sentences"}
FLAGS = ("vocab", "emsize", "nhead", "enc_layers", "dec_layers", "d_ff", "dropout", "label_smoothing", "tied",
         "phrases", "optimizer", "lr", "wdecay", "clip", "batch_size", "epochs", "lr_warmup", "langs")
CURVES = dict(left=[("train_loss", "train loss (label-smoothed)"), ("valid_nll", "validation NLL")],
              ylabel="nats per target token", right=[("valid_bleu", "validation BLEU (greedy)")],
              rlabel="BLEU")
MAX_LEN = 256                # positions: longer training pairs are left out


def add_flags(g, preset):
    """The translation model's flags on the argument group g (defaults shown from PRESETS[preset])."""
    import argparse
    d = PRESETS[preset]
    g.add_argument("--langs", help=f"source-target languages: de-en or en-de for the Ding file; for a "
                                   f"TSV, its columns' (e.g. en-zh: BLEU tokenises Chinese) "
                                   f"(default: {d['langs']})")
    g.add_argument("--vocab", type=int, help=f"subword pieces, one vocabulary for both languages "
                                             f"(default: {d['vocab']})")
    g.add_argument("--emsize", type=int, help=f"d_model (default: {d['emsize']})")
    g.add_argument("--nhead", type=int, help=f"attention heads (default: {d['nhead']})")
    g.add_argument("--enc-layers", "--enc_layers", dest="enc_layers", type=int,
                   help=f"encoder blocks (default: {d['enc_layers']})")
    g.add_argument("--dec-layers", "--dec_layers", dest="dec_layers", type=int,
                   help=f"decoder blocks (default: {d['dec_layers']})")
    g.add_argument("--d-ff", "--d_ff", dest="d_ff", type=int, help=f"MLP width (default: {d['d_ff']})")
    g.add_argument("--dropout", type=float, help=f"dropout everywhere (default: {d['dropout']})")
    g.add_argument("--label-smoothing", "--label_smoothing", dest="label_smoothing", type=float,
                   help=f"label smoothing of the loss (default: {d['label_smoothing']})")
    g.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help=f"the output projection is the embedding (default: {d['tied']})")
    g.add_argument("--phrases", type=float, help=f"phrase pairs per sentence pair each epoch, 0: none "
                                                 f"(default: {d['phrases']})")
    g.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help=f"optimizer (default: {d['optimizer']})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default: {d['lr']})")
    g.add_argument("--wdecay", type=float, help=f"weight decay (default: {d['wdecay']})")
    g.add_argument("--clip", type=float, help=f"global gradient-norm clipping, 0: off (default: {d['clip']})")
    g.add_argument("--batch_size", "--batch-size", "--max-tokens", dest="batch_size", type=int,
                   help=f"tokens per batch (default: {d['batch_size']})")


def preset_for(preset, model=None):
    return preset if preset is not None else DEFAULT_PRESET


def describe_presets():
    return config.describe_presets(PRESETS, PRESET_NOTES, dashed=("enc_layers", "dec_layers", "d_ff",
                                                                  "label_smoothing", "lr_warmup"))


def resolve(preset, args):
    """PRESETS[preset] with every flag of args that is not None applied (a copy)."""
    return config.resolve_preset(PRESETS, FLAGS, preset, args, "translate")


def validate_run(cfg):
    """cfg itself, or UsageError naming the first impossible setting."""
    langs = cfg["langs"].split("-")
    return config.check(cfg, config.run_checks(cfg) + config.optimizer_checks(cfg) + [
        (min(cfg["emsize"], cfg["nhead"], cfg["enc_layers"], cfg["dec_layers"], cfg["d_ff"]) >= 1,
         "--emsize, --nhead, --enc-layers, --dec-layers and --d-ff must be >= 1"),
        (cfg["emsize"] % cfg["nhead"] == 0, f"--emsize ({cfg['emsize']}) must be a multiple of --nhead "
                                            f"({cfg['nhead']})"),
        (cfg["vocab"] >= 16, f"--vocab must be >= 16 pieces, got {cfg['vocab']}"),
        (0 <= cfg["dropout"] < 1, f"--dropout must lie in [0, 1), got {cfg['dropout']}"),
        (0 <= cfg["label_smoothing"] < 1,
         f"--label-smoothing must lie in [0, 1), got {cfg['label_smoothing']}"),
        (cfg["phrases"] >= 0, f"--phrases must be >= 0, got {cfg['phrases']}"),
        (len(langs) == 2 and all(langs),
         f"--langs must be SOURCE-TARGET (de-en, en-zh), got {cfg['langs']!r}"),
    ])


def default_data():
    return ding.DEFAULT_FILE


def load_splits(path, langs):
    """The data's splits in the direction langs names (the Ding file: de-en or en-de); UsageError when the
    file is missing, unreadable or the wrong direction."""
    try:
        path = ding.find_file(path)
        tsv = pairs.is_tsv(path)
        splits = pairs.load(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise UsageError(str(err)) from None
    if not tsv:
        if langs not in ("de-en", "en-de"):
            raise UsageError(f"--langs {langs}: the Ding file translates de-en or en-de")
        if langs == "en-de":
            splits = pairs.reverse(splits)
    return splits


def corpus_scores(hyps, refs, target="en"):
    """(BLEU, chrF) of hypotheses against one reference each: sacreBLEU's corpus scores, its default
    tokenisation ("zh" for a Chinese target)."""
    sacrebleu = require("sacrebleu")
    tokenize = "zh" if target == "zh" else "13a"
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score
    chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
    return float(bleu), float(chrf)


def build_model(cfg, vocab_size, seed):
    source, target = cfg["langs"].split("-")
    return Translator(vocab_size, d_model=cfg["emsize"], nhead=cfg["nhead"], enc_layers=cfg["enc_layers"],
                      dec_layers=cfg["dec_layers"], d_ff=cfg["d_ff"], dropout=cfg["dropout"],
                      tied=cfg["tied"], max_len=MAX_LEN, label_smoothing=cfg["label_smoothing"],
                      source=source, target=target, seed=seed)


def open_task(cfg, exp_dir):
    require("sentencepiece")
    require("sacrebleu")
    return Task(cfg, exp_dir, load_splits(cfg["data"], cfg["langs"]))


class Task(StatelessTask):
    """The translator, its token batches and the validation sentences (see app.tasks for the interface)."""

    unit, metric, higher_is_better, metric_name = "tok", "valid_bleu", True, "validation BLEU (greedy)"
    curves = CURVES
    rows_per_batch = None   # --batch_size counts tokens: any number of ranks shares a batch (by weight)

    def __init__(self, cfg, exp_dir, splits):
        self.cfg, self.dir = cfg, exp_dir
        train = splits["train"]
        self.sentences, self.phrases = train["sentences"], train["phrases"] if cfg["phrases"] > 0 else []
        self.valid = splits["valid"]["sentences"]
        if not self.valid:
            raise UsageError(f"{cfg['data']} leaves no validation sentence pair (the hash puts 4% there): "
                             "give more pairs")
        self.subwords = self._subwords(exp_dir / "subwords.model")
        self.model = build_model(cfg, self.subwords.vocab_size, seed=cfg["seed"])
        self.model.subwords = self.subwords
        self.stepper = fast.batch_split(self.model)
        enc = self._encode(self.sentences)
        self.loader = pairs.TokenBatches(enc, cfg["batch_size"], seed=cfg["seed"],
                                         phrases=self._encode(self.phrases), phrase_ratio=cfg["phrases"])
        self.items_per_batch = self.loader.tokens_per_epoch / len(self.loader)

    def _subwords(self, path):
        """The run's subword model: read back from the run directory, or trained on the training pairs."""
        if path.exists():
            return Subwords(np.fromfile(path, dtype=np.uint8))
        texts = [s for pair in self.sentences + self.phrases for s in pair]
        sp = Subwords.train(texts, self.cfg["vocab"])
        write_bytes_atomic(path, sp.blob.tobytes())      # whole or absent: ranks under mpiexec each write it
        return sp

    def _encode(self, pair_list):
        """[(src, tgt)] -> [(src ids, tgt ids)], pairs longer than the model's positions left out."""
        if not pair_list:
            return []
        src = self.subwords.encode([a for a, _ in pair_list])
        tgt = self.subwords.encode([b for _, b in pair_list])
        return [(a, b) for a, b in zip(src, tgt) if max(len(a), len(b)) + 2 <= MAX_LEN]

    def fingerprint(self):
        return pairs.fingerprint(self.sentences) + "-" + pairs.fingerprint(self.phrases)

    def meta(self):
        return {"vocab_size": self.model.vocab_size, "langs": self.cfg["langs"]}

    def check_meta(self, meta, path):
        if meta.get("vocab_size") != self.model.vocab_size:
            raise CheckpointError(f"{path} has {meta.get('vocab_size')} subwords, not "
                                  f"{self.model.vocab_size}")

    def describe(self, batches, n_params):
        return (f"Translator {self.cfg['langs']} (d_model {self.cfg['emsize']}, {self.cfg['enc_layers']} + "
                f"{self.cfg['dec_layers']} blocks, FFN {self.cfg['d_ff']}, {self.model.vocab_size} subwords) "
                f"| "
                f"{n_params / 1e6:.2f}M parameters | {len(self.sentences)} sentence pairs"
                f"{f' + {self.loader.n_phrases} phrase pairs' if self.loader.n_phrases else ''} an epoch in "
                f"{batches} batches of ~{self.items_per_batch:.0f} tokens")

    @staticmethod
    def format_metric(value):
        return f"{value:.2f}"

    def evaluate(self, epoch, say):
        """NLL per target token, and greedy BLEU / chrF, on the validation sentences (64 in a dry run);
        each rank reads and translates its share, rank 0 scores them all."""
        valid = self.valid[:64] if self.cfg["dry_run"] else self.valid
        mine = valid[self.comm.rows(len(valid))]
        enc = self._encode(mine)
        nll = count = 0
        for k in range(0, len(enc), 128):
            x = pairs.pad_rows([a for a, _ in enc[k:k + 128]])
            y = pairs.pad_rows([b for _, b in enc[k:k + 128]], first=BOS)
            s, c = self.model.nll(x, y)
            nll, count = nll + s, count + c
        nll, count = self.comm.sum([nll, count])
        hyps = self.comm.gather(self.model.translate([a for a, _ in mine], beams=1) if mine else [])
        if self.comm.rank:
            return {}
        hyps = [h for share in hyps for h in share]
        bleu, chrf = corpus_scores(hyps, [b for _, b in valid], self.model.target)
        try_write(self.dir / f"valid-translations-{epoch}.txt",
                  lambda path: path.write_text("".join(f"{h}\n" for h in hyps), encoding="utf-8"), say)
        samples = "\n".join(f"  {src}\n    -> {hyp}\n    ref {ref}"
                            for (src, ref), hyp in zip(valid[:3], hyps))
        return dict(valid_nll=nll / max(count, 1), valid_bleu=bleu, valid_chrf=chrf,
                    valid_sentences=len(valid), samples=samples)

    @staticmethod
    def epoch_scores(row):
        return (f"valid NLL {row['valid_nll']:.3f} | valid BLEU {row['valid_bleu']:.2f} | "
                f"chrF {row['valid_chrf']:.1f}")

    def save_best(self, path, row):
        self.model.save(path, meta=dict(vocab_size=self.model.vocab_size, langs=self.cfg["langs"],
                                        epoch=row["epoch"], valid_bleu=row["valid_bleu"],
                                        valid_chrf=row["valid_chrf"], valid_nll=row["valid_nll"]))

"""The BLEU anchor: the same encoder-decoder in torch.nn, trained for the same minutes on the same batches.

    python -m bench.translate_anchor --minutes 55 --data ../shared/data/ding/de-en

What is the same as `python train.py --task translate` (app.tasks.translate): the model's sizes
(bench.torch_translate), the split, the subword vocabulary (trained the same way on the same pairs),
the batches and their order (dataset.pairs.TokenBatches, the same seed), AdamW with the preset's
learning rate, weight decay, clipping, label smoothing and linear warmup over --lr-warmup batches. The
schedule differs only where a time budget must: after the warmup the learning rate follows the cosine
over the *minutes*, and training stops when they are spent. Then greedy decoding (as the issue's anchor)
scores the validation and test sentences with sacreBLEU. torch.set_num_threads(--threads).

The last line is one JSON object (minutes, epochs, tokens_per_s, valid/test BLEU and chrF, processor).
"""
import json
import os
import sys
import tempfile
from pathlib import Path

from .config import Parser, UsageError  # noqa: F401  (puts the repository root on sys.path)

from app.tasks import translate as task  # noqa: E402
from dataset import pairs  # noqa: E402

from . import torch_translate  # noqa: E402
from .timing import processor_name, train_for  # noqa: E402


def parse_args(argv=None):
    p = Parser(prog="python -m bench.translate_anchor", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="training budget in minutes")
    p.add_argument("--data", help="the Ding de-en file or a TSV (default: /usr/share/trans/de-en)")
    p.add_argument("--preset", default="translate", choices=sorted(task.PRESETS), help="the recipe")
    p.add_argument("--langs", help="source-target (default: the preset's)")
    p.add_argument("--phrases", type=float, help="phrase pairs per sentence pair (default: the preset's)")
    p.add_argument("--seed", type=int, default=1111, help="the batches' seed (train.py's default)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--log-every", type=int, default=100, metavar="N", help="a line every N batches")
    return p.parse_args(argv)


def scores(model, sp, pairs_, target):
    hyps = []
    enc = sp.encode([s for s, _ in pairs_])
    for k in range(0, len(enc), 64):
        rows = enc[k:k + 64]
        hyps += torch_translate.greedy(model, pairs.pad_rows(rows))
    return task.corpus_scores(sp.decode(hyps), [r for _, r in pairs_], target)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("error: the anchor needs PyTorch: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = dict(task.PRESETS[args.preset])
    cfg.update({k: getattr(args, k) for k in ("langs", "phrases") if getattr(args, k) is not None})
    cfg.update(seed=args.seed, data=args.data, dry_run=False)
    splits = task.load_splits(args.data, cfg["langs"])
    with tempfile.TemporaryDirectory() as tmp:
        data = task.Task(cfg, Path(tmp), splits)            # the run's subwords and batches
    sp, loader = data.subwords, data.loader
    model = torch_translate.build(cfg, sp.vocab_size, seed=args.seed)
    opt = torch_translate.optimizer(model, cfg)
    step, tokens, trained = train_for(args.minutes, loader, opt, cfg["lr"], cfg["lr_warmup"],
                                      lambda x, y: torch_translate.step(model, opt, x, y, cfg),
                                      lambda y: int((y[:, 1:] != 0).sum()), args.log_every, "tok")
    target = cfg["langs"].split("-")[1]
    valid = scores(model, sp, splits["valid"]["sentences"], target)
    test = scores(model, sp, splits["test"]["sentences"], target)
    epochs = step / len(loader)
    rate = tokens / trained
    print(f"torch.nn translator after {args.minutes:g} minutes ({epochs:.1f} epochs, {rate:,.0f} target "
          f"tok/s), greedy: validation BLEU {valid[0]:.2f} chrF {valid[1]:.2f}, test BLEU {test[0]:.2f} "
          f"chrF {test[1]:.2f}")
    print(json.dumps(dict(minutes=args.minutes, epochs=round(epochs, 2), tokens_per_s=round(rate, 1),
                          valid_bleu=valid[0], valid_chrf=valid[1], test_bleu=test[0], test_chrf=test[1],
                          torch=torch.__version__, processor=processor_name(), threads=args.threads,
                          preset=args.preset, langs=cfg["langs"], phrases=cfg["phrases"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Use a trained translator: score it on a split (sacreBLEU), or translate sentences.

    python -m app.translate evaluate --checkpoint checkpoints/translate-de-en.npz          # the test split
    python -m app.translate evaluate --checkpoint M.npz --split valid --beams 1          # greedy, validation
    python -m app.translate translate --checkpoint M.npz "Sie stellte die Pfanne auf den Herd."
    echo "Wie spät ist es?" | python -m app.translate translate --checkpoint M.npz       # lines of stdin
    python -m app.translate export runs/translate-<time>/best.npz --out checkpoints/translate-de-en

(`mytorch-translate` once the package is installed.) evaluate reads the split the model was trained
with (dataset.pairs: the same hash cut of the same file, --data as at training), translates every
source sentence with beam search (--beams, --alpha: length penalty, --no-repeat) and prints corpus BLEU and
chrF (sacreBLEU, its default 13a tokenisation; "zh" for a Chinese target) and a few examples;
--out FILE writes every translation, one a line; --pictures DIR the cross-attention picture. export
writes P.npz and P.json, its card: the validation and test scores of the file as written, and the
hypotheses' BLEU on the first TEST_SLICE test sentences, which tests/test_translate_reference.py
recomputes.
"""
import sys
import time
from pathlib import Path

from .errors import Parser, UsageError, command, prog
from .tasks.translate import corpus_scores, load_splits

TEST_SLICE = 100


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.translate"), description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{evaluate,translate,export}")
    e = sub.add_parser("evaluate", help="BLEU and chrF on a split of the training data's file")
    t = sub.add_parser("translate", help="translate sentences (arguments, or lines of stdin)")
    x = sub.add_parser("export", help="publish a trained translator: P.npz and its card P.json")
    x.add_argument("model", help="the model file of a run (runs/translate-<time>/best.npz)")
    x.add_argument("--out", required=True, metavar="P", help="the prefix of P.npz and P.json")
    x.add_argument("--float16", action="store_true", help="store the weights as float16")
    for q in (e, t):
        q.add_argument("--checkpoint", required=True, help="a translator model file")
    for q in (e, t, x):
        q.add_argument("--beams", type=int, default=4, help="beam size, 1: greedy")
        q.add_argument("--alpha", type=float, default=1.0, help="length penalty ((5 + L) / 6) ** alpha")
        q.add_argument("--no-repeat", type=int, default=3, metavar="N",
                       help="never repeat an N-gram within a translation, 0: off")
    for q in (e, x):
        q.add_argument("--data", help="the file the model was trained on (default: the Ding de-en file)")
    e.add_argument("--split", choices=("test", "valid"), default="test")
    e.add_argument("--limit", type=int, help="score only the first N sentence pairs of the split")
    e.add_argument("--out", metavar="FILE", help="write every translation there, one a line")
    e.add_argument("--pictures", metavar="DIR", help="also write attention.png: the cross-attention of the "
                                                     "first three sentences")
    t.add_argument("sentences", nargs="*", help="sentences to translate (none: read stdin, one a line)")
    return p.parse_args(argv)


def load_translator(path):
    from models import load
    model = load(path)
    if model.config.get("model") != "translator":
        raise UsageError(f"{path} holds a {model.config.get('model', 'lstm')} model, not a translator "
                         "(python train.py --task translate trains one)")
    if model.subwords is None:
        raise UsageError(f"{path} has no subword model inside it")
    return model


def split_pairs(model, data, split):
    """The (source, reference) sentence pairs of a split, in the model's direction."""
    return load_splits(data, f"{model.source}-{model.target}")[split]["sentences"]


def check_search(beams, no_repeat):
    if beams < 1 or no_repeat < 0:
        raise UsageError(f"--beams must be >= 1 and --no-repeat >= 0, got {beams} and {no_repeat}")


def score(model, pairs_, beams, alpha, no_repeat):
    """(hypotheses, BLEU, chrF, seconds) of translating the pairs' sources."""
    check_search(beams, no_repeat)
    t0 = time.time()
    hyps = model.translate([s for s, _ in pairs_], beams=beams, alpha=alpha, no_repeat=no_repeat)
    seconds = time.time() - t0
    bleu, chrf = corpus_scores(hyps, [r for _, r in pairs_], model.target)
    return hyps, bleu, chrf, seconds


def evaluate(args):
    model = load_translator(args.checkpoint)
    pairs_ = split_pairs(model, args.data, args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        pairs_ = pairs_[:args.limit]
    hyps, bleu, chrf, seconds = score(model, pairs_, args.beams, args.alpha, args.no_repeat)
    search = "greedy" if args.beams == 1 else f"beam {args.beams}, alpha {args.alpha}"
    search += f", no repeated {args.no_repeat}-grams" if args.no_repeat else ""
    print(f"{args.checkpoint} on the {args.split} split ({len(pairs_)} sentence pairs, "
          f"{model.source}-{model.target}, {search}): BLEU {bleu:.2f} | chrF {chrf:.2f} | "
          f"{len(pairs_) / seconds:.1f} sentences/s")
    for (src, ref), hyp in list(zip(pairs_, hyps))[:5]:
        print(f"  {src}\n    -> {hyp}\n    ref {ref}")
    if args.out:
        Path(args.out).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        print(f"wrote {args.out}")
    if args.pictures:
        from .translate_pictures import attention_png
        out = Path(args.pictures)
        out.mkdir(parents=True, exist_ok=True)
        attention_png([model.cross_attention(s, h) for (s, _), h in list(zip(pairs_, hyps))[:3]],
                      out / "attention.png")
        print(f"wrote {out / 'attention.png'}")
    return 0


def translate(args):
    model = load_translator(args.checkpoint)
    check_search(args.beams, args.no_repeat)
    sentences = args.sentences or [line.strip() for line in sys.stdin if line.strip()]
    try:
        for out in model.translate(sentences, beams=args.beams, alpha=args.alpha, no_repeat=args.no_repeat):
            print(out)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return 0


def export(args):
    """P.npz, and P.json with the scores of the file as written (validation, test, the test slice)."""
    import json
    model = load_translator(args.model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_name(out.name + ".npz")
    model.save(path, float16=args.float16, meta=model.meta)
    model = load_translator(path)
    card = {"source": str(args.model), "config": model.config, "meta": model.meta,
            "storage": "float16" if args.float16 else "float32", "beams": args.beams, "alpha": args.alpha,
            "no_repeat": args.no_repeat}
    for name in ("valid", "test"):
        pairs_ = split_pairs(model, args.data, name)
        hyps, bleu, chrf, _ = score(model, pairs_, args.beams, args.alpha, args.no_repeat)
        card[f"{name}_bleu"], card[f"{name}_chrf"], card[f"{name}_sentences"] = bleu, chrf, len(pairs_)
        if name == "test":
            refs = [r for _, r in pairs_[:TEST_SLICE]]
            card["test_slice"] = {"sentences": TEST_SLICE,
                                  "bleu": corpus_scores(hyps[:TEST_SLICE], refs, model.target)[0]}
    out.with_name(out.name + ".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {path} and {out}.json: validation BLEU {card['valid_bleu']:.2f}, test BLEU "
          f"{card['test_bleu']:.2f}, chrF {card['test_chrf']:.2f}")
    return 0


def run(args):
    return {"evaluate": evaluate, "translate": translate, "export": export}[args.command](args)


def main(argv=None):
    return command(parse_args, run, argv, also=(ImportError,))


if __name__ == "__main__":
    sys.exit(main())

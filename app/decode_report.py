"""How well each decoding strategy's continuations read, beside the true continuations.

    python -m app.decode_report --checkpoint checkpoints/reference.npz --data ../shared/data/hw4p1 \
        --out runs/decode-reference

For the prompts of a generation fixtures file (default DATA/fixtures/generation_test.npy) each
strategy continues every row by --words words; the continuations are written in the course's
`Input | Output #i:` format (OUT/<strategy>.txt) and measured:

    distinct-1, distinct-2   distinct n-grams / all n-grams over every continuation
    rows repeating a 4-gram  how many continuations hold some 4-gram twice
    <unk> share              fraction of the continuation words that are <unk>
    oracle ppl               perplexity of the continuations under a Kneser-Ney 4-gram model of the
                             training split (models.ngram; built once, saved as DATA/kn4-oracle.npz)

The same strategies also continue held-out prompts cut from the validation split by the fixture
maker (fixtures.make.draw_windows, --heldout-seed), whose true continuations are known: the row
"true text" is how real WikiText-2 reads by these measures; "/ true text's" divides each
strategy's oracle perplexity on the fixtures by the true text's, and the last column is the
strategy's own on the held-out prompts. Shapes: N rows, L prompt words (<sos> first), K words.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

from .predict import add_weights_argument, load_checkpoints

# name: decoding options (every one spelled out, so a row never changes with the defaults)
STRATEGIES = {
    "greedy": dict(temperature=0.0, top_p=None, no_repeat_ngram=0, ban_special=False),
    "greedy, no <unk>, no repeated 3-gram": dict(temperature=0.0, top_p=None, no_repeat_ngram=3),
    "beam 5, no repeated 3-gram": dict(num_beams=5, no_repeat_ngram=3, length_penalty=1.0),
    "sampling T=1": dict(temperature=1.0, top_p=None, no_repeat_ngram=0, ban_special=False),
    "top-k 40": dict(temperature=1.0, top_k=40, top_p=None, no_repeat_ngram=0),
    "top-p 0.9": dict(temperature=1.0, top_p=0.9, no_repeat_ngram=0),
    "top-p 0.9, T=0.7, repetition penalty 1.2":
        dict(temperature=0.7, top_p=0.9, no_repeat_ngram=3, repetition_penalty=1.2),
    "default: top-p 0.85, no repeated 4-gram": dict(),
}
COMMON = dict(seed=0)          # every strategy is seeded


def measure(oracle, prefixes, outputs, unk_id):
    """The figures of continuations (N, K) of prefixes (N, L)."""
    from fixtures.text_metrics import distinct, repeating_rows, share
    return {"distinct_1": distinct(outputs, 1), "distinct_2": distinct(outputs, 2),
            "repeating_4gram_rows": repeating_rows(outputs, 4),
            "unk_share": share(outputs, unk_id) if unk_id is not None else 0.0,
            "oracle_ppl": oracle.perplexity(prefixes, outputs)}


def heldout(valid, sos_id, rows, prompt_words, words, seed):
    """(prefixes (rows, 1 + prompt_words) with <sos> first, true continuations (rows, words))."""
    from fixtures.make import draw_windows
    win = draw_windows(valid, rows, prompt_words + words, np.random.default_rng(seed))
    return np.concatenate([np.full((rows, 1), sos_id), win[:, :prompt_words]], axis=1), win[:, prompt_words:]


def report(model, vocab, oracle, prompts, valid, words=10, heldout_seed=0, out_dir=None, strategies=None,
           log=print):
    """{strategy: figures} for every strategy, plus "true text"; writes OUT/<strategy>.txt when out_dir."""
    from fixtures import format_generation
    from models.decoding import Decoding
    unk = vocab.index.get("<unk>")
    pre, truth = heldout(valid, vocab.sos_id, len(prompts), prompts.shape[1] - 1, words, heldout_seed)
    true_fig = measure(oracle, pre, truth, unk)
    results = {}
    for name, options in (strategies or STRATEGIES).items():
        options = {**COMMON, **options}
        out = model.generate(prompts, words, **options)
        fig = measure(oracle, prompts, out, unk)
        fig["ppl_ratio"] = fig["oracle_ppl"] / true_fig["oracle_ppl"]
        fig["heldout_oracle_ppl"] = oracle.perplexity(pre, model.generate(pre, words, **options))
        fig["options"] = Decoding.of(**options).describe()
        fig["examples"] = [vocab.decode(row) for row in out[:3]]
        results[name] = fig
        if out_dir is not None:
            slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")
            (Path(out_dir) / f"{slug}.txt").write_text(format_generation(vocab, prompts, out))
        log(f"{name}: distinct-2 {fig['distinct_2']:.3f}, oracle ppl {fig['oracle_ppl']:.1f}")
    true_fig.update(ppl_ratio=1.0, heldout_oracle_ppl=true_fig["oracle_ppl"], options="-",
                    examples=[vocab.decode(row) for row in truth[:3]])
    results["true text (held-out)"] = true_fig
    return results


def markdown(results):
    """The results as a Markdown table (one row per strategy)."""
    lines = ["| strategy | distinct-1 | distinct-2 | rows repeating a 4-gram | `<unk>` share | oracle ppl "
             "| / true text's | oracle ppl, held-out prompts |", "|---|---|---|---|---|---|---|---|"]
    for name, f in results.items():
        lines.append(f"| {name} | {f['distinct_1']:.3f} | {f['distinct_2']:.3f} "
                     f"| {f['repeating_4gram_rows']} "
                     f"| {f['unk_share']:.3f} | {f['oracle_ppl']:.1f} | {f['ppl_ratio']:.2f} "
                     f"| {f['heldout_oracle_ppl']:.1f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    from .errors import Parser, prog
    p = Parser(prog=prog("python -m app.decode_report"), description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="MODEL",
                   help="model file (e.g. checkpoints/reference.npz); several: their ensemble "
                        "(probabilities averaged)")
    add_weights_argument(p)
    p.add_argument("--data", default="../shared/data/hw4p1", help="HW4P1 directory (vocabulary, splits)")
    p.add_argument("--fixtures",
                   help="generation prompts (N, L) .npy; default DATA/fixtures/generation_test.npy")
    p.add_argument("--words", type=int, default=10, help="words to generate per row")
    p.add_argument("--oracle",
                   help="the 4-gram oracle file (built there if missing); default DATA/kn4-oracle.npz")
    p.add_argument("--heldout-seed", type=int, default=0, help="seed of the held-out prompts")
    p.add_argument("--out", help="folder for the continuations, report.json and report.md")
    return p.parse_args(argv)


def run(args):
    from dataset.corpus import DataError, Vocabulary, load_hw4p1, _np_load
    from models.ngram import load_or_build, training_stream
    from .errors import UsageError
    if args.words < 1:
        raise UsageError(f"--words must be >= 1, got {args.words}")
    model = load_checkpoints(args).eval()
    data = load_hw4p1(args.data)
    if len(data.vocab) != model.vocab_size:
        raise DataError(f"{args.data} has {len(data.vocab)} words but the model predicts {model.vocab_size}")
    vocab = Vocabulary(data.vocab)
    prompts = _np_load(args.fixtures or Path(args.data) / "fixtures" / "generation_test.npy")
    if (prompts.ndim != 2 or prompts.dtype.kind not in "iu" or not prompts.size
            or prompts.min() < 0 or prompts.max() >= len(vocab)):
        raise DataError(f"{args.fixtures}: expected (N, L) word ids in [0, {len(vocab)}), "
                        f"got {prompts.dtype} {prompts.shape}")
    log = lambda msg: print(msg, file=sys.stderr)                        # noqa: E731
    path, start = args.oracle or Path(args.data) / "kn4-oracle.npz", time.perf_counter()
    oracle = load_or_build(path, data.train, len(vocab), vocab.sos_id, vocab.eos_id, log=log)
    valid = training_stream(data.valid, vocab.sos_id, vocab.eos_id)
    ppl = oracle.perplexity(valid[None, :oracle.order - 1], valid[None, oracle.order - 1:])
    log(f"oracle {path}: ready in {time.perf_counter() - start:.2f} s; validation-split perplexity {ppl:.1f}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    results = report(model, vocab, oracle, prompts.astype(np.int64), data.valid, args.words,
                     args.heldout_seed, args.out, log=log)
    table = markdown(results)
    print(table, end="")
    if args.out:
        (Path(args.out) / "report.md").write_text(table)
        (Path(args.out) / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def main(argv=None):
    from .errors import command
    return command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())

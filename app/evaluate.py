"""Scoring a language model: the course's fixture NLL, perplexity over a whole split, and the
fixtures' task on many rows drawn from the split (a fixture NLL with a smaller standard error).

    python -m app.evaluate --checkpoint checkpoints/reference.npz [MORE.npz ...] --data ../shared/data/hw4p1
                           [--windows N]
    python -m app.evaluate --checkpoint A.npz B.npz --data ... --ensemble --cache --dynamic

The measures live in app.scoring; --ensemble, --cache and --dynamic turn the command into the
adaptation report (app.adapt_report, docs/adaptation.md). Shapes: B batch (streams), T time,
V vocabulary.
"""
import math
import sys
import time

from .adapt_report import add_ngram_argument, fixture_report, ngram_member, stream_table
from .errors import Parser, UsageError, command, prog
from .scoring import (PROMPT, WINDOWS, fixture_nll, fixture_nlls, perplexity,  # noqa: F401  (where callers
                      stream_nll, window_nll, window_rows)                      # found them)


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.evaluate"), description=main.__doc__)
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="MODEL",
                   help="model file(s) (e.g. checkpoints/reference.npz); with several, each is scored and "
                        "compared with the first on the same fixture-shaped rows")
    p.add_argument("--data", required=True, help="HW4P1 data directory (dataset/ and fixtures/)")
    p.add_argument("--windows", type=int, default=None, metavar="N",
                   help="also score N fixture-shaped rows (<sos> + 20 words) drawn from the validation "
                        "split, the same rows for every model (default: 4096, or all the split has "
                        "if fewer; 0: skip)")
    a = p.add_argument_group("adapting while reading (app.adapt): each flag adds rows or a column to a table")
    a.add_argument("--ensemble", nargs="*", type=float, metavar="W",
                   help="mix the checkpoints in probability space, with these weights or (none given) "
                        "weights "
                        "fitted by EM on held-out validation text; also scores the mixture on the fixtures")
    add_ngram_argument(a, "with --ensemble")
    a.add_argument("--cache", nargs="?", type=int, const=2000, metavar="L",
                   help="the neural cache (Grave et al. 2017) over the last L positions (default L: 2000)")
    a.add_argument("--cache-theta", nargs="+", type=float, default=[0.3, 1.0, 2.0, 4.0], metavar="THETA",
                   help="the cache's flatness theta: one, or several to choose from (default: 0.3 1 2 4)")
    a.add_argument("--cache-lambda", nargs="+", type=float, default=[0.05, 0.1, 0.15, 0.2, 0.3],
                   metavar="LAMBDA", help="the cache's weight in the mixture: one, or several to choose from")
    a.add_argument("--dynamic", action="store_true",
                   help="dynamic evaluation (Krause et al. 2018): one SGD step on each chunk after "
                        "scoring it")
    a.add_argument("--dynamic-lr", nargs="+", type=float, action="append", metavar="LR",
                   help="its learning rate: one, or several to choose from (default: 3 10); given once per "
                        "checkpoint, each its own (an LSTM and a Transformer differ by 100x)")
    a.add_argument("--dynamic-decay", type=float, default=0.0,
                   help="pull towards the trained weights each step, theta += decay (theta_0 - theta) "
                        "(default: 0)")
    a.add_argument("--streams", type=int, default=32, help="streams the split is read in (default: 32)")
    a.add_argument("--chunk", type=int, default=35, help="words read at a time (default: 35; a Transformer: "
                                                         "at most half its context)")
    a.add_argument("--fixtures-only", action="store_true",
                   help="only the fixtures' part of the report (each row adapted to its own words with "
                        "--dynamic or --cache; with --ensemble it follows the whole-split table anyway)")
    a.add_argument("--write-predictions", metavar="FILE.npy",
                   help="with --ensemble or --dynamic: save the (128, V) scores of the test fixtures")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # the command, for the predictions' card
    return args


def check_adaptation(args):
    """A UsageError for adaptation flags that cannot work together or have impossible values."""
    k = len(args.checkpoint)
    members = k + (args.ngram is not None)
    if args.ngram is not None and args.ensemble is None:
        raise UsageError(f"--ngram {args.ngram}: an n-gram member of an ensemble: add --ensemble")
    if args.ensemble is not None and (members < 2 or (args.ensemble and len(args.ensemble) != members)):
        raise UsageError(f"--ensemble needs at least 2 members and, if weights are given, one per member "
                         f"({k} checkpoints{' and the n-gram' if members > k else ''}, "
                         f"{len(args.ensemble)} weights)")
    if args.write_predictions and args.ensemble is None and not args.fixtures_only:
        raise UsageError("--write-predictions writes the fixtures' scores: add --ensemble or --fixtures-only")
    if args.dynamic_lr and len(args.dynamic_lr) not in (1, k):
        raise UsageError(f"--dynamic-lr: give it once (for every checkpoint) or once per checkpoint ({k}), "
                         f"not {len(args.dynamic_lr)} times")
    lrs = [v for grid in args.dynamic_lr or [] for v in grid]
    limits = (("--cache-theta", args.cache_theta, 0.0), ("--dynamic-lr", lrs, 1e-300))
    bad = [(flag, v) for flag, values, low in limits
           for v in values if not (math.isfinite(v) and v >= low)]
    bad += [("--cache-lambda", v) for v in args.cache_lambda if not 0 <= v < 1]
    bad += [("--dynamic-decay", args.dynamic_decay)] if not 0 <= args.dynamic_decay < 1 else []
    bad += [(flag, v) for flag, v in (("--cache", args.cache), ("--streams", args.streams),
                                      ("--chunk", args.chunk)) if v is not None and v < 1]
    if bad:
        flag, v = bad[0]
        raise UsageError(f"{flag} {v}: out of range (theta >= 0, lr > 0, lambda and decay in [0, 1), "
                         f"L, streams and chunk >= 1)")
    return args.ensemble is not None or args.cache or args.dynamic


def main(argv=None):
    """Print a model file's fixture NLL and whole-validation-split perplexity, with the time each took,
    and its NLL on fixture-shaped rows of the split, each mean with its standard error; several models:
    also each one's row-by-row difference from the first on the fixtures and on those rows."""
    return command(parse_args, run, argv)


def _mean_se(x):
    return f"{x.mean():.4f} +- {x.std(ddof=1) / math.sqrt(len(x)):.4f}"


def run(args):
    from dataset.corpus import DataError, load_fixtures, load_hw4p1
    from fixtures.make import window_starts
    from models import load
    if args.windows is not None and (args.windows < 0 or args.windows == 1):
        raise UsageError(f"--windows {args.windows}: give 0 (skip) or at least 2 rows (for a standard error)")
    adapting = check_adaptation(args)
    models = [load(path) for path in args.checkpoint]
    data = load_hw4p1(args.data)
    V = len(data.vocab)
    fix = load_fixtures(args.data, V)
    for path, model in zip(args.checkpoint, models):
        if model.vocab_size != V:
            raise DataError(f"{args.data} has {V} words but {path} predicts {model.vocab_size}")
    if adapting:
        names = list(args.checkpoint)
        if args.ngram is not None:
            names.append(f"ngram:{args.ngram}")
            models.append(ngram_member(names[-1], data))
        if not args.fixtures_only:
            stream_table(names, models, data, args)
        if args.ensemble is not None or args.fixtures_only:
            fixture_report(names, models, data, fix, args)
        return 0
    positions = int(window_starts(data.valid, PROMPT + 1).sum())
    n = args.windows if args.windows is not None else min(WINDOWS, positions)
    if n > positions:
        raise UsageError(f"--windows {n}: the validation split has {positions} fixture-shaped rows")
    first = {}                      # the first model's rows, per measure: the others are compared with them

    def compare(measure, rows):
        if measure in first:
            print(f"  minus {args.checkpoint[0]}'s, row by row: {_mean_se(rows - first[measure])}")
        first.setdefault(measure, rows)

    for path, model in zip(args.checkpoint, models):
        if len(models) > 1:
            print(f"== {path}")
        t0 = time.perf_counter()
        fixture_rows = fixture_nlls(model, fix["prediction_inp"], fix["prediction_out"])   # (128,)
        t1 = time.perf_counter()
        print(f"fixture NLL (prediction.npz, {len(fixture_rows)} rows)  {_mean_se(fixture_rows)}   "
              f"({t1 - t0:.1f} s)")
        compare("fixtures", fixture_rows)
        mean, words = stream_nll(model, data.valid, V - 2, V - 1)   # <sos>, <eos>: the vocabulary's last two
        t2 = time.perf_counter()
        print(f"validation split: NLL {mean:.4f}, perplexity {perplexity(mean):.2f} over {words:,} words   "
              f"({t2 - t1:.1f} s)")
        if n:
            rows = window_nll(model, data.valid, V - 2, rows=n)     # (n,) the same rows for every model
            print(f"fixture-shaped rows of the validation split ({n}): NLL {_mean_se(rows)}   "
                  f"({time.perf_counter() - t2:.1f} s)")
            compare("windows", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

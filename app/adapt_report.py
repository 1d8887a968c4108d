"""app.evaluate's adaptation report: every combination of the methods asked for, on the whole
validation split (cross-fitted, app.adapt), and on the course's fixtures.

    python -m app.evaluate --checkpoint checkpoints/best.npz checkpoints/transformer.npz \
        --data ../shared/data/hw4p1 --ensemble --cache --dynamic

Shapes: B streams, n words per stream, K members, N fixture rows, V vocabulary.

Rows: static, then each method asked for alone, the pairs, all of them; columns: each model alone
and, with --ensemble, the members mixed. With --ensemble the fixture NLL of the mixture is printed
too, its weights fitted by EM on fixture-shaped rows of the validation split (or given), and
--write-predictions FILE saves its scores for the test fixtures (prediction_test.npz).
"""
import itertools
import time

import numpy as np

from models.dynamic_eval import DynamicEval
from models.ensemble import Ensemble, fit_weights
from models.neural_cache import NeuralCache

from .adapt import candidates, cross_fit, read_stream, stream_layout
from .evaluate import fixture_nlls, perplexity, window_nll

METHODS = ("cache", "dynamic")          # the stream methods, in the table's order; the ensemble is a column


def read_member(model, inputs, targets, args):
    """Every pass one member needs -> {dynamic lr (0: static): read_stream record}."""
    lrs = [0.0] + (list(args.dynamic_lr) if args.dynamic else [])
    records = {}
    for lr in lrs:
        cache = NeuralCache(args.cache, args.cache_theta) if args.cache else None
        dyn = DynamicEval(model, lr, args.dynamic_decay) if lr else None
        records[lr] = read_stream(model, inputs, targets, args.chunk, cache, dyn)
        if dyn is not None:
            dyn.restore()
    return records


def member_candidates(records, methods, lambdas):
    """The candidate settings of one member for a row using `methods` (a subset of METHODS)."""
    chosen = {lr: r for lr, r in records.items() if (lr != 0) == ("dynamic" in methods)}
    return candidates(chosen, tuple(lambdas) if "cache" in methods else ())


def stream_table(paths, models, data, args, say=print):
    """Read every member (all passes), then print the cross-fitted table. -> {row: {column: ppl}}."""
    V = len(data.vocab)
    inputs, targets = stream_layout(data.valid, V - 2, V - 1, args.streams)
    words = inputs.size
    records = []
    for path, model in zip(paths, models):
        t0 = time.perf_counter()
        records.append(read_member(model, inputs, targets, args))
        rec = records[-1]
        per = 1e5 / words
        s0 = rec[0.0]["seconds"]
        line = f"{path}: read {s0['read'] * per:.1f} s per 100k words"
        if args.cache:
            line += f", cache +{s0['cache'] * per:.1f} s"
        dyn = [r["seconds"] for lr, r in rec.items() if lr]
        if dyn:
            line += f", dynamic +{np.mean([s['dynamic'] + s['read'] for s in dyn]) * per - s0['read'] * per:.1f} s"
        say(f"{line}   (all passes: {time.perf_counter() - t0:.0f} s)")
    asked = [m for m in METHODS if getattr(args, m)]
    rows = [c for k in range(len(asked) + 1) for c in itertools.combinations(asked, k)]
    columns = [(p, [i]) for i, p in enumerate(paths)] + ([("ensemble", list(range(len(paths))))]
                                                         if args.ensemble is not None else [])
    say(f"\nwhole validation split, {words:,} words in {args.streams} streams; perplexity, every choice "
        f"cross-fitted on the other half of the split")
    say("| methods | " + " | ".join(name for name, _ in columns) + " |")
    say("|---|" + "---|" * len(columns))
    table, notes = {}, []
    for methods in rows:
        name = " + ".join(methods) or "static"
        cells = []
        for col, members in columns:
            mean, choices = cross_fit([member_candidates(records[i], methods, args.cache_lambda) for i in members],
                                      ensemble=len(members) > 1 or col == "ensemble")
            table.setdefault(name, {})[col] = perplexity(mean)
            cells.append(f"{perplexity(mean):.1f}")
            if methods or col == "ensemble":
                notes.append(f"  {name}, {col}: {describe(choices)}")
        say(f"| {name} | " + " | ".join(cells) + " |")
    say("chosen on each half (settings: dynamic lr, then cache theta and lambda; ensemble weights):")
    for line in notes:
        say(line)
    return table


def describe(choices):
    parts = []
    for half, c in zip(("first", "second"), choices[::-1]):            # choices[1] was fitted on half 0
        weights = "" if len(c["weights"]) == 1 else f" weights {np.round(c['weights'], 3).tolist()}"
        parts.append(f"on the {half} half {c['settings']}{weights}")
    return "; ".join(parts)


def fixture_report(paths, models, data, fix, args, say=print):
    """The ensemble on the fixtures: weights given, or fitted by EM on the validation split's
    fixture-shaped rows; writes the test fixtures' scores with --write-predictions. -> the fixture NLL."""
    V = len(data.vocab)
    weights = args.ensemble or None
    if weights is None:
        rows = np.stack([window_nll(m, data.valid, V - 2, rows=args.windows or 4096) for m in models])
        weights = fit_weights(-rows)
        say(f"ensemble weights fitted by EM on {rows.shape[1]} fixture-shaped validation rows: "
            f"{np.round(weights, 3).tolist()}")
    ensemble = Ensemble(models, weights)
    nll = fixture_nlls(ensemble, fix["prediction_inp"], fix["prediction_out"])
    se = nll.std(ddof=1) / np.sqrt(len(nll))
    say(f"ensemble fixture NLL (prediction.npz, {len(nll)} rows)  {nll.mean():.4f} +- {se:.4f}")
    if args.write_predictions:
        scores = ensemble.predict(fix["prediction_test_inp"]).astype(np.float32)       # (N, V)
        np.save(args.write_predictions, scores)
        say(f"wrote the test fixtures' scores {scores.shape} to {args.write_predictions} "
            f"(members {list(paths)}, weights {np.round(ensemble.weights, 4).tolist()})")
    return float(nll.mean())

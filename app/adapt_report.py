"""app.evaluate's adaptation report: every combination of the methods asked for, on the whole
validation split (cross-fitted, app.adapt), and on the course's fixtures.

    python -m app.evaluate --checkpoint checkpoints/best.npz checkpoints/transformer.npz \
        --data ../shared/data/hw4p1 --ensemble --cache --dynamic

Shapes: B streams, n words per stream, K members, N fixture rows, V vocabulary.

Rows: static, then each method asked for alone, the pairs, all of them; columns: each model alone
and, with --ensemble, the members mixed. Then the course's fixtures (fixture_report): with
--ensemble the mixture, its weights fitted by EM on fixture-shaped rows of the validation split (or
given); with --dynamic each row adapted on its own 20 words first. --write-predictions FILE saves
the test fixtures' scores (prediction_test.npz) of that setting.
"""
import itertools
import json
import time
from pathlib import Path

import numpy as np

from mytorch import backend
from models.dynamic_eval import DynamicEval, predict_adapted
from models.ensemble import Ensemble, fit_weights
from models.neural_cache import NeuralCache, row_cache_logp
from mytorch.nn.softmax import log_softmax

from .adapt import candidates, cross_fit, read_stream
from .errors import UsageError
from .scoring import WINDOWS, perplexity, stream_layout, window_rows

METHODS = ("cache", "dynamic")          # the stream methods, in the table's order; the ensemble is a column


def lr_grid(args, k):
    """Checkpoint k's dynamic learning rates: [] without --dynamic; --dynamic-lr given once (for
    every checkpoint) or once per checkpoint; default 3 10."""
    if not args.dynamic:
        return []
    grids = args.dynamic_lr or [[3.0, 10.0]]
    return list(grids[k if len(grids) > 1 else 0])


NGRAM_NOTE = ("the interpolated Kneser-Ney N-gram model counted on the training split "
              "(models.ngram; app.adapt_report.ngram_member)")


def add_ngram_argument(p, when):
    """The --ngram flag of the commands that mix models (app.evaluate, app.predict, app.generate)."""
    p.add_argument("--ngram", nargs="?", type=int, const=4, metavar="ORDER",
                   help=f"{when}: one more member, the interpolated Kneser-Ney n-gram model counted on the "
                        f"training split (models.ngram; default order 4, the highest whose keys fit int64)")


def ngram_member(name, data):
    """'ngram:N' -> the Kneser-Ney model of order N counted on data's training split (its articles in
    <sos> ... <eos>, as the language models read them): a member that only reads (no state for the
    cache, no backward for dynamic evaluation). An order it cannot count is a UsageError."""
    from models.ngram import KneserNey, training_stream
    V, order = len(data.vocab), int(name.split(":")[1])
    try:
        return KneserNey.build(training_stream(data.train, V - 2, V - 1), V, order)
    except ValueError as err:
        raise UsageError(f"--ngram {order}: {err}") from None


def adapts(model):
    """Whether a member has the hidden states and the backward that the cache and dynamic evaluation
    use (a neural language model), or only reads (an n-gram model)."""
    return hasattr(model, "backward_loss")


def read_member(model, inputs, targets, args, k):
    """Every pass member k needs -> {dynamic lr (0: static): read_stream record}."""
    if not adapts(model):
        t0 = time.perf_counter()
        nll = -model.stream_logp(inputs, targets)
        return {0.0: dict(nll=nll, cache=None, valid=np.ones(nll.shape[1], dtype=bool), thetas=None,
                          seconds=dict(read=time.perf_counter() - t0, cache=0.0, dynamic=0.0), static=True)}
    lrs = [0.0] + lr_grid(args, k)
    records = {}
    for lr in lrs:
        cache = NeuralCache(args.cache, args.cache_theta) if args.cache else None
        dyn = DynamicEval(model, lr, args.dynamic_decay) if lr else None
        records[lr] = read_stream(model, inputs, targets, args.chunk, cache, dyn)
        if dyn is not None:
            dyn.restore()
    return records


def member_candidates(records, methods, lambdas):
    """The candidate settings of one member for a row using `methods` (a subset of METHODS); a member
    that only reads (no cache records) is static in every row."""
    if records[0.0].get("static"):
        return candidates(records)
    chosen = {lr: r for lr, r in records.items() if (lr != 0) == ("dynamic" in methods)}
    return candidates(chosen, tuple(lambdas) if "cache" in methods else ())


def stream_table(paths, models, data, args, say=print):
    """Read every member (all passes), then print the cross-fitted table. -> {row: {column: ppl}}."""
    V = len(data.vocab)
    inputs, targets = stream_layout(data.valid, V - 2, V - 1, args.streams)
    words = inputs.size
    records = []
    for k, (path, model) in enumerate(zip(paths, models)):
        t0 = time.perf_counter()
        records.append(read_member(model, inputs, targets, args, k))
        rec = records[-1]
        per = 1e5 / words
        s0 = rec[0.0]["seconds"]
        line = f"{path}: read {s0['read'] * per:.1f} s per 100k words"
        if args.cache:
            line += f", cache +{s0['cache'] * per:.1f} s"
        dyn = [r["seconds"] for lr, r in rec.items() if lr]
        if dyn:
            extra = np.mean([s["dynamic"] + s["read"] for s in dyn]) - s0["read"]
            line += f", dynamic +{extra * per:.1f} s"
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
            cands = [member_candidates(records[i], methods, args.cache_lambda) for i in members]
            mean, choices = cross_fit(cands, ensemble=len(members) > 1 or col == "ensemble")
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


ROW_FIT = 512           # fixture-shaped validation rows that choose each member's row learning rate


def row_states(model, inp, batch=256):
    """[(X (b, S, D) last-layer states, the rows' words after all but the last state (b, S - 1),
    log p_model of the next word (b, V) float64)] over inp (N, T), `batch` rows at a time."""
    out = []
    for i in range(0, len(inp), batch):
        rows = inp[i:i + batch]
        X, _ = model.eval().encode(rows[:, -getattr(model, "max_len", rows.shape[1]):], cache=False)
        out.append((X, rows[:, -X.shape[1] + 1:], log_softmax(model.scores(X[:, -1]).astype(np.float64))))
    return out


def row_scores(model, inp, setting, states=None):
    """(N, V) next-word scores of the rows inp (N, T) under setting (lr, theta, lambda): static
    (0, None, None), each row adapted on its own words (lr, None, None: predict_adapted), or mixed
    with the cache over the row's own words (0, theta, lambda: row_cache_logp; states: row_states'
    result, computed here if not given)."""
    lr, theta, lam = setting
    if theta is None:
        return model.predict(inp) if not lr else predict_adapted(model, inp, lr)
    states = states or row_states(model, inp)
    parts = [row_cache_logp(X, words, logp, theta, lam) for X, words, logp in states]
    return backend.xp().concatenate(parts)


def fixture_report(paths, models, data, fix, args, say=print):
    """The course's fixtures: each model alone, and with --ensemble the mixture. Each row may first
    adapt to its own 20 words: --dynamic, one SGD step on them (models.dynamic_eval.predict_adapted);
    --cache, the cache over them (models.neural_cache.row_cache_logp). Each member's setting (static
    included; one learning rate, or one theta and lambda, from the grids) is chosen on ROW_FIT
    fixture-shaped rows of the validation split, then the ensemble weights by EM on the same rows
    (or given). --write-predictions saves the test fixtures' scores of that setting with a card.
    -> {(who, "static" | "adapted rows"): fixture NLL}."""
    V = len(data.vocab)
    inp, target = window_rows(data.valid, V - 2, rows=args.windows or WINDOWS)
    n = min(ROW_FIT, len(target)) if args.dynamic or args.cache else len(target)
    settings, fits = [], []                 # each member's chosen (lr, theta, lambda); {setting: rows' NLL}
    for k, (path, model) in enumerate(zip(paths, models)):
        fit = {(0.0, None, None): _nlls(row_scores(model, inp[:n], (0.0, None, None)), target[:n])}
        for lr in lr_grid(args, k) if adapts(model) else ():
            fit[lr, None, None] = _nlls(row_scores(model, inp[:n], (lr, None, None)), target[:n])
        cache = args.cache and adapts(model)
        states = row_states(model, inp[:n]) if cache else None
        for theta, lam in itertools.product(args.cache_theta, args.cache_lambda) if cache else ():
            fit[0.0, theta, lam] = _nlls(row_scores(model, inp[:n], (0.0, theta, lam), states), target[:n])
        fits.append(fit)
        settings.append(min(fit, key=lambda key: np.nan_to_num(fit[key].mean(), nan=np.inf)))
        if len(fit) > 1:
            say(f"{path}: rows adapted to their own words, NLL on {n} validation rows: static "
                f"{fit[0.0, None, None].mean():.4f}, best {fit[settings[-1]].mean():.4f} with (lr, theta, "
                f"lambda) {settings[-1]}")
    static = [(0.0, None, None)] * len(models)
    variants = {"static": static} if settings == static else {"static": static, "adapted rows": settings}
    given, mixtures, results = args.ensemble or None, {}, {}
    for name, use in variants.items():                  # each mixture with its own weights
        weights = given
        if weights is None and len(models) > 1:
            weights = fit_weights(-np.stack([f[s] for f, s in zip(fits, use)]))         # (K, n)
            say(f"{name} mixture: ensemble weights fitted by EM on {n} fixture-shaped validation rows: "
                f"{np.round(weights, 3).tolist()}")
        mixtures[name] = Ensemble(models, weights)
        scores = [row_scores(m, fix["prediction_inp"], s) for m, s in zip(models, use)]
        for path, z in zip(paths, scores):
            results[path, name] = _say_nll(say, f"{path}, {name}", _nlls(z, fix["prediction_out"]))
        if len(models) > 1:
            results["ensemble", name] = _say_nll(say, f"ensemble, {name}",
                                                 _nlls(mixtures[name].mix(scores), fix["prediction_out"]))
    write = list(variants)[-1]                          # the adapted rows where there are any
    if len(variants) > 1 and len(models) > 1 and given is None:
        write = static_or_adapted(fits, n, say)
    if args.write_predictions:
        ensemble, use = mixtures[write], variants[write]
        test = ensemble.mix([row_scores(m, fix["prediction_test_inp"], s) for m, s in zip(models, use)])
        test = backend.to_numpy(test).astype(np.float32)                                # (N, V)
        np.save(args.write_predictions, test)
        card = Path(args.write_predictions).with_suffix(".json")
        nlls = {(" ".join(k) if isinstance(k, tuple) else k): v for k, v in results.items()}
        text = generation_check(mixtures["static"], data, fix, Path(args.write_predictions), say)
        card.write_text(json.dumps({
            "scores": "(128, V) float32 scores of fixtures/prediction_test.npz's rows (softmax: the mixture)",
            "members": list(paths), "weights": ensemble.weights.tolist(), "mixture": write,
            **({"ngram:N": NGRAM_NOTE} if any(p.startswith("ngram:") for p in paths) else {}),
            "row_settings (lr, cache theta, cache lambda)": use, "fixture_nll": nlls,
            "generation (static mixture, recommended decoding)": text,
            "generation weights (the static mixture's)": mixtures["static"].weights.tolist(),
            "command": "python -m app.evaluate " + " ".join(args.argv)}, indent=2) + "\n")
        say(f"wrote the test fixtures' scores {test.shape} to {args.write_predictions} and its card {card} "
            f"(members {list(paths)}, weights {np.round(ensemble.weights, 4).tolist()}, row settings "
            f"{use})")
    return results


def static_or_adapted(fits, n, say=print):
    """Which mixture the predictions use, chosen on the validation rows by cross-fitting (app.adapt):
    on each half of the n rows, each member's setting and the weights chosen on the other half, the
    mixture's NLL over both held-out halves; static (no setting to choose) against adapted rows.
    fits: per member {(lr, theta, lambda): (n,) row NLL}. -> "static" or "adapted rows"."""
    both = {}
    for name, keys in (("static", lambda f: [(0.0, None, None)]), ("adapted rows", lambda f: list(f))):
        members = [[(key, -f[key][:, None]) for key in keys(f)] for f in fits]        # (n, 1) log p
        both[name], _ = cross_fit(members, ensemble=True)
    pick = min(both, key=both.get)
    say(f"the mixture on the {n} validation rows, cross-fitted on their halves: static {both['static']:.4f}, "
        f"adapted rows {both['adapted rows']:.4f}: the predictions use the {pick} mixture")
    return pick


def generation_check(ensemble, data, fix, predictions, say=print):
    """The mixture's continuations of the test generation fixtures (the recommended decoding, 10
    words), written beside the predictions (...-generated-texts-test.txt), and the bars they must
    meet: distinct-2, rows repeating a 4-gram, the <unk> share. -> those figures."""
    from fixtures import format_generation
    from fixtures.text_metrics import distinct, repeating_rows, share
    prompts = fix["generation_test"]
    out = ensemble.generate(prompts, 10)
    suffix = "-predictions-test.npy"
    stem = predictions.name[:-len(suffix)] if predictions.name.endswith(suffix) else predictions.stem
    name = stem + "-generated-texts-test.txt"
    (predictions.parent / name).write_text(format_generation(data.vocab, prompts, out))
    unk = [i for i, w in enumerate(data.vocab) if w == "<unk>"]
    figures = dict(distinct_2=distinct(out, 2), rows_repeating_4gram=repeating_rows(out, 4),
                   unk_share=share(out, unk[0]) if unk else 0.0)
    say(f"the ensemble's continuations of generation_test ({predictions.parent / name}): distinct-2 "
        f"{figures['distinct_2']:.3f}, rows repeating a 4-gram {figures['rows_repeating_4gram']}, <unk> "
        f"{figures['unk_share']:.1%}")
    return figures


def _nlls(scores, target):
    from fixtures import prediction_nlls
    return prediction_nlls(backend.to_numpy(scores), np.asarray(target))


def _say_nll(say, what, nll):
    se = nll.std(ddof=1) / np.sqrt(len(nll))
    say(f"fixture NLL (prediction.npz, {len(nll)} rows), {what}: {nll.mean():.4f} +- {se:.4f}")
    return float(nll.mean())

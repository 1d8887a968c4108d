"""Language models that adapt while they read a split: the neural cache, dynamic evaluation and
ensembles, scored on the whole split read as a stream (app.evaluate --cache --dynamic --ensemble).

Shapes: B streams, n words per stream, t words read at once, G cache thetas, K members.

read_stream reads one model over the split once (the layout of app.evaluate.stream_nll: B
contiguous columns, read t words at a time, state carried) and records, for every word, the
model's -log p(word) and, with a cache, p_cache(word) for each theta. With dynamic evaluation each
chunk is scored, then adapts the model (models.dynamic_eval). Members of an ensemble never interact
while reading, so each is read alone and the mixing is done afterwards, word by word, on the
records: the same numbers as reading them together, at no extra cost.

Nothing is tuned on the words it is scored on (cross-fitting): the B streams are two halves of the
split's text (streams 0 .. B/2 - 1 the first half, the rest the second). Every hyper-parameter
(cache theta and lambda, the dynamic learning rate, the ensemble weights) is chosen on one half and
applied to the other, both ways; the whole-split figure is the mean over both held-out halves.
"""
import time

import numpy as np

from mytorch import backend
from models.ensemble import fit_weights, mix_logp
from models.neural_cache import mixed_logp


def read_stream(model, inputs, targets, chunk=35, cache=None, dynamic=None):
    """Read inputs (B, n) once, predicting targets (B, n), state carried from chunk to chunk.

    cache: a models.neural_cache.NeuralCache (reset here) fed the last layer's outputs;
    dynamic: a models.dynamic_eval.DynamicEval of `model`, stepped after each chunk is scored (if its
    steps diverge, reading stops and every word from there on gets -log p = inf).
    -> {"nll": (B, n) float64 -log p_model(target), "cache": (G, B, n) float64 p_cache(target) or
        None, "thetas": the cache's thetas, "valid": (n,) bool (the cache had a window),
        "seconds": {"read", "cache", "dynamic"}}
    """
    chunk = model.stream_chunk(chunk)                   # a Transformer's is shorter
    B, n = inputs.shape
    nll = np.empty((B, n))
    pc = None if cache is None else np.zeros((len(cache.thetas), B, n))
    valid = np.ones(n, dtype=bool)
    seconds = dict(read=0.0, cache=0.0, dynamic=0.0)
    if cache is not None:
        cache.reset()
    was_training = model.training
    model.eval()                                        # no dropout, also in dynamic evaluation's backward
    state = None
    try:
        for t0 in range(0, n, chunk):
            x, y = inputs[:, t0:t0 + chunk], targets[:, t0:t0 + chunk]
            t1 = time.perf_counter()
            rows, X, state = model.forward_nll(x, y, state)             # (B, t), (B, t, D)
            nll[:, t0:t0 + chunk] = backend.to_numpy(rows)
            if not np.all(np.isfinite(nll[:, t0:t0 + chunk])):          # dynamic evaluation diverged:
                nll[:, t0:] = np.inf                                    # no word is predictable any more
                break
            t2 = time.perf_counter()
            if cache is not None:
                p, ok = cache.read(X, backend.to_device(y))
                pc[:, :, t0:t0 + chunk], valid[t0:t0 + chunk] = backend.to_numpy(p), backend.to_numpy(ok)
            t3 = time.perf_counter()
            if dynamic is not None:
                model.backward_loss()                   # the chunk's mean NLL, through the model's backward
                dynamic.step()
            seconds["read"] += t2 - t1
            seconds["cache"] += t3 - t2
            seconds["dynamic"] += time.perf_counter() - t3
    finally:
        model.train(was_training)
    return dict(nll=nll, cache=pc, valid=valid, seconds=seconds,
                thetas=None if cache is None else cache.thetas.tolist())


def with_cache(record, lam, g):
    """log p of each word (B, n) with the cache's theta number g mixed in at weight lam:
    log((1 - lam) p_model + lam p_cache), the model alone where the cache had no window."""
    mixed = mixed_logp(np.exp(-record["nll"]), record["cache"][g], lam)
    return np.where(record["valid"], mixed, -record["nll"])


def candidates(records, lambdas=()):
    """Every setting of one member to choose from: records {setting: read_stream record} (e.g. one per
    dynamic learning rate). -> [(setting, log p (B, n))]: each record alone, or with lambdas, each
    record with each (theta, lambda) of its cache."""
    out = []
    for key, rec in records.items():
        if not lambdas:
            out.append(((key,), -rec["nll"]))
            continue
        out.extend(((key, float(theta), float(lam)), with_cache(rec, lam, g))
                   for g, theta in enumerate(rec["thetas"]) for lam in lambdas)
    return out


def halves(B):
    """(2, B) bool: the streams of the split's first and second half."""
    first = np.arange(B) < B // 2
    return np.stack([first, ~first])


def cross_fit(members, ensemble):
    """members: per member, its candidates [(setting, log p (B, n))]. For each half, every choice is
    made on the other half: each member's best setting (the highest mean log p), then, for an
    ensemble, the members' weights (EM on that half's words). -> (whole-split mean NLL of the
    held-out halves, [{"settings", "weights"} fitted on half 1 (reported on half 0), on half 0]).
    Without `ensemble` there must be one member."""
    if not ensemble and len(members) != 1:
        raise ValueError("cross_fit: several members need ensemble=True")
    B = members[0][0][1].shape[0]
    parts = halves(B)
    total, count, choices = 0.0, 0, []
    for report in (0, 1):
        fit = parts[1 - report]
        picks = [max(cands, key=lambda c: np.nan_to_num(c[1][fit].mean(), nan=-np.inf)) for cands in members]
        weights = fit_weights(np.stack([lp[fit].ravel() for _, lp in picks])) if ensemble else np.ones(1)
        held = mix_logp(np.stack([lp[parts[report]].ravel() for _, lp in picks]), weights)
        total -= held.sum()
        count += held.size
        choices.append(dict(settings=[s for s, _ in picks], weights=weights.tolist()))
    return total / count, choices

"""Scoring a language model: the course's fixture NLL and perplexity over a whole split.

Shapes: B batch (streams), T time, V vocabulary.
"""
import math

import numpy as np

from mytorch import backend
from mytorch.parallel import parallel_rows


def log_softmax_at(logits, targets):
    """-log softmax(logits)[n, targets[n]] for each row, float64.  logits (N, V), targets (N,) -> (N,).

    Stable: lse = m + log sum exp(z - m). The exp pass runs in row blocks on all cores
    and reuses the logits buffer (the caller's logits are overwritten).
    """
    xp = backend.get_array_module(logits)
    rows = xp.arange(logits.shape[0])
    m = logits.max(axis=1, keepdims=True)                       # (N, 1)
    target = (logits[rows, targets] - m[:, 0]).astype(np.float64)
    s = xp.empty(logits.shape[0], dtype=np.float64)

    def block(z, m, s):
        z -= m
        xp.exp(z, out=z)
        s[...] = z.sum(axis=1)
    parallel_rows(block, logits, m, s)
    return xp.log(s) - target


def fixture_nll(model, inp, out):
    """The course metric: mean over rows of -log softmax(predict(inp))[out].  inp (N, L), out (N,)."""
    from fixtures import prediction_nll
    return prediction_nll(backend.to_numpy(model.predict(inp)), np.asarray(out))


def stream_nll(model, articles, sos_id, eos_id, streams=32, chunk=35):
    """Mean NLL per word over a whole split, state carried across chunks.

    The articles are wrapped in <sos> ... <eos> and concatenated (as for training),
    then laid out as `streams` contiguous columns (pytorch/examples' batchify):

        stream  a b c d e f g h i j k l      ->   row 0: a b c d      (B = 3)
                                                  row 1: e f g h
                                                  row 2: i j k l

    and read `chunk` words at a time with the LSTM state carried between chunks,
    so every word but the first of each row is predicted with its full left context.
    Returns (mean NLL, number of words scored). Perplexity is exp(mean NLL).
    """
    ids = np.concatenate([np.concatenate(([sos_id], a, [eos_id])) for a in articles])
    n = (ids.size - 1) // streams
    if n < 1:
        raise ValueError(f"stream_nll: {ids.size} ids are too few for {streams} streams")
    inputs = ids[:n * streams].reshape(streams, n)              # (B, n)
    targets = ids[1:n * streams + 1].reshape(streams, n)        # (B, n)
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    buf = None                                                  # one (B*chunk, V) logits buffer
    try:
        for t0 in range(0, n, chunk):
            x, y = inputs[:, t0:t0 + chunk], targets[:, t0:t0 + chunk]
            X, state = model.encode(x, state, cache=False)      # (B, t, H)
            X2 = X.reshape(-1, X.shape[-1])                     # (B*t, H)
            if buf is None:
                buf = backend.xp().empty((X2.shape[0], model.vocab_size), dtype=X2.dtype)
            logits = model.decoder.forward(X2, out=buf[:X2.shape[0]])       # (B*t, V)
            nll = log_softmax_at(logits, backend.to_device(y.reshape(-1)))
            total += float(nll.sum())
            count += y.size
    finally:
        model.train(was_training)
    return total / count, count


def perplexity(mean_nll):
    return math.exp(min(mean_nll, 700.0))

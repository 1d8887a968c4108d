"""Scoring a language model: the course's fixture NLL, fixture-shaped rows drawn from a split, and
the whole split read as streams (perplexity). app.evaluate prints them; training, export and the
adaptation (app.adapt) call them.

Shapes: N rows, B batch (streams), n words per stream, T time, V vocabulary.
"""
import math

import numpy as np

from mytorch import backend


def fixture_nll(model, inp, out):
    """The course metric: mean over rows of -log softmax(predict(inp))[out].  inp (N, L), out (N,)."""
    return float(np.mean(fixture_nlls(model, inp, out)))


def fixture_nlls(model, inp, out):
    """(N,) float64: each row's -log softmax(predict(inp))[out], in float64.  inp (N, L), out (N,)."""
    from fixtures import prediction_nlls
    return prediction_nlls(backend.to_numpy(model.predict(inp)), np.asarray(out))


WINDOWS = 4096          # app.evaluate's fixture-shaped rows, where the split has that many
PROMPT = 20             # words after <sos> in a fixture-shaped row, as in fixtures/prediction.npz


def window_nll(model, articles, sos_id, rows=WINDOWS, prompt=PROMPT, seed=0, batch=256):
    """The fixtures' task on many more rows: <sos> + `prompt` words from inside an article, score
    the word after them. Rows at distinct random positions of `articles` (fixtures.make's draw,
    from np.random.default_rng(seed), so two models read the same rows), predicted `batch` at a time.

    Returns (N,) float64: each row's -log softmax(predict(inp))[next word]. Its mean is a
    fixture-NLL-like number with a standard error of std / sqrt(N) (a row's NLL has a std of about
    3.5: 0.055 for 4096 rows, 0.3 for the 128 fixtures); two models' row-by-row difference has a
    smaller one (0.012-0.018 for 4096 rows, about 0.08 for the 128 fixtures).
    """
    inp, target = window_rows(articles, sos_id, rows, prompt, seed)
    return np.concatenate([fixture_nlls(model, inp[i:i + batch], target[i:i + batch])
                           for i in range(0, rows, batch)])


def window_rows(articles, sos_id, rows=WINDOWS, prompt=PROMPT, seed=0):
    """window_nll's rows: -> inp (N, prompt + 1) <sos> + prompt words, target (N,) the word after them."""
    from fixtures.make import draw_windows
    words = draw_windows(articles, rows, prompt + 1, np.random.default_rng(seed))   # (N, prompt + 1)
    inp = np.concatenate([np.full((rows, 1), sos_id, dtype=np.int64), words[:, :-1]], axis=1)
    return inp, words[:, -1]


STREAMS = 32            # the whole-split reading's contiguous streams (pytorch/examples' eval batch)


def stream_nll(model, articles, sos_id, eos_id, streams=STREAMS, chunk=35, rows=slice(None)):
    """Mean NLL per word over a whole split, state carried across chunks.

    The articles are wrapped in <sos> ... <eos> and concatenated (as for training),
    then laid out as `streams` contiguous columns (pytorch/examples' batchify):

        stream  a b c d e f g h i j k l      ->   row 0: a b c d      (B = 3)
                                                  row 1: e f g h
                                                  row 2: i j k l

    and read `chunk` words at a time with the LSTM state carried between chunks,
    so every word but the first of each row is predicted with its full left context.
    Each chunk is scored by the model's mean_nll (the full softmax: the training loss,
    LinearCrossEntropyLoss, over a reused logits buffer; an adaptive softmax: its exact
    log-probabilities).
    `rows` (a slice of the B streams) reads only those: the streams never interact, so the ranks of
    a data-parallel run each read their share and add their (mean x count).
    Returns (mean NLL, number of words scored). Perplexity is exp(mean NLL).
    """
    chunk = model.stream_chunk(chunk)                           # a Transformer's is shorter
    inputs, targets = stream_layout(articles, sos_id, eos_id, streams)   # (B, n) each
    inputs, targets = inputs[rows], targets[rows]
    n = inputs.shape[1]
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
            mean = model.mean_nll(X2, backend.to_device(y.reshape(-1)), out=buf[:X2.shape[0]])
            total += mean * y.size
            count += y.size
    finally:
        model.train(was_training)
    return total / count, count


def perplexity(mean_nll):
    return math.exp(min(mean_nll, 700.0))


def stream_layout(articles, sos_id, eos_id, streams):
    """The articles wrapped in <sos> ... <eos>, concatenated and laid out as `streams` contiguous
    columns (app.evaluate.stream_nll's diagram) -> inputs, targets (B, n) int64."""
    ids = np.concatenate([np.concatenate(([sos_id], a, [eos_id])) for a in articles])
    n = (ids.size - 1) // streams
    if n < 1:
        raise ValueError(f"stream_nll: {ids.size} ids are too few for {streams} streams")
    return ids[:n * streams].reshape(streams, n), ids[1:n * streams + 1].reshape(streams, n)

"""Scoring a language model: the course's fixture NLL and perplexity over a whole split.

    python -m app.evaluate --checkpoint checkpoints/reference.npz --data ../shared/data/hw4p1

Shapes: B batch (streams), T time, V vocabulary.
"""
import math
import sys
import time

import numpy as np

from mytorch import backend

from .errors import Parser, command, prog


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
    Each chunk is scored by the model's mean_nll (the full softmax: the training loss,
    LinearCrossEntropyLoss, over a reused logits buffer; an adaptive softmax: its exact
    log-probabilities).
    Returns (mean NLL, number of words scored). Perplexity is exp(mean NLL).
    """
    chunk = model.stream_chunk(chunk)                           # a Transformer's is shorter
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
            mean = model.mean_nll(X2, backend.to_device(y.reshape(-1)), out=buf[:X2.shape[0]])
            total += mean * y.size
            count += y.size
    finally:
        model.train(was_training)
    return total / count, count


def perplexity(mean_nll):
    return math.exp(min(mean_nll, 700.0))


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.evaluate"), description=main.__doc__)
    p.add_argument("--checkpoint", required=True, help="model file (e.g. checkpoints/reference.npz)")
    p.add_argument("--data", required=True, help="HW4P1 data directory (dataset/ and fixtures/)")
    return p.parse_args(argv)


def main(argv=None):
    """Print a model file's fixture NLL and whole-validation-split perplexity, with the time each took."""
    return command(parse_args, run, argv)


def run(args):
    from dataset.corpus import DataError, load_fixtures, load_hw4p1
    from models import load
    model = load(args.checkpoint)
    data = load_hw4p1(args.data)
    fix = load_fixtures(args.data, len(data.vocab))
    if len(data.vocab) != model.vocab_size:
        raise DataError(f"{args.data} has {len(data.vocab)} words but the model predicts {model.vocab_size}")
    V = model.vocab_size
    t0 = time.perf_counter()
    val = fixture_nll(model, fix["prediction_inp"], fix["prediction_out"])
    t1 = time.perf_counter()
    mean, words = stream_nll(model, data.valid, V - 2, V - 1)   # <sos>, <eos>: the vocabulary's last two
    t2 = time.perf_counter()
    print(f"fixture NLL (prediction.npz, {len(fix['prediction_out'])} rows)  {val:.4f}   ({t1 - t0:.1f} s)")
    print(f"validation split: NLL {mean:.4f}, perplexity {perplexity(mean):.2f} over {words:,} words   "
          f"({t2 - t1:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

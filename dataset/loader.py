"""Batches of (input, target) windows for word-level language modelling.

Shapes: B = batch_size, T = seq_len, n = ids in one epoch's stream, W = (n - 1) // T windows.

How an epoch is batched (in the spirit of the course's DataLoaderForLanguageModeling and of
pytorch/examples word_language_model), with T = 4:

    articles, in this epoch's shuffled order:   A = a1 a2 a3    B = b1 b2    C = c1 c2 c3 c4

    each wrapped in <s> ... </s>, concatenated into one stream (n = 15):

        index   0    1  2  3  4     5    6  7  8     9    10 11 12 13 14
        stream  <s>  a1 a2 a3 </s>  <s>  b1 b2 </s>  <s>  c1 c2 c3 c4 </s>

    cut into W = (15 - 1) // 4 = 3 non-overlapping windows; window k reads
    stream[k*T : k*T+T] and predicts stream[k*T+1 : k*T+T+1] (the next word):

        k   input (T)             target (T)
        0   <s>  a1  a2  a3       a1  a2  a3  </s>
        1   </s> <s> b1  b2       <s> b1  b2  </s>
        2   </s> <s> c1  c2       <s> c1  c2  c3
            (c3 c4 </s> start no window: a window needs T + 1 ids)

    windows are grouped B at a time into batches of shape (B, T):
        shuffle=True   windows in a seeded random order (a fresh order each epoch)
        shuffle=False  windows in stream order: batch b holds windows b*B ... b*B + B - 1

Each window is an independent sequence: no hidden state is meant to be carried from one
batch to the next (unlike the column layout of word_language_model's batchify), which is
what lets the windows be shuffled (dataset/streams.py has that column layout, for training on a
carried state: train.py --carry). Every id of the stream except the last < T + 1 is an
input exactly once per epoch (with drop_last=True the last W % B windows are dropped too).

Randomness: epoch e draws the article order, then the window order, from
np.random.default_rng([seed, e]), so any epoch can be rebuilt on its own: set_epoch(e)
then batches(start=k) resumes a run bit-identically at batch k of epoch e.
"""
from numbers import Integral

import numpy as np


def check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class WrappedArticles:
    """The articles, each wrapped once in <sos> ... <eos>; ``stream(order)`` concatenates them in any
    order (the stream an epoch reads). Shared by LanguageModelLoader and dataset.streams.StreamLoader.

    articles: sequence of 1-D integer arrays (one per article, not yet wrapped). n: ids in a stream.
    """

    def __init__(self, articles, sos_id, eos_id):
        articles = [np.asarray(a) for a in articles]
        if not articles:
            raise ValueError("articles is empty")
        for k, a in enumerate(articles):
            if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
                raise ValueError(f"article {k} must be a 1-D integer array, got {a.dtype} {a.shape}")
        # All articles wrapped once, in their given order: <s> a1 ... </s> <s> b1 ... </s> ...
        pieces = []
        for a in articles:
            pieces += [[sos_id], a, [eos_id]]
        self._wrapped = np.concatenate(pieces).astype(np.int64)                    # (n,)
        self._lengths = np.array([a.size + 2 for a in articles], dtype=np.int64)  # (n_articles,)
        self._offsets = np.concatenate([[0], np.cumsum(self._lengths)[:-1]])       # (n_articles,)
        self.n = self._wrapped.size

    def order(self, rng, shuffle):
        """The article order of an epoch: a permutation drawn from rng, or the given order."""
        n_art = self._lengths.size
        return rng.permutation(n_art) if shuffle else np.arange(n_art)

    def stream(self, order):
        """The wrapped articles in `order` (n_articles,), concatenated: (n,) int64."""
        # Gather without a Python loop: position j of the new stream, inside its article, comes
        # from offsets[article] + (j - start of that article here).
        lens = self._lengths[order]                                                # (n_articles,)
        new_starts = np.cumsum(lens) - lens                                        # (n_articles,)
        index = np.arange(self.n) + np.repeat(self._offsets[order] - new_starts, lens)
        return self._wrapped[index]                                                # (n,)


class LanguageModelLoader:
    """Iterates over (inputs, targets) int64 batches of shape (B, T), targets = inputs shifted by one word.

    articles: sequence of 1-D integer arrays (one per article, not yet wrapped in <sos>/<eos>).
    len(loader) is the number of batches per epoch; iterating runs epoch ``loader.epoch`` and,
    once exhausted, advances it by one (set_epoch(e) chooses it explicitly).
    sos_first: the probability that a window's first input is <sos> in place of its word (the
    course fixtures' shape: <sos>, then words from inside an article); its targets are unchanged.
    """

    def __init__(self, articles, batch_size, seq_len, sos_id, eos_id, shuffle=True, drop_last=True, seed=0,
                 sos_first=0.0):
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seq_len = check_int("seq_len", seq_len, 1)
        self.sos_id = check_int("sos_id", sos_id, 0)
        self.eos_id = check_int("eos_id", eos_id, 0)
        self.seed = check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if not 0.0 <= sos_first <= 1.0:
            raise ValueError(f"sos_first must lie in [0, 1], got {sos_first!r}")
        self.sos_first = float(sos_first)
        self.epoch = 0

        self.articles = WrappedArticles(articles, self.sos_id, self.eos_id)
        n = self.articles.n
        self.n_windows = (n - 1) // self.seq_len
        if self.n_windows < 1:
            raise ValueError(f"too little data: {n} ids (with <sos>/<eos>) make no window of "
                             f"seq_len + 1 = {self.seq_len + 1} ids")
        if self.drop_last and self.n_windows < self.batch_size:
            raise ValueError(f"too little data: {self.n_windows} windows of seq_len {self.seq_len} "
                             f"make no full batch of {self.batch_size} "
                             "(use a smaller batch or drop_last=False)")

    def __len__(self):
        """Batches per epoch."""
        full, rest = divmod(self.n_windows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch):
        """Choose the epoch whose (seeded) order the next iteration uses."""
        self.epoch = check_int("epoch", epoch, 0)

    def _rng(self, epoch):
        return np.random.default_rng([self.seed, epoch])

    def _epoch_plan(self, epoch):
        """(stream (n,), window order (W,), which windows lead with <sos> (W,) bool or None) of one epoch."""
        rng = self._rng(epoch)
        stream = self.articles.stream(self.articles.order(rng, self.shuffle))      # (n,)
        windows = rng.permutation(self.n_windows) if self.shuffle else np.arange(self.n_windows)
        lead = rng.random(self.n_windows) < self.sos_first if self.sos_first else None  # no draw at 0
        return stream, windows, lead

    def stream(self, epoch=None):
        """The epoch's stream of ids, shape (n,): the articles in that epoch's order, wrapped."""
        return self._epoch_plan(self.epoch if epoch is None else epoch)[0]

    def windows(self, epoch=None):
        """All of an epoch's windows in batch order: inputs (W, T), targets (W, T)."""
        stream, order, lead = self._epoch_plan(self.epoch if epoch is None else epoch)
        W, T = self.n_windows, self.seq_len
        inputs = stream[:W * T].reshape(W, T)[order]                               # (W, T), a copy
        targets = stream[1:W * T + 1].reshape(W, T)[order]                         # (W, T)
        if lead is not None:
            inputs[lead, 0] = self.sos_id                                          # --sos-first
        return inputs, targets

    def batches(self, start=0):
        """Yield (inputs, targets), each (B, T) int64, from batch index ``start`` of epoch ``self.epoch``.

        The last batch has W % B rows when drop_last is False. Advances self.epoch once exhausted.
        """
        n_batches = len(self)
        start = check_int("start", start, 0)
        if start > n_batches:
            raise ValueError(f"start must be <= {n_batches} (batches per epoch), got {start}")
        return self._iterate(start, n_batches)

    def _iterate(self, start, n_batches):
        inputs, targets = self.windows(self.epoch)                                 # (W, T) each
        B = self.batch_size
        for b in range(start, n_batches):
            yield inputs[b * B:(b + 1) * B], targets[b * B:(b + 1) * B]            # (B, T) each
        self.epoch += 1

    def __iter__(self):
        return self.batches(0)

"""Batches for training on a carried state: truncated BPTT down contiguous streams (AWD-LSTM).

Shapes: B = batch_size, n = ids in one epoch's stream, L = n // B ids per row,
N = (L - 1) // bptt batches per epoch, T_k = words in batch k (it varies).

The epoch's stream is dataset.loader's (the articles in the epoch's seeded order, each wrapped
in <s> ... </s>: the same ids for the same seed and epoch), laid out as B contiguous rows
(pytorch/examples word_language_model's batchify; the last n % B ids are dropped). With B = 2:

    stream (n = 19)   <s> a1 a2 a3 </s> <s> b1 b2 </s> | <s> c1 c2 c3 c4 </s> <s> d1 d2 | </s>

        column     0    1    2    3    4    5    6    7    8          (L = 19 // 2 = 9)
        row 0      <s>  a1   a2   a3   </s> <s>  b1   b2   </s>
        row 1      <s>  c1   c2   c3   c4   </s> <s>  d1   d2
                   [---- k=0, T=4 ----][- k=1, T=3 --]

    batches walk along the rows: batch k reads columns o_k ... o_k + T_k - 1 (o_k = T_0 + ... + T_k-1)
    and predicts the columns one to the right; batch k+1 starts where batch k ended, so the state
    at the end of batch k is the right one to start batch k+1 from (the trainer carries it):

        k   input (B, T_k)              target (B, T_k)
        0   <s> a1 a2 a3                a1 a2 a3 </s>
            <s> c1 c2 c3                c1 c2 c3 c4
        1   </s> <s> b1                 <s> b1 b2
            c4 </s> <s>                 </s> <s> d1
            (bptt = 4: N = (9 - 1) // 4 = 2 batches; column 7 starts none, column 8 is only a target)

Lengths (Merity et al. 2017, AWD-LSTM's training loop):

    base_k = bptt with probability 0.95, else bptt / 2
    T_k    = clip(int(normal(base_k, 5)), min_len, 2 * bptt),   min_len = min(5, max(1, bptt // 2))

AWD-LSTM's floor is 5 (with bptt 70); min_len is that same 5 for any bptt >= 10 (the presets'),
and below it stays under bptt / 2, so short sequences still happen (a floor of 5 with bptt = 5
would make every T_k >= bptt). The ceiling 2 * bptt bounds the memory of a batch.

Every epoch has exactly N = len(loader) batches, so a per-batch schedule sees the same count
each epoch: T_k is also capped so that the batches after it keep min_len columns each,

    T_k <= (L - 1) - o_k - (N - 1 - k) * min_len         (L - 1 columns are inputs; N * min_len <= L - 1)

which binds only when the draws ran long. The mean T_k is a little under bptt for bptt >= 8
(19.0 for bptt 20, 9.8 for 10; standard deviation about 5), so over the thousands of batches
of a real epoch the cap is many standard deviations away; it binds in small epochs, and where
bptt < 8 (the clip lifts the mean a little over bptt: 5.08 for 5): the last batches of the epoch
are then shorter, down to min_len, never below. The columns after the last batch are not read
that epoch.

Randomness: epoch e draws from np.random.default_rng([seed, e]) the article order (exactly as
dataset.loader does), then N coin flips for base_k, then N normal draws. Any epoch's plan (its
stream, offsets and lengths) is rebuilt on its own: set_epoch(e) then batches(start=k) resumes
a run bit-identically at batch k of epoch e.
"""
import numpy as np

from .loader import WrappedArticles, check_int

P_FULL = 0.95       # probability of base_k = bptt (else bptt / 2)
STD = 5.0           # standard deviation of T_k around base_k, in words
MIN_LEN = 5         # AWD-LSTM's floor on T_k (min_len: lower for bptt < 10)


class StreamLoader:
    """Iterates over (inputs, targets) int64 batches of shape (B, T_k) walking down B contiguous streams.

    articles: sequence of 1-D integer arrays (one per article, not yet wrapped in <sos>/<eos>).
    shuffle: a seeded article order each epoch (False: the given order, every epoch).
    len(loader) is the number of batches of every epoch; iterating runs epoch ``loader.epoch``
    and, once exhausted, advances it by one (set_epoch(e) chooses it explicitly).
    """

    def __init__(self, articles, batch_size, bptt, sos_id, eos_id, seed=0, shuffle=True):
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.bptt = check_int("bptt", bptt, 1)
        self.sos_id = check_int("sos_id", sos_id, 0)
        self.eos_id = check_int("eos_id", eos_id, 0)
        self.seed = check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.min_len = min(MIN_LEN, max(1, self.bptt // 2))
        self.max_len = 2 * self.bptt

        self.articles = WrappedArticles(articles, self.sos_id, self.eos_id)
        n, B = self.articles.n, self.batch_size
        self.stream_len = n // B                                                  # L
        self.n_batches = (self.stream_len - 1) // self.bptt                       # N
        if self.n_batches < 1:
            raise ValueError(f"too little data: {n} ids with <sos>/<eos> make {B} streams of "
                             f"{self.stream_len} ids, too short for one batch of bptt + 1 = "
                             f"{self.bptt + 1} ids per stream")

    def __len__(self):
        """Batches per epoch (the same in every epoch)."""
        return self.n_batches

    def set_epoch(self, epoch):
        """Choose the epoch whose (seeded) order and lengths the next iteration uses."""
        self.epoch = check_int("epoch", epoch, 0)

    def _plan(self, epoch):
        """(article order, offsets (N,), lengths (N,)) of one epoch; int64."""
        rng = np.random.default_rng([self.seed, epoch])
        order = self.articles.order(rng, self.shuffle)
        N = self.n_batches
        base = np.where(rng.random(N) < P_FULL, self.bptt, self.bptt / 2)        # (N,)
        drawn = np.clip(np.trunc(rng.normal(base, STD)), self.min_len, self.max_len).astype(np.int64)
        lengths = np.empty(N, dtype=np.int64)
        room = self.stream_len - 1              # input columns left (the last column is only a target)
        for k in range(N):                      # keep min_len columns for each batch after this one
            lengths[k] = min(drawn[k], room - (N - 1 - k) * self.min_len)
            room -= lengths[k]
        offsets = np.cumsum(lengths) - lengths                                    # (N,)
        return order, offsets, lengths

    def plan(self, epoch=None):
        """(offsets (N,), lengths (N,)) of an epoch: batch k reads columns offsets[k] ... offsets[k] +
        lengths[k] - 1 of every row (and predicts the columns one to the right)."""
        return self._plan(self.epoch if epoch is None else epoch)[1:]

    def stream(self, epoch=None):
        """The epoch's stream of ids, shape (n,): the articles in that epoch's order, wrapped."""
        return self.articles.stream(self._plan(self.epoch if epoch is None else epoch)[0])

    def rows(self, epoch=None):
        """The epoch's B contiguous streams, (B, L): row b = stream[b*L : (b+1)*L]."""
        B, L = self.batch_size, self.stream_len
        return self.stream(epoch)[:B * L].reshape(B, L)

    def batches(self, start=0):
        """Yield (inputs, targets), each (B, T_k) int64, from batch index ``start`` of epoch ``self.epoch``.

        Advances self.epoch once exhausted.
        """
        start = check_int("start", start, 0)
        if start > self.n_batches:
            raise ValueError(f"start must be <= {self.n_batches} (batches per epoch), got {start}")
        return self._iterate(start)

    def _iterate(self, start):
        order, offsets, lengths = self._plan(self.epoch)
        B, L = self.batch_size, self.stream_len
        rows = self.articles.stream(order)[:B * L].reshape(B, L)                 # (B, L)
        for k in range(start, self.n_batches):
            i, T = offsets[k], lengths[k]
            yield (np.ascontiguousarray(rows[:, i:i + T]),                        # (B, T_k)
                   np.ascontiguousarray(rows[:, i + 1:i + T + 1]))                # (B, T_k)
        self.epoch += 1

    def __iter__(self):
        return self.batches(0)

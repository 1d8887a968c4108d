"""An interpolated Kneser-Ney n-gram model of word ids: the offline oracle for generated text.

Shapes: V vocabulary, N queries, n the order (4: three words of context), k an order 1..n.

An n-gram w_1..w_k is one int64 key, sum_j w_j V^(k-j) (33,280^4 < 2^63). Each order keeps
its sorted keys and a count; a query is a binary search (np.searchsorted), so nothing loops
over words in Python.

Counts (Chen & Goodman 1998, "An empirical study of smoothing techniques", interpolated KN):

    order n (the highest)   c(h w)      = how often h w occurs in the corpus
    order k < n             N1+(. h w)  = how many distinct words precede h w  (continuation count)

With c_k the count of order k, h a context of k-1 words and h' = h without its first word:

    P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h .)  +  D_k N1+(h .) / c_k(h .)  P_{k-1}(w | h')
    P_k(w | h) = P_{k-1}(w | h')                              when h was never seen (c_k(h .) = 0)
    P_1(w)     = max(c_1(w) - D_1, 0) / c_1(.)  +  D_1 N1+(.) / c_1(.)  / V   (interpolated with uniform)

where c_k(h .) = sum_w c_k(h w), N1+(h .) = #{w : c_k(h w) > 0}, and the discount of order k is
D_k = n1 / (n1 + 2 n2) over its counts (n1, n2 = how many k-grams have count 1, 2), or 0.75 when
n1 or n2 is zero (tiny corpora). Every P_k(. | h) sums to 1 over the V words.
"""
import hashlib
import json

import numpy as np

from mytorch import backend
from mytorch.nn.module import check_ids

from .checkpoint import load_npz, save_npz_atomic

FALLBACK_DISCOUNT = 0.75


def ngram_keys(ids, k, V):
    """All k-grams of the 1-D ids as int64 keys: (len(ids) - k + 1,)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids) - k + 1
    keys = np.zeros(max(n, 0), dtype=np.int64)
    for j in range(k):                                   # k <= 4 passes over the stream
        keys = keys * V + ids[j:j + n]
    return keys


def discount(counts):
    """D = n1 / (n1 + 2 n2) for an array of positive counts (FALLBACK_DISCOUNT if n1 or n2 is 0)."""
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    return n1 / (n1 + 2 * n2) if n1 and n2 else FALLBACK_DISCOUNT


def fingerprint(stream, V, order):
    """A short hex digest naming the corpus and settings an oracle was built from."""
    h = hashlib.sha1(np.ascontiguousarray(stream, dtype=np.int32).tobytes())
    h.update(f"V={V} order={order}".encode())
    return h.hexdigest()[:16]


class KneserNey:
    """Interpolated Kneser-Ney model of order n over word ids in [0, V).

    ``KneserNey.build(stream, V, n)`` counts a 1-D id stream; ``logprob(context, words)``
    gives natural-log probabilities; ``save`` / ``load`` keep it in one .npz.
    """

    def __init__(self, V, order, tables, discounts, unigram, source=""):
        self.V, self.order = int(V), int(order)
        self.tables = tables            # per order k >= 2: dict(keys, counts, ctx_keys, ctx_total, ctx_types)
        self.discounts = [float(d) for d in discounts]   # D_1 .. D_n
        self.unigram = unigram          # (V,) float64: P_1
        self.source = source            # fingerprint of the training stream

    @classmethod
    def build(cls, stream, V, order=4):
        """Count the 1-D id stream (articles already joined, e.g. with <sos>/<eos> around each)."""
        stream = np.asarray(stream, dtype=np.int64)
        if stream.ndim != 1 or len(stream) < order:
            raise ValueError(f"KneserNey.build: need a 1-D stream of at least {order} ids, "
                             f"got {stream.shape}")
        if order < 1 or V ** order >= 2 ** 63:
            raise ValueError(f"KneserNey.build: order {order} over {V} words does not fit int64 keys")
        check_ids(stream, V, "KneserNey.build")
        counts = {order: np.unique(ngram_keys(stream, order, V), return_counts=True)}
        distinct = counts[order][0]                      # the distinct (k+1)-grams, from the top down
        for k in range(order - 1, 0, -1):                # N1+(. g): distinct (k+1)-grams that end in g
            counts[k] = np.unique(distinct % V ** k, return_counts=True)
            distinct = np.unique(ngram_keys(stream, k, V))
        discounts = [discount(counts[k][1]) for k in range(1, order + 1)]

        keys1, c1 = counts[1]
        D1, total1 = discounts[0], c1.sum()
        unigram = np.full(V, D1 * len(keys1) / total1 / V)
        unigram[keys1] += np.maximum(c1 - D1, 0) / total1
        tables = {}
        for k in range(2, order + 1):
            keys, c = counts[k]                          # sorted, so contexts are contiguous runs
            ctx_keys, start, ctx_types = np.unique(keys // V, return_index=True, return_counts=True)
            tables[k] = dict(keys=keys, counts=c.astype(np.int64), ctx_keys=ctx_keys,
                             ctx_total=np.add.reduceat(c, start).astype(np.int64),
                             ctx_types=ctx_types.astype(np.int64))
        return cls(V, order, tables, discounts, unigram, fingerprint(stream, V, order))

    # -- queries -----------------------------------------------------------------------
    def logprob(self, context, words):
        """context (N, n-1) ids (a negative id = no word there), words (N,) -> (N,) log P(w | context)."""
        context = np.asarray(context, dtype=np.int64).reshape(len(words), -1)
        words = np.asarray(words, dtype=np.int64)
        if context.shape[1] != self.order - 1:
            raise ValueError(f"KneserNey.logprob: context must be (N, {self.order - 1}), got {context.shape}")
        if words.size and (words.min() < 0 or words.max() >= self.V):
            raise ValueError(f"KneserNey.logprob: words must lie in [0, {self.V})")
        p = self.unigram[words]                          # (N,) P_1
        for k in range(2, self.order + 1):
            t, D = self.tables[k], self.discounts[k - 1]
            hkey, ci, seen = self._contexts(context, k)
            gi, found = _lookup(t["keys"], hkey * self.V + words)
            c = np.where(found & seen, t["counts"][gi], 0)
            tot = np.where(seen, t["ctx_total"][ci], 1)
            typ = np.where(seen, t["ctx_types"][ci], 0)
            p = np.where(seen, np.maximum(c - D, 0) / tot + D * typ / tot * p, p)
        return np.log(p)

    def _contexts(self, context, k):
        """Order k's contexts, the last k-1 words of each row of context (N, n-1) -> hkey (N,) their
        keys, ci (N,) their rows in the order's context table, seen (N,) whether training had the
        context (a row with no word somewhere in it never has)."""
        h = context[:, self.order - k:]
        hkey = np.zeros(len(context), dtype=np.int64)
        for j in range(k - 1):                           # the loop is over the k - 1 positions
            hkey = hkey * self.V + np.maximum(h[:, j], 0)
        ci, seen = _lookup(self.tables[k]["ctx_keys"], hkey)
        return hkey, ci, seen & (h >= 0).all(axis=1)

    def distribution(self, context):
        """context (N, n-1) ids (a negative id = no word there) -> (N, V) float64 P(. | context), each
        row the whole distribution (it sums to 1): logprob's formula for every word at once. A seen
        context's words are one contiguous run of the sorted keys (they share its prefix), so each
        order adds its rows' runs with one scatter."""
        context = np.asarray(context, dtype=np.int64)
        N, V = len(context), self.V
        context = context.reshape(N, self.order - 1)
        p = np.broadcast_to(self.unigram, (N, V)).copy()                 # P_1
        for k in range(2, self.order + 1):
            t, D = self.tables[k], self.discounts[k - 1]
            hkey, ci, seen = self._contexts(context, k)
            rows = np.flatnonzero(seen)                                 # contexts seen in training
            ci = ci[rows]
            tot, typ = t["ctx_total"][ci].astype(np.float64), t["ctx_types"][ci]
            first = np.searchsorted(t["keys"], hkey[rows] * V)          # each run's first entry
            ends = np.cumsum(typ)
            entry = np.repeat(first - ends + typ, typ) + np.arange(ends[-1] if len(ends) else 0)
            row_of = np.repeat(np.arange(len(rows)), typ)
            q = p[rows] * (D * typ / tot)[:, None]                      # the mass passed down
            q[row_of, t["keys"][entry] % V] += np.maximum(t["counts"][entry] - D, 0) / tot[row_of]
            p[rows] = q
        return p

    # -- a language model's interface: an ensemble member (models.ensemble) -------------------
    @property
    def vocab_size(self):
        return self.V

    vocab = None                                         # the ids are the language models' vocabulary's

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def special_ids(self):
        return [self.V - 2, self.V - 1]                  # the HW4P1 layout's <sos> and <eos>

    def predict(self, inp):
        """inp (B, T) ids -> (B, V) float32 log P of the word after each row (its last n-1 words)."""
        inp = np.asarray(backend.to_numpy(inp), dtype=np.int64)
        check_ids(inp, self.V, "KneserNey")
        context = np.full((len(inp), self.order - 1), -1)
        keep = min(self.order - 1, inp.shape[1])
        if keep:
            context[:, -keep:] = inp[:, inp.shape[1] - keep:]
        with np.errstate(divide="ignore"):
            return backend.to_device(np.log(self.distribution(context)).astype(np.float32))

    def decode_start(self, inp):
        """models.decoding's interface: the state is each row's last n-1 words."""
        inp = np.asarray(backend.to_numpy(inp), dtype=np.int64)
        return self.predict(inp), inp[:, max(0, inp.shape[1] - (self.order - 1)):]

    def decode_step(self, ids, state):
        state = np.concatenate([state, np.asarray(backend.to_numpy(ids)).reshape(-1, 1)], axis=1)
        state = state[:, max(0, state.shape[1] - (self.order - 1)):]
        return self.predict(state), state

    @staticmethod
    def select_state(state, rows):
        return state[backend.to_numpy(rows)]

    def stream_logp(self, inputs, targets):
        """inputs, targets (B, n) a split read as streams (app.scoring.stream_layout: targets[:, t] =
        inputs[:, t + 1]) -> (B, n) float64 log P of each target given the words before it in its
        stream (none before the stream's first)."""
        return self.score(np.asarray(inputs)[:, :1], np.asarray(targets))

    def score(self, prefixes, continuations):
        """prefixes (N, L), continuations (N, K) -> (N, K) log P of each continuation word given
        the n-1 words before it (from the prefix, then from the continuation itself)."""
        prefixes, continuations = np.asarray(prefixes), np.asarray(continuations)
        N, K = continuations.shape
        full = np.concatenate([np.full((N, self.order - 1), -1), prefixes, continuations], axis=1)
        start = full.shape[1] - K                                       # index of the first word scored
        cols = start + np.arange(K)[:, None] - np.arange(self.order - 1, 0, -1)[None, :]   # (K, n-1)
        ctx = full[:, cols]                                             # (N, K, n-1)
        return self.logprob(ctx.reshape(N * K, -1), continuations.reshape(-1)).reshape(N, K)

    def perplexity(self, prefixes, continuations):
        """exp(-mean log P) over every continuation word."""
        return float(np.exp(-self.score(prefixes, continuations).mean()))

    # -- persistence ----------------------------------------------------------------------
    def save(self, path):
        meta = dict(V=self.V, order=self.order, discounts=self.discounts, source=self.source)
        arrays = {"__meta__": np.array(json.dumps(meta)), "unigram": self.unigram}
        for k, t in self.tables.items():
            arrays.update({f"{name}_{k}": a for name, a in t.items()})
        save_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path):
        arrays = load_npz(path)
        meta = json.loads(str(arrays["__meta__"]))
        names = ("keys", "counts", "ctx_keys", "ctx_total", "ctx_types")
        tables = {k: {name: arrays[f"{name}_{k}"] for name in names} for k in range(2, meta["order"] + 1)}
        return cls(meta["V"], meta["order"], tables, meta["discounts"], arrays["unigram"], meta["source"])


def _lookup(sorted_keys, queries):
    """(index, found) of each query in sorted_keys; index is clipped to a valid row."""
    i = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return i, sorted_keys[i] == queries


def training_stream(articles, sos_id, eos_id):
    """The articles joined, each wrapped in <sos> ... <eos> as the loader wraps them: 1-D int64."""
    parts = []
    for a in articles:
        parts += [[sos_id], a, [eos_id]]
    return np.concatenate(parts).astype(np.int64)


def load_or_build(path, articles, V, sos_id, eos_id, order=4, log=None):
    """The oracle saved at `path` if it was built from these articles, else build it and save it there."""
    import os
    stream = training_stream(articles, sos_id, eos_id)
    want = fingerprint(stream, V, order)
    if os.path.isfile(path):
        oracle = KneserNey.load(path)
        if oracle.source == want:
            return oracle
        if log:
            log(f"{path} was built from other data: rebuilding it")
    oracle = KneserNey.build(stream, V, order)
    try:
        oracle.save(path)
    except OSError as err:                               # a read-only data folder: keep it in memory
        if log:
            log(f"could not save the oracle to {path} ({err}); it will be rebuilt next time")
    return oracle

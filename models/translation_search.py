"""Decoding a models.Translator: greedy and beam search over a batch, with the decoder's KV caches.

Shapes: B sentences, k beams, R = rows decoded at once (B, or B k), S source tokens, V vocabulary.

Decoder (one object per batch) owns what decoding carries from step to step:
    memory (R, S, D) and its padding mask, from one encoder pass (eval mode, nothing saved)
    per decoder block {"self": KV cache, growing one position a step, "cross": the memory's K, V,
        projected on the first step only}
    step(tokens (R,)) -> the next token's logits (R, V), one new position per row
    select(rows)      keep / reorder / repeat rows of everything above (beams that survive, sentences
                      that finished dropped from the batch)
With cache=False, step re-reads the whole prefix through the training path's forward (what decoding
costs without a cache; the benchmark's baseline): the same scores, up to float rounding.

Greedy: the best token each step; a sentence leaves the batch at its EOS.
Beam search (k beams, GNMT length penalty lp(L) = ((5 + L) / 6) ** alpha, Wu et al. 2016): each step
extends every live beam by every token, keeps the 2 k best candidates per sentence; candidates ending
in EOS among the first k are finished hypotheses, scored log p / lp(L); the k best other candidates
are the next beams. A sentence is done when its k-th finished score beats what any live beam could
still reach (its log p / lp(max_len): log p only falls), or at max_len; done sentences leave the batch.
no_repeat=n > 0 (both searches) never extends a row by a token that would repeat one of its n-grams
(fairseq's --no-repeat-ngram-size): a small model's loops ("to have to have to have") cannot start.
Every step is array work over all rows; the loop is over decoding steps only.
"""
import numpy as np

from dataset.subwords import BOS, EOS, PAD, UNK
from mytorch import backend
from mytorch.nn import log_softmax
from mytorch.nn.module import detached, peek


class Decoder:
    """The decoding state of a batch of sources (see the module docstring)."""

    def __init__(self, model, src, cache=True):
        self.model = detached(model, training=False)
        self.cache = cache
        xp = backend.xp()
        src = xp.asarray(src)
        self.memory, self.pad = self.model.encode(src)                        # (R, S, D), (R, S)
        self.caches = [{"self": {}, "cross": {}} for _ in self.model.decoder]
        self.prefix = xp.full((len(src), 1), BOS, dtype=np.int32)            # (R, t + 1) tokens so far
        self.t = 0

    def step(self, tokens):
        """tokens (R,): each row's last token (BOS first) -> the next token's logits (R, V), host float32
        (greedy needs only their argmax; beam search takes their log_softmax), -inf at PAD, UNK, BOS."""
        m, xp = self.model, backend.xp()
        tokens = xp.asarray(tokens, dtype=np.int32)
        t = self.t                                                            # this token's position
        if t > 0:                                                             # (the prefix holds BOS)
            self.prefix = xp.concatenate([self.prefix, tokens[:, None]], axis=1)
        self.t += 1
        if not self.cache:
            H = m.decode(self.prefix, self.memory, self.pad)[:, -1]           # (R, D): the whole prefix
        else:
            Z = m.tgt_embed.forward(tokens[:, None]) * m.scale + m.pos.forward(1, offset=t)
            for block, caches in zip(m.decoder, self.caches):
                Z = block.forward_step(Z, caches, self.memory, self.pad)
            H = peek(m.ln_dec, Z)[:, 0]                                       # (R, D)
        logits = backend.to_numpy(peek(m.out, H))                            # (R, V)
        logits[:, [PAD, UNK, BOS]] = -np.inf                                  # never a translation's token
        return logits

    def select(self, rows):
        """Keep rows (an index array: a subset, a reordering or repeats) of every array carried."""
        rows = backend.xp().asarray(rows)
        self.memory, self.pad, self.prefix = self.memory[rows], self.pad[rows], self.prefix[rows]
        for caches in self.caches:
            for c in caches.values():
                for key in c:
                    c[key] = c[key][rows]


def search(model, src, beams=4, alpha=1.0, max_len=None, cache=True, no_repeat=3):
    """src (B, S) ids -> list of B id lists (without BOS / EOS)."""
    if beams < 1:
        raise ValueError(f"beams must be >= 1, got {beams}")
    if no_repeat < 0:
        raise ValueError(f"no_repeat must be >= 0 (0: off), got {no_repeat}")
    B, S = src.shape
    limit = min(model.max_len - 1, max_len or int(1.5 * S) + 10)
    dec = Decoder(model, src, cache)
    if beams == 1:
        return _greedy(dec, B, limit, no_repeat)
    return _beam(dec, B, beams, alpha, limit, no_repeat)


def ban_repeats(scores, hist, n):
    """scores (R, V), hist (R, t) the rows' tokens so far: -inf (in place) at every token that would end
    an n-gram already in its row, i.e. follow an earlier occurrence of the row's last n - 1 tokens."""
    R, t = hist.shape
    if n < 1 or t < n - 1 or (n == 1 and t == 0):
        return scores
    if n == 1:
        rows, cols = np.repeat(np.arange(R), t), hist.reshape(-1)
    else:
        windows = np.lib.stride_tricks.sliding_window_view(hist, n - 1, axis=1)[:, :t - n + 1]
        seen = (windows == hist[:, None, t - n + 1:]).all(axis=2)             # (R, t - n + 1) earlier matches
        rows, at = np.nonzero(seen)
        cols = hist[rows, at + n - 1]                                         # the token that followed
    scores[rows, cols] = -np.inf
    return scores


def _greedy(dec, B, limit, no_repeat):
    out = np.full((B, limit), PAD, dtype=np.int64)
    alive = np.arange(B)
    tokens = np.full(B, BOS)
    for t in range(limit):
        logits = dec.step(tokens)
        if no_repeat:
            ban_repeats(logits, out[alive, :t], no_repeat)
        nxt = logits.argmax(axis=1)                                           # (R,)
        out[alive, t] = nxt
        going = nxt != EOS
        if not going.any():
            break
        if not going.all():                                                   # finished rows leave
            dec.select(np.flatnonzero(going))
            alive, nxt = alive[going], nxt[going]
        tokens = nxt
    return [_strip(row) for row in out]


def _lp(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


def _beam(dec, B, k, alpha, limit, no_repeat):
    dec.select(np.repeat(np.arange(B), k))                                    # R = B k rows
    alive = np.arange(B)                                                      # sentence of each row group
    score = np.tile(np.r_[0.0, np.full(k - 1, -np.inf)], (B, 1))              # (n, k): beam 0 alone at first
    hist = np.zeros((B, k, 0), dtype=np.int64)                                # (n, k, t) tokens so far
    fin_score = np.full((B, k), -np.inf)                                      # (B, k) finished, normalised
    fin_tok = np.full((B, k, limit), PAD, dtype=np.int64)
    tokens = np.full(B * k, BOS)
    for t in range(limit):
        n = len(alive)
        logp = log_softmax(dec.step(tokens).astype(np.float64))               # (n k, V)
        if no_repeat:
            ban_repeats(logp, hist.reshape(n * k, -1), no_repeat)
        V = logp.shape[1]
        cand = (score[:, :, None] + logp.reshape(n, k, V)).reshape(n, k * V)  # (n, k V)
        top = np.argpartition(-cand, 2 * k - 1, axis=1)[:, :2 * k]            # the 2k best, unordered
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(cand, top, 1), axis=1), 1)
        c_score = np.take_along_axis(cand, top, 1)                            # (n, 2k), best first
        c_beam, c_tok = top // V, top % V
        c_hist = np.concatenate([np.take_along_axis(hist, c_beam[:, :, None], 1), c_tok[:, :, None]], 2)
        rank = np.arange(2 * k)[None, :]
        # finished: EOS among the first k candidates (or every candidate at the last step)
        ends = (c_tok == EOS) & (rank < k) | (t == limit - 1)
        ends &= np.isfinite(c_score)
        new_fin = np.where(ends, c_score / _lp(t + 1, alpha), -np.inf)        # (n, 2k)
        pool_score = np.concatenate([fin_score[alive], new_fin], axis=1)      # (n, 3k)
        pool_tok = np.concatenate([fin_tok[alive], _pad_to(c_hist, limit)], axis=1)
        best = np.argsort(-pool_score, axis=1, kind="stable")[:, :k]
        fin_score[alive] = np.take_along_axis(pool_score, best, 1)
        fin_tok[alive] = np.take_along_axis(pool_tok, best[:, :, None], 1)
        # live: the k best candidates that did not end
        live_rank = np.argsort(np.where(c_tok == EOS, 2 * k, rank), axis=1, kind="stable")[:, :k]
        score = np.take_along_axis(c_score, live_rank, 1)                     # (n, k)
        score[np.take_along_axis(c_tok == EOS, live_rank, 1)] = -np.inf
        beam_of = np.take_along_axis(c_beam, live_rank, 1)
        hist = np.take_along_axis(c_hist, live_rank[:, :, None], 1)
        tokens_next = np.take_along_axis(c_tok, live_rank, 1)
        done = fin_score[alive, -1] >= score.max(axis=1) / _lp(limit, alpha)  # (n,) no beam can catch up
        if t == limit - 1 or done.all():
            break
        keep = np.flatnonzero(~done)
        rows = (keep[:, None] * k + beam_of[keep]).reshape(-1)                # surviving beams' rows
        dec.select(rows)
        alive, score, hist = alive[keep], score[keep], hist[keep]
        tokens = tokens_next[keep].reshape(-1)
    return [_strip(fin_tok[b, 0]) for b in range(B)]


def _pad_to(hist, limit):
    """(n, m, t) -> (n, m, limit), PAD after t."""
    n, m, t = hist.shape
    return np.concatenate([hist, np.full((n, m, limit - t), PAD, dtype=hist.dtype)], axis=2)


def _strip(row):
    """Token ids up to the first EOS, without PAD / BOS / EOS."""
    row = list(row)
    if EOS in row:
        row = row[:row.index(EOS)]
    return [int(i) for i in row if i > EOS]

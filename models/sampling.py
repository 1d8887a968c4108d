"""Choosing the next word from logits: greedy, temperature, top-k, top-p (nucleus).

Shapes: B rows, V vocabulary. All vectorised over rows.
"""
import numpy as np

from mytorch.nn.softmax import softmax


def choose_next(logits, temperature=0.0, top_k=None, top_p=None, rng=None):
    """logits (B, V) -> next ids (B,) int64.

    temperature 0: argmax. Otherwise sample from softmax(logits / temperature)
    restricted to the top_k largest logits and/or the smallest set of words
    whose probability mass reaches top_p. Sampling uses the Gumbel-max trick:
    argmax(z + Gumbel noise) is a draw from softmax(z).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"choose_next: expected logits of shape (B, V), got {logits.shape}")
    if temperature is None or not temperature >= 0:  # also rejects nan
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and not 1 <= top_k:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(axis=1).astype(np.int64)
    rng = rng if rng is not None else np.random.default_rng()
    z = logits / temperature
    B, V = z.shape
    if top_k is not None and top_k < V:
        kth = np.partition(z, V - top_k, axis=1)[:, V - top_k][:, None]  # (B, 1) k-th largest
        z = np.where(z >= kth, z, -np.inf)
    if top_p is not None and top_p < 1:
        order = np.argsort(-z, axis=1)                                    # (B, V) descending
        zs = np.take_along_axis(z, order, axis=1)
        p = softmax(zs, axis=1)
        before = np.cumsum(p, axis=1) - p                                 # mass of the better words
        keep_sorted = before < top_p                                      # always keeps the best word
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        z = np.where(keep, z, -np.inf)
    gumbel = -np.log(-np.log(rng.uniform(np.finfo(np.float64).tiny, 1.0, size=z.shape)))
    return (z + gumbel).argmax(axis=1).astype(np.int64)


# ----------------------------------------------------------------------------- logits processors
# Each takes z (R, V) float64 logits, one row per sequence being continued, and edits it in place.

def penalize_repeats(z, history, penalty):
    """CTRL's repetition penalty (Keskar et al., 2019) on the words of each row's history (R, L).

    z -> z / penalty where z > 0, z * penalty where z <= 0 (penalty > 1 lowers both), once per word.
    """
    rows = np.arange(len(z))[:, None]
    seen = np.zeros(z.shape, dtype=bool)
    seen[rows, history] = True
    z[...] = np.where(seen, np.where(z > 0, z / penalty, z * penalty), z)


def ban_repeated_ngrams(z, history, n):
    """Forbid every word that would complete an n-gram already in the row's history (R, L).

    The last n-1 words are compared with every (n-1)-word window of the history at once;
    the word that followed each matching window is banned (n = 1 bans every word used).
    """
    R, L = history.shape
    if L < n:
        return
    windows = np.lib.stride_tricks.sliding_window_view(history, n, axis=1)    # (R, L-n+1, n)
    last = history[:, L - n + 1:]                                              # (R, n-1)
    match = (windows[:, :, :n - 1] == last[:, None, :]).all(axis=2)            # (R, L-n+1)
    rows, cols = np.nonzero(match)
    z[rows, windows[rows, cols, n - 1]] = -np.inf


def ban_words(z, ids):
    """Forbid the words ids (e.g. <unk>, <sos>, <eos>) in every row."""
    if len(ids):
        z[:, np.asarray(ids, dtype=np.int64)] = -np.inf

"""The continuous cache of Grave et al. 2017 ("Improving neural language models with a continuous cache").

Shapes: B streams read side by side, t positions read at once, M positions held (M <= L, the cache
size), D the last layer's width, V vocabulary, G values of theta scored at once.

A language model reading a stream keeps, per stream, the last L of its hidden states h_i and the
word y_i that followed each. Position t's cache distribution puts on each word the attention
weight of the held states that were followed by it:

    p_cache(w | h_t) = sum_{i in window(t), y_i = w} exp(theta h_t . h_i) / Z_t
    Z_t = sum_{i in window(t)} exp(theta h_t . h_i)
    window(t) = the last L positions before t (earlier chunks' and this chunk's, never t itself)

and the model's distribution is mixed with it:  p(w) = (1 - lambda) p_model(w) + lambda p_cache(w).
Nothing is learned: theta, L and lambda are fitted on held-out text (app.adapt). The hidden states
are the last layer's outputs: the LSTM's top layer, the Transformer's last block after its final
LayerNorm. The softmax over the window is the stable one, the positions outside it masked with a
large finite negative; the very first position of a stream has an empty window (`valid` is False
there and the mixture must use the model alone).
"""
import numpy as np

from mytorch import backend

MASKED = -1e30          # score of a position outside the window: exp underflows to exactly 0


class NeuralCache:
    """size: L, the positions remembered per stream; thetas: one flatness theta or several (G,)."""

    def __init__(self, size, thetas):
        thetas = np.atleast_1d(np.asarray(thetas, dtype=np.float64))
        if not (isinstance(size, (int, np.integer)) and size >= 1):
            raise ValueError(f"NeuralCache: the size must be an integer >= 1, got {size!r}")
        if thetas.ndim != 1 or not np.all(np.isfinite(thetas)) or np.any(thetas < 0):
            raise ValueError(f"NeuralCache: theta must be finite numbers >= 0, got {thetas.tolist()}")
        self.size, self.thetas = int(size), thetas
        self.reset()

    def reset(self):
        """Forget every stream's history."""
        self.keys = self.values = None                  # (B, M, D) states, (B, M) the words after them

    def _weights(self, H, targets):
        """The attention of each position over its window: H (B, t, D), targets (B, t) ->
        (weights (G, B, t, M + t) summing to 1 over the window, Y (B, M + t) the words, valid (t,))."""
        xp = backend.get_array_module(H)
        B, t, D = H.shape
        targets = xp.asarray(targets)
        if tuple(targets.shape) != (B, t):
            raise ValueError(f"NeuralCache: targets of shape {tuple(targets.shape)} do not match "
                             f"the states' (B, t) = {(B, t)}")
        if self.keys is None:
            self.remember(H[:, :0], targets[:, :0])                         # an empty window per stream
        if self.keys.shape[0] != B or self.keys.shape[2] != D:
            raise ValueError(f"NeuralCache: holds {self.keys.shape[0]} streams of width "
                             f"{self.keys.shape[2]}, "
                             f"got states of shape {(B, t, D)}; reset() before another stream")
        M = self.keys.shape[1]
        K = xp.concatenate([self.keys, H], axis=1)                          # (B, M + t, D)
        Y = xp.concatenate([self.values, targets.astype(self.values.dtype)], axis=1)   # (B, M + t)
        S = (H @ K.transpose(0, 2, 1)).astype(np.float64)                   # (B, t, M + t): h_t . h_i
        j, q = xp.arange(M + t), M + xp.arange(t)                           # key index, query index
        window = (j[None, :] < q[:, None]) & (j[None, :] >= q[:, None] - self.size)   # (t, M + t)
        A = xp.asarray(self.thetas).reshape(-1, 1, 1, 1) * S                # (G, B, t, M + t)
        A = xp.where(window, A, MASKED)
        A -= A.max(axis=-1, keepdims=True)
        W = xp.exp(A)
        W /= W.sum(axis=-1, keepdims=True)
        valid = window.any(axis=1)                                          # (t,) False: an empty window
        W *= valid[:, None]                                                 # ... weighs nothing
        return W, Y, valid

    def remember(self, H, targets):
        """Hold H (B, t, D) and the words after them, targets (B, t), without scoring (the oldest
        beyond L leave)."""
        xp = backend.get_array_module(H)
        if self.keys is None:
            self.keys, self.values = H[:, :0], xp.asarray(targets)[:, :0]
        self.keys = xp.concatenate([self.keys, H], axis=1)[:, -self.size:]
        self.values = xp.concatenate([self.values, xp.asarray(targets).astype(self.values.dtype)],
                                     axis=1)[:, -self.size:]

    def read(self, H, targets):
        """Score, then remember: H (B, t, D) the states at t positions of each stream, targets (B, t)
        the words that followed them -> (p_cache(targets) (G, B, t) float64, valid (t,) bool).
        The states and words then join the cache (its oldest leave beyond L)."""
        W, Y, valid = self._weights(H, targets)
        xp = backend.get_array_module(W)
        hit = Y[:, None, :] == xp.asarray(targets)[:, :, None]              # (B, t, M + t): y_i = target
        p = (W * hit).sum(axis=-1)                                          # (G, B, t)
        self.remember(H, targets)
        return p, valid

    def distribution(self, H, targets, vocab_size):
        """The whole cache distribution, without remembering: H (B, t, D), targets (B, t) (the words
        after the earlier positions of the chunk) -> (G, B, t, V) float64; a row with an empty window is 0."""
        W, Y, _ = self._weights(H, targets)
        xp = backend.get_array_module(W)
        G, B, t, _ = W.shape
        row = xp.arange(G * B * t).reshape(G, B, t, 1)                      # one row of V per (g, b, t)
        index = row * vocab_size + Y[None, :, None, :]                      # (G, B, t, M + t)
        out = xp.bincount(index.ravel(), weights=W.ravel(), minlength=G * B * t * vocab_size)
        return out.reshape(G, B, t, vocab_size)


def mixed_logp(p_model, p_cache, lam):
    """log((1 - lam) p_model + lam p_cache), float64, never log 0 (any shapes that broadcast)."""
    xp = backend.get_array_module(p_model)
    p = (1 - lam) * xp.asarray(p_model, dtype=np.float64) + lam * p_cache
    return xp.log(xp.maximum(p, 1e-300))


def row_cache_logp(H, words, logp, theta, lam):
    """The cache over each row's own words, for independent rows (the course's fixtures).

    H (N, T, D) a model's last-layer states over the rows inp (N, T), words (N, T - 1) = inp[:, 1:]
    (the word after each state but the last), logp (N, V) the model's log-probabilities of the word
    after the row -> (N, V) float64 mixed_logp(p_model, p_cache, lam): a NeuralCache holding the
    row's first T - 1 states, asked with the last one.
    """
    xp = backend.get_array_module(H)
    N, T, _ = H.shape
    cache = NeuralCache(T, theta)
    cache.remember(H[:, :-1], words)
    unknown = xp.zeros((N, 1), dtype=cache.values.dtype)               # the word asked for: never read
    p_cache = cache.distribution(H[:, -1:], unknown, logp.shape[1])[0, :, 0]          # (N, V)
    return mixed_logp(xp.exp(logp.astype(np.float64)), p_cache, lam)

"""Adaptive softmax (Grave et al., 2017, "Efficient softmax approximation for GPUs"): an output
layer whose loss and log-probabilities are exact, but which spends little on rare words.

Shapes: N rows, D in_features, V n_classes, K = head size (shortlist + number of tail clusters),
N_c rows whose target lies in tail cluster c, H_c its hidden size, S_c its number of classes.

Classes are ids sorted by frequency (0 = most frequent). With cutoffs [k_0, k_1, ..., k_{C-1}] and
k_C = V, the head scores the shortlist 0..k_0-1 plus one logit per tail cluster; tail cluster c
(c = 0..C-1) holds ids k_c..k_{c+1}-1 and is scored through a narrow projection:

    h(x)   = W_h x (+ b_h)                 (K,)    K = k_0 + C, head logit k_0 + c = "in cluster c"
    z_c(x) = W_c2 (W_c1 x)                 (S_c,)  W_c1 (H_c, D), H_c = D // div_value**(c+1),
                                                   W_c2 (S_c, H_c), S_c = k_{c+1} - k_c, no biases

    log p(t | x) = log softmax(h(x))[t]                                      t in the shortlist
    log p(t | x) = log softmax(h(x))[k_0 + c] + log softmax(z_c(x))[t - k_c] t in cluster c

Both factors are proper distributions, so p sums to 1 over all V classes (log_prob checks it).
This is torch.nn.AdaptiveLogSoftmaxWithLoss's definition (same layout of the head's outputs,
same hidden sizes; a hidden size that rounds down to 0 is an error here).

Cost, multiply-adds per row (the loss needs the head and the target's cluster only):
V = 33,280, D = 128, cutoffs [2000, 10000], div_value 4 -> H = 32 and 8:

    full softmax               D V                          = 4,259,840
    head                       D (2000 + 2)                 =   256,256   (16.6x fewer)
    + cluster 0 (8,000 ids)    D 32 + 32 8000  =   260,096  ->   516,352   ( 8.2x fewer)
    + cluster 1 (23,280 ids)   D 8 + 8 23280   =   187,264  ->   443,520   ( 9.6x fewer)

With Zipf-like targets (P(id < k) = log(k + 1) / log V: 73% shortlist, 15% cluster 0, 12% cluster 1)
a row costs ~318,000 on average, 13.4x fewer than the full softmax; the backward scales alike.
log_prob over all V classes costs 703,616 per row (6.1x fewer).
"""
import numbers

import numpy as np

from .. import backend
from .linear import Linear
from .loss import exp_shifted
from .module import Module, check_last_dim
from .softmax import log_softmax


def _softmax_and_pick(Z, t):
    """Z (M, K) logits, t (M,) ints -> P = softmax(Z) (M, K), log softmax(Z)[m, t_m] (M,).

    log p_t = Z_t - m - log s with m the row max and s = sum exp(Z - m) >= 1: stable.
    """
    xp = backend.get_array_module(Z)
    z_t = Z[xp.arange(Z.shape[0]), t]                   # (M,)
    P = xp.empty_like(Z)
    m = exp_shifted(Z, out=P)                           # P = exp(Z - m); m (M, 1)
    s = P.sum(axis=1)                                   # (M,)
    P /= s[:, None]
    return P, z_t - m[:, 0] - xp.log(s)


def _affine(lin, X):
    """X (N, I) -> X W^T (+ b) (N, O), without touching the Linear's saved input (for log_prob)."""
    Z = X @ lin.params["W"].T
    if "b" in lin.params:
        Z += lin.params["b"]
    return Z


class AdaptiveLogSoftmaxWithLoss(Module):
    """Adaptive softmax with its NLL loss (see the module docstring for the math and the cost).

    AdaptiveLogSoftmaxWithLoss(in_features, n_classes, cutoffs, div_value=4.0, head_bias=False,
                               dtype=np.float32, rng=None)
    forward(X, y): X (N, D) float, y (N,) int -> mean NLL over the batch (Python float)
    backward(dLdloss=1.0) -> dL/dX (N, D); adds into every parameter's gradient
    log_prob(X, cache=False): X (N, D) -> (N, V) exact log-probabilities of all classes
    log_prob_backward(dLdlogp): (N, V) -> dL/dX (N, D), after log_prob(X, cache=True)
    nll(X, y): (N,) exact -log p(y_n | X_n), the head and each row's cluster only, nothing saved
    predict(X): X (N, D) -> (N,) the most probable class

    Parameters (named_parameters names), as mytorch Linear layers:
        head.W         (k_0 + C, D)   head.b (k_0 + C,) only with head_bias=True
        tail_proj.c.W  (H_c, D)       W_c1, cluster c's projection
        tail_out.c.W   (S_c, H_c)     W_c2, cluster c's output layer
    """

    def __init__(self, in_features, n_classes, cutoffs, div_value=4.0, head_bias=False,
                 dtype=np.float32, rng=None):
        super().__init__()
        who = "AdaptiveLogSoftmaxWithLoss"
        for name, v, low in (("in_features", in_features, 1), ("n_classes", n_classes, 2)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
                raise ValueError(f"{who}: {name} must be an integer >= {low}, got {v!r}")
        cutoffs = list(cutoffs)
        if not cutoffs:
            raise ValueError(f"{who}: cutoffs must name at least one boundary (else use a full softmax)")
        if any(not isinstance(k, numbers.Integral) or isinstance(k, bool) for k in cutoffs):
            raise ValueError(f"{who}: cutoffs must be integers, got {cutoffs!r}")
        cutoffs = [int(k) for k in cutoffs]
        if any(b <= a for a, b in zip(cutoffs, cutoffs[1:])):
            raise ValueError(f"{who}: cutoffs must be strictly increasing, got {cutoffs}")
        if cutoffs[0] <= 0 or cutoffs[-1] >= n_classes:
            raise ValueError(f"{who}: every cutoff must lie in (0, n_classes = {n_classes}), got {cutoffs}")
        if not div_value > 0:
            raise ValueError(f"{who}: div_value must be > 0, got {div_value!r}")
        self.in_features, self.n_classes, self.div_value = int(in_features), int(n_classes), div_value
        self.cutoffs = cutoffs + [self.n_classes]       # k_0 .. k_C: cluster c is k_c .. k_{c+1} - 1
        self.shortlist_size = cutoffs[0]
        self.n_clusters = len(cutoffs)
        rng = rng if rng is not None else np.random.default_rng()
        self.head = Linear(in_features, self.shortlist_size + self.n_clusters, bias=head_bias,
                           dtype=dtype, rng=rng)
        self.tail_proj, self.tail_out = [], []
        for c in range(self.n_clusters):
            hidden = int(in_features // div_value ** (c + 1))
            if hidden < 1:
                raise ValueError(f"{who}: cluster {c}'s hidden size in_features // div_value**{c + 1} "
                                 f"is 0 (in_features {in_features}, div_value {div_value})")
            size = self.cutoffs[c + 1] - self.cutoffs[c]
            self.tail_proj.append(Linear(in_features, hidden, bias=False, dtype=dtype, rng=rng))
            self.tail_out.append(Linear(hidden, size, bias=False, dtype=dtype, rng=rng))
        self._cache = None
        self._lp_cache = None

    def forward(self, X, y):
        """X (N, D), y (N,) -> mean_n -log p(y_n | X_n). Each row runs the head and its target's cluster."""
        self._check(X, y)
        xp = backend.get_array_module(X)
        k0 = self.shortlist_size
        # band 0: y in the shortlist; band c + 1: y in tail cluster c
        band = xp.searchsorted(xp.asarray(self.cutoffs[:-1]), y, side="right")   # (N,)
        head_t = xp.where(band == 0, y, k0 + band - 1)  # (N,) the head's target column
        P_head, logp = _softmax_and_pick(self.head.forward(X), head_t)          # (N, K), (N,)
        tails = []                                      # (c, rows, P_c, t_c) for non-empty clusters
        for c in range(self.n_clusters):                # a loop over the few clusters, not the rows
            rows = xp.flatnonzero(band == c + 1)        # (N_c,) distinct row indices
            if rows.size == 0:
                continue
            t = y[rows] - self.cutoffs[c]               # (N_c,) index inside the cluster
            H = self.tail_proj[c].forward(X[rows])      # (N_c, H_c)
            P, logp_c = _softmax_and_pick(self.tail_out[c].forward(H), t)      # (N_c, S_c), (N_c,)
            logp[rows] += logp_c                        # rows are distinct: plain fancy += is exact
            tails.append((c, rows, P, t))
        self._cache = (X.shape[0], P_head, head_t, tails)
        self.row_nll = -logp                            # (N,) each row's -log p(y): what adaptation reads
        return -float(logp.mean(dtype=np.float64))

    def backward(self, dLdloss=1.0):
        """-> dL/dX (N, D), adding dL/dW of the head and of every cluster that had rows.

        With g = dLdloss / N, a_n the head target, b_n the in-cluster target, P = softmax:
            dL/dh_n   = g (P(h_n) - onehot(a_n))                           every row
            dL/dz_n   = g (P(z_n) - onehot(b_n))                           rows of cluster c only
            z = U (V x)  (U = W_c2, V = W_c1, Hc = X_c V^T for the cluster's rows X_c):
            dU += dZ^T Hc,  dHc = dZ U,  dV += dHc^T X_c,  dX_c = dHc V
            dW_h += dh^T X,  db_h += sum_n dh_n,  dX = dh W_h + (dX_c scattered to its rows)
        A cluster with no rows in the batch gets nothing (its z never entered the loss).
        """
        if self._cache is None:
            raise RuntimeError("AdaptiveLogSoftmaxWithLoss.backward needs a forward first "
                               "(and runs once per forward)")
        N, dh, head_t, tails = self._cache
        xp = backend.get_array_module(dh)
        g = dLdloss / N
        dh[xp.arange(N), head_t] -= 1.0                 # P -> P - onehot, in place
        dh *= g
        dX = self.head.backward(dh)                     # (N, D), a fresh array
        for c, rows, dz, t in tails:
            dz[xp.arange(rows.shape[0]), t] -= 1.0
            dz *= g                                     # (N_c, S_c)
            dH = self.tail_out[c].backward(dz)          # (N_c, H_c)
            dX[rows] += self.tail_proj[c].backward(dH)  # (N_c, D); rows distinct
        self._cache = None
        return dX

    __call__ = forward

    def log_prob(self, X, cache=False):
        """X (N, D) -> (N, V) log p(v | x) for every class v; exp of each row sums to 1.

        cache=True saves what log_prob_backward needs (the plain forward/backward path of a model);
        the default saves nothing, so a pending loss backward stays intact.
        """
        self._check(X)
        xp = backend.get_array_module(X)
        k0 = self.shortlist_size
        head = log_softmax(_affine(self.head, X), axis=1)                     # (N, K)
        out = xp.empty((X.shape[0], self.n_classes), dtype=head.dtype)        # (N, V)
        out[:, :k0] = head[:, :k0]
        hidden = []
        for c in range(self.n_clusters):
            Hc = _affine(self.tail_proj[c], X)                                # (N, H_c)
            tail = log_softmax(_affine(self.tail_out[c], Hc), axis=1)         # (N, S_c)
            out[:, self.cutoffs[c]:self.cutoffs[c + 1]] = head[:, k0 + c, None] + tail
            hidden.append(Hc)
        if cache:
            self._lp_cache = (X, out, hidden)
        return out

    def log_prob_backward(self, dLdlogp):
        """Backward of log_prob(X, cache=True): dLdlogp (N, V) -> dL/dX (N, D), adding into every
        parameter's gradient.

        With G = dLdlogp, a log-softmax y = log softmax(z) has dL/dz = G_y - softmax(z) sum(G_y), and
        exp(y) = softmax(z) is read back from the saved output (per row, per band of classes):
            shortlist     y_head[:k0] = out[:, :k0]                       G_head[:, :k0] = G[:, :k0]
            cluster c     out_c = y_head[k0 + c] + y_c                    G_head[:, k0 + c] = sum(G_c)
                                                                          G_c is y_c's gradient too
            y_head's own exponentials: the shortlist's out, and each cluster's sum of exp(out_c)
        then the Linear layers as in backward (head: dW_h += dh^T X, db_h; cluster: dU, dV, dX).
        """
        X, out, hidden = getattr(self, "_lp_cache", None) or (None, None, None)
        if X is None:
            raise RuntimeError("AdaptiveLogSoftmaxWithLoss.log_prob_backward needs log_prob(X, cache=True) "
                               "first (and runs once per log_prob)")
        self._lp_cache = None
        xp = backend.get_array_module(dLdlogp)
        k0, K = self.shortlist_size, self.shortlist_size + self.n_clusters
        G_head = xp.empty((X.shape[0], K), dtype=dLdlogp.dtype)               # dL/d(log softmax head)
        P_head = xp.empty_like(G_head)                                        # softmax(head) = exp(y_head)
        G_head[:, :k0] = dLdlogp[:, :k0]
        P_head[:, :k0] = xp.exp(out[:, :k0])
        dX = xp.zeros_like(X)
        for c in range(self.n_clusters):
            lo, hi = self.cutoffs[c], self.cutoffs[c + 1]
            G_c = dLdlogp[:, lo:hi]                                           # (N, S_c)
            P_c = xp.exp(out[:, lo:hi])                                       # p(head c) * softmax(z_c)
            p_cluster = P_c.sum(axis=1)                                       # (N,) p(head c)
            G_head[:, k0 + c] = G_c.sum(axis=1)
            P_head[:, k0 + c] = p_cluster
            dz = G_c - (P_c / p_cluster[:, None]) * G_head[:, k0 + c, None]   # (N, S_c)
            self.tail_out[c].grads["W"] += dz.T @ hidden[c]                   # dU += dz^T H_c
            dH = dz @ self.tail_out[c].params["W"]                            # (N, H_c)
            self.tail_proj[c].grads["W"] += dH.T @ X                          # dV += dH^T X
            dX += dH @ self.tail_proj[c].params["W"]
        dh = G_head - P_head * G_head.sum(axis=1, keepdims=True)              # (N, K)
        self.head.grads["W"] += dh.T @ X
        if "b" in self.head.params:
            self.head.grads["b"] += dh.sum(axis=0)
        dX += dh @ self.head.params["W"]
        return dX

    def nll(self, X, y):
        """X (N, D), y (N,) -> (N,) -log p(y_n | X_n), exact, for evaluation: each row runs the head
        and its target's cluster only (as forward), and nothing is saved for a backward."""
        self._check(X, y)
        xp = backend.get_array_module(X)
        band = xp.searchsorted(xp.asarray(self.cutoffs[:-1]), y, side="right")   # (N,)
        head = log_softmax(_affine(self.head, X), axis=1)                         # (N, K)
        head_t = xp.where(band == 0, y, self.shortlist_size + band - 1)
        logp = head[xp.arange(X.shape[0]), head_t]                                # (N,)
        for c in range(self.n_clusters):
            rows = xp.flatnonzero(band == c + 1)
            if rows.size == 0:
                continue
            tail = log_softmax(_affine(self.tail_out[c], _affine(self.tail_proj[c], X[rows])), axis=1)
            logp[rows] += tail[xp.arange(rows.shape[0]), y[rows] - self.cutoffs[c]]
        return -logp

    def predict(self, X):
        """X (N, D) -> (N,) argmax_v log p(v | x) (computes all V log-probabilities)."""
        return self.log_prob(X).argmax(axis=1)

    def _check(self, X, y=None):
        who = "AdaptiveLogSoftmaxWithLoss"
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"{who}: expected X of shape (N, {self.in_features}) with N >= 1, "
                             f"got {tuple(X.shape)}")
        check_last_dim(X, self.in_features, who)
        if y is None:
            return
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"{who}: expected targets of shape ({X.shape[0]},), got {tuple(y.shape)}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"{who}: targets must be integers, got dtype {y.dtype}")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.n_classes:
            raise ValueError(f"{who}: targets must lie in [0, {self.n_classes}), got values in [{lo}, {hi}]")

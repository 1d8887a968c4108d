"""Language models averaged in probability space: an ensemble with the language model's interface.

Shapes: B batch (rows), T time, V vocabulary, K members.

    p(w | context) = sum_k weights_k p_k(w | context),      weights_k >= 0, sum_k weights_k = 1

Its scores are log p (log-probabilities: softmax leaves them as they are), computed stably as

    log p = logsumexp_k (log weights_k + log_softmax(z_k))          z_k (B, V) member k's scores

so predict, generate (every decoding of models.decoding) and the fixture files take an Ensemble
wherever they take a model. Members may mix LSTMs and Transformers; they must share the
vocabulary (one clear error otherwise). Weights are given or fitted on held-out text
(fit_weights: EM on the members' probabilities of the words that followed).
"""
import numpy as np

from mytorch import backend
from mytorch.nn.softmax import log_softmax

from . import decoding
from .base import check_ids


def check_weights(weights, k):
    """weights: k numbers >= 0, not all 0 -> (k,) float64 summing to 1 (a ValueError otherwise)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"ensemble weights: expected {k} finite numbers >= 0, not all 0, "
                         f"got {list(weights)}")
    return w / w.sum()


def fit_weights(member_logp, steps=20):
    """EM for mixture weights: member_logp (K, N) log p_k(word n) of N held-out words -> (K,) weights
    maximising sum_n log sum_k w_k p_k(word n).

    E step: r_kn = w_k p_kn / sum_j w_j p_jn (each member's share of word n);
    M step: w_k = mean_n r_kn. The likelihood never decreases; 20 steps settle K <= 4 members.
    """
    lp = np.asarray(member_logp, dtype=np.float64)
    w = np.full(lp.shape[0], 1.0 / lp.shape[0])
    for _ in range(steps):
        a = np.log(w)[:, None] + lp                     # (K, N)
        r = np.exp(a - a.max(axis=0))
        w = (r / r.sum(axis=0)).mean(axis=1)
    return w


def mix_logp(member_logp, weights):
    """(K, ...) members' log-probabilities (NumPy or CuPy), (K,) weights -> log sum_k w_k p_k (...),
    float64, stable: m + log sum_k exp(log w_k + log p_k - m), m the max over k."""
    xp = backend.get_array_module(member_logp)
    lp = xp.asarray(member_logp, dtype=np.float64)
    with np.errstate(divide="ignore"):                  # a weight of 0 drops its member: log 0 = -inf
        log_w = xp.asarray(np.log(np.asarray(weights, dtype=np.float64)))
    a = log_w.reshape((-1,) + (1,) * (lp.ndim - 1)) + lp
    m = a.max(axis=0)
    return m + xp.log(xp.exp(a - m).sum(axis=0))


class Ensemble:
    """members: language models with the same vocabulary; weights: (K,) numbers >= 0 (default: equal)."""

    def __init__(self, members, weights=None):
        members = list(members)
        if not members:
            raise ValueError("Ensemble: give at least one model")
        first = members[0]
        for k, m in enumerate(members[1:], 1):
            same = m.vocab_size == first.vocab_size and (
                m.vocab is None or first.vocab is None or np.array_equal(m.vocab, first.vocab))
            if not same:
                raise ValueError(f"Ensemble: member {k} has a different vocabulary from member 0 "
                                 f"({m.vocab_size} vs {first.vocab_size} words, or other words): "
                                 f"members must be trained on the same vocabulary")
        self.members = members
        self.weights = check_weights(np.ones(len(members)) if weights is None else weights, len(members))
        self.vocab_size, self.vocab = first.vocab_size, first.vocab

    def eval(self):
        for m in self.members:
            m.eval()
        return self

    def special_ids(self):
        return self.members[0].special_ids()

    def mix(self, member_scores):
        """[(B, V) scores of each member] -> (B, V) log sum_k w_k softmax(scores_k), in the members' dtype."""
        xp = backend.get_array_module(member_scores[0])
        lp = xp.stack([log_softmax(z.astype(np.float64), axis=-1) for z in member_scores])   # (K, B, V)
        return mix_logp(lp, self.weights).astype(member_scores[0].dtype)

    def predict(self, inp):
        """inp (B, T) ids -> (B, V) log-probabilities of the word after the last one (mixed)."""
        check_ids(inp, self.vocab_size, "Ensemble")
        return self.mix([m.predict(inp) for m in self.members])

    def generate(self, inp, timesteps, **options):
        """Continue each row of inp (B, T) by `timesteps` words from the mixture -> (B, timesteps) ids;
        options as LanguageModel.generate (models.decoding.Decoding's fields)."""
        check_ids(inp, self.vocab_size, "Ensemble")
        self.eval()
        return decoding.generate(self, inp, timesteps, special_ids=self.special_ids(),
                                 eos_id=self.vocab_size - 1, **options)

    # models.decoding's interface: the state is each member's state, in a list
    def decode_start(self, inp):
        starts = [m.decode_start(inp) for m in self.members]
        return self.mix([z for z, _ in starts]), [s for _, s in starts]

    def decode_step(self, ids, state):
        steps = [m.decode_step(ids, s) for m, s in zip(self.members, state)]
        return self.mix([z for z, _ in steps]), [s for _, s in steps]

    def select_state(self, state, rows):
        return [m.select_state(s, rows) for m, s in zip(self.members, state)]

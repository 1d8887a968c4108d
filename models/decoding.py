"""Continuing text: greedy, sampling (temperature, top-k, top-p) and beam search, for any model.

Shapes: B rows of the prompt, K beams, R = B (or B * K) rows being continued, V vocabulary,
L words so far (prompt + generated), S steps to generate.

A model plugs in with three methods; its state is carried, the prompt is read once:

    logits, state = model.decode_start(inp)       inp (B, L) -> logits (B, V) after the last word
    logits, state = model.decode_step(ids, state) ids (R,) -> logits (R, V) after one more word
    state = model.select_state(state, rows)       rows (R',) -> the state of those rows (beams)

Each step edits the logits (in this order: repetition penalty, no-repeat n-grams, the banned
words), then chooses: argmax (temperature 0), a draw (temperature > 0, restricted by top_k /
top_p), or the num_beams best continuations of each row by summed log-probability.
"""
from dataclasses import asdict, dataclass, fields

import numpy as np

from mytorch import backend
from mytorch.nn.softmax import log_softmax

from .sampling import ban_repeated_ngrams, ban_words, choose_next, penalize_repeats

MAX_GENERATE_STEPS = 10_000  # refuse more: a typo (1e6 for 1e2) would run for hours


@dataclass(frozen=True)
class Decoding:
    """How to choose words. The defaults are the recommended decoding (README, "Generation").

    temperature         0: greedy (argmax); else sample softmax(z / temperature)
    top_k, top_p        sample only among the k best words / the fewest words with mass >= top_p
    num_beams           > 1: beam search (temperature, top_k, top_p unused)
    length_penalty      beam search ranks log P / ((5 + length) / 6) ** length_penalty (Wu et al.,
                        2016); lengths differ only when <eos> may end a beam (ban_special=False)
    repetition_penalty  > 1 lowers the logits of words the row already holds, prompt included
    no_repeat_ngram     n > 0: never complete an n-gram the row already holds, prompt included
    ban_special         never emit <unk>, <sos> or <eos>
    seed                the sampling seed (None: fresh randomness)
    """
    temperature: float = 1.0
    top_k: int = None
    top_p: float = 0.85
    num_beams: int = 1
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram: int = 4
    ban_special: bool = True
    seed: int = 0

    def __post_init__(self):
        def bad(name, want):
            raise ValueError(f"decoding: {name} must be {want}, got {getattr(self, name)!r}")
        if not _number(self.temperature) or not self.temperature >= 0:
            bad("temperature", ">= 0")
        if self.top_k is not None and not (_integer(self.top_k) and self.top_k >= 1):
            bad("top_k", "an integer >= 1 or None")
        if self.top_p is not None and not (_number(self.top_p) and 0 < self.top_p <= 1):
            bad("top_p", "in (0, 1] or None")
        if not (_integer(self.num_beams) and self.num_beams >= 1):
            bad("num_beams", "an integer >= 1")
        if not (_number(self.length_penalty) and np.isfinite(self.length_penalty)):
            bad("length_penalty", "a finite number")
        if not (_number(self.repetition_penalty) and self.repetition_penalty > 0):
            bad("repetition_penalty", "> 0")
        if not (_integer(self.no_repeat_ngram) and self.no_repeat_ngram >= 0):
            bad("no_repeat_ngram", "an integer >= 0")
        if self.seed is not None and not _integer(self.seed):
            bad("seed", "an integer or None")

    @classmethod
    def of(cls, **options):
        """The defaults with `options` changed; an unknown option is a clear error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown decoding option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
        return cls(**options)

    def describe(self):
        """The options that differ from the defaults, as 'name=value' text."""
        default = asdict(Decoding())
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items() if v != default[k]) or "default"


def _number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _integer(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def generate(model, inp, steps, special_ids=(), eos_id=None, **options):
    """Continue each row of inp (B, L) by `steps` words -> (B, steps) int64 ids.

    special_ids: the words ban_special forbids; eos_id: the word that ends a beam (or None).
    """
    opts = Decoding.of(**options)
    if not _integer(steps) or not 1 <= steps <= MAX_GENERATE_STEPS:
        raise ValueError(f"generate: timesteps must be an integer in [1, {MAX_GENERATE_STEPS}], "
                         f"got {steps!r}")
    inp = backend.to_numpy(inp)
    banned = list(special_ids) if opts.ban_special else []
    if opts.num_beams > 1:
        return _beam_search(model, inp, steps, opts, banned, eos_id)
    rng = np.random.default_rng(opts.seed)
    logits, state = model.decode_start(inp)
    history = inp.astype(np.int64)                                   # (B, L + t): prompt and words so far
    for _ in range(steps):
        z = _process(logits, history, opts, banned)
        nxt = choose_next(z, opts.temperature, opts.top_k, opts.top_p, rng)      # (B,)
        history = np.concatenate([history, nxt[:, None]], axis=1)
        logits, state = model.decode_step(nxt, state)
    return history[:, inp.shape[1]:]


def _process(logits, history, opts, banned):
    """The model's logits (R, V) on the host in float64, with the penalties and bans applied.

    A row left with every word banned (possible only in a tiny vocabulary) drops the n-gram
    block, then the special-word ban, rather than become all -inf.
    """
    raw = backend.to_numpy(logits).astype(np.float64)
    z = raw.copy()
    if opts.repetition_penalty != 1:
        penalize_repeats(z, history, opts.repetition_penalty)
    if opts.no_repeat_ngram:
        ban_repeated_ngrams(z, history, opts.no_repeat_ngram)
    ban_words(z, banned)
    dead = ~np.isfinite(z).any(axis=1)
    if dead.any():
        fallback = raw[dead]
        ban_words(fallback, banned)
        z[dead] = np.where(np.isfinite(fallback).any(axis=1, keepdims=True), fallback, raw[dead])
    return z


def _beam_search(model, inp, steps, opts, banned, eos_id):
    """The num_beams best continuations of each row; returns the best one per row (B, steps).

    All B * K live beams advance together; each step keeps the K most likely continuations
    of each row that do not end. A continuation ending in eos_id leaves the search for a pool
    of the K best finished ones (padded with eos_id), ranked by log P / ((5 + n) / 6) ** a with
    n its length (eos included) and a the length penalty; at the end the live beams join the pool.
    """
    B, K, V, L = len(inp), opts.num_beams, model.vocab_size, inp.shape[1]
    logits, state = model.decode_start(inp)
    rows = np.repeat(np.arange(B), K)                                 # (B*K,) every row K times
    logits = backend.to_numpy(logits)[rows]
    state = model.select_state(state, rows)
    history = inp[rows].astype(np.int64)                              # (B*K, L + t)
    score = np.tile(np.r_[0.0, np.full(K - 1, -np.inf)], B)           # (B*K,) log P; beam 0 live at first
    pool = np.full((B, 0), -np.inf), np.zeros((B, 0, steps), dtype=np.int64)   # finished: scores, words

    def penalised(log_p, n):
        return log_p / ((5.0 + n) / 6.0) ** opts.length_penalty

    for t in range(steps):
        total = score[:, None] + log_softmax(_process(logits, history, opts, banned))   # (B*K, V)
        if eos_id is not None:
            words = np.concatenate([history[:, L:], np.full((B * K, steps - t), eos_id)], axis=1)
            ended = penalised(total[:, eos_id], t + 1).reshape(B, K)
            pool = _best(pool, ended, words.reshape(B, K, steps), K)
            total[:, eos_id] = -np.inf                                # the live beams go on
        ranked = total.reshape(B, K * V)
        best = np.argpartition(-ranked, K - 1, axis=1)[:, :K]          # (B, K) the K best, any order
        src = (np.arange(B)[:, None] * K + best // V).ravel()          # (B*K,) the beam each came from
        words = (best % V).ravel()
        score = ranked[np.arange(B)[:, None], best].ravel()
        history = np.concatenate([history[src], words[:, None]], axis=1)
        state = model.select_state(state, src)
        logits, state = model.decode_step(words, state)
    live = history[:, L:].reshape(B, K, steps)
    scores, words = _best(pool, penalised(score, steps).reshape(B, K), live, 1)
    return words[:, 0]


def _best(pool, new_scores, new_words, K):
    """The K best of a pool (scores (B, P), words (B, P, S)) and new entries (B, K'), (B, K', S)."""
    scores = np.concatenate([pool[0], new_scores], axis=1)
    words = np.concatenate([pool[1], new_words], axis=1)
    keep = np.argsort(-scores, axis=1, kind="stable")[:, :K]          # (B, K)
    return np.take_along_axis(scores, keep, 1), np.take_along_axis(words, keep[:, :, None], 1)

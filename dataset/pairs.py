"""Sentence pairs for translation: read (the Ding file or a TSV), split, and batch by token count.

    load(path)  -> {"train"|"valid"|"test": {"sentences": [(src, tgt)], "phrases": [(src, tgt)]}}
                   path: the Ding de-en file (dataset.ding), or a TSV, one `source<TAB>target` a line
                   (any language pair; split by the same hash of the source side; no phrases)
    reverse(splits)   the other direction (en-de from de-en)
    TokenBatches      training batches of similar lengths, about max_tokens tokens each

Batches (TokenBatches): each epoch e, with rng = default_rng([seed, e]), the epoch's examples (every
sentence, plus `phrases` x as many phrase pairs drawn afresh) are sorted by length with random ties,
cut into exactly n_batches runs of about equal token count (so every epoch has the same number of
batches, as the trainer's schedule needs), and the runs are shuffled. A batch is

    x (B, S) int32   source ids + EOS, right-padded with PAD
    y (B, T) int32   BOS + target ids + EOS, right-padded with PAD   (the model reads y[:, :-1] and
                                                                      predicts y[:, 1:])

          x: [ Sie  stellte  ...  Herd  .  EOS  PAD ]      y: [ BOS  She  set  ...  stove  .  EOS  PAD ]
"""
import hashlib
import math

import numpy as np

from . import ding
from .subwords import BOS, EOS, PAD


def is_tsv(path):
    """Is the file a TSV of pairs (its first non-empty, non-comment lines hold a tab)?"""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                return "\t" in line
    return False


def read_tsv(path):
    """The pairs of a `source<TAB>target` file, split by a hash of the source side (as ding.split_of)."""
    out = {s: {"sentences": [], "phrases": []} for s in ("train", "valid", "test")}
    seen = set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                raise ValueError(f"{path}:{n}: expected `source<TAB>target`, got {line.strip()[:80]!r}")
            pair = (parts[0].strip(), parts[1].strip())
            if pair not in seen:
                seen.add(pair)
                out[ding.split_of(pair[0])]["sentences"].append(pair)
    if not out["train"]["sentences"]:
        raise ValueError(f"{path} holds no training pair")
    return out


def load(path):
    """The splits of a Ding file or a TSV (see the module docstring)."""
    return read_tsv(path) if is_tsv(path) else ding.read(path)


def reverse(splits):
    """Every pair turned around: (src, tgt) -> (tgt, src)."""
    return {s: {k: [(b, a) for a, b in v] for k, v in parts.items()} for s, parts in splits.items()}


def fingerprint(pairs):
    """A short hash of a list of pairs (--resume refuses other data)."""
    h = hashlib.blake2b(digest_size=8)
    for a, b in pairs:
        h.update(a.encode() + b"\t" + b.encode() + b"\n")
    return h.hexdigest()


def pad_rows(rows, first=None):
    """list of id lists -> (B, L) int32, each row [first] + ids + [EOS], right-padded with PAD."""
    head = [] if first is None else [first]
    L = max(len(r) for r in rows) + len(head) + 1
    out = np.full((len(rows), L), PAD, dtype=np.int32)
    for i, r in enumerate(rows):           # a copy per row into one array (no per-row math)
        seq = head + list(r) + [EOS]
        out[i, :len(seq)] = seq
    return out


class TokenBatches:
    """Token-count batches of encoded pairs (see the module docstring). sentences, phrases: lists of
    (src ids, tgt ids); phrases: phrase pairs drawn per sentence each epoch (0: none)."""

    def __init__(self, sentences, max_tokens, seed=0, phrases=(), phrase_ratio=0.0):
        if not sentences:
            raise ValueError("TokenBatches: no training sentence")
        self.sentences, self.phrase_pool = list(sentences), list(phrases)
        self.n_phrases = min(len(self.phrase_pool), int(round(phrase_ratio * len(self.sentences))))
        self.max_tokens, self.seed, self.epoch = int(max_tokens), int(seed), 0
        cost = self._cost(self.sentences) + self._mean_cost(self.phrase_pool) * self.n_phrases
        self.tokens_per_epoch = cost
        self.n_batches = max(1, math.ceil(cost / self.max_tokens))

    @staticmethod
    def _cost(pairs):
        return sum(max(len(a), len(b)) + 2 for a, b in pairs)

    def _mean_cost(self, pool):
        return self._cost(pool) / len(pool) if pool else 0.0

    def __len__(self):
        return self.n_batches

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def epoch_examples(self, rng):
        """This epoch's pairs: every sentence and a fresh draw of n_phrases phrase pairs."""
        if not self.n_phrases:
            return self.sentences
        pick = rng.choice(len(self.phrase_pool), self.n_phrases, replace=False)
        return self.sentences + [self.phrase_pool[i] for i in pick]

    def batches(self, start=0):
        """Yield (x, y) for batches start .. n_batches - 1 of this epoch."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pairs = self.epoch_examples(rng)
        length = np.array([max(len(a), len(b)) + 2 for a, b in pairs])
        order = np.lexsort((rng.random(len(pairs)), length))          # by length, random ties
        cum = np.cumsum(length[order])
        cuts = np.searchsorted(cum, cum[-1] * np.arange(1, self.n_batches) / self.n_batches)
        runs = np.split(order, cuts)
        for k in rng.permutation(self.n_batches)[start:]:
            run = runs[k] if len(runs[k]) else order[:1]                 # never an empty batch
            yield (pad_rows([pairs[i][0] for i in run]), pad_rows([pairs[i][1] for i in run], first=BOS))

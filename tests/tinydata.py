"""A tiny WikiText-style corpus and its HW4P1 layout, for tests that run train.py end to end.

    make_tiny_hw4p1(root)  -> root/hw4p1 with dataset/ and fixtures/ (dataset.prepare on root/wikitext)

The corpus is a few articles of pseudo-random words from a small word list (seeded, so the
same arguments give the same files). The validation split is long enough for
fixtures.make (416 windows of 30 words), the training split short enough that one epoch
of a tiny model (--batch_size 4 --bptt 5) is a few dozen batches.
"""
from pathlib import Path

import numpy as np

WORDS = ("the a of and to in is was for on with as by at from that this it he she they river "
         "city game song album band film king war team season year first new old great small "
         "north south east west high low early late long short").split()


def _article(rng, title, n_lines, words):
    lines = [f" = {title} = ", " "]
    for _ in range(n_lines):
        n = int(rng.integers(6, 14))
        lines += [" " + " ".join(rng.choice(words, n).tolist()) + " . ", " "]
    return lines


def wikitext_text(n_articles, n_lines, seed, words=WORDS):
    """WikiText-style text: n_articles articles (2-word titles), n_lines sentences each."""
    rng = np.random.default_rng(seed)
    lines = [" "]
    for k in range(n_articles):
        lines += _article(rng, f"{words[k % len(words)].title()} Article{k}", n_lines, words)
    return "\n".join(lines) + "\n"


def make_tiny_hw4p1(root, train_articles=3, train_lines=12, seed=0, words=WORDS):
    """Write root/wikitext/wiki.{train,valid}.tokens and build root/hw4p1 with dataset.prepare.

    The valid split uses only words (and titles) that occur in the train split. Returns root/hw4p1.
    """
    from dataset.prepare import prepare
    root = Path(root)
    wt = root / "wikitext"
    wt.mkdir(parents=True, exist_ok=True)
    train = wikitext_text(train_articles, train_lines, seed, words)
    # valid: the same titles (so every word is in the train vocabulary), more text per article
    valid = wikitext_text(train_articles, 40, seed + 1, words)
    (wt / "wiki.train.tokens").write_text(train, encoding="utf-8")
    (wt / "wiki.valid.tokens").write_text(valid, encoding="utf-8")
    out = root / "hw4p1"
    prepare(wt, out, log=lambda *a: None)
    return out

"""The Ding German-English dictionary (TU Chemnitz; Debian's trans-de-en) read into aligned pairs.

The file is GPL-2+: it is read where it lies (DEFAULT_FILE, or --data FILE), never copied into
the project. One entry a line, `German :: English`; `#` starts a comment line. Within an entry:

    |        separates senses (or example sentences): the two sides' i-th senses translate each other
    ;        separates synonyms within a sense: aligned one to one when both sides count the same
    {f} [ugs.] <Aal> /NBCRV/ (zoologische Ordnung)     annotations: gender, register, variants,
                                                       abbreviations, explanations; removed

    Sie stellte die Pfanne auf den Herd. :: She set the pan on the stove.

A pair is kept when its sides align (the same number of senses, and within the sense the same
number of synonyms) and neither side, once cleaned, is empty or holds a bare " / " alternative
("It's not / It isn't over"). A pair is a *sentence* when both sides have >= 4 words and end in
".", "?" or "!"; every other pair is a *phrase* (words, collocations: "eel spear").

Split (split_of): by a hash of the German side, so a pair never changes side when the file grows,
and a German sentence never sits on two sides: test if hash % 100 < 4, validation if < 8, else
training. Phrases are split by the same hash; only training phrases are ever read for training.
"""
import hashlib
import os
import re

DEFAULT_FILE = "/usr/share/trans/de-en"        # where `apt-get install trans-de-en` puts it
TEST_PERCENT, VALID_PERCENT = 4, 4

_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]|<[^>]*>|\([^)]*\)|(?<!\S)/[^/\s][^/]*/(?!\w)")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:?!])")


def find_file(path=None):
    """The Ding file: path if given, else DEFAULT_FILE; FileNotFoundError saying how to get it."""
    path = path or DEFAULT_FILE
    if not os.path.isfile(path):
        hint = ("install it with `apt-get install trans-de-en`, or name the file with --data FILE"
                if path == DEFAULT_FILE else "name the Ding de-en file, or a TSV of source<TAB>target pairs")
        raise FileNotFoundError(f"no translation data at {path}: {hint}")
    return path


def clean(text):
    """One side of a pair without its annotations, spaces collapsed: "Herd {m} [cook.]" -> "Herd"."""
    previous = None
    while previous != text:                     # nested annotations: "(von etw. [ugs.])"
        previous, text = text, _ANNOTATION.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip()
    return text.strip(" ;,")


def is_sentence(de, en):
    """Both sides >= 4 words, each ending in ".", "?" or "!"."""
    return all(len(s.split()) >= 4 and s[-1] in ".?!" for s in (de, en))


def entry_pairs(line):
    """The aligned (german, english) pairs of one entry line; [] for comments and unaligned entries."""
    if line.startswith("#") or " :: " not in line:
        return []
    de_side, en_side = line.rstrip("\n").split(" :: ", 1)
    de_senses, en_senses = de_side.split(" | "), en_side.split(" | ")
    if len(de_senses) != len(en_senses):
        return []
    pairs = []
    for de_sense, en_sense in zip(de_senses, en_senses):
        de_syn, en_syn = _synonyms(de_sense), _synonyms(en_sense)
        if len(de_syn) != len(en_syn):
            continue
        for de, en in zip(de_syn, en_syn):
            de, en = clean(de), clean(en)
            if de and en and " / " not in de and " / " not in en and "/" not in de + en:
                pairs.append((de, en))
    return pairs


def _synonyms(sense):
    """A sense cut at its "; " separators (a sentence's own ";" is kept: it ends a part with ".")."""
    return [s for s in sense.split("; ") if s.strip()]


def split_of(german):
    """"test", "valid" or "train": by blake2b of the German side (stable across runs and file versions)."""
    h = int.from_bytes(hashlib.blake2b(german.encode("utf-8"), digest_size=8).digest(), "little") % 100
    return "test" if h < TEST_PERCENT else "valid" if h < TEST_PERCENT + VALID_PERCENT else "train"


def read(path):
    """{"train"|"valid"|"test": {"sentences": [(de, en)], "phrases": [(de, en)]}}, each list without
    duplicates, in the file's order. ValueError when the file holds no aligned sentence pair."""
    out = {s: {"sentences": [], "phrases": []} for s in ("train", "valid", "test")}
    seen = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            for de, en in entry_pairs(line):
                if (de, en) in seen:
                    continue
                seen.add((de, en))
                kind = "sentences" if is_sentence(de, en) else "phrases"
                out[split_of(de)][kind].append((de, en))
    if not any(out[s]["sentences"] for s in out):
        raise ValueError(f"{path} holds no aligned sentence pair (`German sentence. :: English sentence.` "
                         f"lines): is it the Ding de-en file?")
    return out

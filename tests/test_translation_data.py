"""Translation data: the Ding format's parsing (on lines written here: the GPL file is never copied),
the hash split, TSV files, token batches, and sentencepiece subwords in the model file."""
import os

import numpy as np
import pytest

from dataset import ding, pairs
from dataset.subwords import BOS, EOS, PAD, Subwords

DING_LINES = "\n".join([
    "# Version :: devel 2023-01-30",
    "Herd {m}; Kochherd {m} [cook.] | Herde {pl} | Sie stellte die Pfanne auf den Herd. :: "
    "stove; cooker [Br.] | stoves | She set the pan on the stove.",
    "Aal {m} (auf der Speisekarte) [cook.] | Aal blau; blauer Aal :: Eel (on a menu) | Eel au bleu",
    "ABC-Spürpanzer {m} [mil.] :: NBC reconnaissance vehicle /NBCRV/",
    "eine Abkürzung nehmen {v} | Hier geht der kurze Weg. | Noch ein Satz. :: to cut across | "
    "You can cut across here.",
    "Noch ist nicht aller Tage Abend. :: It's not over / It isn't over until it's over."])


def test_entries_align_senses_and_synonyms_and_drop_annotations():
    lines = DING_LINES.splitlines()
    assert ding.entry_pairs(lines[0]) == []                                  # a comment
    assert ding.entry_pairs(lines[1]) == [("Herd", "stove"), ("Kochherd", "cooker"), ("Herde", "stoves"),
                                          ("Sie stellte die Pfanne auf den Herd.",
                                           "She set the pan on the stove.")]
    # senses 2: "Aal blau; blauer Aal" (2 synonyms) vs "Eel au bleu" (1): that sense does not align
    assert ding.entry_pairs(lines[2]) == [("Aal", "Eel")]
    assert ding.entry_pairs(lines[3]) == [("ABC-Spürpanzer", "NBC reconnaissance vehicle")]
    assert ding.entry_pairs(lines[4]) == []                                  # 3 senses against 2
    assert ding.entry_pairs(lines[5]) == []                                  # a " / " alternative


def test_sentences_and_phrases():
    assert ding.is_sentence("Sie stellte die Pfanne auf den Herd.", "She set the pan on the stove.")
    assert not ding.is_sentence("Herd", "stove")
    assert not ding.is_sentence("Wie geht es?", "How are you?")             # 3 words: a phrase


def test_split_is_a_stable_hash_of_the_german_side():
    sides = [ding.split_of(f"Satz Nummer {i}.") for i in range(4000)]
    share = {s: sides.count(s) / len(sides) for s in ("train", "valid", "test")}
    assert 0.02 < share["test"] < 0.06 and 0.02 < share["valid"] < 0.06
    assert sides == [ding.split_of(f"Satz Nummer {i}.") for i in range(4000)]   # deterministic
    assert ding.split_of("Sie stellte die Pfanne auf den Herd.") == "train"    # fixed for ever


def test_read_refuses_a_file_without_sentences(tmp_path):
    f = tmp_path / "words"
    f.write_text("Herd {m} :: stove\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no aligned sentence pair"):
        ding.read(f)
    with pytest.raises(FileNotFoundError, match="no translation data at .*/x: name the Ding de-en file"):
        ding.find_file(str(tmp_path / "x"))
    if not os.path.exists(ding.DEFAULT_FILE):
        with pytest.raises(FileNotFoundError, match="apt-get install trans-de-en"):
            ding.find_file(None)


def test_tsv_pairs_split_by_source_and_reversed(tmp_path):
    f = tmp_path / "pairs.tsv"
    f.write_text("".join(f"sentence {i}\t句子 {i}\n" for i in range(300)), encoding="utf-8")
    assert pairs.is_tsv(f)
    splits = pairs.load(f)
    assert sum(len(s["sentences"]) for s in splits.values()) == 300
    for name, s in splits.items():
        assert all(ding.split_of(a) == name for a, _ in s["sentences"])
    back = pairs.reverse(splits)
    assert back["train"]["sentences"][0] == splits["train"]["sentences"][0][::-1]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nonly one column\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected `source<TAB>target`"):
        pairs.load(bad)


def test_token_batches_cover_every_pair_once_per_epoch_with_the_same_count(rng):
    def ids():
        return list(rng.integers(4, 50, rng.integers(1, 20)))
    sentences = [(ids(), ids()) for _ in range(200)]
    phrases = [([int(i)], [int(i) + 1]) for i in rng.integers(4, 50, 100)]
    loader = pairs.TokenBatches(sentences, 300, seed=3, phrases=phrases, phrase_ratio=0.25)
    counts = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        got = list(loader.batches())
        counts.append(len(got))
        rows = [(tuple(int(i) for i in x[x != PAD][:-1]), tuple(int(i) for i in y[y != PAD][1:-1]))
                for xb, yb in got for x, y in zip(xb, yb)]
        assert len(rows) == 200 + 50
        assert set((tuple(a), tuple(b)) for a, b in sentences) <= set(rows)
        for xb, yb in got:
            assert np.all(yb[:, 0] == BOS)
            assert np.all((xb == EOS).sum(axis=1) == 1) and np.all((yb == EOS).sum(axis=1) == 1)
    assert counts == [len(loader)] * 3
    loader.set_epoch(1)
    all_b = list(loader.batches())
    rest = list(loader.batches(start=2))                          # resume inside an epoch
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(all_b[2:], rest))


def test_subwords_round_trip_and_fixed_special_ids():
    texts = ([f"der Hund sieht {n} Katzen." for n in range(50)]
             + [f"the dog sees {n} cats." for n in range(50)])
    sp = Subwords.train(texts, 60)
    ids = sp.encode(["der Hund sieht 7 Katzen."])
    assert min(ids[0]) > EOS
    assert sp.decode(ids) == ["der Hund sieht 7 Katzen."]
    again = Subwords(sp.blob)                                     # from the bytes a model file holds
    assert again.encode(["the dog sees 3 cats."]) == sp.encode(["the dog sees 3 cats."])
    assert sp.decode([[BOS] + ids[0] + [EOS, PAD]]) == ["der Hund sieht 7 Katzen."]


@pytest.mark.data
def test_the_ding_file_gives_sentence_pairs_on_three_disjoint_sides():
    from conftest import require_shared
    d = ding.read(require_shared("ding", "de-en"))
    n = {s: len(d[s]["sentences"]) for s in d}
    assert n["train"] > 12000 and 400 < n["valid"] < 800 and 400 < n["test"] < 800, n
    assert len(d["train"]["phrases"]) > 200000
    german = {s: {a for a, _ in d[s]["sentences"] + d[s]["phrases"]} for s in d}
    assert not german["train"] & german["valid"] and not german["train"] & german["test"]
    assert not german["valid"] & german["test"]
    words = np.mean([len(a.split()) for a, _ in d["test"]["sentences"]])
    assert 6 < words < 10                                          # short idiomatic sentences
    for a, b in d["train"]["sentences"][:2000]:
        assert ding.is_sentence(a, b) and not any(c in a + b for c in "{}[]<>")

"""Corpus and batching for the HW4P1 language model.

    load_hw4p1(data_dir)   -> HW4P1(vocab, train, valid)   the checked handout files
    load_fixtures(data_dir) -> dict of the prediction / generation fixtures
    Vocabulary(words)       encode(words) -> ids, decode(ids) -> "w1 w2 ..."
    LanguageModelLoader     (B, T) input / target windows, seeded and resumable
    python -m dataset.prepare --wikitext DIR --out DIR   builds the layout from WikiText-2
"""
from .corpus import (EOL, EOS, SOS, UNK, HW4P1, DataError, Vocabulary, load_fixtures, load_hw4p1,
                     load_vocab)
from .loader import LanguageModelLoader

__all__ = ["SOS", "EOS", "EOL", "UNK", "HW4P1", "DataError", "Vocabulary", "load_hw4p1", "load_vocab",
           "load_fixtures", "LanguageModelLoader"]

"""Corpus and batching for the HW4P1 language model.

    load_hw4p1(data_dir)   -> HW4P1(vocab, train, valid)   the checked handout files
    load_fixtures(data_dir) -> dict of the prediction / generation fixtures
    fingerprint(data)       -> 16 hex digits naming a loaded corpus (a run stores it)
    dataset.bundled.hw4p1_dir() -> the HW4P1 folder built from the bundled WikiText-2 (cached)
    Vocabulary(words)       encode(words) -> ids, decode(ids) -> "w1 w2 ..."
    LanguageModelLoader     (B, T) input / target windows, seeded and resumable
    StreamLoader            (B, T_k) batches walking down B contiguous streams (a carried state)
    python -m dataset.prepare --out DIR [--wikitext DIR]   builds the layout from WikiText-2
"""
from .corpus import (EOL, EOS, SOS, UNK, HW4P1, DataError, Vocabulary, fingerprint, load_fixtures,
                     load_hw4p1, load_vocab)
from .loader import LanguageModelLoader
from .streams import StreamLoader

__all__ = ["SOS", "EOS", "EOL", "UNK", "HW4P1", "DataError", "Vocabulary", "load_hw4p1", "load_vocab",
           "load_fixtures", "fingerprint", "LanguageModelLoader", "StreamLoader"]

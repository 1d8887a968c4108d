"""Subword vocabularies with sentencepiece (Kudo and Richardson 2018), kept as bytes inside a model file.

    sp = Subwords.train(texts, vocab_size=4000, model_type="bpe")   # on the training split's sentences
    sp.encode(["Sie stellte die Pfanne auf den Herd."])     # -> [[id, ...]]
    sp.decode([[id, ...]])                                  # -> ["Sie stellte die Pfanne auf den Herd."]
    sp.blob                                                 # uint8 (n,): the model, for the .npz

One vocabulary for both languages (joint, as the translation model shares its embedding), with fixed
special ids: PAD 0, UNK 1, BOS 2, EOS 3. sentencepiece is an extra: `pip install -e '.[translate]'`.
"""
import io

import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3
INSTALL = "pip install -e '.[translate]'"


def require(module):
    """import module (sentencepiece, sacrebleu), or ImportError saying which pip install brings it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"translation needs {module}: {INSTALL}") from None


class Subwords:
    """A trained sentencepiece model: encode / decode / blob / vocab_size."""

    def __init__(self, blob):
        spm = require("sentencepiece")
        self.blob = np.frombuffer(bytes(np.asarray(blob, dtype=np.uint8)), dtype=np.uint8)
        self.sp = spm.SentencePieceProcessor(model_proto=self.blob.tobytes())
        ids = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if ids != (PAD, UNK, BOS, EOS):
            raise ValueError(f"subword model has special ids (pad, unk, bos, eos) = {ids}, "
                             f"expected {(PAD, UNK, BOS, EOS)}")
        self.vocab_size = self.sp.get_piece_size()

    @classmethod
    def train(cls, texts, vocab_size, model_type="bpe", seed_sentences=2_000_000):
        """texts: an iterable of str (both languages) -> Subwords; vocab_size >= 8."""
        spm = require("sentencepiece")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=int(vocab_size),
            model_type=model_type, character_coverage=1.0, pad_id=PAD, unk_id=UNK, bos_id=BOS,
            eos_id=EOS, input_sentence_size=seed_sentences, shuffle_input_sentence=False,
            hard_vocab_limit=False, num_threads=1, minloglevel=2)
        return cls(np.frombuffer(model.getvalue(), dtype=np.uint8))

    def encode(self, texts):
        """list of str -> list of lists of int ids (no BOS / EOS)."""
        return self.sp.encode(list(texts))

    def decode(self, ids):
        """list of id sequences -> list of str (specials dropped)."""
        return [self.sp.decode([int(i) for i in seq if int(i) > EOS]) for seq in ids]

"""A Transformer encoder-decoder (Vaswani et al. 2017, pre-LayerNorm) that translates, from mytorch's layers.

Shapes: B sentences, S source tokens, T target tokens, D = d_model, F = d_ff, V subword vocabulary
(one, shared by both languages), Le / Ld encoder / decoder blocks.

    src (B, S) -> Embedding * sqrt(D) + sin/cos positions -> Dropout
               -> TransformerBlock x Le (bidirectional, the source's padding hidden) -> LayerNorm = memory
    y_in (B, T) = BOS + target           (teacher forcing: the target shifted right)
               -> Embedding * sqrt(D) + positions -> Dropout
               -> DecoderBlock x Ld (causal self-attention, cross-attention over memory, MLP) -> LayerNorm
               -> Linear (tied: its W is the embedding's) -> logits (B, T, V)
    loss = label-smoothed cross-entropy of logits against y_out = target + EOS, padding ignored

The source and target embeddings are one matrix (a joint vocabulary); tied=True also makes it the
output projection's (Press and Wolf 2017). Init: the embedding N(0, 1/D) (so that sqrt(D) E has unit
rows), every other matrix PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases 0, LayerNorm 1 / 0.

Training: forward_loss(x, y) with x (B, S) = source + EOS and y (B, T + 1) = BOS + target + EOS, both
right-padded with PAD (dataset.pairs.TokenBatches), then backward_loss(). The loss is the mean over the
target's real tokens; batch_items(y) counts them, so a batch split over threads (mytorch.fast.split)
weighs each share by its tokens. Inference: translate(sentences, beams) (models.translation_search:
greedy or beam search, with the decoder's KV caches).
"""
import math
import numbers

import numpy as np

from dataset.subwords import BOS, PAD, Subwords
from mytorch import backend, fast
from mytorch.nn import (DecoderBlock, Dropout, Embedding, LabelSmoothedCrossEntropy, LayerNorm, Linear,
                        Module, SinusoidalPositionalEncoding, TransformerBlock)
from mytorch.nn.module import check_ids, detached

from . import translation_search
from .checkpoint import load_parameters, parameter_arrays, save_model


class Translator(Module):
    """Encoder-decoder Transformer; config: every constructor argument but seed and dtype, and
    model="translator" (models.load). .subwords: the dataset.subwords.Subwords the ids come from
    (saved inside the model file). splittable: sentence pairs are independent rows."""

    splittable = True

    def __init__(self, vocab_size, d_model=256, nhead=4, enc_layers=3, dec_layers=3, d_ff=1024, dropout=0.1,
                 tied=True, max_len=256, gelu="tanh", label_smoothing=0.1, source="de", target="en",
                 seed=0, dtype=np.float32):
        super().__init__()
        for name, value, low in (("vocab_size", vocab_size, 5), ("d_model", d_model, 1), ("nhead", nhead, 1),
                                 ("enc_layers", enc_layers, 1), ("dec_layers", dec_layers, 1),
                                 ("d_ff", d_ff, 1), ("max_len", max_len, 2)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"Translator: {name} must be an integer >= {low}, got {value!r}")
        if d_model % nhead:
            raise ValueError(f"Translator: d_model ({d_model}) must be a multiple of nhead ({nhead})")
        if not 0 <= dropout < 1 or not 0 <= label_smoothing < 1:
            raise ValueError(f"Translator: dropout and label_smoothing must lie in [0, 1), got {dropout}, "
                             f"{label_smoothing}")
        self.config = dict(model="translator", vocab_size=int(vocab_size), d_model=int(d_model),
                           nhead=int(nhead), enc_layers=int(enc_layers), dec_layers=int(dec_layers),
                           d_ff=int(d_ff), dropout=float(dropout), tied=bool(tied), max_len=int(max_len),
                           gelu=gelu, label_smoothing=float(label_smoothing), source=source, target=target)
        self.vocab_size, self.d_model, self.max_len = int(vocab_size), int(d_model), int(max_len)
        self.source, self.target, self.scale = source, target, math.sqrt(d_model)
        rng = np.random.default_rng(seed)
        self.src_embed = Embedding(vocab_size, d_model, dtype=dtype, rng=rng)           # (V, D)
        W = self.src_embed.params["W"]
        W[...] = backend.to_device(rng.normal(0.0, d_model ** -0.5, W.shape).astype(dtype))
        self.tgt_embed = Embedding(vocab_size, d_model, dtype=dtype, rng=rng)
        self._tie(self.tgt_embed, self.src_embed)                                       # one matrix
        self.pos = SinusoidalPositionalEncoding(max_len, d_model, dtype=dtype)
        self.src_drop, self.tgt_drop = Dropout(dropout, rng=rng), Dropout(dropout, rng=rng)
        Encoder, Decoder = fast.choose(TransformerBlock), fast.choose(DecoderBlock)
        self.encoder = [Encoder(d_model, nhead, dropout, gelu, causal=False, d_ff=d_ff, dtype=dtype, rng=rng)
                        for _ in range(enc_layers)]
        self.ln_enc = LayerNorm(d_model, dtype=dtype)
        self.decoder = [Decoder(d_model, nhead, dropout, gelu, d_ff=d_ff, dtype=dtype, rng=rng)
                        for _ in range(dec_layers)]
        self.ln_dec = LayerNorm(d_model, dtype=dtype)
        self.out = Linear(d_model, vocab_size, dtype=dtype, rng=rng)                    # W (V, D), b (V,)
        if tied:
            self._tie(self.out, self.src_embed)
        self.out.params["b"].fill(0)
        # the loss writes into the logits buffer (nothing reads the logits after it)
        self.loss = LabelSmoothedCrossEntropy(label_smoothing, ignore_index=PAD, inplace=True)
        self.subwords, self.timer, self.meta, self.vocab = None, None, {}, None

    @staticmethod
    def _tie(layer, owner):
        """layer's W becomes owner's: one array, one gradient buffer (the optimizer updates it once)."""
        layer.params["W"], layer.grads["W"] = owner.params["W"], owner.grads["W"]

    @property
    def drops(self):
        """Every dropout layer (one Generator): the trainer saves and restores each one's .rng."""
        return [self.src_drop, self.tgt_drop] + [d for b in self.encoder + self.decoder for d in b.drops]

    def lap(self, phase):
        """The benchmark's phase timer hook (app.step calls it); a no-op unless a timer is set."""
        if self.timer is not None:
            self.timer(phase)

    def _check(self, ids, what):
        check_ids(ids, self.vocab_size, f"Translator ({what})", "(B, T)")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"Translator: {what} of {ids.shape[1]} tokens, longer than max_len "
                             f"{self.max_len}")

    # -- training path ---------------------------------------------------------
    def _embed(self, embed, drop, ids):
        """ids (B, L) -> drop(E[ids] sqrt(D) + P[:L]) (B, L, D)."""
        Z = embed.forward(ids) * self.scale + self.pos.forward(ids.shape[1])
        return drop.forward(Z) if self._dropping else Z

    def encode(self, src):
        """src (B, S) ids -> memory (B, S, D), padding mask (B, S) (True at PAD); saves for backward."""
        self._check(src, "source")
        self._dropping = self.training and self.src_drop.p > 0
        pad = src == PAD
        Z = self._embed(self.src_embed, self.src_drop, src)
        for block in self.encoder:
            Z = block.forward(Z, key_padding_mask=pad)
        return self.ln_enc.forward(Z), pad

    def forward(self, src, y_in):
        """src (B, S), y_in (B, T) ids -> logits (B, T, V); saves what backward needs."""
        self._check(y_in, "target")
        memory, pad = self.encode(src)
        self.lap("encoder")
        H = self.decode(y_in, memory, pad)
        self.lap("layers_forward")
        return self.out.forward(H)                                           # (B, T, V)

    def decode(self, y_in, memory, pad):
        """y_in (B, T) ids, memory (B, S, D), pad (B, S) -> the decoder's output (B, T, D), after its
        LayerNorm; saves for backward (encode must have run: it sets the dropout mode)."""
        Z = self._embed(self.tgt_embed, self.tgt_drop, y_in)
        for block in self.decoder:
            Z = block.forward(Z, memory, pad)
        return self.ln_dec.forward(Z)

    def backward(self, dlogits):
        """dL/dlogits (B, T, V) -> None (ids have no gradient); every parameter's gradient added.

        memory feeds every decoder block's cross-attention: dMemory = sum over blocks of its dMemory.
        Z = drop(E[ids] sqrt(D) + P): dE[ids] += sqrt(D) drop'(dZ) (the positions are fixed).
        """
        dZ = self.ln_dec.backward(self.out.backward(dlogits))                # (B, T, D)
        dmemory = 0
        for block in reversed(self.decoder):
            dZ, dM = block.backward(dZ)
            dmemory = dmemory + dM                                            # (B, S, D)
        self._embed_backward(self.tgt_embed, self.tgt_drop, dZ)
        dZ = self.ln_enc.backward(dmemory)
        for block in reversed(self.encoder):
            dZ = block.backward(dZ)
        self._embed_backward(self.src_embed, self.src_drop, dZ)
        self.lap("layers_backward")

    def _embed_backward(self, embed, drop, dZ):
        embed.backward((drop.backward(dZ) if self._dropping else dZ) * self.scale)

    def forward_loss(self, x, y, state=None):
        """x (B, S) source + EOS, y (B, T + 1) BOS + target + EOS, PAD-padded -> (mean loss over the
        target's tokens, None): app.step's interface."""
        xp = backend.xp()
        x, y = xp.asarray(x), xp.asarray(y)
        logits = self.forward(x, y[:, :-1])                                  # (B, T, V)
        B, T, V = logits.shape
        loss = self.loss.forward(logits.reshape(B * T, V), y[:, 1:].reshape(-1))
        self._shape = (B, T, V)
        self.lap("softmax_loss")
        return loss, None

    def backward_loss(self):
        self.backward(self.loss.backward().reshape(self._shape))

    @staticmethod
    def batch_items(x, y):
        """The target tokens a batch's loss is the mean over (mytorch.fast.split weighs shares by it)."""
        return int((np.asarray(y)[:, 1:] != PAD).sum())

    # -- inference ---------------------------------------------------------------
    def nll(self, x, y):
        """Summed plain NLL (no smoothing) and token count of a batch, in eval mode, saving nothing."""
        twin = detached(self, training=False)
        twin.loss = LabelSmoothedCrossEntropy(0.0, ignore_index=PAD, inplace=True)
        twin.forward_loss(x, y)
        return twin.loss.nll, twin.loss.count

    def encode_ids(self, sentences):
        """list of str -> (B, S) int32 source ids + EOS, PAD-padded (ValueError past max_len)."""
        if self.subwords is None:
            raise ValueError("Translator: no subword model (train one, or load a model file)")
        if isinstance(sentences, str):
            raise TypeError("Translator.translate: give a list of sentences, not one string")
        from dataset.pairs import pad_rows
        rows = self.subwords.encode(sentences)
        too_long = [i for i, r in enumerate(rows) if len(r) + 1 > self.max_len]
        if too_long:
            raise ValueError(f"Translator: sentence {too_long[0]} has {len(rows[too_long[0]])} subwords; "
                             f"the model reads at most {self.max_len - 1}")
        return pad_rows(rows) if rows else np.zeros((0, 1), dtype=np.int32)

    def translate(self, sentences, beams=4, alpha=1.0, max_len=None, batch_size=64, cache=True, no_repeat=3):
        """list of str -> list of str: greedy (beams=1) or beam search with the GNMT length penalty
        ((5 + L) / 6) ** alpha; no_repeat=n: no n-gram twice in a translation (0: off); cache=False
        re-reads the whole prefix every step (the benchmark's). Sentences are decoded batch_size at a time,
        shortest first (the order given back is the order given). The defaults were chosen on the Ding
        validation split (docs/translation.md: beam 4, alpha 0.6 -> 1.0 and no_repeat 0 -> 3: BLEU 6.01
        -> 6.40)."""
        ids = self.encode_ids(sentences)
        lengths = (ids != PAD).sum(axis=1)
        order = np.argsort(lengths, kind="stable")           # batches of similar length: little padding
        outs = [None] * len(ids)
        for i in range(0, len(ids), batch_size):
            rows = order[i:i + batch_size]
            chunk = ids[rows, :max(1, int(lengths[rows].max()))]
            for r, out in zip(rows, translation_search.search(self, chunk, beams, alpha, max_len, cache,
                                                              no_repeat)):
                outs[r] = out
        return self.subwords.decode(outs)

    def cross_attention(self, source, translation):
        """The last decoder block's cross-attention while reading `translation` after `source` (two str):
        (source pieces, target pieces, weights (T, S) averaged over the heads, host float32); target
        piece t is the one predicted at step t (EOS last), source pieces end with EOS."""
        x = self.encode_ids([source])
        y = self.subwords.encode([translation])[0]
        y_in = np.array([[BOS] + y], dtype=np.int32)
        twin = detached(self, training=False)
        twin.forward(x, y_in)
        A = backend.to_numpy(twin.decoder[-1].cross_attn.A_sig)[0].mean(axis=0)        # (T, S)
        pieces = self.subwords.sp.id_to_piece
        return ([pieces(int(i)) for i in x[0, :-1]] + ["</s>"], [pieces(int(i)) for i in y] + ["</s>"],
                A.astype(np.float32))

    # -- files -------------------------------------------------------------------
    def state_arrays(self):
        """{name: host array} of every parameter, and the subword model's bytes under "subwords"."""
        arrays = parameter_arrays(self)
        if self.subwords is not None:
            arrays["subwords"] = self.subwords.blob
        return arrays

    def load_state_arrays(self, arrays):
        arrays = dict(arrays)
        blob = arrays.pop("subwords", None)
        load_parameters(self, arrays)
        if blob is not None:
            self.subwords = Subwords(blob)
            if self.subwords.vocab_size != self.vocab_size:
                raise ValueError(f"the subword model has {self.subwords.vocab_size} pieces, the model "
                                 f"{self.vocab_size}")

    def save(self, path, float16=False, meta=None, vocab=None):
        save_model(self, path, float16=float16, meta=meta)

"""A small GPT-style Transformer language model built from mytorch's own layers, beside the LSTM.

Shapes: B batch, T positions asked for, C context positions read before them (the state),
S = C + T positions read, D = d_model, h heads, F = 4 D, V vocabulary, L = nlayers,
M = max_len (the context length: positions 0 .. M-1).

    ids (B, S) -> Embedding (B, S, D) + positions (S, D) -> Dropout
               -> TransformerBlock x L -> LayerNorm -> Linear tied to the Embedding -> logits (B, S, V)

    block (pre-LayerNorm, GPT-2):   X = X + Dropout(MHA(LN1(X)))                    causal, h heads
                                    X = X + Dropout(W2 GELU(W1 LN2(X) + b1) + b2)    D -> F -> D

Dropout (one p): on the embedded input, on the attention weights, on both residual branches.
The decoder shares the embedding's matrix and its gradient buffer (as LanguageModel's tied=True),
with its own bias. Training calls forward_loss / backward_loss: the projection and the
cross-entropy fused (mytorch.nn.LinearCrossEntropyLoss), as LanguageModel does. With
adaptive=[cutoffs] an adaptive softmax (models.base) replaces the tied decoder: untied.

Init (GPT-2): every matrix N(0, 0.02^2): token embedding (= decoder), learned positions, W_q, W_k,
W_v, W1; the two matrices that write into the residual stream (W_o, W2) N(0, (0.02 / sqrt(2 L))^2),
so its variance does not grow with depth; biases 0, LayerNorm gamma 1 and beta 0.

The state, for the LanguageModel interface: the ids read so far, at most M - 1 of them, (B, C).
Given to encode / forward / forward_loss, the last min(C, M - T) are read first as context
(their outputs are neither returned nor scored; gradients flow through them as through any
position). So app.evaluate.stream_nll, which carries the state from chunk to chunk, reads
every chunk with up to M - T words of context.

Longer than M: forward, forward_loss and encode refuse T > M (ValueError naming max_len).
predict reads the last M words (a sliding window). generate keeps a KV cache per block
(MultiHeadAttention.forward_step): each new word costs one position while the words so far
fit in M; after that each step re-reads the last M words from position 0, so decode_step
always gives predict's scores on the growing sequence.
"""
import math
import numbers

import numpy as np

from mytorch import backend
from mytorch.nn import (Dropout, Embedding, LayerNorm, LearnedPositionalEmbedding, Linear,
                        SinusoidalPositionalEncoding, TransformerBlock)
from mytorch.nn.module import peek as _peek
from mytorch.nn.module import check_ids as check_token_ids

from . import decoding
from .base import LanguageModelBase, check_ids


def _normal_(p, std, rng):
    p[...] = backend.to_device(rng.normal(0.0, std, p.shape).astype(p.dtype))


def _check_config(vocab_size, d_model, nhead, nlayers, max_len, dropout, positional, gelu):
    def whole(x):
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)
    for name, value, low in (("vocab_size", vocab_size, 2), ("d_model", d_model, 1), ("nhead", nhead, 1),
                             ("nlayers", nlayers, 1), ("max_len", max_len, 1)):
        if not whole(value) or value < low:
            raise ValueError(f"TransformerLM: {name} must be an integer >= {low}, got {value!r}")
    if d_model % nhead:
        raise ValueError(f"TransformerLM: d_model ({d_model}) must be a multiple of nhead ({nhead})")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"TransformerLM: dropout must lie in [0, 1), got {dropout!r}")
    if positional not in ("learned", "sinusoidal"):
        raise ValueError(f"TransformerLM: positional must be 'learned' or 'sinusoidal', got {positional!r}")
    if gelu not in ("tanh", "none"):
        raise ValueError(f"TransformerLM: gelu must be 'tanh' or 'none' (exact, erf), got {gelu!r}")


class TransformerLM(LanguageModelBase):
    """GPT-style language model; LanguageModel's interface (see the module docstring).

    gelu: "tanh" (the default: a few array passes) or "none" (exact erf GELU, ~25 passes).
    config: every constructor argument but seed and dtype, and model="transformer" (models.load).
    """

    def __init__(self, vocab_size, d_model=128, nhead=4, nlayers=2, max_len=64, dropout=0.1,
                 positional="learned", gelu="tanh", seed=0, dtype=np.float32, adaptive=None, div_value=4.0):
        super().__init__()
        _check_config(vocab_size, d_model, nhead, nlayers, max_len, dropout, positional, gelu)
        self.config = dict(model="transformer", vocab_size=int(vocab_size), d_model=int(d_model),
                           nhead=int(nhead), nlayers=int(nlayers), max_len=int(max_len),
                           dropout=float(dropout), positional=positional, gelu=gelu)
        if adaptive:
            self.config.update(adaptive=[int(k) for k in adaptive], div_value=float(div_value))
        rng = np.random.default_rng(seed)
        self.vocab_size, self.max_len = int(vocab_size), int(max_len)
        self.embedding = Embedding(vocab_size, d_model, dtype=dtype, rng=rng)              # (V, D)
        if positional == "learned":                                                        # (M, D)
            self.pos = LearnedPositionalEmbedding(max_len, d_model, dtype=dtype, rng=rng, init_std=0.02)
        else:
            self.pos = SinusoidalPositionalEncoding(max_len, d_model, dtype=dtype)
        self.drop = Dropout(dropout, rng=rng)
        self.blocks = [TransformerBlock(d_model, nhead, dropout, gelu, causal=True, dtype=dtype, rng=rng)
                       for _ in range(nlayers)]
        self.ln_f = LayerNorm(d_model, dtype=dtype)
        self.decoder = Linear(d_model, vocab_size, dtype=dtype, rng=rng)
        self.decoder.params["W"] = self.embedding.params["W"]   # tied: one matrix, one gradient buffer
        self.decoder.grads["W"] = self.embedding.grads["W"]
        std, resid = 0.02, 0.02 / math.sqrt(2 * nlayers)
        _normal_(self.embedding.params["W"], std, rng)
        for b in self.blocks:
            for name, s in (("W_q", std), ("W_k", std), ("W_v", std), ("W_o", resid)):
                _normal_(b.attn.params[name], s, rng)
            for lin, s in ((b.fc, std), (b.proj, resid)):
                _normal_(lin.params["W"], s, rng)
                lin.params["b"].fill(0)
        self.decoder.params["b"].fill(0)
        if adaptive:                                    # untied: the adaptive softmax has its own weights
            self.use_adaptive_softmax(d_model, adaptive, div_value, dtype, rng)
        self._context = 0                               # C of the last training-path encode

    @property
    def drops(self):
        """Every dropout layer: the embedding's, then per block the attention weights' and the two
        residual branches'. They share one Generator; the trainer saves and restores .rng of each."""
        return [self.drop] + [d for b in self.blocks for d in b.drops]

    @staticmethod
    def matmul_flops_per_token(vocab_size, d_model, nlayers, T, training=True):
        """Matrix-product FLOP per token of a (B, T) batch: 2 per multiply-add, times 3 when training
        (backward does two products for each one of forward). Multiply-adds per token:

            per layer   W_q, W_k, W_v, W_o: 4 D^2    W1, W2: 8 D^2    Q K^T and A V: 2 T D
                        (the whole T x T products: the causal mask saves nothing)
            head        D V
        """
        macs = d_model * vocab_size + nlayers * (12 * d_model * d_model + 2 * T * d_model)
        return (6 if training else 2) * macs

    # -- forward / backward ------------------------------------------------
    def encode(self, ids, state=None, cache=True):
        """ids (B, T) -> final-LayerNorm outputs (B, T, D) at those positions, and the new state.

        state: None or the (B, C) ids read before (see the module docstring); the new state is the
        last M - 1 ids read. cache=True: the training path (dropout when training, saves what
        backward needs); cache=False: the inference path (no dropout, saves nothing).
        """
        check_ids(ids, self.vocab_size, "TransformerLM")
        B, T = ids.shape
        if T > self.max_len:
            raise ValueError(f"TransformerLM: {T} positions asked for, but max_len (the context length) "
                             f"is {self.max_len}; predict and generate slide a window over longer inputs")
        xp = backend.xp()
        ids = xp.asarray(ids)
        C = 0
        if state is not None:
            if getattr(state, "ndim", None) != 2 or state.shape[0] != B:
                raise ValueError(f"TransformerLM: the state must be the (B, C) ids read before, B = {B}; "
                                 f"got {tuple(getattr(state, 'shape', ()))}")
            check_token_ids(state, self.vocab_size, "TransformerLM state")
            C = min(state.shape[1], self.max_len - T)
            ids = xp.concatenate([xp.asarray(state[:, state.shape[1] - C:], dtype=ids.dtype), ids], axis=1)
        S = C + T
        if cache:
            X = self.embed(ids)                                          # (B, S, D)
            self.lap("embedding")
            for block in self.blocks:
                X = block.forward(X)
            X = self.ln_f.forward(X)
            self._context = C
        else:
            X = self._read(ids, [{} for _ in self.blocks], 0)
        return X[:, C:], ids[:, max(S - (self.max_len - 1), 0):]

    def embed(self, ids):
        """ids (B, S) -> Dropout(Embedding(ids) + P[0 .. S-1]) (B, S, D); saves what embed_backward needs."""
        X = self.embedding.forward(ids) + self.pos.forward(ids.shape[1])     # (B, S, D) + (S, D)
        self._dropping = self.training and self.drop.p > 0
        return self.drop.forward(X) if self._dropping else X

    def embed_backward(self, dX):
        """X = drop(E[ids] + P[positions]): dE[ids] += dX', dP += sum over B of dX'  (dX' = drop'(dX))."""
        dX = self.drop.backward(dX) if self._dropping else dX
        self.embedding.backward(dX)
        self.pos.backward(dX.sum(axis=0))                                  # (S, D); nothing if sinusoidal

    def layers_backward(self, dX):
        """Backward of the blocks and the final LayerNorm: dX (B, T, D) -> dL/d(embed's output) (B, S, D).

        The C context positions' outputs were not returned: their gradient starts at 0.
        """
        if self._context:
            B, T, D = dX.shape
            full = backend.get_array_module(dX).zeros((B, self._context + T, D), dtype=dX.dtype)
            full[:, self._context:] = dX
            dX = full
        dX = self.ln_f.backward(dX)
        for block in reversed(self.blocks):
            dX = block.backward(dX)
        return dX

    def stream_chunk(self, wanted):
        """At most max_len // 2 new words a read: the other half of the window is context from the
        state, so every word of a long stream is scored with at least max_len // 2 words before it."""
        return max(1, min(wanted, self.max_len // 2))

    # -- inference: no dropout, nothing saved for backward, whatever the mode ----------
    def _read(self, ids, kv, offset):
        """ids (B, T_new) at positions offset .. offset+T_new-1 -> final-LayerNorm outputs (B, T_new, D).

        Appends each block's keys and values to its cache in kv (a list of dicts, one per block).
        """
        ids = backend.xp().asarray(ids)
        X = self.embedding.params["W"][ids] + _peek(self.pos, ids.shape[1], offset)    # (B, T_new, D)
        for block, cache in zip(self.blocks, kv):
            X = block.forward_step(X, cache)
        return _peek(self.ln_f, X)

    def predict(self, inp):
        """inp (B, T) ids -> (B, V) scores (logits) for the word after the last one.

        Reads the last max_len words when T > max_len (a sliding window).
        """
        check_ids(inp, self.vocab_size, "TransformerLM")
        X = self._read(inp[:, -self.max_len:], [{} for _ in self.blocks], 0)
        return self.scores(X[:, -1])

    def generate(self, inp, timesteps, **options):
        """Continue each row of inp (B, T) by `timesteps` words -> (B, timesteps) int64 ids.

        options: models.decoding.Decoding's fields, as LanguageModel.generate. The prefix is read
        once; each block's KV cache is carried from word to word (see the module docstring).
        """
        check_ids(inp, self.vocab_size, "TransformerLM")
        return decoding.generate(self, inp, timesteps, special_ids=self.special_ids(),
                                 eos_id=self.vocab_size - 1, **options)

    # the three methods models.decoding needs. The state: {"ids": (R, n) host ids in the window,
    # "kv": one {"K", "V": (R, h, n, d_k)} cache per block}, rows on axis 0
    def decode_start(self, inp):
        """inp (B, T) -> logits (B, V) for the next word, and the state after the last max_len words."""
        ids = backend.to_numpy(inp)[:, -self.max_len:]
        kv = [{} for _ in self.blocks]
        X = self._read(ids, kv, 0)
        return self.scores(X[:, -1]), dict(ids=ids, kv=kv)

    def decode_step(self, ids, state):
        """ids (R,) one word per row -> logits (R, V) for the word after it, the new state.

        The state given is left as it was. Once the window holds max_len words, it slides: the
        last max_len words are read again from position 0 (no cache can be reused: every
        word's position changes).
        """
        hist = np.concatenate([state["ids"], backend.to_numpy(ids).reshape(-1, 1)], axis=1)
        if hist.shape[1] <= self.max_len:
            kv = [dict(cache) for cache in state["kv"]]
            X = self._read(hist[:, -1:], kv, hist.shape[1] - 1)
        else:
            hist = hist[:, 1:]
            kv = [{} for _ in self.blocks]
            X = self._read(hist, kv, 0)
        return self.scores(X[:, -1]), dict(ids=hist, kv=kv)

    @staticmethod
    def select_state(state, rows):
        """The state of rows (R,) (repeated or reordered): every cached K, V and id row taken."""
        rows = backend.to_numpy(rows)
        kv = []
        for cache in state["kv"]:
            xp = backend.get_array_module(cache["K"])
            kv.append({name: a[xp.asarray(rows)] for name, a in cache.items()})
        return dict(ids=state["ids"][rows], kv=kv)

"""Word-level LSTM language model with hand-written backprop through time.

Shapes: B batch, T time steps, D embedding size, H hidden size, V vocabulary.

    ids (B, T) -> Embedding -> (B, T, D) -> LSTM x L -> (B, T, H_last) -> Linear -> logits (B, T, V)

with locked dropout on the embeddings, between the LSTM layers and on the top layer's output.
Each layer is a mytorch.nn.LSTM over the whole sequence: its forward and its backward (the
BPTT loop) are the layer's own, so the model only chains layers. With ``tied=True`` the
decoder reuses the embedding matrix (the last layer's hidden size is then D) and both
gradients add into one buffer.

With ``adaptive=[cutoffs]`` an adaptive softmax (models.base, untied) replaces the decoder.

Training calls ``forward_loss`` / ``backward_loss`` (models.base, shared with the Transformer):
the projection and the cross-entropy fused (mytorch.nn.LinearCrossEntropyLoss), the same
gradients as ``forward`` -> CrossEntropyLoss -> ``backward`` with less traffic over the logits.

AWD-LSTM's regularisers (Merity et al. 2017), each off at 0 (the default: the model is then
exactly the one without them), each active only in training mode:

    dropoute  embedding dropout: whole rows of the embedding (word types) dropped per forward,
              X = W[ids] * m with m = mask[ids] (B, T, 1), mask (V, 1) (mytorch.nn.EmbeddingDropout)
    wdrop     DropConnect on every layer's W_hh, one (4H, H) mask per forward (mytorch.nn.WeightDrop)
    alpha     AR   = alpha * mean(Hd^2)                         Hd: the top layer's DROPPED output
    beta      TAR  = beta * mean((H[:, t+1] - H[:, t])^2)       H: the top layer's output before dropout

forward_loss returns the cross-entropy alone (the reported training loss, comparable with the
validation NLL); the AR + TAR of the same forward is ``self.penalty`` and backward_loss
differentiates  cross-entropy + penalty: dAR/dHd = 2 alpha Hd / N, added to the gradient at the
dropped output; dTAR/dH_t = 2 beta / N' ((H_t - H_{t-1}) - (H_{t+1} - H_t)), added under the
output dropout (N, N' the number of entries averaged). Every dropout here (locked, embedding,
weight) draws from one generator, ``drops[k].rng``: the one state a trainer saves and restores.
"""
import numpy as np

from mytorch import backend, fast
from mytorch.nn import LSTM, Embedding, Linear
from mytorch.nn.dropout import EmbeddingDropout, LockedDropout
from mytorch.nn.weight_drop import WeightDrop

from . import decoding
from .base import LanguageModelBase, check_ids  # noqa: F401  (check_ids: where tests and users found it)
from .decoding import MAX_GENERATE_STEPS  # noqa: F401  (where tests and users found it)


class LanguageModel(LanguageModelBase):
    def __init__(self, vocab_size, emsize=128, nhid=128, nlayers=2, tied=False, dropout=0.0,
                 dropouth=None, seed=0, dtype=np.float32, dropoute=0.0, wdrop=0.0, alpha=0.0,
                 beta=0.0, adaptive=None, div_value=4.0):
        super().__init__()
        if nlayers < 1 or emsize < 1 or nhid < 1 or vocab_size < 2:
            raise ValueError("LanguageModel: vocab_size >= 2, and emsize, nhid, nlayers >= 1 are required")
        if not 0 <= dropout < 1 or (dropouth is not None and not 0 <= dropouth < 1):
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if not all(np.isfinite(a) and a >= 0 for a in (alpha, beta)):
            raise ValueError(f"alpha and beta must be finite numbers >= 0, got {alpha}, {beta}")
        if adaptive and tied:
            raise ValueError("LanguageModel: an adaptive softmax has no (V, D) matrix to tie to the "
                             "embedding: use tied=False with adaptive")
        self.config = dict(vocab_size=int(vocab_size), emsize=int(emsize), nhid=int(nhid),
                           nlayers=int(nlayers), tied=bool(tied), dropout=float(dropout),
                           dropouth=None if dropouth is None else float(dropouth))
        regularisers = dict(dropoute=float(dropoute), wdrop=float(wdrop), alpha=float(alpha),
                            beta=float(beta))
        self.config.update({k: v for k, v in regularisers.items() if v != 0})  # old files: none of them
        if adaptive:
            self.config.update(adaptive=[int(k) for k in adaptive], div_value=float(div_value))
        self.alpha, self.beta = float(alpha), float(beta)
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.embedding = Embedding(vocab_size, emsize, dtype=dtype, rng=rng, init_range=0.1)
        sizes = self.layer_sizes(emsize, nhid, nlayers, tied)
        Layer = fast.choose(LSTM)                       # the plain layer, or its fast twin
        self.layers = [Layer(sizes[k], sizes[k + 1], dtype=dtype, rng=rng) for k in range(nlayers)]
        self.decoder = Linear(sizes[-1], vocab_size, dtype=dtype, rng=rng)
        self.decoder.params["W"][...] = backend.to_device(rng.uniform(-0.1, 0.1, (vocab_size, sizes[-1])))
        self.decoder.params["b"].fill(0)
        if adaptive:
            self.use_adaptive_softmax(sizes[-1], adaptive, div_value, dtype, rng)
        if tied:  # one matrix, one gradient buffer: the optimizer sees it once
            self.decoder.params["W"] = self.embedding.params["W"]
            self.decoder.grads["W"] = self.embedding.grads["W"]
        # variational dropout: one mask per sequence, on the embedding output (p = dropout),
        # between LSTM layers (p = dropouth) and before the decoder (p = dropout)
        ph = dropout if dropouth is None else dropouth
        self.drops = [LockedDropout(dropout if k in (0, nlayers) else ph, rng=rng)
                      for k in range(nlayers + 1)]
        self.edrop = EmbeddingDropout(dropoute, rng=rng)
        self.wdrops = [WeightDrop("W_hh", wdrop, rng=rng) for _ in range(nlayers)]
        self.penalty = 0.0                              # AR + TAR of the last forward_loss
        self._emask = None                              # (B, T, 1) embedding-dropout mask of each token
        self._top = None                                # (H, Hd): the top output, undropped and dropped
        self._penalty_grads = self._pending = None      # (dL/dHd, dL/dH) of AR and TAR (None: off)

    @staticmethod
    def layer_sizes(emsize, nhid, nlayers, tied):
        """[D, H_1, ..., H_L]: the first layer's input size, then each layer's hidden size.

        With tied weights the last layer's output is the embedding size D.
        """
        return [emsize] + [nhid] * (nlayers - 1) + [emsize if tied else nhid]

    # -- forward / backward ------------------------------------------------
    def encode(self, ids, state=None, cache=True):
        """ids (B, T) -> top-layer outputs (B, T, H_last) and the final state [(h, c)] * L."""
        check_ids(ids, self.vocab_size, "LanguageModel")
        ids = backend.xp().asarray(ids)
        state = self._check_state(state, ids.shape[0])
        X = self.embedding.forward(ids) if cache else self.embedding.params["W"][ids]  # (B, T, D)
        if cache:
            self._emask = None
        if self.training and self.edrop.p > 0:          # (W * mask)[ids] = W[ids] * mask[ids]
            m = self.edrop.new_mask(self.embedding.params["W"])[ids]  # (B, T, 1): whole rows
            X = X * m
            if cache:
                self._emask = m
        self.lap("embedding")
        return self.run_layers(X, state, cache)

    def run_layers(self, X, state=None, cache=True):
        """Embedded ids X (B, T, D) -> outputs (B, T, H_last) of the last layer, final state [(h, c)] * L.

        Dropout (when training) on each layer's input and on the output.
        """
        new_state = []
        for k, layer in enumerate(self.layers):         # wdrops[k]: layer.forward with W_hh * mask
            X, last = self.wdrops[k].forward(layer, self._drop(k, X),
                                             None if state is None else state[k], cache)
            new_state.append(last)                      # X: (B, T, H_k)
        out = self._drop(len(self.layers), X)
        if cache:
            self._top = (X, out)                        # what AR and TAR read
        return out, new_state

    def _drop(self, k, X):
        drop = self.drops[k]
        return drop.forward(X) if self.training and drop.p > 0 else X

    def _drop_backward(self, k, dX):
        drop = self.drops[k]
        return drop.backward(dX) if self.training and drop.p > 0 else dX

    def layers_backward(self, dX):
        """Backward of run_layers: dX (B, T, H_last) -> dL/d(embedded ids) (B, T, D), BPTT per layer."""
        dHd, dH = self._pending or (None, None)         # AR, TAR gradients (backward_loss only)
        self._pending = None
        if dHd is not None:
            dX = dX + dHd                               # AR acts on the dropped output
        dX = self._drop_backward(len(self.layers), dX)
        if dH is not None:
            dX = dX + dH                                # TAR on the output before dropout
        for k in reversed(range(len(self.layers))):
            dX, _ = self.wdrops[k].backward(self.layers[k], dX)  # the initial state is a constant
            dX = self._drop_backward(k, dX)
        return dX

    def embed_backward(self, dX):
        """Backward of encode's embedding lookup: dX (B, T, D) adds into the embedding's gradient.

        With embedding dropout X = W[ids] * m, so dL/dW[ids] += dX * m.
        """
        if self._emask is not None:
            dX = dX * self._emask
            self._emask = None
        self.embedding.backward(dX)

    # -- activation regularisation (AR, TAR) ------------------------------------
    def forward_loss(self, ids, targets, state=None):
        """As LanguageModelBase.forward_loss: (mean cross-entropy, final state); in training mode with
        alpha or beta > 0 it also sets self.penalty = AR + TAR, which backward_loss differentiates too."""
        loss, new_state = super().forward_loss(ids, targets, state)
        self.penalty, self._penalty_grads = self._activation_penalties()
        return loss, new_state

    def backward_loss(self, dLdloss=1.0):
        """Backward of forward_loss's cross-entropy + self.penalty: fills every parameter's gradient."""
        grads, self._penalty_grads = self._penalty_grads, None
        if grads is not None and dLdloss != 1.0:
            grads = tuple(None if g is None else g * dLdloss for g in grads)
        self._pending = grads                           # consumed by layers_backward
        super().backward_loss(dLdloss)

    def _activation_penalties(self):
        """(AR + TAR as a float, (dAR/dHd, dTAR/dH) or None) of the last cached forward.

        AR  = alpha * mean(Hd^2)                        dAR/dHd = 2 alpha Hd / Hd.size
        TAR = beta * mean(Delta^2), Delta = H[:, 1:] - H[:, :-1]  (B, T-1, H)
              dTAR/dH[:, 1:] += 2 beta Delta / Delta.size,  dTAR/dH[:, :-1] -= the same   (T = 1: 0)
        """
        if not self.training or (self.alpha == 0 and self.beta == 0):
            return 0.0, None
        H, Hd = self._top                               # (B, T, H_last) each
        penalty, dHd, dH = 0.0, None, None
        if self.alpha > 0:
            penalty += self.alpha * float((Hd * Hd).mean())
            dHd = (2.0 * self.alpha / Hd.size) * Hd
        if self.beta > 0 and H.shape[1] > 1:
            delta = H[:, 1:] - H[:, :-1]                # (B, T-1, H_last)
            penalty += self.beta * float((delta * delta).mean())
            g = (2.0 * self.beta / delta.size) * delta
            dH = backend.get_array_module(H).zeros_like(H)
            dH[:, 1:] += g
            dH[:, :-1] -= g
        return penalty, (dHd, dH)

    # -- inference -----------------------------------------------------------
    def predict(self, inp):
        """inp (B, T) ids -> (B, V) float32 scores (logits) for the word after the last one.

        Inference never applies dropout, whatever the train/eval mode.
        """
        with self._inference():
            X, _ = self.encode(inp, cache=False)
            return self.scores(X[:, -1])

    def generate(self, inp, timesteps, **options):
        """Continue each row of inp (B, T) by `timesteps` words -> (B, timesteps) int64 ids.

        options: models.decoding.Decoding's fields (temperature, top_k, top_p, num_beams,
        length_penalty, repetition_penalty, no_repeat_ngram, ban_special, seed); those not
        given take the recommended defaults. The LSTM state is carried from word to word
        (the prefix is read once). Inference never applies dropout.
        """
        check_ids(inp, self.vocab_size, "LanguageModel")
        with self._inference():
            return decoding.generate(self, inp, timesteps, special_ids=self.special_ids(),
                                     eos_id=self.vocab_size - 1, **options)

    # the three methods models.decoding needs: the state is [(h, c)] * L, rows on axis 0
    def decode_start(self, inp):
        """inp (B, T) -> logits (B, V) for the next word, and the state after the prefix."""
        X, state = self.encode(inp, cache=False)
        return self.scores(X[:, -1]), state

    def decode_step(self, ids, state):
        """ids (R,) one word per row -> logits (R, V) for the word after it, the new state."""
        X, state = self.encode(ids[:, None], state, cache=False)
        return self.scores(X[:, -1]), state

    @staticmethod
    def select_state(state, rows):
        """The state of rows (R,) (repeated or reordered): [(h[rows], c[rows])] * L."""
        xp = backend.get_array_module(state[0][0])
        rows = xp.asarray(rows)
        return [(h[rows], c[rows]) for h, c in state]

    # -- state and persistence ---------------------------------------------------
    def _check_state(self, state, B):
        if state is None:
            return None
        if len(state) != len(self.layers):
            raise ValueError(f"LanguageModel: state must hold {len(self.layers)} (h, c) pairs, "
                             f"got {len(state)}")
        return state

    def clear_cache(self):
        for layer in self.layers:
            layer.clear_cache()

    def load_state_arrays(self, arrays):
        """Fill every parameter from {name: array}; files written before the LSTM layers were
        named `layers` call them `cells`."""
        super().load_state_arrays({("layers." + k[len("cells."):] if k.startswith("cells.") else k): v
                                   for k, v in arrays.items()})

"""What every language model here shares: the training step's two halves, the files, the hooks.

Shapes: B batch, T time steps, D the last layer's width, V vocabulary.

A model subclasses LanguageModelBase and provides

    embedding, decoder              the token embedding (V, D) and the output projection Linear(D, V),
                                    or instead of the decoder an adaptive softmax (use_adaptive_softmax)
    encode(ids, state, cache)       ids (B, T) -> the last layer's outputs (B, T, D), the new state
                                    (cache=True: the training path, saving what backward needs)
    layers_backward(dX)             backward of encode's layers: dX (B, T, D) -> dL/d(embedded ids)
    embed_backward(dX)              backward of encode's embedding
    predict, generate, decode_start, decode_step, select_state    (models.decoding's interface)

and gets forward / backward (the plain projection), forward_loss / backward_loss (the projection
fused with the cross-entropy: what training calls), scores (the next-word scores of decoding), the
timer hook, state arrays and save.

The output layer is either the full projection (decoder, V scores per position) or, opt-in, the
adaptive softmax (Grave et al. 2017, mytorch.nn.AdaptiveLogSoftmaxWithLoss): the training loss
reads the head and the target's cluster only; scores are the exact log-probabilities of all V
words. Its clusters need the words in frequency order: the model keeps `word_rank` (V,) (word
id -> class index, 0 = the most frequent word; set_word_order), a buffer saved with the weights.
"""
from contextlib import contextmanager

import numpy as np

from mytorch import backend, fast
from mytorch.nn import AdaptiveLogSoftmaxWithLoss, LinearCrossEntropyLoss, Module
from mytorch.nn.module import check_ids as check_token_ids

from .checkpoint import load_parameters, parameter_arrays, save_model


def check_ids(ids, vocab_size, who):
    """Token ids must be a 2-D (B, T) integer array with values in [0, V)."""
    check_token_ids(ids, vocab_size, who, shape="(B, T)")


class LanguageModelBase(Module):
    # lap() phases of a training step (app.step.train_step), in order; projection and embedding
    # end twice (forward, then backward)
    PHASES = ("zero_grad", "embedding", "layers_forward", "projection", "softmax_loss", "projection",
              "layers_backward", "embedding", "optimizer")

    def __init__(self):
        super().__init__()
        self._logits = None                             # flat buffer of the (B, T, V) logits, reused
        self._head = None                               # the fused loss of the last forward_loss
        self._shape = None                              # (B, T) of the last forward_loss
        self._outputs = None                            # (B, T, D) its last layer's outputs (forward_nll)
        self.vocab = None                               # (V,) str when loaded from a file that has one
        self.timer = None                               # lap(phase) callback: the benchmark's phase timer
        self.output = None                              # the adaptive softmax, when used instead of decoder
        self.word_rank = None                           # (V,) word id -> adaptive class index

    def use_adaptive_softmax(self, in_features, cutoffs, div_value, dtype, rng):
        """Score words through an adaptive softmax over D = in_features instead of the decoder.

        cutoffs: increasing class indices (e.g. [2000, 10000]): the head holds the cutoffs[0] most
        frequent words, each tail cluster the next band. The word order starts as the ids' own;
        set_word_order(counts) sorts the words by frequency (what the clusters are for).
        """
        self.output = AdaptiveLogSoftmaxWithLoss(in_features, self.vocab_size, cutoffs, div_value,
                                                 dtype=dtype, rng=rng)
        self.decoder = None
        self.word_rank = backend.xp().arange(self.vocab_size)

    def set_word_order(self, counts):
        """counts (V,): how often each word occurs in the training data -> word_rank, most frequent
        first (ties in id order). Only for an adaptive-softmax model; a no-op otherwise."""
        if self.output is None:
            return
        counts = np.asarray(backend.to_numpy(counts))
        if counts.shape != (self.vocab_size,):
            raise ValueError(f"set_word_order: expected counts of shape ({self.vocab_size},), "
                             f"got {counts.shape}")
        order = np.argsort(-counts, kind="stable")      # class index -> word id
        rank = np.empty(self.vocab_size, dtype=np.int64)
        rank[order] = np.arange(self.vocab_size)        # word id -> class index
        self.word_rank = backend.to_device(rank)

    # -- the training step's two halves --------------------------------------
    def forward(self, ids, state=None):
        """ids (B, T) -> logits (B, T, V), the final state. Saves what backward needs.

        The logits buffer is reused between calls of the same shape: a caller that keeps
        logits across two forwards must copy them.
        """
        X, new_state = self.encode(ids, state, cache=True)
        if self.output is not None:                     # log-probabilities: softmax leaves them as they are
            B, T, D = X.shape
            logp = self.output.log_prob(X.reshape(B * T, D), cache=True)
            return logp[:, self.word_rank].reshape(B, T, self.vocab_size), new_state
        return self.decoder.forward(X, out=self._logits_buffer(X)), new_state

    def backward(self, dLdlogits):
        """dLdlogits (B, T, V) -> fills every parameter's gradient (the state given to forward is a
        constant: truncated backpropagation)."""
        if self.output is not None:                     # forward read column word_rank[v] into column v
            B, T, V = dLdlogits.shape
            G = backend.get_array_module(dLdlogits).empty((B * T, V), dtype=dLdlogits.dtype)
            G[:, self.word_rank] = dLdlogits.reshape(B * T, V)
            dX = self.output.log_prob_backward(G).reshape(B, T, -1)
        else:
            dX = self.decoder.backward(dLdlogits)
        self.embed_backward(self.layers_backward(dX))

    def forward_loss(self, ids, targets, state=None):
        """ids, targets (B, T) -> (mean cross-entropy of the next words, final state).

        forward + CrossEntropyLoss in one (mytorch.nn.LinearCrossEntropyLoss): the same
        loss and, after backward_loss, the same gradients, with two passes fewer over
        the (B*T, V) logits. This is what training calls.
        """
        who = type(self).__name__
        check_ids(targets, self.vocab_size, f"{who}.forward_loss targets")
        if tuple(targets.shape) != tuple(ids.shape):
            raise ValueError(f"{who}.forward_loss: targets of shape {tuple(targets.shape)} "
                             f"do not match ids of shape {tuple(ids.shape)}")
        X, new_state = self.encode(ids, state, cache=True)
        self.lap("layers_forward")
        B, T, D = X.shape
        self._shape, self._outputs = (B, T), X
        targets = backend.get_array_module(X).asarray(targets).reshape(-1)
        if self.output is not None:                     # the head and each target's cluster only
            self._head = self.output
            loss = self.output.forward(X.reshape(B * T, D), self.word_rank[targets])
            self.lap("softmax_loss")
            return loss, new_state
        self._head = fast.choose(LinearCrossEntropyLoss)(self.decoder)
        Z = self._head.project(X.reshape(B * T, D), out=self._logits_buffer(X).reshape(B * T, -1))
        self.lap("projection")
        loss = self._head.softmax_loss(Z, targets)      # the rest of LinearCrossEntropyLoss.forward
        self.lap("softmax_loss")
        return loss, new_state

    def backward_loss(self, dLdloss=1.0):
        """Backward of forward_loss: fills every parameter's gradient (truncated, as backward)."""
        if self._head is None:
            raise RuntimeError(f"{type(self).__name__}.backward_loss needs a forward_loss first")
        B, T = self._shape
        dX = self._head.backward(dLdloss)               # (B*T, D)
        self._head = None
        self.lap("projection")
        dX = self.layers_backward(dX.reshape(B, T, -1))
        self.lap("layers_backward")
        self.embed_backward(dX)
        self.lap("embedding")

    def forward_nll(self, ids, targets, state=None):
        """forward_loss (saving what backward_loss needs, dropout only in training mode), reporting each
        position: ids, targets (B, T) -> (-log p(targets) (B, T), the last layer's outputs X (B, T, D),
        the final state). What evaluation that adapts while it reads calls (models.adaptation)."""
        _, state = self.forward_loss(ids, targets, state)
        return self._head.row_nll.reshape(self._shape), self._outputs, state

    def scores(self, X):
        """X (N, D) last-layer outputs -> (N, V) next-word scores: the decoder's logits, or the adaptive
        softmax's exact log-probabilities. Saves nothing: a pending training backward stays intact."""
        if self.output is not None:
            return self.output.log_prob(X)[:, self.word_rank]
        Z = X @ self.decoder.params["W"].T                # (N, V)
        Z += self.decoder.params["b"]
        return Z

    def mean_nll(self, X, targets, out=None):
        """X (N, D) last-layer outputs, targets (N,) word ids -> mean -log p(target) (a float), for
        evaluation: saves nothing. out: an optional (N, V) scratch buffer for the full softmax's logits."""
        xp = backend.get_array_module(X)
        targets = xp.asarray(targets)
        if self.output is not None:                     # exact: the head and each target's cluster
            return float(self.output.nll(X, self.word_rank[targets]).mean(dtype=np.float64))
        return fast.choose(LinearCrossEntropyLoss)(self.decoder).forward(X, targets, out=out)

    def stream_chunk(self, wanted):
        """Words to read at a time when a long stream is read with the state carried between reads
        (app.evaluate.stream_nll): `wanted`, for a model whose state holds all the past."""
        return wanted

    def lap(self, phase):
        """Tell the timer, if one is set, that `phase` (one of PHASES) has just ended; a no-op otherwise."""
        if self.timer is not None:
            self.timer(phase)

    def _logits_buffer(self, X):
        """The (B, T, V) logits buffer for X (B, T, D): the front of one flat buffer, contiguous,
        reallocated only when a batch needs more room (so batches of varying T, as train.py --carry
        makes, reuse it: a new (B, T, V) array each step would cost a page fault per 4 KiB)."""
        B, T, _ = X.shape
        size = B * T * self.vocab_size
        if self._logits is None or self._logits.size < size or self._logits.dtype != X.dtype:
            self._logits = backend.get_array_module(X).empty(size, dtype=X.dtype)
        return self._logits[:size].reshape(B, T, self.vocab_size)

    # -- decoding ----------------------------------------------------------------
    def special_ids(self):
        """Ids of the words decoding can ban: <unk>, <sos>, <eos> of the model's vocabulary.

        Without a vocabulary, the HW4P1 layout: <sos> and <eos> are the last two words.
        """
        if self.vocab is None:
            return [self.vocab_size - 2, self.vocab_size - 1]
        return [int(i) for w in ("<unk>", "<sos>", "<eos>") for i in np.flatnonzero(self.vocab == w)]

    @contextmanager
    def _inference(self):
        """Eval mode for the duration (no dropout), then the caller's mode back."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # -- files -------------------------------------------------------------------
    def state_arrays(self):
        """{name: host array} of every parameter (a tied matrix appears once), and the integer
        word_rank of an adaptive softmax."""
        out = parameter_arrays(self)
        if self.output is not None:
            out["word_rank"] = backend.to_numpy(self.word_rank)
        return out

    def load_state_arrays(self, arrays):
        """Fill every parameter (and word_rank) from {name: array} (state_arrays' names)."""
        if self.output is not None:
            if "word_rank" not in arrays:
                raise ValueError("checkpoint lacks parameters: word_rank")
            rank = np.asarray(arrays["word_rank"])
            if rank.dtype.kind not in "iu" or np.sort(rank).tolist() != list(range(self.vocab_size)):
                raise ValueError(f"checkpoint word_rank is not a permutation of the {self.vocab_size} words")
            self.word_rank = backend.to_device(rank.astype(np.int64))
        load_parameters(self, arrays)

    def save(self, path, float16=False, meta=None, vocab=None):
        """One versioned .npz file with the configuration, weights and vocabulary (models.checkpoint)."""
        save_model(self, path, float16=float16, meta=meta, vocab=vocab)

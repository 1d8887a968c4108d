"""Helpers the language-model tests share (LSTM and Transformer): parameters once each, fixed
dropout masks, the plain cross-entropy on (B, T, V) logits."""
import numpy as np

from mytorch.nn import CrossEntropyLoss


def unique_params(model):
    """{name: param} with a tied matrix once (under its first name, the embedding's)."""
    out, seen = {}, set()
    for name, p, _ in model.named_parameters():
        if id(p) not in seen:
            seen.add(id(p))
            out[name] = p
    return out


class FixedMasks:
    """Restores every dropout generator to its state at construction (the same masks each forward)."""

    def __init__(self, model):
        self.rngs = {id(d.rng): d.rng for d in model.drops}
        self.states = {k: r.bit_generator.state for k, r in self.rngs.items()}

    def restore(self):
        for k, r in self.rngs.items():
            r.bit_generator.state = self.states[k]


def ce(logits, targets):
    """(mean cross-entropy of logits (B, T, V) at targets (B, T), the CrossEntropyLoss for its backward)."""
    crit = CrossEntropyLoss()
    B, T, V = logits.shape
    return crit.forward(logits.reshape(B * T, V).copy(), targets.reshape(-1)), crit


def backprop(model, ids, targets, state, fused):
    """zero_grad, then one of the two training paths: forward_loss -> backward_loss (fused) or
    forward -> CrossEntropyLoss -> backward. Fills the model's gradients; returns the loss."""
    model.zero_grad()
    if fused:
        loss, _ = model.forward_loss(ids, targets, state)
        model.backward_loss()
        return loss
    logits, _ = model.forward(ids, state)
    B, T, V = logits.shape
    loss, crit = ce(logits, targets)
    model.backward(crit.backward().reshape(B, T, V))
    return loss


# token ids a language model must refuse, and the error each raises (V: the test's vocabulary size)
def bad_ids(V):
    return [
        (np.zeros((2, 3), np.float64), TypeError),
        ([[1, 2, 3]], TypeError),
        (np.zeros(3, np.int64), ValueError),
        (np.zeros((2, 0), np.int64), ValueError),
        (np.array([[0, V]]), ValueError),
        (np.array([[-1, 0]]), ValueError),
    ]

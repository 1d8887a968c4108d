"""Dynamic evaluation (Krause et al. 2018, "Dynamic evaluation of neural sequence models"): the model
keeps learning from the text it is scoring.

A stream is read in segments. Each segment is scored with the current weights; then its loss's
gradient (the model's own backward: forward_loss / backward_loss, in eval mode, so no dropout)
takes one step, and the next segment is scored with the adapted weights:

    theta <- theta - lr * dL/dtheta + decay * (theta_0 - theta)          (Krause et al.'s SGD rule)

theta_0 the trained weights: decay pulls the adapted weights back towards them. A word is thus
scored by weights that have seen only the segments before it: the reading stays causal.
lr = 0 and decay = 0 change nothing, to the bit. The trained weights are kept (theta_0) and put
back by restore(); no file is ever written.
"""
from mytorch import backend
from mytorch.optim import unique_parameters


class DynamicEval:
    """model: a language model (its parameters are adapted in place); lr >= 0, 0 <= decay < 1."""

    def __init__(self, model, lr, decay=0.0):
        if not lr >= 0 or not 0 <= decay < 1:
            raise ValueError(f"DynamicEval: lr must be >= 0 and decay in [0, 1), got {lr}, {decay}")
        self.model, self.lr, self.decay = model, float(lr), float(decay)
        self.params = unique_parameters(model.parameters())        # [(name, param, grad)], tied once
        self.theta0 = [p.copy() for _, p, _ in self.params]

    def step(self):
        """One update from the gradients the last backward_loss filled, which are then cleared."""
        for (_, p, g), p0 in zip(self.params, self.theta0):
            if self.lr:
                p -= self.lr * g                        # theta - lr dL/dtheta
            if self.decay:
                p += self.decay * (p0 - p)              # + decay (theta_0 - theta)
            g.fill(0)

    def restore(self):
        """Put the trained weights back (the model is then as it was built or loaded)."""
        for (_, p, _), p0 in zip(self.params, self.theta0):
            p[...] = p0


def predict_adapted(model, inp, lr, steps=1, decay=0.0):
    """Each row's next-word scores after `steps` SGD steps on the row's own words:
    inp (N, T) ids -> (N, V) scores, as model.predict.

    Row r alone: the model learns to predict inp[r, 1:] from inp[r, :-1] (the words given, never the
    word asked for; a Transformer its last max_len of them), scores the word after inp[r], and is put
    back before the next row. The rows are independent texts (the course's fixtures), so each adapts
    alone: the loop is over texts.
    """
    dyn = DynamicEval(model, lr, decay)
    span = getattr(model, "max_len", inp.shape[1])      # a Transformer learns from its last max_len + 1 words
    was_training = model.training
    model.eval()
    out = []
    try:
        for r in range(inp.shape[0]):
            words = inp[r:r + 1, -(span + 1):]
            for _ in range(steps):
                model.forward_loss(words[:, :-1], words[:, 1:])
                model.backward_loss()
                dyn.step()
            out.append(model.predict(inp[r:r + 1]))
            dyn.restore()
    finally:
        dyn.restore()
        model.train(was_training)
    return backend.xp().concatenate(out)

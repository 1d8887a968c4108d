"""One training step of the language model, shared by train.py and the benchmark.

    zero_grad -> forward_loss (logits (B, T, V) + cross-entropy) -> BPTT backward -> clip -> optimizer step

The model's ``lap(phase)`` calls mark where each phase ends: no-ops unless a timer is set
(the benchmark sets one; bench/timing.py).

forward_loss fuses the projection with the loss (mytorch.nn.LinearCrossEntropyLoss): the
model's (B*T, V) logits buffer becomes exp(Z - m) and is read by the backward's products
without a gradient ever being written out, so it is allocated once for the whole run.
"""
import math

from mytorch import backend, optim


def train_step(model, opt, x, y, clip=None):
    """x, y (B, T) ids -> (loss, gradient norm). The update is skipped when either is not finite."""
    model.train()
    model.zero_grad()
    x, y = backend.to_device(x), backend.to_device(y)
    model.lap("zero_grad")
    loss, _ = model.forward_loss(x, y)
    model.backward_loss()
    norm = optim.clip_grad_norm(opt, clip or None)
    if math.isfinite(loss) and math.isfinite(norm):
        opt.step()
    model.lap("optimizer")
    return loss, norm

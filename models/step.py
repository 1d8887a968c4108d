"""One training step of the language model, shared by train.py and the benchmark.

    zero_grad -> forward (B, T, V) -> fused cross-entropy -> BPTT backward -> clip -> optimizer step

The logits buffer is handed to the loss with inplace=True: it becomes exp(Z - m), then the
gradient (softmax - onehot) / N, so the (B*T, V) array is allocated once for the whole run.
"""
import math

from mytorch import backend, nn, optim


def train_step(model, opt, x, y, clip=None):
    """x, y (B, T) ids -> (loss, gradient norm). The update is skipped when either is not finite."""
    model.train()
    model.zero_grad()
    x, y = backend.to_device(x), backend.to_device(y)
    logits, _ = model.forward(x)                                    # (B, T, V)
    B, T, V = logits.shape
    loss_fn = nn.CrossEntropyLoss(inplace=True)                        # logits buffer -> gradient
    loss = loss_fn.forward(logits.reshape(B * T, V), y.reshape(-1))
    model.backward(loss_fn.backward().reshape(B, T, V))
    norm = optim.clip_grad_norm(opt, clip or None)
    if math.isfinite(loss) and math.isfinite(norm):
        opt.step()
    return loss, norm

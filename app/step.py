"""One training step of the language model, shared by train.py and the benchmark.

    zero_grad -> forward_loss (logits (B, T, V) + cross-entropy) -> BPTT backward -> clip -> optimizer step

The model's ``lap(phase)`` calls mark where each phase ends: no-ops unless a timer is set
(the benchmark sets one; bench/timing.py).

forward_loss fuses the projection with the loss (mytorch.nn.LinearCrossEntropyLoss): the
model's (B*T, V) logits buffer becomes exp(Z - m) and is read by the backward's products
without a gradient ever being written out, so it is allocated once for the whole run.

A step may start from a given LSTM state (train.py --carry: truncated BPTT down contiguous
streams, dataset.streams): ``train_step_state`` returns the final state too, ready to be the
next step's. The model treats a given state as a constant (no gradient flows into it), so
carrying it cuts the graph at the batch boundary.
"""
import math

from mytorch import backend, optim
from mytorch.communicator import SingleProcess

ONE_PROCESS = SingleProcess()


def train_step(model, opt, x, y, clip=None, state=None, comm=ONE_PROCESS, items=1):
    """x, y (B, T) ids; state: the initial state, None for zeros -> (loss, gradient norm).

    The update is skipped when either is not finite. comm (mytorch.communicator): with several
    processes, x, y are this rank's share of the batch, holding `items` of its items (rows, or a
    translator's target tokens); the gradients and the loss become the whole batch's before the
    clip (which then sees the global norm) and the update, the same on every rank.
    """
    loss, norm, _ = _step(model, opt, x, y, clip, state, comm, items)
    return loss, norm


def train_step_state(model, opt, x, y, clip=None, state=None, comm=ONE_PROCESS, items=1):
    """As train_step -> (loss, gradient norm, final state): the LSTM's [(h, c)] * L, each (B, H),
    copied (the layers may reuse their buffers), to pass as the next batch's state."""
    loss, norm, new_state = _step(model, opt, x, y, clip, state, comm, items)
    return loss, norm, detach(new_state)


def _step(model, opt, x, y, clip, state, comm, items):
    model.train()
    model.zero_grad()
    x, y = backend.to_device(x), backend.to_device(y)
    model.lap("zero_grad")
    loss, new_state = model.forward_loss(x, y, state)
    model.backward_loss()
    loss = comm.reduce_step([g for _, _, g in opt.params], items, loss)   # one process: as it was
    norm = optim.clip_grad_norm(opt, clip or None)
    if math.isfinite(loss) and math.isfinite(norm):
        opt.step()
    model.lap("optimizer")
    return loss, norm, new_state


def batch_items(model, x, y):
    """How many items a batch holds, for the mean over ranks: a translator's target tokens
    (model.batch_items), else its rows."""
    count = getattr(model, "batch_items", None)
    return count(x, y) if count is not None else len(x)


def detach(state):
    """A copy of a model's state (an LSTM's [(h, c)] * L; None stays None): values only, nothing
    shared with the model."""
    if state is None:
        return None
    if isinstance(state, (list, tuple)):
        return type(state)(detach(s) for s in state)
    return state.copy()

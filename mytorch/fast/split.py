"""A training step's batch split over threads: both cores run the model, each on its share of the rows.

NumPy's ufuncs and BLAS release the GIL, so two threads, each running forward and backward on half
the batch with one BLAS thread, keep two cores busy through every elementwise pass too (which
NumPy alone runs on one core). The model is the plain one; BatchSplit wraps it:

    replicas     copies of the model (copy.deepcopy) whose params are the model's own arrays (so
                 every optimizer step is seen by all) and whose grads are their own buffers
    forward_loss x, y (B, ...) -> rows cut into k contiguous shares; replica j runs
                 forward_loss on share j in thread j -> loss = sum_j (n_j / B) loss_j
    backward_loss replica j's backward_loss in thread j, then the model's grads:
                 grad = sum_j (n_j / B) grad_j        (each loss_j is a mean over its n_j rows)

so the model's grads are those of the mean loss over the whole batch, as the plain step's, up to
float rounding. A model whose loss is a mean over something else than rows (a translator's: over the
target's real tokens) says how many a share holds: batch_items(x, y) -> n_j, and B = sum_j n_j.
Dropout: each step, replica j's dropout layers get a Generator seeded from the
model's own dropout stream (one draw per replica), so runs stay reproducible and resumable from
the model's RNG state alone; the masks differ from the plain step's (no test can compare them).

For models whose rows are independent (a ViT's images): a model opts in with `splittable = True`.
"""
import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .parallel import blas_threads, num_threads

MIN_ROWS = 16                   # a smaller share is not worth a thread


class BatchSplit:
    """The model's training-step interface (train, zero_grad, forward_loss, backward_loss, lap: what
    app.step.train_step calls), each step run as k row shares on k threads. model: the plain model,
    whose params the optimizer updates; k: threads (default: mytorch.fast.parallel.num_threads())."""

    def __init__(self, model, k=None):
        self.model = model
        self.k = k or num_threads()
        self.replicas = [replica(model) for _ in range(self.k)]
        self.shares = None
        self.pool = ThreadPoolExecutor(self.k) if self.k > 1 else None   # its own: parallel_rows' may be busy

    def train(self, mode=True):
        self.model.train(mode)
        return self

    def zero_grad(self):
        self.model.zero_grad()

    def lap(self, phase):
        self.model.lap(phase)

    def forward_loss(self, x, y, state=None):
        if state is not None:
            raise ValueError("BatchSplit: the rows of a split batch carry no state")
        B = len(x)
        k = max(1, min(self.k, B // MIN_ROWS))
        bounds = np.linspace(0, B, k + 1).astype(int)
        self.shares = list(zip(bounds[:-1], bounds[1:]))
        drops = getattr(self.model, "drops", [])
        reseed = any(d.p > 0 for d in drops) and self.model.training
        for r in self.replicas[:k]:
            if r.training != self.model.training:
                r.train(self.model.training)
            if reseed:                       # this step's masks, from the model's own stream
                g = np.random.default_rng(int(drops[0].rng.integers(2**63)))
                for d in r.drops:
                    d.rng = g

        def run(j):
            lo, hi = self.shares[j]
            self.replicas[j].zero_grad()
            return self.replicas[j].forward_loss(x[lo:hi], y[lo:hi])[0]
        losses = self._parallel(run, k)
        self.model.lap("layers_forward")
        items = getattr(self.model, "batch_items", None)
        n = [items(x[lo:hi], y[lo:hi]) if items else hi - lo for lo, hi in self.shares]
        self.weights = [n_j / max(sum(n), 1) for n_j in n]
        return sum(w * loss for w, loss in zip(self.weights, losses)), None

    def backward_loss(self):
        k, weights = len(self.shares), self.weights
        self._parallel(lambda j: self.replicas[j].backward_loss(), k)
        self.model.lap("layers_backward")
        grads = [[g for _, _, g in r.named_parameters()] for r in self.replicas[:k]]
        for i, (_, _, g) in enumerate(self.model.named_parameters()):
            np.multiply(grads[0][i], weights[0], out=g)
            for j in range(1, k):
                g += weights[j] * grads[j][i]

    def _parallel(self, fn, k):
        if k == 1:
            return [fn(0)]
        with blas_threads(1):
            futures = [self.pool.submit(fn, j) for j in range(k)]
            return [f.result() for f in futures]


def replica(model):
    """A deep copy of model whose every parameter is the model's own array (shared), with its own
    zeroed gradient buffers (a gradient buffer shared inside the model, a tied weight's, stays shared)."""
    twin = copy.deepcopy(model)
    twin.timer = None
    _share(model, twin, {})
    return twin


def _share(main, twin, buffers):
    for key, p in main.params.items():
        twin.params[key] = p
        g = main.grads[key]
        if id(g) not in buffers:
            buffers[id(g)] = np.zeros_like(g)
        twin.grads[key] = buffers[id(g)]
    for (_, a), (_, b) in zip(main.children(), twin.children()):
        _share(a, b, buffers)

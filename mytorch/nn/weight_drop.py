"""Weight dropout (DropConnect, Wan et al. 2013) on one weight of a layer: AWD-LSTM's `wdrop`.

Shapes: W any weight of the layer, e.g. an LSTM's W_hh (4H, H); mask the same shape as W.

    W_used = W * mask,   mask = keep / (1 - p),  keep ~ Bernoulli(1 - p), one mask per forward
    dL/dW  = dL/dW_used * mask                                  (the mask is a constant)

The layer itself stays plain: ``WeightDrop.forward(layer, ...)`` puts W_used in
``layer.params[name]`` for the duration of ``layer.forward(...)``, and
``WeightDrop.backward(layer, ...)`` puts it back, with a zeroed buffer in ``layer.grads[name]``,
for ``layer.backward(...)``; then adds dL/dW_used * mask into the real gradient. The raw W is
never written to (only the optimizer changes it), and in eval mode (or with p = 0) both calls are
the layer's own. For an LSTM, dropping W_hh drops the same recurrent connections at every time
step of the sequence.

The layer is an argument, not an attribute: the helper owns no parameters, so a model's
parameter list sees the layer once, under its own name. Randomness as mytorch.nn.dropout
(`seed=` or `rng=`; a model passes its one generator so a trainer saves one state).
"""
from contextlib import contextmanager

from .. import backend
from .dropout import Dropout


@contextmanager
def _swapped(table, name, value):
    """table[name] = value for the duration, then the original object back."""
    original = table[name]
    table[name] = value
    try:
        yield
    finally:
        table[name] = original


class WeightDrop(Dropout):
    """DropConnect on ``layer.params[name]``: forward(layer, *args) and backward(layer, *args) run the
    layer's own forward / backward with W * mask in place of W.

    .mask (shape of W) is drawn by each training forward and used by the next backward.
    """

    def __init__(self, name="W_hh", p=0.5, seed=None, rng=None):
        super().__init__(p, seed=seed, rng=rng)
        self.name = name
        self._W_used = None

    def forward(self, layer, *args, **kwargs):
        """layer.forward(*args, **kwargs) with W_used = W * mask (a new mask) as layer.params[name]."""
        if not self.training or self.p == 0:
            self._identity = True
            return layer.forward(*args, **kwargs)
        self._W_used = super().forward(layer.params[self.name])          # W * mask, a new array
        with _swapped(layer.params, self.name, self._W_used):
            return layer.forward(*args, **kwargs)

    def backward(self, layer, *args, **kwargs):
        """layer.backward(*args, **kwargs) through W_used; adds dL/dW = dL/dW_used * mask into layer.grads."""
        if self._identity:
            return layer.backward(*args, **kwargs)
        if self._W_used is None:
            raise RuntimeError("WeightDrop.backward called before forward")
        dW_used = backend.get_array_module(self._W_used).zeros_like(self._W_used)
        with _swapped(layer.params, self.name, self._W_used), _swapped(layer.grads, self.name, dW_used):
            out = layer.backward(*args, **kwargs)
        layer.grads[self.name] += super().backward(dW_used)              # dL/dW_used * mask
        return out

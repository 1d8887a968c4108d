"""The one convention every layer follows.

A layer keeps two dicts with the same keys:

    params["W"]   the parameter array
    grads["W"]    dL/dW, the same shape, *accumulated* by backward (+=)

``forward`` stores what ``backward`` needs; ``backward(dLdZ)`` returns the
gradient for the layer's input(s) and adds into ``grads``; ``zero_grad()``
clears them once per step. ``train()`` / ``eval()`` flip ``training`` for
layers that behave differently (dropout). An optimizer needs nothing else.
"""
import copy

from .. import backend


class Module:
    """Base class: params/grads bookkeeping, train/eval, children."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.training = True

    # -- parameters --------------------------------------------------------
    def add_param(self, name, value):
        """Register a parameter and its zeroed gradient buffer."""
        xp = backend.get_array_module(value)
        self.params[name] = value
        self.grads[name] = xp.zeros_like(value)

    def children(self):
        """Sub-layers, in a stable order (attributes that are Modules or lists of them)."""
        out = []
        for key, value in vars(self).items():
            if isinstance(value, Module):
                out.append((key, value))
            elif isinstance(value, (list, tuple)):
                out.extend((f"{key}.{i}", v) for i, v in enumerate(value) if isinstance(v, Module))
        return out

    def named_parameters(self, prefix=""):
        """Yield (name, param, grad) for this layer and its children, depth first."""
        for name, p in self.params.items():
            yield prefix + name, p, self.grads[name]
        for key, child in self.children():
            yield from child.named_parameters(prefix + key + ".")

    def parameters(self):
        """List of (params, grads) dict pairs, what optimizers take."""
        pairs = [(self.params, self.grads)] if self.params else []
        for _, child in self.children():
            pairs.extend(child.parameters())
        return pairs

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)
        for _, child in self.children():
            child.zero_grad()

    # -- modes ------------------------------------------------------------
    def train(self, mode=True):
        self.training = mode
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


def check_last_dim(x, size, layer, what="input"):
    """Raise a clear error when x's last axis is not `size`."""
    if x.ndim < 1 or x.shape[-1] != size:
        raise ValueError(f"{layer}: expected {what} of shape (..., {size}), got {tuple(x.shape)}")


def check_ids(ids, num_ids, who, shape=None):
    """Raise a clear error unless ids is an integer array with 0 <= id < num_ids.

    shape: None for any shape, or a legend such as "(B, T)": exactly that many axes, each >= 1.
    """
    if not hasattr(ids, "ndim") or not hasattr(ids, "dtype"):
        raise TypeError(f"{who}: token ids must be an integer array{' of shape ' + shape if shape else ''}, "
                        f"got {type(ids).__name__}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{who}: token ids must be integers, got dtype {ids.dtype}")
    if shape is not None and (ids.ndim != shape.count(",") + 1 or 0 in ids.shape):
        raise ValueError(f"{who}: token ids must have shape {shape} with {shape[1:-1]} >= 1, "
                         f"got {tuple(ids.shape)}")
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num_ids:
            raise ValueError(f"{who}: token ids must lie in [0, {num_ids}), got values in [{lo}, {hi}]")


def detached(layer, training=None):
    """A copy of layer and of every sub-layer in it that shares their parameters (the same params and
    grads dicts) but not what forward saves for backward; training: the copy's mode (None: as is)."""
    twin = copy.copy(layer)
    for key, value in vars(layer).items():
        if isinstance(value, Module):
            setattr(twin, key, detached(value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Module) for v in value):
            setattr(twin, key, type(value)(detached(v) if isinstance(v, Module) else v for v in value))
    if training is not None:
        twin.train(training)
    return twin


def peek(layer, *args):
    """layer.forward(*args) on a detached copy: the same parameters, but what forward saves for backward
    lands on the copy (and its sub-layers' copies), so an inference pass leaves a pending training
    backward intact."""
    return detached(layer).forward(*args)

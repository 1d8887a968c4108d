"""The fast tier: speed-ups of plain mytorch code, each beside the plain code it replaces.

The plain tier (mytorch.nn, mytorch.optim) is the specification; every piece here computes
what its plain twin computes (tests/test_fast_*.py compare the two) and is picked through
``choose`` or ``enabled``, never by a branch inside a plain layer.

    piece                            speeds up (plain twin)                       switch
    loss.LinearCrossEntropyLoss      nn.LinearCrossEntropyLoss.exp_rows: the      MYTORCH_FAST_LOSS
                                     bias / max / exp / sum pass over the (N, V)
                                     logits, in cache-sized row blocks on every core
    lstm.LSTMCell, lstm.LSTM         nn.LSTMCell's and nn.LSTM's cell_update      MYTORCH_FAST_LSTM
                                     (_backward): one fused CuPy kernel per step
                                     on the GPU (kernels.py); NumPy arrays take
                                     the plain code
    recurrence_threads               nn.LSTM's time loops, forward and backward   MYTORCH_FAST_THREADS
                                     (entered by lstm.LSTM): one BLAS thread for
                                     small per-step products
    optim.SGD, optim.Adam,           optim's SGD/Adam _update: the memory-bound   MYTORCH_FAST_OPTIM
    optim.AdamW                      update in cache-sized row blocks on every
                                     core, so p, g, m, v cross the memory bus once
                                     a step; one CuPy kernel per Adam update
    block.TransformerBlock,          nn.TransformerBlock and nn.DecoderBlock,     MYTORCH_FAST_BLOCK
    block.DecoderBlock               built from the twins below (each as its
                                     own switch stands)
    attention.MultiHeadAttention     nn.MultiHeadAttention's unmasked             MYTORCH_FAST_ATTENTION
                                     bidirectional self-attention: one Q/K/V
                                     product, the softmax in place
    activation.GELU                  nn.GELU (tanh): the derivative made in        MYTORCH_FAST_GELU
                                     forward, in place; backward one product
    layernorm.LayerNorm              nn.LayerNorm: row means as BLAS products,    MYTORCH_FAST_LAYERNORM
                                     passes in place
    split.BatchSplit                 a model's training step (forward_loss,       MYTORCH_FAST_SPLIT
    (batch_split(model))             backward_loss): the batch's rows in shares
                                     on every core, one replica per thread
                                     sharing the weights; models that opt in
                                     (splittable = True: a ViT's images)
    parallel.py, kernels.py          the machinery: thread pool, row blocks, BLAS thread scoping,
                                     CuPy kernels

MYTORCH_FAST=0 turns every piece off; MYTORCH_FAST_<NAME>=0 turns one off. The switches are
read when a layer is built (``choose``) or a region entered, so a test can flip them.
"""
import os
from contextlib import nullcontext

from .. import nn
from .. import optim as plain_optim  # not `optim`: that name is the fast submodule, as loss and lstm are
from .. import backend
from . import activation, attention, block, layernorm, loss, lstm, optim
from .parallel import blas_threads_for, num_threads
from .split import BatchSplit

# switch name -> [(plain class, its fast twin)]
PIECES = {"loss": [(nn.LinearCrossEntropyLoss, loss.LinearCrossEntropyLoss)],
          "block": [(nn.TransformerBlock, block.TransformerBlock), (nn.DecoderBlock, block.DecoderBlock)],
          "attention": [(nn.MultiHeadAttention, attention.MultiHeadAttention)],
          "gelu": [(nn.GELU, activation.GELU)],
          "layernorm": [(nn.LayerNorm, layernorm.LayerNorm)],
          "lstm": [(nn.LSTMCell, lstm.LSTMCell), (nn.LSTM, lstm.LSTM)],
          "optim": [(plain_optim.SGD, optim.SGD), (plain_optim.Adam, optim.Adam),
                    (plain_optim.AdamW, optim.AdamW)]}
SWITCHES = tuple(PIECES) + ("threads", "split")


def enabled(name):
    """Is the fast piece `name` on? Off when MYTORCH_FAST=0 or MYTORCH_FAST_<NAME>=0."""
    if name not in SWITCHES:
        raise ValueError(f"unknown fast piece {name!r}; known: {', '.join(SWITCHES)}")
    off = ("0", "false", "off", "no")
    return (os.environ.get("MYTORCH_FAST", "1").lower() not in off
            and os.environ.get(f"MYTORCH_FAST_{name.upper()}", "1").lower() not in off)


def choose(cls):
    """The class to build for `cls`: its fast twin when it has one and that is switched on, else cls."""
    for name, pairs in PIECES.items():
        for plain, twin in pairs:
            if cls is plain:
                return twin if enabled(name) else cls
    return cls


def batch_split(model):
    """What a training step should drive: BatchSplit(model) when the split is on, the model opts in
    (splittable), there are several threads and the arrays are NumPy's; else the model itself."""
    if (enabled("split") and getattr(model, "splittable", False) and num_threads() > 1
            and backend.get_backend() == "numpy"):
        return BatchSplit(model)
    return model


def recurrence_threads(macs):
    """Context for a loop of products of `macs` multiply-adds each: one BLAS thread if they are small."""
    return blas_threads_for(macs) if enabled("threads") else nullcontext()


def settings():
    """{piece: on/off} as the switches stand now (the bench prints it)."""
    return {name: enabled(name) for name in SWITCHES}

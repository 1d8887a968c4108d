"""nn.TransformerBlock built from the fast twins of its sub-layers (each as its switch stands)."""
from .. import nn


class TransformerBlock(nn.TransformerBlock):
    """The plain block; its LayerNorms, GELU and attention are mytorch.fast's twins where switched on."""

    def __init__(self, *args, **kwargs):
        from . import choose                # (the package imports this module)
        self.LayerNorm = choose(nn.LayerNorm)
        self.GELU = choose(nn.GELU)
        self.Attention = choose(nn.MultiHeadAttention)
        super().__init__(*args, **kwargs)

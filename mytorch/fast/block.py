"""nn.TransformerBlock and nn.DecoderBlock built from the fast twins of their sub-layers (each as its switch
stands)."""
from .. import nn


class TransformerBlock(nn.TransformerBlock):
    """The plain block; its LayerNorms, GELU and attention are mytorch.fast's twins where switched on."""

    def __init__(self, *args, **kwargs):
        from . import choose                # (the package imports this module)
        self.LayerNorm = choose(nn.LayerNorm)
        self.GELU = choose(nn.GELU)
        self.Attention = choose(nn.MultiHeadAttention)
        super().__init__(*args, **kwargs)


class DecoderBlock(nn.DecoderBlock):
    """The plain decoder block; its LayerNorms, GELU and attentions are mytorch.fast's twins where switched
    on (the attention twin's fused path is for unmasked bidirectional self-attention: here it defers to
    the plain layer, causal or cross)."""

    def __init__(self, *args, **kwargs):
        from . import choose
        self.LayerNorm = choose(nn.LayerNorm)
        self.GELU = choose(nn.GELU)
        self.Attention = choose(nn.MultiHeadAttention)
        super().__init__(*args, **kwargs)

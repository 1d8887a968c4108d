"""Layers with explicit forward/backward.

Shape letters: B batch, T time, N rows (B*T), I/D features, H hidden, C classes, V vocab.
"""
from .module import Module  # noqa: F401
from .linear import Linear, Embedding  # noqa: F401
from .lstm import LSTMCell, LSTM  # noqa: F401
from .softmax import Softmax, softmax, log_softmax  # noqa: F401
from .attention import Attention  # noqa: F401
from .loss import CrossEntropyLoss, LinearCrossEntropyLoss, LabelSmoothedCrossEntropy  # noqa: F401
from .dropout import Dropout, LockedDropout, EmbeddingDropout  # noqa: F401
from .weight_drop import WeightDrop  # noqa: F401
from .layernorm import LayerNorm  # noqa: F401
from .activation import GELU, erf  # noqa: F401
from .multihead_attention import MultiHeadAttention  # noqa: F401
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding  # noqa: F401
from .adaptive_softmax import AdaptiveLogSoftmaxWithLoss  # noqa: F401
from .transformer_block import TransformerBlock  # noqa: F401
from .patches import PatchEmbedding, ClassToken  # noqa: F401
from .decoder_block import DecoderBlock  # noqa: F401

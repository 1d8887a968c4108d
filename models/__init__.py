"""The models: word-level language models (LSTM, GPT-style Transformer), a Vision Transformer, an
encoder-decoder Transformer that translates, and their checkpoint files."""
import mytorch  # noqa: F401  (first: it tunes OpenBLAS before NumPy loads it)
from .language_model import LanguageModel, check_ids  # noqa: F401
from .transformer import TransformerLM  # noqa: F401
from .vit import ViT  # noqa: F401
from .translator import Translator  # noqa: F401
from .checkpoint import save_model, CheckpointError  # noqa: F401
from .loading import load  # noqa: F401
from .ensemble import Ensemble  # noqa: F401

"""models.load: the model a model file describes, built and filled with its weights."""
import numpy as np

from .checkpoint import CheckpointError, load_npz, read_model_file
from .language_model import LanguageModel
from .transformer import TransformerLM
from .translator import Translator
from .vit import ViT

# config["model"] -> the class that file holds; files written before the Transformer have no "model"
MODELS = {"lstm": LanguageModel, "transformer": TransformerLM, "vit": ViT, "translator": Translator}


def load_model(path, dtype=np.float32):
    """The LanguageModel, TransformerLM, ViT or Translator a file written by save_model holds, in eval mode
    (float16 weights are widened)."""
    arrays = load_npz(path)
    config, meta, params = read_model_file(arrays, path)
    config = dict(config)
    kind = config.pop("model", "lstm")
    if kind not in MODELS:
        raise CheckpointError(f"{path}: unknown model type {kind!r} in its configuration "
                              f"(known: {', '.join(sorted(MODELS))})")
    try:
        model = MODELS[kind](**config, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unknown model configuration {config} for a {kind} model "
                              f"({err})") from None
    try:
        model.load_state_arrays({k: v.astype(dtype) if v.dtype.kind == "f" else v  # word_rank: ints
                                 for k, v in params.items()})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    vocab = arrays.get("__vocab__")
    if vocab is not None and vocab.shape != (model.vocab_size,):
        raise CheckpointError(f"{path}: vocabulary of shape {vocab.shape} does not match the model's "
                              f"{model.vocab_size} words")
    model.meta = meta
    model.vocab = vocab
    return model.eval()                                 # ready for predict/generate


def load(path, dtype=np.float32, weights=None):
    """models.load: the model in one file, or for a list of files their Ensemble (models.ensemble:
    probabilities averaged with `weights`, default equal; the files must share the vocabulary)."""
    if isinstance(path, (list, tuple)):
        from .ensemble import Ensemble
        if len(path) == 1 and weights is None:
            return load_model(path[0], dtype)
        return Ensemble([load_model(p, dtype) for p in path], weights)
    if weights is not None:
        raise ValueError("models.load: weights are for an ensemble: give a list of files")
    return load_model(path, dtype)

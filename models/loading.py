"""models.load: the model a model file describes, built and filled with its weights."""
import numpy as np

from .checkpoint import CheckpointError, load_npz, read_model_file
from .language_model import LanguageModel


def load_model(path, dtype=np.float32):
    """LanguageModel, in eval mode, from a file written by save_model (float16 weights are widened)."""
    arrays = load_npz(path)
    config, meta, params = read_model_file(arrays, path)
    try:
        model = LanguageModel(**config, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unknown model configuration {config} ({err})") from None
    try:
        model.load_state_arrays({k: v.astype(dtype) for k, v in params.items()})
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    vocab = arrays.get("__vocab__")
    if vocab is not None and vocab.shape != (model.vocab_size,):
        raise CheckpointError(f"{path}: vocabulary of shape {vocab.shape} does not match the model's "
                              f"{model.vocab_size} words")
    model.meta = meta
    model.vocab = vocab
    return model.eval()                                 # ready for predict/generate

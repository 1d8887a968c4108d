"""Use a trained model: the most likely next words after a prompt, and a continuation.

    python -m app.predict --checkpoint checkpoints/reference.npz "The cat is on the"
    python -m app.predict --checkpoint best.npz "The cat is on the" --words 30 \
        --temperature 0.8 --top-p 0.9

Shapes: V vocabulary, P prompt words (plus the <sos> put in front), K continuation words.

The prompt is split on whitespace, like the corpus (WikiText-2 is case-sensitive and
tokenised: "cat ." not "cat."); a word the vocabulary lacks is read as <unk>, and
the command says which. It prints

    next words after: The cat is on the
      0.1234  first
      ...                                (--top lines, probabilities = softmax of model.predict)
    The cat is on the | w1 w2 ... wK     (model.generate: the recommended decoding unless flags say otherwise)

A prompt longer than 40 words is echoed as "... " and its last 20 words. Errors (missing or
damaged model file, no vocabulary, empty prompt, bad flags) print one line `error: ...` on
stderr and return exit code 2. `python -m app.generate` writes continuations only (of a
prompt, or of every row of a fixtures file).
"""
import sys

import numpy as np

from .errors import Parser, UsageError, command, prog

ECHO_WORDS, ECHO_TAIL = 40, 20     # a prompt over ECHO_WORDS words is echoed as "... " + its last ECHO_TAIL


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.predict"), description=__doc__.split("\n\n")[0])
    p.add_argument("prompt", nargs="*", help="the words to continue (one quoted string or several words)")
    p.add_argument("--checkpoint", required=True, action="append", metavar="MODEL",
                   help="model file written by models.save_model (e.g. best.npz); given again: the ensemble "
                        "of the files (probabilities averaged)")
    add_weights_argument(p)
    p.add_argument("--data", help="directory with vocab.npy, for a model file without a vocabulary")
    p.add_argument("--words", type=int, default=20, help="words to generate after the prompt (0: none)")
    p.add_argument("--top", type=int, default=5, help="how many most likely next words to list (0: none)")
    add_decoding_arguments(p)
    return p.parse_args(argv)


def add_decoding_arguments(p):
    """The decoding flags (models.decoding.Decoding); a flag left out keeps the recommended default."""
    from models.decoding import Decoding
    d = Decoding()
    g = p.add_argument_group("decoding (default: the recommended decoding, see README)")
    g.add_argument("--temperature", type=float,
                   help=f"0: greedy; else sample softmax(z / T) ({d.temperature})")
    g.add_argument("--top-k", type=int, help=f"sample only among the K most likely words ({d.top_k})")
    g.add_argument("--top-p", type=float,
                   help=f"sample only among the fewest words with mass >= P ({d.top_p}; "
                   "1: no restriction)")
    g.add_argument("--beams", type=int, dest="num_beams",
                   help=f"beam search with this many beams ({d.num_beams})")
    g.add_argument("--length-penalty", type=float,
                   help=f"beam score / ((5 + len) / 6) ** this ({d.length_penalty})")
    g.add_argument("--repetition-penalty", type=float,
                   help=f"> 1 discourages words already used, prompt included ({d.repetition_penalty})")
    g.add_argument("--no-repeat-ngram", type=int,
                   help=f"never repeat an n-gram of this size, prompt included; 0: off ({d.no_repeat_ngram})")
    g.add_argument("--allow-special", dest="ban_special", action="store_false", default=None,
                   help="allow <unk>, <sos>, <eos> in the continuation (banned by default)")
    g.add_argument("--seed", type=int, help=f"random seed for sampling ({d.seed})")


def add_weights_argument(p):
    p.add_argument("--weights", nargs="+", type=float, metavar="W",
                   help="with several members: the ensemble's weights, one per checkpoint (and the n-gram's "
                        "last) (default: equal; python -m app.evaluate --ensemble fits them on the "
                        "validation split)")
    from .adapt_report import add_ngram_argument
    add_ngram_argument(p, "with --data DIR")


def load_checkpoints(args):
    """The model of --checkpoint, or the models.Ensemble of several (with --weights); a bad combination
    (weights without several files, a count that differs, other vocabularies) is a UsageError."""
    from models import Ensemble, load
    paths, weights, ngram = args.checkpoint, args.weights, getattr(args, "ngram", None)
    members = len(paths) + (ngram is not None)
    if weights is not None and len(weights) != members:
        raise UsageError(f"--weights: give one per member ({members}), got {len(weights)}")
    if ngram is not None and args.data is None:
        raise UsageError(f"--ngram {ngram}: give --data DIR (its training split is counted)")
    try:
        if ngram is None:
            return load(paths, weights=weights)
        from dataset.corpus import load_hw4p1
        from .adapt_report import ngram_member
        models = [load(p) for p in paths]
        return Ensemble(models + [ngram_member(f"ngram:{ngram}", load_hw4p1(args.data))], weights)
    except ValueError as err:
        raise UsageError(str(err)) from None


# Decoding option -> its flag (ban_special is a switch, --allow-special, that cannot be wrong)
DECODING_FLAGS = {"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p",
                  "num_beams": "--beams", "length_penalty": "--length-penalty",
                  "repetition_penalty": "--repetition-penalty", "no_repeat_ngram": "--no-repeat-ngram",
                  "ban_special": "--allow-special", "seed": "--seed"}


def decoding_options(args):
    """{option: value} of the decoding flags given; a bad value is a UsageError naming its flag."""
    from models.decoding import Decoding
    options = {k: getattr(args, k) for k in DECODING_FLAGS if getattr(args, k, None) is not None}
    try:
        Decoding.of(**options)
    except ValueError as err:
        message = str(err).replace("decoding: ", "")
        name = message.split()[0]
        raise UsageError(message.replace(name, DECODING_FLAGS.get(name, name), 1)) from err
    return options


def _check_flags(args):
    if args.words < 0:
        raise UsageError(f"--words must be >= 0, got {args.words}")
    if args.top < 0:
        raise UsageError(f"--top must be >= 0, got {args.top}")
    return decoding_options(args)


def load_vocabulary(model, data_dir=None):
    """The Vocabulary stored in the model file, else DATA_DIR's vocab.npy (checked against the model)."""
    from dataset.corpus import SOS, Vocabulary, load_vocab
    words = getattr(model, "vocab", None)
    if words is None:
        if data_dir is None:
            raise UsageError("the model file holds no vocabulary: pass --data DIR (the folder of vocab.npy)")
        words = load_vocab(data_dir)
    vocab = Vocabulary(words)
    if len(vocab) != model.vocab_size:
        raise UsageError(f"the vocabulary has {len(vocab)} words but the model predicts {model.vocab_size}")
    if SOS not in vocab:
        raise UsageError(f"the vocabulary lacks {SOS}")
    return vocab


def shown(words):
    """The prompt as echoed: whole up to ECHO_WORDS words, else "... " and its last ECHO_TAIL words."""
    return " ".join(words) if len(words) <= ECHO_WORDS else "... " + " ".join(words[-ECHO_TAIL:])


def listed(words, most=10):
    """'a b c': each word once, at most `most` of them named ('... and 12 more')."""
    distinct = list(dict.fromkeys(words))
    more = f" and {len(distinct) - most} more" if len(distinct) > most else ""
    return " ".join(distinct[:most]) + more


def encode_prompt(vocab, words):
    """(ids (1 + P,) int64 with <sos> first, the prompt words the vocabulary lacks)."""
    from dataset.corpus import UNK
    unknown = [w for w in words if w not in vocab]
    if unknown and UNK not in vocab:
        raise UsageError(f"words not in the vocabulary (which has no {UNK}): {listed(unknown)}")
    ids = np.concatenate(([vocab.sos_id], vocab.encode(words))).astype(np.int64)
    return ids, unknown


def top_words(model, ids, k):
    """[(word id, probability)] * k, most likely first: softmax of model.predict in float64."""
    from mytorch import backend
    from mytorch.nn import softmax
    z = backend.to_numpy(model.predict(ids[None, :]))[0].astype(np.float64)   # (V,)
    p = softmax(z)
    best = np.argsort(-p, kind="stable")[:k]
    return [(int(i), float(p[i])) for i in best]


def run(args, out=None):
    out = out or sys.stdout
    options = _check_flags(args)
    words = " ".join(args.prompt).split()
    if not words:
        raise UsageError("the prompt is empty: give the words to continue, e.g. \"The cat is on the\"")
    model = load_checkpoints(args).eval()            # eval: no dropout at inference
    vocab = load_vocabulary(model, args.data)
    ids, unknown = encode_prompt(vocab, words)
    if unknown:
        print(f"unknown words (read as <unk>): {listed(unknown)}", file=out)
    prompt = shown(words)
    if args.top:
        print(f"next words after: {prompt}", file=out)
        for i, p in top_words(model, ids, args.top):
            print(f"  {p:.4f}  {vocab.words[i]}", file=out)
    if args.words:
        cont = model.generate(ids[None, :], args.words, **options)              # (1, K)
        print(f"{prompt} | {vocab.decode(cont[0])}", file=out)
    return 0


def main(argv=None):
    return command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Continue text with a trained model (pytorch/examples' generate.py, for this project's models).

    python -m app.generate --checkpoint checkpoints/reference.npz --prompt "The cat is on the" --words 20
    python -m app.generate --checkpoint best.npz --fixtures DATA/fixtures/generation_test.npy \
        --words 10 --outf generated.txt --temperature 0
    mytorch-generate ...                       (the same, once the package is installed)

Shapes: N prompt rows, L prompt words (<sos> first), K = --words generated words, V vocabulary.

--prompt "words": one line `PROMPT | CONTINUATION` (the words split on whitespace, <sos> put in
front, a word the vocabulary lacks read as <unk>; a prompt over 40 words is echoed as "... " and
its last 20). --fixtures FILE.npy: an (N, L) array of word ids, as the course's generation.npy,
continued row by row and written in the course's format, one line per row:

    Input | Output #0: <sos> w1 ... wL | c1 ... cK

Decoding: the recommended default (README: Generation) unless the decoding flags say otherwise;
seeded, so a command gives the same text each time. --outf FILE writes the text there
(atomically) instead of stdout. Mistakes print one line `error: ...` and exit 2.
"""
import sys

import numpy as np

from .errors import Parser, UsageError, command, prog
from .predict import (add_decoding_arguments, add_weights_argument, decoding_options, encode_prompt, listed,
                      load_checkpoints, load_vocabulary, shown)


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.generate"), description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="MODEL",
                   help="model file (best.npz of a run, checkpoints/reference.npz); several: their ensemble "
                        "(probabilities averaged)")
    add_weights_argument(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="the words to continue (one quoted string)")
    what.add_argument("--fixtures", metavar="FILE.npy",
                      help="(N, L) word ids to continue row by row, e.g. DATA/fixtures/generation_test.npy")
    p.add_argument("--words", type=int, default=20, help="words to generate for each prompt")
    p.add_argument("--outf", metavar="FILE", help="write the text to FILE instead of stdout")
    p.add_argument("--data", help="directory with vocab.npy, for a model file without a vocabulary")
    add_decoding_arguments(p)
    return p.parse_args(argv)


def read_fixtures(path, vocab_size):
    """(N, L) int64 ids from an .npy file; a DataError that names the file when it is not that."""
    from dataset.corpus import DataError, _np_load
    ids = _np_load(path)
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or not ids.size:
        raise DataError(f"{path}: expected (N, L) word ids, got {ids.dtype} {ids.shape}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise DataError(f"{path}: word ids must lie in [0, {vocab_size}), got values in [{ids.min()}, "
                        f"{ids.max()}] (fixtures of another vocabulary?)")
    return ids.astype(np.int64)


def continuations(model, vocab, args, options):
    """The text to write: one `PROMPT | CONTINUATION` line, or the course's lines for a fixtures file."""
    from fixtures import format_generation
    if args.fixtures is not None:
        prompts = read_fixtures(args.fixtures, len(vocab))
        return format_generation(vocab, prompts, model.generate(prompts, args.words, **options)), ""
    words = args.prompt.split()
    if not words:
        raise UsageError("the prompt is empty: give the words to continue, "
                         "e.g. --prompt \"The cat is on the\"")
    ids, unknown = encode_prompt(vocab, words)
    note = f"unknown words (read as <unk>): {listed(unknown)}" if unknown else ""
    out = model.generate(ids[None, :], args.words, **options)                # (1, K)
    return f"{shown(words)} | {vocab.decode(out[0])}\n", note


def run(args):
    from models.checkpoint import write_text_atomic
    from models.decoding import MAX_GENERATE_STEPS
    if not 1 <= args.words <= MAX_GENERATE_STEPS:
        raise UsageError(f"--words must lie in [1, {MAX_GENERATE_STEPS}], got {args.words}")
    options = decoding_options(args)
    model = load_checkpoints(args).eval()
    vocab = load_vocabulary(model, args.data)
    text, note = continuations(model, vocab, args, options)
    if note:
        print(note, file=sys.stderr)
    if args.outf is None:
        sys.stdout.write(text)
        return 0
    write_text_atomic(args.outf, text)
    rows = text.count("\n")
    print(f"wrote {args.outf}: {rows} continuation{'s' * (rows != 1)} of {args.words} words", file=sys.stderr)
    return 0


def main(argv=None):
    return command(parse_args, run, argv, also=(OSError,))


if __name__ == "__main__":
    sys.exit(main())

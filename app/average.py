"""Average model files: the mean of each parameter over the last epochs of one run (checkpoint
averaging, Vaswani et al. 2017; fairseq's average_checkpoints).

    python train.py --task translate --keep-epochs 5 --save runs/de-en   # writes epoch-N.npz, the last 5
    python -m app.average runs/de-en/epoch-*.npz --out runs/de-en/average.npz

The files must hold the same model (models.checkpoint.average_model_files says what is checked); the
result is a model file like best.npz, for every command that reads one (models.load included).
"""
import sys

from .errors import Parser, command, prog


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.average"), description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", metavar="M.npz", help="two or more model files of one model")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="the averaged model file to write")
    return p.parse_args(argv)


def run(args):
    from models.checkpoint import average_model_files, save_npz_atomic
    save_npz_atomic(args.out, average_model_files(args.models))
    print(f"{args.out}: the mean of {len(args.models)} model files")
    return 0


def main(argv=None):
    return command(parse_args, run, argv, also=(OSError,))


if __name__ == "__main__":
    sys.exit(main())

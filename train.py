"""Train a model (the language model, or --task vit): `python train.py --help` (the command is
app.train_command, also installed as `mytorch-train`).

    python train.py                                   # the default recipe, into runs/default-<time>
    python train.py --preset notebook                 # the course notebook's configuration
    python train.py --dry-run                         # a few batches of each phase, in seconds
    python train.py --resume runs/default-<time>      # continue an interrupted run

The names below are re-exported so that `import train` keeps working (train.main, train.Run, ...).
"""
import sys

import mytorch  # noqa: F401  (first: it tunes OpenBLAS before NumPy loads it)
from app.config import DRY_RUN_BATCHES, PRESETS  # noqa: F401  (the language model's presets)
from app.train_command import (build_parser, given_flags, main, open_run, parse_args,  # noqa: F401
                               resolve_config, setup)
from app.trainer import Run, TrainingDiverged, where  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())

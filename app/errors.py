"""The one error type for a user's mistake, and how every command reports it.

A user's mistake is a UsageError (a bad flag or setting) or a problem with a file the user
named: DataError (dataset.corpus: the data directory), CheckpointError (models.checkpoint: a
model or state file), BackendError (mytorch.backend: --backend cupy without CuPy or a GPU).
Every command prints any of them as one line `error: ...` on stderr and exits with code 2.
"""
import sys

from dataset.corpus import DataError
from models.checkpoint import CheckpointError
from mytorch.backend import BackendError


class UsageError(Exception):
    """A user's mistake (a bad flag, file or setting): one line `error: ...` on stderr, exit code 2."""


USER_ERRORS = (UsageError, DataError, CheckpointError, BackendError)


def one_line(err):
    """The message of err on one line (file names and numbers kept, newlines folded)."""
    return " ".join(str(err).split())


def run_command(run, args, also=()):
    """run(args) -> its exit code; a user's mistake (USER_ERRORS, and the types in `also`) prints
    one line and returns 2."""
    try:
        return run(args)
    except USER_ERRORS + tuple(also) as err:
        print("error: " + one_line(err), file=sys.stderr)
        return 2

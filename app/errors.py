"""The one error type for a user's mistake, and how every command reports it."""
import sys


class UsageError(Exception):
    """A user's mistake (a bad flag, file or setting): one line `error: ...` on stderr, exit code 2."""


def one_line(err):
    """The message of err on one line (file names and numbers kept, newlines folded)."""
    return " ".join(str(err).split())


def run_command(run, args):
    """run(args) -> its exit code; a user's mistake (bad flag, file or data) prints one line, exit 2."""
    from dataset.corpus import DataError
    from models.checkpoint import CheckpointError
    try:
        return run(args)
    except (UsageError, CheckpointError, DataError) as err:
        print("error: " + one_line(err), file=sys.stderr)
        return 2

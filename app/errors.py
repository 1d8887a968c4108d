"""The one error type for a user's mistake, and how every command reports it.

A user's mistake is a UsageError (a bad flag or setting) or a problem with a file the user
named: DataError (dataset.corpus: the data directory), CheckpointError (models.checkpoint: a
model or state file), BackendError (mytorch.backend: --backend cupy without CuPy or a GPU).
Every command prints any of them as one line `error: ...` on stderr and exits with code 2,
parses its flags with `Parser` (no abbreviated flags, a malformed flag is one line and exit 2
too), and ends quietly when its output is closed early (`... | head -1`): exit 128 + SIGPIPE,
as a process the signal ended, without a traceback.
"""
import argparse
import os
import signal
import sys

from dataset.corpus import DataError
from models.checkpoint import CheckpointError
from mytorch.backend import BackendError


class UsageError(Exception):
    """A user's mistake (a bad flag, file or setting): one line `error: ...` on stderr, exit code 2."""


USER_ERRORS = (UsageError, DataError, CheckpointError, BackendError)
BROKEN_PIPE_EXIT = 128 + signal.SIGPIPE


def one_line(err):
    """The message of err on one line (file names and numbers kept, newlines folded)."""
    return " ".join(str(err).split())


def prog(default):
    """The command's name for usage lines and messages: mytorch-<name> when called through the installed
    script, else `default` (python -m app.<name>)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("mytorch-") else default


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where there is none to show (None, a switch's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse for every command: whole flag names only (--epoch is not --epochs), each flag's default
    in --help, and a malformed flag reported as one line `error: ...` with exit code 2."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


def run_command(run, args, also=()):
    """run(args) -> its exit code; a user's mistake (USER_ERRORS, and the types in `also`) prints
    one line and returns 2."""
    try:
        return run(args)
    except BrokenPipeError:              # an OSError, but no mistake of the user's: see command()
        raise
    except USER_ERRORS + tuple(also) as err:
        print("error: " + one_line(err), file=sys.stderr)
        return 2


def command(parse_args, run, argv=None, also=()):
    """A command's main: parse argv, run, report a user's mistake in one line (exit 2), end quietly
    on a closed pipe (exit 141). --help returns 0."""
    try:
        try:
            args = parse_args(argv)
        except SystemExit as exit_:          # --help (0) or a malformed flag (2), already printed
            return exit_.code
        code = run_command(run, args, also)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return broken_pipe()


def broken_pipe():
    """The reader of stdout went away (`| head -1`): send what is left of stdout to /dev/null, so
    that nothing fails again at exit (the Python documentation's recipe), and return 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):   # stdout without a file descriptor (a test's capture)
        pass
    return BROKEN_PIPE_EXIT

"""Where a run writes, and one process at a time in it.

    runs/<preset>-<time>    a run without --save, under the current directory (pytorch/examples' habit)
    a temporary directory   a --dry-run without --save: removed when the command ends
    DIR/.lock               held while a process trains in DIR (a new run or a resume): a second
                            process is refused with one line naming the first one's pid

The lock is an flock(2) on DIR/.lock, which holds the owner's pid for the message. The kernel
drops an flock when its process ends however it ends (SIGKILL, a crash), so a lock file left
behind is stale by construction and the next process takes it over; a pid alone could not tell
a dead owner from a new process that happens to reuse its number. The file is removed on release.
"""
import os
import shutil
import tempfile
import time
from pathlib import Path

from .errors import UsageError

LOCK_NAME = ".lock"


def default_run_dir(preset):
    """runs/<preset>-<time> under the current directory (a new name each second)."""
    return Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


def temporary_run_dir():
    """A new directory for a dry run's files; remove it with remove_run_dir."""
    return Path(tempfile.mkdtemp(prefix="mytorch-dry-run-"))


def remove_run_dir(path):
    shutil.rmtree(path, ignore_errors=True)


class RunLock:
    """Exclusive use of a run directory by this process: RunLock(dir).acquire() ... release()."""

    def __init__(self, exp_dir):
        self.dir = Path(exp_dir)
        self.path = self.dir / LOCK_NAME
        self.fd = None

    def acquire(self):
        """Take the lock (the directory must exist), or raise UsageError if another process holds it."""
        try:
            import fcntl
        except ImportError:           # no flock on this system: no lock (one run at a time is then up to you)
            return self
        for _ in range(10):           # retried only when the file was replaced while we opened it
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                raise UsageError(f"{self.dir} is in use by another training process"
                                 f"{f' (pid {owner})' if owner else ''}: wait for it to end or stop it; "
                                 f"two processes must not train in one run directory") from None
            except OSError:           # a filesystem without flock (some network mounts): no lock there
                os.close(fd)
                return self
            if _same_file(fd, self.path):   # not removed by a releasing owner after our open
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise UsageError(f"{self.dir}: could not take {self.path} (it keeps being replaced)")

    def release(self):
        """Remove the lock file, then drop the lock (in that order, so no one locks a removed file)."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _same_file(fd, path):
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

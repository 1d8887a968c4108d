"""Processes that train one model together (data parallelism), after ChainerMN's communicators.

    comm = communicator.create()          # MPI under mpiexec -n N (mpi4py), else the one-process twin
    comm.rank, comm.size                  # this process's number, how many there are
    comm.broadcast(arrays)                # rank 0's values into every rank's arrays, in place
    comm.sum(values), comm.gather(obj)    # numbers summed over the ranks; every rank's object on rank 0
    comm.allreduce_mean(grads)            # every rank's gradients replaced by their mean, in place
    loss = comm.reduce_step(grads, n, loss)   # the same, weighted by each rank's n items; the mean loss

The gradients are packed into one preallocated flat float32 buffer and all-reduced in one call per
step, not one per parameter (ChainerMN's flat communicator): a call costs a latency, the bytes are
the same. CuPy arrays go through the host (correct everywhere; an NCCL path needs several GPUs).

SingleProcess has the same interface with size 1 and does nothing, so a training loop has no
`if distributed` branch. mpi4py is an extra (pip install -e '.[mpi]'); without it every command runs
as one process, and a command started by mpiexec says in one line what to install.

Shapes: P the total number of gradient entries, packed in order.
"""
import sys
import zlib

import numpy as np

from . import backend
from .launch import SIZE_VARIABLES, launched_size  # noqa: F401  (SIZE_VARIABLES: where tests find it)

INSTALL = "pip install -e '.[mpi]'   (mpi4py and MPICH wheels)"


def create():
    """The communicator of this process: MPI when mpiexec started several, else SingleProcess.
    Under mpiexec without mpi4py: a RuntimeError naming the pip install that fixes it."""
    if launched_size() <= 1:
        return SingleProcess()
    try:
        from mpi4py import MPI  # noqa: F401
    except ImportError:
        raise RuntimeError(f"started by mpiexec with {launched_size()} processes, but mpi4py is not "
                           f"installed: {INSTALL}") from None
    return MPICommunicator()


def rows_of(n, rank, size):
    """slice of rank's share of n rows, as np.array_split cuts them (the first n % size one longer)."""
    q, extra = divmod(n, size)
    lo = rank * q + min(rank, extra)
    return slice(lo, lo + q + (rank < extra))


def checksum(arrays):
    """One number that changes when any value of the arrays changes (CRC32 of their bytes)."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(backend.to_numpy(a)).view(np.uint8), crc)
    return crc


class SingleProcess:
    """The communicator of one process: rank 0 of 1; every collective leaves the arrays as they are."""
    rank, size = 0, 1

    def rows(self, n):
        """This rank's rows of n (all of them): a slice."""
        return rows_of(n, 0, 1)

    def broadcast(self, arrays):
        pass

    def allreduce_mean(self, grads):
        pass

    def reduce_step(self, grads, items, loss):
        return loss

    def share(self, obj):
        """Rank 0's Python object on every rank (here: obj)."""
        return obj

    def gather(self, obj):
        """Every rank's Python object, in rank order, on rank 0 (here: [obj])."""
        return [obj]

    def gather_rows(self, array):
        """Every rank's rows, concatenated in rank order, on rank 0 (here: the array, on the host)."""
        return backend.to_numpy(array)

    def sum(self, values):
        """values (k,) numbers -> their sum over the ranks (here: themselves), float64."""
        return np.asarray(values, dtype=np.float64)

    def agree(self, arrays, what):
        """Raise if the ranks hold different values of the arrays (one rank always agrees)."""

    def fail(self, err):
        """An uncaught error on this rank: one process simply lets it propagate."""
        raise err


class MPICommunicator:
    """MPI.COMM_WORLD through mpi4py, with one flat float32 buffer for the gradients."""

    def __init__(self):
        from mpi4py import MPI
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self._flat = None                                   # (P,) float32, allocated at the first call

    def rows(self, n):
        """This rank's rows of n, a slice: a batch's or the carried streams' share."""
        return rows_of(n, self.rank, self.size)

    def broadcast(self, arrays):
        """Rank 0's values into every rank's arrays (in place, any dtype)."""
        for a in arrays:
            host = np.ascontiguousarray(backend.to_numpy(a))
            self.comm.Bcast(host, root=0)
            a[...] = backend.get_array_module(a).asarray(host)

    def allreduce_mean(self, grads):
        """Each gradient replaced by its mean over the ranks (reduce_step with equal weights)."""
        self.reduce_step(grads, 1, 0.0)

    def reduce_step(self, grads, items, loss):
        """A data-parallel step's one collective. Rank r's gradients g_r (the mean over its n_r = items)
        become  sum_r n_r g_r / sum_r n_r,  the gradient of the whole batch's mean, and its loss the
        same mean of the ranks' losses, which is returned. Packed into one flat float32 buffer
        [n_r g_r ..., n_r, n_r loss_r], one in-place Allreduce (sum), unpacked.

        (float32: the counts stay exact to 2^24 items, a batch's.)"""
        sizes = [g.size for g in grads]
        total = sum(sizes) + 2
        if self._flat is None or self._flat.size != total:
            self._flat = np.empty(total, dtype=np.float32)
        flat, offset = self._flat, 0
        for g, n in zip(grads, sizes):
            np.multiply(backend.to_numpy(g).ravel(), items, out=flat[offset:offset + n])
            offset += n
        flat[-2:] = items, items * loss
        self.comm.Allreduce(self.MPI.IN_PLACE, flat, op=self.MPI.SUM)
        scale, offset = 1.0 / flat[-2], 0
        for g, n in zip(grads, sizes):                  # divided while unpacked: one pass
            xp = backend.get_array_module(g)
            xp.multiply(backend.to_device(flat[offset:offset + n].reshape(g.shape)), scale, out=g)
            offset += n
        return float(flat[-1] * scale)

    def share(self, obj):
        """Rank 0's Python object (a path, a decision) on every rank."""
        return self.comm.bcast(obj, root=0)

    def gather(self, obj):
        """Every rank's Python object (a list of translations), in rank order, on rank 0; None elsewhere."""
        return self.comm.gather(obj, root=0)

    def gather_rows(self, array):
        """Every rank's rows (axis 0), concatenated in rank order, on rank 0; None elsewhere."""
        parts = self.gather(backend.to_numpy(array))
        return None if parts is None else np.concatenate(parts)

    def sum(self, values):
        """values (k,) numbers -> their sum over the ranks, float64 (losses, counts)."""
        out = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out

    def agree(self, arrays, what):
        """Raise a RuntimeError naming the ranks whose arrays differ from rank 0's (by checksum)."""
        sums = self.comm.allgather(checksum(arrays))
        differ = [r for r, c in enumerate(sums) if c != sums[0]]
        if differ:
            raise RuntimeError(f"ranks {differ} hold other {what} than rank 0 (checksums {sums})")

    def fail(self, err):
        """An uncaught error on this rank ends the whole job at once, the rank and the error named in
        one line (ChainerMN's global_except_hook): no rank is left waiting in a collective."""
        import traceback
        traceback.print_exception(err, file=sys.stderr)
        print(f"error: rank {self.rank} of {self.size}: {type(err).__name__}: {err}; ending every rank",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        self.comm.Abort(1)

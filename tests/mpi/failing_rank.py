"""Run by tests/test_distributed_train.py under mpiexec -n 2: train.py whose rank 1 raises at its
second training step, while rank 0 goes on into the all-reduce."""
import sys

import app.step
import train
from mytorch import communicator

rank = communicator.create().rank
real, calls = app.step._step, []


def failing(*args):
    calls.append(1)
    if rank == 1 and len(calls) == 2:
        raise RuntimeError("a test's failure at step 2")
    return real(*args)


app.step._step = failing
sys.exit(train.main(sys.argv[1:]))

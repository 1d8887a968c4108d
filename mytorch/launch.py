"""How many processes mpiexec started, read before NumPy loads (mytorch/__init__ sets each one's
threads from it; mytorch.communicator chooses MPI or one process by it). Imports nothing but os."""
import os
import sys

# set by the launchers mpiexec uses (MPICH's Hydra: PMI_SIZE; Open MPI: OMPI_COMM_WORLD_SIZE)
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MYTORCH_THREADS")


def launched_size():
    """How many processes the launcher started (1 when not started by mpiexec)."""
    for name in SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def share_cores():
    """Under mpiexec -n N each process takes cores / N threads, BLAS included (OpenBLAS reads its
    count when NumPy loads it), unless the user set them."""
    ranks = launched_size()
    if ranks > 1:
        share = str(max(1, (os.cpu_count() or 1) // ranks))
        if "numpy" in sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") is None:
            # too late for OpenBLAS: every rank runs a thread per core, and the ranks' threads fight
            # (a rank's whole-split evaluation measured 4x slower)
            print(f"mytorch: warning: numpy was imported before mytorch under mpiexec -n {ranks}: "
                  f"each process's BLAS uses every core; import mytorch first, or set "
                  f"OPENBLAS_NUM_THREADS={share}",
                  file=sys.stderr)
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, share)

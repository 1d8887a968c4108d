"""mytorch.communicator: the one-process twin, the choice between it and MPI, and (under
`mpiexec -n 2`, tests/mpi/) every collective against sums computed by hand.

CI installs the extra (mpi4py, MPICH): there the MPI tests must run; elsewhere they skip without it.
Each mpiexec has a time limit, so a hang fails instead of stalling.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mytorch import communicator

HERE = Path(__file__).parent


def _have_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpiexec") is not None


needs_mpi = pytest.mark.skipif(not _have_mpi() and os.environ.get("CI") != "true",
                               reason=f"mpi4py and mpiexec: {communicator.INSTALL}")


def mpiexec(n, script, *args, timeout=120):
    """Run a Python script under mpiexec -n n from the repository root -> CompletedProcess."""
    return subprocess.run(["mpiexec", "-n", str(n), sys.executable, str(script), *map(str, args)],
                          cwd=HERE.parent, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent), "OPENBLAS_NUM_THREADS": "1"})


def test_one_process_is_rank_0_of_1_and_changes_nothing(monkeypatch):
    for name in communicator.SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    comm = communicator.create()
    assert isinstance(comm, communicator.SingleProcess) and (comm.rank, comm.size) == (0, 1)
    a = np.arange(6.0).reshape(2, 3)
    before = a.copy()
    comm.broadcast([a])
    comm.allreduce_mean([a])
    comm.agree([a], "weights")
    assert np.array_equal(a, before) and comm.sum([2.5, 1]).tolist() == [2.5, 1.0]
    assert comm.gather(["a text"]) == [["a text"]] and comm.rows(5) == slice(0, 5)


def test_mpiexec_without_mpi4py_names_the_install(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)         # import mpi4py now fails
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[mpi\]'"):
        communicator.create()


def test_checksum_sees_any_change():
    a = [np.zeros(4, np.float32), np.ones((2, 2))]
    c = communicator.checksum(a)
    a[1][1, 0] = np.nextafter(1.0, 2.0)
    assert communicator.checksum(a) != c


@needs_mpi
def test_collectives_on_two_ranks(tmp_path):
    out = mpiexec(2, HERE / "mpi" / "collectives.py", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    for r in (0, 1):
        assert (tmp_path / f"rank{r}").read_text() == "ok\nok again\n"


def test_the_ring_allreduce_model_arithmetic():
    from bench.allreduce_model import efficiency, ring_seconds
    # 2 ranks: each sends half of 100 MB twice: 100 MB at 1 GB/s = 0.1 s, plus 2 latencies
    assert ring_seconds(100e6, 2, 1e9, 1e-3) == pytest.approx(0.1 + 2e-3)
    # N ranks: 2 (N - 1) / N of the bytes, 2 (N - 1) latencies
    assert ring_seconds(8e6, 8, 1e9, 0.0) == pytest.approx(2 * 7 / 8 * 8e-3)
    assert ring_seconds(0, 64, 1e9, 1e-5) == pytest.approx(126e-5)
    assert ring_seconds(1e9, 1, 1.0, 1.0) == 0.0
    # a step of 0.3 s with a 0.1 s all-reduce: 75 %; half the bytes in float16: closer to 1
    assert efficiency(0.3, 100e6, 2, 1e9, 0.0) == pytest.approx(0.75)
    assert efficiency(0.3, 50e6, 2, 1e9, 0.0) == pytest.approx(0.3 / 0.35)


def test_rows_of_cut_as_array_split():
    for n in (0, 1, 5, 8, 13):
        for size in (1, 2, 3, 4):
            want = np.array_split(np.arange(n), size)
            assert [np.arange(n)[communicator.rows_of(n, r, size)].tolist() for r in range(size)] == \
                [w.tolist() for w in want]


def test_numpy_imported_before_mytorch_under_mpiexec_is_one_warning():
    """Each rank's share of the cores is set before NumPy loads OpenBLAS; a program that loaded
    NumPy first is told (its ranks' BLAS threads would fight over the cores)."""
    unset = ("OPENBLAS_NUM_THREADS", *communicator.SIZE_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(PMI_SIZE="2", PYTHONPATH=str(HERE.parent))
    for code, warned in (("import numpy, mytorch", True), ("import mytorch, numpy", False)):
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert ("numpy was imported before mytorch under mpiexec -n 2" in out.stderr) == warned, code

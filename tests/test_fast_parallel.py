"""mytorch.fast.parallel: row blocks cover every row once; BLAS thread limits are scoped."""
import numpy as np
import pytest

from mytorch.fast import parallel


@pytest.mark.parametrize("block_elements", [None, 1000, 1 << 18])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("shape", [(7, 3), (1000, 300), (3, 100000)])
def test_every_row_is_visited_once(monkeypatch, threads, shape, block_elements):
    monkeypatch.setenv("MYTORCH_THREADS", threads)
    counts = np.zeros(shape)
    out = np.zeros(shape[0])
    sizes = []

    def visit(block, out_block):
        sizes.append(block.shape[0])
        block += 1
        out_block[...] = block.sum(axis=1)
    parallel.parallel_rows(visit, counts, out, block_elements=block_elements)
    np.testing.assert_array_equal(counts, 1)
    np.testing.assert_array_equal(out, shape[1])
    assert sum(sizes) == shape[0]
    if block_elements is not None:  # whole rows, at most block_elements at a time (at least one row)
        assert max(sizes) <= max(1, block_elements // shape[1])


@pytest.mark.parametrize("block_elements", [None, 3000])
def test_blocks_of_several_arrays_are_the_same_rows(monkeypatch, block_elements):
    """fn gets matching row ranges of every array (a row-dependent b shows any misalignment)."""
    monkeypatch.setenv("MYTORCH_THREADS", "3")
    n, d = 1025, 300
    a = np.zeros((n, d))
    b = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, d))

    def fn(a, b):
        a += 1.0
        a += b
    parallel.parallel_rows(fn, a, b, block_elements=block_elements)
    np.testing.assert_array_equal(a, 1.0 + b)
    small = np.zeros((4, 3))
    parallel.parallel_rows(lambda x: x.__iadd__(1.0), small, block_elements=block_elements)
    np.testing.assert_array_equal(small, 1.0)


def test_blocks_split_a_big_array(monkeypatch):
    """(1000, 300) in blocks of 3,000 elements: 10 rows a call, on 2 threads 2 x 50 calls."""
    monkeypatch.setenv("MYTORCH_THREADS", "2")
    a = np.zeros((1000, 300))
    sizes = []
    parallel.parallel_rows(lambda b: sizes.append(b.shape[0]), a, block_elements=3000)
    assert sizes == [10] * 100


def test_blas_threads_is_scoped():
    controllers = parallel._blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl found no BLAS library")
    before = [c.get_num_threads() for c in controllers]
    with parallel.blas_threads(1):
        assert all(c.get_num_threads() == 1 for c in controllers)
    assert [c.get_num_threads() for c in controllers] == before


def _spin_after(code, env=None):
    """openblas_thread_timeout() in a fresh interpreter after running `code` (None: no OpenBLAS)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    env = {**{k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}, **(env or {})}
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, mytorch.fast.parallel as p; "
                          "print(json.dumps(p.openblas_thread_timeout()))"],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("entry", ["import train", "import bench.train_step", "import app.predict",
                                   "import mytorch"])
def test_entry_points_shorten_openblas_spin(entry):
    """The programs that train import mytorch before numpy, so OpenBLAS's idle spin is 2^16 cycles."""
    if parallel.openblas_thread_timeout() is None:
        pytest.skip("NumPy's BLAS here is not OpenBLAS")
    assert _spin_after(entry) == 16
    assert _spin_after("import numpy\n" + entry) == 28          # too late once numpy loaded OpenBLAS
    assert _spin_after(entry, {"OPENBLAS_THREAD_TIMEOUT": "20"}) == 20   # the user's setting wins


def test_blas_threads_for_small_products_only():
    controllers = parallel._blas_controllers()
    if not controllers or max(c.get_num_threads() for c in controllers) < 2:
        pytest.skip("no multi-threaded BLAS here")
    before = [c.get_num_threads() for c in controllers]
    with parallel.blas_threads_for(32 * 128 * 512):             # a reference-model LSTM step
        assert all(c.get_num_threads() == 1 for c in controllers)
    with parallel.blas_threads_for(32 * 384 * 1536):            # the default recipe's first layer
        assert [c.get_num_threads() for c in controllers] == before
    assert [c.get_num_threads() for c in controllers] == before

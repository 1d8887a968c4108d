"""mytorch.parallel: row blocks cover every row once; BLAS thread limits are scoped."""
import numpy as np
import pytest

from mytorch import parallel


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("shape", [(7, 3), (1000, 300), (3, 100000)])
def test_every_row_is_visited_once(monkeypatch, threads, shape):
    monkeypatch.setenv("MYTORCH_THREADS", threads)
    counts = np.zeros(shape)
    out = np.zeros(shape[0])

    def visit(block, out_block):
        block += 1
        out_block[...] = block.sum(axis=1)
    parallel.parallel_rows(visit, counts, out)
    np.testing.assert_array_equal(counts, 1)
    np.testing.assert_array_equal(out, shape[1])


def test_blas_threads_is_scoped():
    controllers = parallel._blas_controllers()
    if not controllers:
        pytest.skip("threadpoolctl found no BLAS library")
    before = [c.get_num_threads() for c in controllers]
    with parallel.blas_threads(1):
        assert all(c.get_num_threads() == 1 for c in controllers)
    assert [c.get_num_threads() for c in controllers] == before

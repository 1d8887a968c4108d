"""Run by tests/test_communicator.py under `mpiexec -n 2 ... collectives.py DIR`: each collective
against the same sum computed here from every rank's known values. Each rank writes DIR/rank<r>
("ok", then "ok again") when its checks hold (files, not stdout: the ranks' lines interleave)."""
import sys
from pathlib import Path

import numpy as np

from mytorch import communicator

comm = communicator.create()
assert comm.size == 2, comm.size
r = comm.rank

# broadcast: rank 0's values everywhere, any dtype and shape
arrays = [np.full((3, 2), r, dtype=np.float32), np.arange(5) * (r + 1), np.float64(r) * np.ones(1)]
comm.broadcast(arrays)
assert np.array_equal(arrays[0], np.zeros((3, 2))) and np.array_equal(arrays[1], np.arange(5))

# allreduce_mean: the mean of both ranks' gradients, in place, in one flat buffer
rng = [np.random.default_rng(seed) for seed in (0, 1)]
mine = [g.normal(size=s).astype(np.float32) for g in rng[r:r + 1] for s in ((4, 3), (7,), (2, 2, 2))]
theirs = [g.normal(size=s).astype(np.float32) for g in rng[1 - r:2 - r] for s in ((4, 3), (7,), (2, 2, 2))]
grads = [m.copy() for m in mine]
comm.allreduce_mean(grads)
for g, a, b in zip(grads, mine, theirs):
    np.testing.assert_allclose(g, (a + b) / 2, rtol=1e-6)

assert comm.sum([1.0, r]).tolist() == [2.0, 1.0]

comm.agree([np.ones(3)], "weights")
try:
    comm.agree([np.ones(3) * r], "weights")
    raise AssertionError("ranks with different weights were not detected")
except RuntimeError as err:
    assert "ranks [1] hold other weights than rank 0" in str(err), err
report = Path(sys.argv[1]) / f"rank{r}"
report.write_text("ok\n")

# reduce_step: gradients and loss weighted by each rank's items
items = [3, 1][r]
grads = [np.full(4, float(r + 1), np.float32)]
loss = comm.reduce_step(grads, items, [2.0, 6.0][r])
np.testing.assert_allclose(grads[0], (3 * 1 + 1 * 2) / 4)
assert abs(loss - (3 * 2.0 + 1 * 6.0) / 4) < 1e-6
assert comm.share({"dir": f"run{r}"}) == {"dir": "run0"}
rows = comm.gather_rows(np.full((2, 3), r))
assert (rows is None) if r else np.array_equal(rows[:, 0], [0, 0, 1, 1])
texts = comm.gather([f"text {r}"] * (r + 1))
assert (texts is None) if r else texts == [["text 0"], ["text 1", "text 1"]]
report.write_text("ok\nok again\n")

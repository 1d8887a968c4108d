"""Fast twin of mytorch.nn.LinearCrossEntropyLoss: its one pass over the logits on every core.

exp_rows (bias add, row max, exp, row sum) runs over the (N, V) logits, the biggest arrays
of a training step (N = B*T rows, V = 33,280 words). Rows are independent, so the pass runs
in row blocks: each thread takes a share of the rows and works through it in blocks of
about CACHE_BLOCK elements, so the four ufuncs of a block read it from cache, not memory.
The numbers are the plain pass's (tests/test_fast_loss.py).
"""
from .. import backend, nn
from .parallel import CACHE_BLOCK, parallel_rows


class LinearCrossEntropyLoss(nn.LinearCrossEntropyLoss):
    def exp_rows(self, Z):
        """As nn.LinearCrossEntropyLoss.exp_rows: Z (N, C) -> E in place, m (N, 1), s (N,)."""
        xp = backend.get_array_module(Z)
        b = self.linear.params["b"]
        m = xp.empty((Z.shape[0], 1), dtype=Z.dtype)
        s = xp.empty(Z.shape[0], dtype=Z.dtype)

        def block(Z, m, s):                             # a few rows at a time, all in cache
            Z += b
            Z.max(axis=1, keepdims=True, out=m)
            Z -= m
            xp.exp(Z, out=Z)
            Z.sum(axis=1, out=s)
        parallel_rows(block, Z, m, s, block_elements=CACHE_BLOCK)
        return m, s

"""Fast twin of mytorch.nn.LSTMCell: each step's pointwise math in one GPU kernel.

On a GPU every small array operation costs a kernel launch (5-10 us from Python) whatever
its size, and the plain cell_update / cell_update_backward are a dozen of them per step,
2 layers x T steps x forward and backward. On CuPy arrays this twin runs each as one fused
kernel (kernels.lstm_step_forward / lstm_step_backward); on NumPy arrays it is the plain cell.
"""
from .. import backend, nn
from . import kernels


class LSTMCell(nn.LSTMCell):
    def cell_update(self, gates, c):
        """As nn.LSTMCell.cell_update: gates (B, 4H), c (B, H) -> ifgo, c', tanh(c'), h'."""
        if not backend.is_cupy(gates):
            return super().cell_update(gates, c)
        return kernels.lstm_step_forward(gates, c)

    def cell_update_backward(self, dh, dc, c, ifgo, tanh_c):
        """As nn.LSTMCell.cell_update_backward -> dG (B, 4H), dc_prev (B, H)."""
        if not backend.is_cupy(ifgo):
            return super().cell_update_backward(dh, dc, c, ifgo, tanh_c)
        dc = backend.get_array_module(dh).zeros_like(dh) if dc is None else dc
        return kernels.lstm_step_backward(dh, dc, c, ifgo, tanh_c)

"""Fast twins of mytorch.nn.LSTMCell and mytorch.nn.LSTM.

- Each step's pointwise math in one GPU kernel. On a GPU every small array operation costs a
  kernel launch (5-10 us from Python) whatever its size, and the plain cell_update /
  cell_update_backward are a dozen of them per step, layers x T steps x forward and backward.
  On CuPy arrays both twins run each as one fused kernel (kernels.lstm_step_forward /
  lstm_step_backward); on NumPy arrays they take the plain code.
- LSTM's two time loops (recurrence, recurrence_backward) run under
  mytorch.fast.recurrence_threads: one BLAS thread while the per-step (B, H) x (H, 4H)
  products are small. The big input-side and weight-gradient products outside the loops keep
  every thread.
"""
from .. import backend, nn
from . import kernels


class _FusedGates:
    """cell_update / cell_update_backward as one CuPy kernel each; NumPy arrays take the plain code."""

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


class LSTMCell(_FusedGates, nn.LSTMCell):
    """nn.LSTMCell with the fused step kernels on CuPy arrays."""


def _loop_threads(B, H):
    """recurrence_threads for a loop of (B, H) x (H, 4H) products."""
    from . import recurrence_threads  # here, not at the top: mytorch.fast imports this module
    return recurrence_threads(B * H * 4 * H)


class LSTM(_FusedGates, nn.LSTM):
    """nn.LSTM with the fused step kernels on CuPy arrays and its time loops on one BLAS thread."""

    def recurrence(self, XG, h, c, steps=None):
        """As nn.LSTM.recurrence: XG (B, T, 4H), h, c (B, H) -> Hs (B, T, H), h_T, c_T."""
        with _loop_threads(XG.shape[0], self.hidden_size):
            return super().recurrence(XG, h, c, steps)

    def recurrence_backward(self, dHs, dh, dc, steps):
        """As nn.LSTM.recurrence_backward: dHs (B, T, H), dh, dc (B, H) -> dG (B, T, 4H), dh0, dc0."""
        with _loop_threads(dHs.shape[0], self.hidden_size):
            return super().recurrence_backward(dHs, dh, dc, steps)

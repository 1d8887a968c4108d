"""Fused elementwise GPU kernels (CuPy) for the hot loops: one launch instead of a dozen.

On a GPU a small array op costs a kernel launch (~5-10 us from Python) whatever its size, and
an LSTM step on a (32, 128) batch is a dozen of them, 2 layers x T steps x forward and
backward. These kernels do each step's pointwise math, and each Adam update, in a single
launch. They compute exactly what the plain code computes (mytorch.nn.LSTMCell.cell_update and
cell_update_backward, the NumPy lines of mytorch.optim.Adam; tests/test_fast_kernels.py
compares the two); the NumPy backend never uses them. CuPy comes from mytorch.backend, the one
module that imports it.

Shapes: B batch, H hidden size; gates and ifgo are (B, 4H) laid out [i | f | g | o].
"""
from functools import lru_cache

from .. import backend

_SIGMOID = "(1 + tanh(x * 0.5)) * 0.5"   # as mytorch.nn.lstm.sigmoid: no overflow


@lru_cache(maxsize=None)
def _lstm_forward_kernel():
    cp = backend.cupy_module()
    sig = _SIGMOID
    return cp.ElementwiseKernel(
        "raw T gates, T c, int32 H", "raw T ifgo, T c_new, T tanh_c, T h_new",
        f"""
        const int b = i / H, j = i % H, row = b * 4 * H;
        T x;
        x = gates[row + j];         const T gi = {sig};
        x = gates[row + H + j];     const T gf = {sig};
        const T gg = tanh(gates[row + 2 * H + j]);
        x = gates[row + 3 * H + j]; const T go = {sig};
        ifgo[row + j] = gi; ifgo[row + H + j] = gf; ifgo[row + 2 * H + j] = gg; ifgo[row + 3 * H + j] = go;
        c_new = gf * c + gi * gg;
        tanh_c = tanh(c_new);
        h_new = go * tanh_c;
        """, "mytorch_lstm_forward")


def lstm_step_forward(gates, c):
    """gates (B, 4H) pre-activations, c (B, H) -> ifgo (B, 4H), c' (B, H), tanh(c'), h' (B, H)."""
    cp = backend.cupy_module()
    B, H = c.shape
    ifgo = cp.empty_like(gates)
    c_new, tanh_c, h_new = cp.empty_like(c), cp.empty_like(c), cp.empty_like(c)
    _lstm_forward_kernel()(gates, c, H, ifgo, c_new, tanh_c, h_new)
    return ifgo, c_new, tanh_c, h_new


@lru_cache(maxsize=None)
def _lstm_backward_kernel():
    cp = backend.cupy_module()
    return cp.ElementwiseKernel(
        "T dh, T dc, T c, raw T ifgo, T tanh_c, int32 H", "raw T dG, T dc_prev",
        """
        const int b = i / H, j = i % H, row = b * 4 * H;
        const T gi = ifgo[row + j], gf = ifgo[row + H + j], gg = ifgo[row + 2 * H + j],
                go = ifgo[row + 3 * H + j];
        const T dct = dc + dh * go * (1 - tanh_c * tanh_c);
        dG[row + j] = dct * gg * gi * (1 - gi);
        dG[row + H + j] = dct * c * gf * (1 - gf);
        dG[row + 2 * H + j] = dct * gi * (1 - gg * gg);
        dG[row + 3 * H + j] = dh * tanh_c * go * (1 - go);
        dc_prev = dct * gf;
        """, "mytorch_lstm_backward")


def lstm_step_backward(dh, dc, c, ifgo, tanh_c):
    """dh, dc, c, tanh_c (B, H), ifgo (B, 4H) -> dG (B, 4H), dc_prev (B, H) (mytorch.nn.lstm's math)."""
    cp = backend.cupy_module()
    dG, dc_prev = cp.empty_like(ifgo), cp.empty_like(dh)
    _lstm_backward_kernel()(dh, dc, c, ifgo, tanh_c, dh.shape[1], dG, dc_prev)
    return dG, dc_prev


@lru_cache(maxsize=None)
def _adam_kernel():
    cp = backend.cupy_module()
    return cp.ElementwiseKernel(
        "T g, T b1, T b2, T eps_hat, T step, T wd, T decay", "T p, T m, T v",
        """
        const T gw = g + wd * p;                 // L2 term (wd = 0 for AdamW or no decay)
        p = p * decay;                           // AdamW's decoupled decay (decay = 1 otherwise)
        m = b1 * m + (1 - b1) * gw;
        v = b2 * v + (1 - b2) * gw * gw;
        p = p - step * m / (sqrt(v) + eps_hat);
        """, "mytorch_adam")


def adam_update(p, g, m, v, b1, b2, eps_hat, step, wd, decay):
    """In place: p, m, v of one parameter (any shape), mytorch.optim.Adam's update in one launch.

    Called by mytorch.fast.optim.Adam, which folds the bias corrections into eps_hat and step.
    """
    _adam_kernel()(g, b1, b2, eps_hat, step, wd, decay, p, m, v)

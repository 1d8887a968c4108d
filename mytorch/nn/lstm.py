"""LSTMCell with PyTorch's layout and gate order (i, f, g, o).

Shapes: B batch, I input size, H hidden size, G = 4H stacked gate rows.

    W_ih (4H, I), W_hh (4H, H), b_ih (4H,), b_hh (4H,)   # same as torch.nn.LSTMCell

    gates = x W_ih^T + b_ih + b_hh + h W_hh^T            # (B, 4H) = [a_i | a_f | a_g | a_o]
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
    c' = f * c + i * g
    h' = o * tanh(c')

A step is split in two so a sequence can do the input side for all T steps in one matrix
product and keep only the recurrent product inside the time loop:

    xg = input_gates(x)        x W_ih^T + b_ih + b_hh       (no recurrence: any leading shape)
    h', c' = step(xg, (h, c))  xg + h W_hh^T, then the gates

``forward(x, (h, c))`` is the two together. Inside ``step``, ``cell_update`` is the pointwise
math after the product (the gates, c', h') and ``cell_update_backward`` its gradient; the fast
tier's twin (mytorch.fast.lstm) replaces just these two with one GPU kernel each. Every call
pushes its cache on a stack and every backward pops one, so a cell stepped T times can be
backpropagated through those T steps in reverse, then reused for the next sequence with nothing
left over.
"""
import numpy as np

from .. import backend
from .module import Module, check_last_dim


def sigmoid(x, xp=np):
    """1 / (1 + e^-x) computed as (1 + tanh(x / 2)) / 2: no overflow for any x."""
    out = xp.tanh(x * 0.5)
    out += 1.0
    out *= 0.5
    return out


class LSTMCell(Module):
    def __init__(self, input_size, hidden_size, dtype=np.float32, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.input_size, self.hidden_size = input_size, hidden_size
        k = 1.0 / np.sqrt(hidden_size)  # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H))
        H4 = 4 * hidden_size
        for name, shape in (("W_ih", (H4, input_size)), ("W_hh", (H4, hidden_size)),
                            ("b_ih", (H4,)), ("b_hh", (H4,))):
            self.add_param(name, backend.to_device(rng.uniform(-k, k, size=shape).astype(dtype)))
        self.clear_cache()

    def clear_cache(self):
        """Drop saved activations (e.g. after a forward that will not be backpropagated)."""
        self._inputs = []   # x of each input_gates call
        self._steps = []    # (h, c, ifgo, tanh_c) of each step

    # -- input side: all time steps at once ---------------------------------
    def input_gates(self, x, cache=True):
        """xg = x W_ih^T + b_ih + b_hh.  x (..., I) -> (..., 4H)."""
        check_last_dim(x, self.input_size, "LSTMCell", "input x")
        if cache:
            self._inputs.append(x)
        xg = (x.reshape(-1, self.input_size) @ self.params["W_ih"].T).reshape(*x.shape[:-1], -1)
        xg += self.params["b_ih"]
        xg += self.params["b_hh"]
        return xg

    def input_gates_backward(self, dG):
        """Backward of input_gates.  dG (..., 4H) -> dx (..., I).

        dW_ih += dG^T x;  db_ih += sum dG;  db_hh += sum dG;  dx = dG W_ih
        (the recurrent bias b_hh enters the gates exactly like b_ih, so it gets the same gradient)
        """
        if not self._inputs:
            raise RuntimeError("LSTMCell.input_gates_backward called more times than input_gates")
        x = self._inputs.pop()
        dG2 = dG.reshape(-1, dG.shape[-1])
        backend.matmul_accumulate(self.grads["W_ih"], dG2.T, x.reshape(-1, self.input_size))
        db = dG2.sum(axis=0)
        self.grads["b_ih"] += db
        self.grads["b_hh"] += db
        return (dG2 @ self.params["W_ih"]).reshape(*dG.shape[:-1], self.input_size)

    # -- recurrent side: one time step -------------------------------------
    def step(self, xg, state=None, cache=True):
        """(h, c) -> (h', c') given precomputed input gates xg (B, 4H)."""
        xp = backend.get_array_module(xg)
        h, c = self._state(xp, xg.shape[0], xg.dtype, state)
        gates = h @ self.params["W_hh"].T               # (B, 4H)
        gates += xg
        ifgo, c_new, tanh_c, h_new = self.cell_update(gates, c)
        if cache:
            self._steps.append((h, c, ifgo, tanh_c))
        return h_new, c_new

    def step_backward(self, dh, dc=None, weight_grad=True):
        """Backward of one step.  dh, dc (B, H) -> dG (B, 4H), dh_prev, dc_prev.

        dc' total = dc + dh * o * (1 - tanh(c')^2)
        do = dh * tanh(c')      di = dc' * g      dg = dc' * i      df = dc' * c
        da_{i,f,o} = d{i,f,o} * s (1 - s)          da_g = dg * (1 - g^2)
        dW_hh += dG^T h;   dh_prev = dG W_hh;   dc_prev = dc' * f

        weight_grad=False leaves dW_hh to the caller, who can then add all steps'
        dG^T h in one product with ``recurrent_weights_backward`` (fewer, bigger GEMMs).
        """
        if not self._steps:
            raise RuntimeError("LSTMCell.step_backward called more times than step")
        h = self._steps[-1][0]              # check before popping: a rejected call consumes nothing
        for name, d in (("dh", dh), ("dc", dc)):
            if d is not None and d.shape != h.shape:
                raise ValueError(f"LSTMCell.backward: expected {name} of shape {tuple(h.shape)}, "
                                 f"got {tuple(d.shape)}")
        h, c, ifgo, tanh_c = self._steps.pop()
        dG, dc_prev = self.cell_update_backward(dh, dc, c, ifgo, tanh_c)
        if weight_grad:
            backend.matmul_accumulate(self.grads["W_hh"], dG.T, h)
        dh_prev = dG @ self.params["W_hh"]
        return dG, dh_prev, dc_prev

    def cell_update(self, gates, c):
        """gates (B, 4H) pre-activations, c (B, H) -> ifgo (B, 4H), c' (B, H), tanh(c'), h' (B, H)."""
        xp, H = backend.get_array_module(gates), self.hidden_size
        ifgo = sigmoid(gates, xp)                       # i, f, o use sigmoid ...
        ifgo[:, 2 * H:3 * H] = xp.tanh(gates[:, 2 * H:3 * H])  # ... g uses tanh
        i, f, g, o = (ifgo[:, k * H:(k + 1) * H] for k in range(4))
        c_new = f * c + i * g                           # (B, H)
        tanh_c = xp.tanh(c_new)
        return ifgo, c_new, tanh_c, o * tanh_c

    def cell_update_backward(self, dh, dc, c, ifgo, tanh_c):
        """Backward of cell_update: dh, dc (dc may be None: zero) -> dG (B, 4H), dc_prev (B, H).

        The equations are step_backward's (the lines down to dc_prev).
        """
        H = self.hidden_size
        i, f, g, o = (ifgo[:, k * H:(k + 1) * H] for k in range(4))
        dc_total = dh * o * (1.0 - tanh_c * tanh_c)
        if dc is not None:
            dc_total += dc
        dG = ifgo * (1.0 - ifgo)                        # sigmoid' for i, f, o
        dG[:, 2 * H:3 * H] = 1.0 - g * g                # tanh' for g
        dG[:, 0:H] *= dc_total * g
        dG[:, H:2 * H] *= dc_total * c
        dG[:, 2 * H:3 * H] *= dc_total * i
        dG[:, 3 * H:] *= dh * tanh_c
        return dG, dc_total * f

    def recurrent_weights_backward(self, dG, H_prev):
        """dW_hh += sum over steps of dG_t^T h_{t-1}.  dG (..., 4H), H_prev (..., H), same leading shape."""
        backend.matmul_accumulate(self.grads["W_hh"], dG.reshape(-1, 4 * self.hidden_size).T,
                                  H_prev.reshape(-1, self.hidden_size))

    # -- the textbook interface: one step, input included --------------------
    def forward(self, x, state=None, cache=True):
        """x (B, I), state (h, c) each (B, H) or None for zeros -> (h', c')."""
        if x.ndim != 2:
            raise ValueError(f"LSTMCell: expected x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        if state is not None:  # validate before input_gates caches x, so a bad state leaves nothing behind
            self._state(backend.get_array_module(x), x.shape[0], x.dtype, state)
        return self.step(self.input_gates(x, cache), state, cache)

    def backward(self, dh, dc=None):
        """dh, dc (B, H) -> dx (B, I), dh_prev (B, H), dc_prev (B, H)."""
        dG, dh_prev, dc_prev = self.step_backward(dh, dc)
        return self.input_gates_backward(dG), dh_prev, dc_prev

    def _state(self, xp, B, dtype, state):
        if state is None:
            z = xp.zeros((B, self.hidden_size), dtype=dtype)
            return z, z
        h, c = state
        for name, a in (("h", h), ("c", c)):
            if a.shape != (B, self.hidden_size):
                raise ValueError(f"LSTMCell: expected {name} of shape {(B, self.hidden_size)}, "
                                 f"got {tuple(a.shape)}")
        return h, c

"""LSTM layers with PyTorch's layout and gate order (i, f, g, o): one step, and a whole sequence.

Shapes: B batch, T time, I input size, H hidden size, 4H stacked gate rows [i | f | g | o].

    W_ih (4H, I), W_hh (4H, H), b_ih (4H,), b_hh (4H,)   # same as torch.nn.LSTM / LSTMCell

    gates = x W_ih^T + b_ih + b_hh + h W_hh^T            # (B, 4H) = [a_i | a_f | a_g | a_o]
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
    c' = f * c + i * g
    h' = o * tanh(c')

- ``LSTMCell`` is the textbook one step: ``forward(x, (h, c)) -> (h', c')`` and
  ``backward(dh, dc) -> (dx, dh_prev, dc_prev)``. Each cached forward pushes on a stack and each
  backward pops one, so the caller can step it T times and run the BPTT loop itself, in reverse.
- ``LSTM`` runs one layer over a whole sequence, ``forward(X (B, T, I)) -> Hs (B, T, H)``, with
  one cache. The input side x_t W_ih^T of all T steps is one matrix product before the time loop
  (it does not depend on h), so the loop does only the recurrent product h W_hh^T and the gates;
  backward runs the loop in reverse, then does every weight gradient in one product after it.

Both share ``_LSTMWeights``: the parameters, the input-side product and ``cell_update`` (the
pointwise math after the products) with its backward. The fast tier's twins
(mytorch.fast.lstm) replace just those two with one GPU kernel each.
"""
import numpy as np

from .. import backend
from .module import Module

# Backward of one step, given dh = dL/dh' and dc = dL/dc' from above (the equations of
# cell_update_backward, then of the two products):
#
#     dc' total = dc + dh * o * (1 - tanh(c')^2)          c' reaches h' through tanh
#     do = dh * tanh(c')    di = dc' * g    dg = dc' * i    df = dc' * c    dc_prev = dc' * f
#     da_{i,f,o} = d{i,f,o} * s * (1 - s)   (s the gate's sigmoid)    da_g = dg * (1 - g^2)
#     dG = [da_i | da_f | da_g | da_o]                    # (B, 4H)
#     dW_ih += dG^T x     dW_hh += dG^T h     db_ih += sum_rows dG     db_hh += sum_rows dG
#     dx = dG W_ih        dh_prev = dG W_hh
#
# (b_hh enters the gates exactly like b_ih, so both get the same gradient.)


def sigmoid(x, xp=np):
    """1 / (1 + e^-x) computed as (1 + tanh(x / 2)) / 2: no overflow for any x."""
    out = xp.tanh(x * 0.5)
    out += 1.0
    out *= 0.5
    return out


class _LSTMWeights(Module):
    """What LSTMCell and LSTM share: the parameters, the input-side product, the gate math."""

    def __init__(self, input_size, hidden_size, dtype=np.float32, rng=None):
        super().__init__()
        rng = rng if rng is not None else np.random.default_rng()
        self.input_size, self.hidden_size = input_size, hidden_size
        k = 1.0 / np.sqrt(hidden_size)  # PyTorch's init: U(-1/sqrt(H), 1/sqrt(H)), drawn in this order
        H4 = 4 * hidden_size
        for name, shape in (("W_ih", (H4, input_size)), ("W_hh", (H4, hidden_size)),
                            ("b_ih", (H4,)), ("b_hh", (H4,))):
            self.add_param(name, backend.to_device(rng.uniform(-k, k, size=shape).astype(dtype)))

    # -- input side: no recurrence, so any leading shape (all T steps at once) --
    def input_gates(self, X):
        """X (..., I) -> X W_ih^T + b_ih + b_hh, (..., 4H). Stores nothing."""
        XG = (X.reshape(-1, self.input_size) @ self.params["W_ih"].T).reshape(*X.shape[:-1], -1)
        XG += self.params["b_ih"]
        XG += self.params["b_hh"]
        return XG

    def input_gates_backward(self, dG, X):
        """dG (..., 4H), the X (..., I) of the forward -> dX (..., I); adds dW_ih, db_ih, db_hh.

        dW_ih += dG^T X;  db_ih += sum_rows dG;  db_hh += sum_rows dG;  dX = dG W_ih
        """
        dG2 = dG.reshape(-1, 4 * self.hidden_size)      # (N, 4H), N = all leading axes
        backend.matmul_accumulate(self.grads["W_ih"], dG2.T, X.reshape(-1, self.input_size))
        db = dG2.sum(axis=0)
        self.grads["b_ih"] += db
        self.grads["b_hh"] += db
        return (dG2 @ self.params["W_ih"]).reshape(*X.shape)

    # -- the pointwise math of one step, after the products -----------------
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
        """Backward of cell_update: dh, dc (B, H) (dc may be None: zero) -> dG (B, 4H), dc_prev (B, H).

        The equations are the comment at the top of this module, down to dG and dc_prev.
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

    def initial_state(self, xp, B, dtype, state):
        """state (h, c), each (B, H), checked; None means zeros."""
        if state is None:
            z = xp.zeros((B, self.hidden_size), dtype=dtype)
            return z, z
        h, c = state
        for name, a in (("h", h), ("c", c)):
            if a.shape != (B, self.hidden_size):
                raise ValueError(f"{type(self).__name__}: expected {name} of shape {(B, self.hidden_size)}, "
                                 f"got {tuple(a.shape)}")
        return h, c

    def _check_grads_from_above(self, who, expected, **arrays):
        """Raise unless every array given (None: skipped) has shape `expected`."""
        for name, d in arrays.items():
            if d is not None and tuple(d.shape) != tuple(expected):
                raise ValueError(f"{who}: expected {name} of shape {tuple(expected)}, got {tuple(d.shape)}")


class LSTMCell(_LSTMWeights):
    """One LSTM step (torch.nn.LSTMCell).

    forward(x (B, I), state=(h, c) each (B, H) or None for zeros) -> (h', c')
    backward(dh (B, H), dc (B, H) or None) -> dx (B, I), dh_prev (B, H), dc_prev (B, H)
    """

    def __init__(self, input_size, hidden_size, dtype=np.float32, rng=None):
        super().__init__(input_size, hidden_size, dtype, rng)
        self.clear_cache()

    def clear_cache(self):
        """Drop saved steps (e.g. cached forwards that will not be backpropagated)."""
        self._cache = []    # (x, h, c, ifgo, tanh_c) of each cached forward, newest last

    def forward(self, x, state=None, cache=True):
        """x (B, I), state (h, c) each (B, H) or None for zeros -> (h', c'). cache=False stores nothing."""
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"LSTMCell: expected x of shape (B, {self.input_size}), got {tuple(x.shape)}")
        h, c = self.initial_state(backend.get_array_module(x), x.shape[0], x.dtype, state)
        gates = h @ self.params["W_hh"].T               # (B, 4H)
        gates += self.input_gates(x)
        ifgo, c_new, tanh_c, h_new = self.cell_update(gates, c)
        if cache:
            self._cache.append((x, h, c, ifgo, tanh_c))
        return h_new, c_new

    def backward(self, dh, dc=None):
        """dh, dc (B, H) from above (dc None: zero) -> dx (B, I), dh_prev (B, H), dc_prev (B, H).

        Pops the newest cached forward; the equations are the comment at the top of this module.
        """
        if not self._cache:
            raise RuntimeError("LSTMCell.backward called more times than forward(cache=True)")
        h = self._cache[-1][1]              # check before popping: a rejected call consumes nothing
        self._check_grads_from_above("LSTMCell.backward", h.shape, dh=dh, dc=dc)
        x, h, c, ifgo, tanh_c = self._cache.pop()
        dG, dc_prev = self.cell_update_backward(dh, dc, c, ifgo, tanh_c)   # (B, 4H), (B, H)
        backend.matmul_accumulate(self.grads["W_hh"], dG.T, h)             # dW_hh += dG^T h
        dx = self.input_gates_backward(dG, x)                              # dW_ih, db; dG W_ih
        return dx, dG @ self.params["W_hh"], dc_prev


class LSTM(_LSTMWeights):
    """One LSTM layer over a sequence (torch.nn.LSTM with batch_first=True and num_layers=1).

    forward(X (B, T, I), state=(h0, c0) each (B, H) or None for zeros) -> Hs (B, T, H), (h_T, c_T)
    backward(dHs (B, T, H), dstate=(dh_T, dc_T) or None) -> dX (B, T, I), (dh0, dc0)

    One cache: backward uses the last forward(cache=True) and consumes it (a second backward
    raises); forward(cache=False) stores nothing and leaves an earlier cache alone. Hs is kept
    for backward: do not change it in place.
    """

    def __init__(self, input_size, hidden_size, dtype=np.float32, rng=None):
        super().__init__(input_size, hidden_size, dtype, rng)
        self.clear_cache()

    def clear_cache(self):
        """Drop a cached forward that will not be backpropagated."""
        self._cache = None  # (X, h0, Hs, steps) of the last forward(cache=True)

    def forward(self, X, state=None, cache=True):
        """X (B, T, I), state (h0, c0) or None -> Hs (B, T, H) the h_t of every step, (h_T, c_T)."""
        if X.ndim != 3 or X.shape[1] < 1 or X.shape[2] != self.input_size:
            raise ValueError(f"LSTM: expected X of shape (B, T, {self.input_size}) with T >= 1, "
                             f"got {tuple(X.shape)}")
        h0, c0 = self.initial_state(backend.get_array_module(X), X.shape[0], X.dtype, state)
        XG = self.input_gates(X)                        # (B, T, 4H): the input side of every step
        steps = [] if cache else None
        Hs, h, c = self.recurrence(XG, h0, c0, steps)
        if cache:
            self._cache = (X, h0, Hs, steps)
        return Hs, (h, c)

    def recurrence(self, XG, h, c, steps=None):
        """The time loop: XG (B, T, 4H), h, c (B, H) -> Hs (B, T, H), h_T, c_T.

        gates_t = XG[:, t] + h_{t-1} W_hh^T, then cell_update. Appends (c_{t-1}, ifgo_t, tanh c_t),
        what step t's backward needs, to `steps` when it is a list.
        """
        xp = backend.get_array_module(XG)
        B, T, _ = XG.shape
        Hs = xp.empty((B, T, self.hidden_size), dtype=XG.dtype)
        for t in range(T):
            gates = h @ self.params["W_hh"].T           # (B, 4H)
            gates += XG[:, t]
            ifgo, c_new, tanh_c, h = self.cell_update(gates, c)
            if steps is not None:
                steps.append((c, ifgo, tanh_c))
            c = c_new
            Hs[:, t] = h
        return Hs, h, c

    def backward(self, dHs, dstate=None):
        """dHs (B, T, H) = dL/dh_t for every t, dstate (dh_T, dc_T) or None -> dX (B, T, I), (dh0, dc0).

        BPTT: the loop in reverse (recurrence_backward) gives the gate gradients dG (B, T, 4H);
        then every weight gradient is one product over all B * T rows:

            dW_hh += sum_t dG_t^T h_{t-1}   (h_{-1} = h0)
            dW_ih += dG^T X;   db_ih += sum dG;   db_hh += sum dG;   dX = dG W_ih
        """
        if self._cache is None:
            raise RuntimeError("LSTM.backward needs a forward(cache=True) first; each forward is "
                               "backpropagated at most once")
        X, h0, Hs, steps = self._cache
        dh, dc = (None, None) if dstate is None else dstate
        self._check_grads_from_above("LSTM.backward", Hs.shape, dHs=dHs)
        self._check_grads_from_above("LSTM.backward", h0.shape, dh_T=dh, dc_T=dc)
        self._cache = None
        xp = backend.get_array_module(dHs)
        dh = xp.zeros_like(h0) if dh is None else dh
        dG, dh0, dc0 = self.recurrence_backward(dHs, dh, dc, steps)       # (B, T, 4H)
        H_prev = xp.concatenate([h0[:, None], Hs[:, :-1]], axis=1)       # (B, T, H): h_{t-1}
        backend.matmul_accumulate(self.grads["W_hh"], dG.reshape(-1, 4 * self.hidden_size).T,
                                  H_prev.reshape(-1, self.hidden_size))
        dX = self.input_gates_backward(dG, X)                             # (B, T, I)
        return dX, (dh0, dc0)

    def recurrence_backward(self, dHs, dh, dc, steps):
        """The time loop in reverse: dHs (B, T, H), dh, dc (B, H) (dc None: zero) -> dG (B, T, 4H), dh0, dc0.

        dh_t = dHs[:, t] + dh_rec (from the output and from step t+1), dG_t and dc_{t-1} from
        cell_update_backward, dh_rec = dG_t W_hh. No weight gradients here.
        """
        xp = backend.get_array_module(dHs)
        B, T, H = dHs.shape
        dG = xp.empty((B, T, 4 * H), dtype=dHs.dtype)
        for t in reversed(range(T)):
            c_prev, ifgo, tanh_c = steps[t]
            dh = dHs[:, t] + dh                         # (B, H): dL/dh_t
            dG_t, dc = self.cell_update_backward(dh, dc, c_prev, ifgo, tanh_c)
            dG[:, t] = dG_t
            dh = dG_t @ self.params["W_hh"]             # dL/dh_{t-1} through the recurrent product
        return dG, dh, dc

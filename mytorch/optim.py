"""Optimizers, gradient clipping and a learning-rate schedule, with PyTorch's formulas.

An optimizer takes what ``Module.parameters()`` returns, a list of
(params, grads) dict pairs, and updates every params[k] in place from
grads[k]. A parameter shared by two layers (tied weights) is updated once.

    SGD    buf = mu * buf + g (buf = g at step 1);  p -= lr * (g + mu * buf if nesterov else buf)
    Adam   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
           p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    AdamW  p *= 1 - lr * wd, then Adam without the L2 term
    (SGD and Adam apply weight decay as L2: g += wd * p)

t counts steps; buffers (buf, m, v) have their parameter's shape and live on its device.
Each ``_update`` is the formula above for one parameter, written with ``xp`` so it runs on
NumPy or CuPy arrays. mytorch.fast.optim has faster twins of SGD, Adam and AdamW that
compute the same numbers (pick them with ``mytorch.fast.choose``).
"""
import math

from . import backend


def unique_parameters(parameters):
    """[(name, param, grad)] from (params, grads) dict pairs, each array object once."""
    seen, out = set(), []
    for pi, (params, grads) in enumerate(parameters):
        for key, p in params.items():
            if id(p) in seen:
                continue
            seen.add(id(p))
            out.append((f"{pi}.{key}", p, grads[key]))
    return out


def _zeros_like(p):
    return backend.get_array_module(p).zeros_like(p)


class Optimizer:
    def __init__(self, parameters, lr):
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.params = unique_parameters(parameters)
        if not self.params:
            raise ValueError("optimizer got no parameters")
        self.lr = lr
        self.t = 0  # steps taken

    def zero_grad(self):
        for _, _, g in self.params:
            g.fill(0)

    def step(self):
        self.t += 1
        for i, (_, p, g) in enumerate(self.params):
            self._update(i, p, g)

    def state_dict(self):
        """Everything needed to continue: step count, lr and per-parameter buffers (as host arrays)."""
        return {"t": self.t, "lr": self.lr,
                # .copy(): on the host to_numpy returns the live buffer, and a saved state must not move
                "buffers": {k: [backend.to_numpy(b).copy() for b in bufs]
                            for k, bufs in self._buffers().items()}}

    def load_state_dict(self, state):
        self.t, self.lr = int(state["t"]), float(state["lr"])
        for key, arrays in state["buffers"].items():
            bufs = self._buffers()[key]
            if len(arrays) != len(bufs):
                raise ValueError(f"optimizer state has {len(arrays)} '{key}' buffers, expected {len(bufs)}")
            for b, a in zip(bufs, arrays):
                if b.shape != a.shape:
                    raise ValueError(f"optimizer state buffer shape {a.shape} does not match {b.shape}")
                b[...] = backend.to_device(a, b.dtype)

    def _buffers(self):
        return {}


class SGD(Optimizer):
    def __init__(self, parameters, lr=1e-3, momentum=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(parameters, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")
        if nesterov and momentum == 0:
            raise ValueError("nesterov momentum needs momentum > 0")
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.buf = [_zeros_like(p) for _, p, _ in self.params] if momentum else []

    def _buffers(self):
        return {"momentum": self.buf}

    def _update(self, i, p, g):
        self.rule(p, g, self.buf[i] if self.momentum else None)

    def rule(self, p, g, buf=None):
        """One update of p (and of its momentum buffer buf) in place, from its gradient g."""
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        d = g + wd * p if wd else g                     # L2 term: d = g + wd p
        if mu:
            if self.t == 1:
                buf[...] = d                            # buf = d at the first step
            else:
                buf *= mu
                buf += d                                # buf = mu buf + d
            d = d + mu * buf if self.nesterov else buf
        p -= lr * d


class Adam(Optimizer):
    decoupled = False  # AdamW sets True

    def __init__(self, parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(parameters, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1) or eps < 0 or weight_decay < 0:
            raise ValueError(f"invalid Adam settings: betas={betas}, eps={eps}, weight_decay={weight_decay}")
        self.betas, self.eps, self.weight_decay = (b1, b2), eps, weight_decay
        self.m = [_zeros_like(p) for _, p, _ in self.params]   # state lives where its parameter does
        self.v = [_zeros_like(p) for _, p, _ in self.params]

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def _update(self, i, p, g):
        xp = backend.get_array_module(p)
        b1, b2 = self.betas
        lr, eps, wd = self.lr, self.eps, self.weight_decay
        m, v = self.m[i], self.v[i]
        if wd and self.decoupled:
            p *= 1 - lr * wd                            # AdamW: decay the weights directly
        elif wd:
            g = g + wd * p                              # Adam: L2 term in the gradient
        m *= b1
        m += (1 - b1) * g                               # m = b1 m + (1 - b1) g
        v *= b2
        v += (1 - b2) * g * g                           # v = b2 v + (1 - b2) g^2
        bias1, bias2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        denom = xp.sqrt(v) / math.sqrt(bias2) + eps     # sqrt(v_hat) + eps, v_hat = v / (1 - b2^t)
        p -= lr / bias1 * m / denom                     # p -= lr m_hat / denom, m_hat = m / (1 - b1^t)


class AdamW(Adam):
    decoupled = True

    def __init__(self, parameters, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(parameters, lr, betas, eps, weight_decay)


def clip_grad_norm(parameters, max_norm):
    """Scale all gradients by min(1, max_norm / ||g||) where ||g|| is the global L2 norm.

    Accepts (params, grads) pairs or an optimizer. Returns the norm before clipping
    (a float; inf or nan if a gradient is not finite, so callers can stop).
    """
    items = parameters.params if isinstance(parameters, Optimizer) else unique_parameters(parameters)
    total = 0.0
    for _, _, g in items:
        flat = g.reshape(-1)
        total += float(flat @ flat)
    norm = math.sqrt(total)
    if max_norm is not None and max_norm > 0 and norm > max_norm:
        scale = max_norm / (norm + 1e-6)                # PyTorch's clip_grad_norm_
        for _, _, g in items:
            g *= scale
    return norm


class CosineAnnealingLR:
    """lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, t = calls to step().

    PyTorch's closed form; past T_max it follows the cosine back up as PyTorch does.
    warmup = W > 0: a linear warmup first, lr_t = base_lr * (t + 1) / W for t < W (the first step
    takes base_lr / W, step W - 1 the full base_lr), then the cosine above over the remaining
    T_max - W steps (t - W in place of t, T_max - W in place of T_max).
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, warmup=0):
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        if not 0 <= warmup < T_max:
            raise ValueError(f"warmup must lie in [0, T_max = {T_max}), got {warmup}")
        self.optimizer, self.T_max, self.eta_min, self.warmup = optimizer, T_max, eta_min, int(warmup)
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        if self.warmup:
            self.optimizer.lr = self.get_lr()                   # the first step's: base_lr / W

    def get_lr(self, t=None):
        t = self.last_epoch if t is None else t
        W = self.warmup
        if t < W:
            return self.base_lr * (t + 1) / W
        cos = 1 + math.cos(math.pi * (t - W) / (self.T_max - W))
        return self.eta_min + (self.base_lr - self.eta_min) * cos / 2

    def step(self):
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr()
        return self.optimizer.lr

    def state_dict(self):
        return {"T_max": self.T_max, "eta_min": self.eta_min, "base_lr": self.base_lr,
                "last_epoch": self.last_epoch, "warmup": self.warmup}

    def load_state_dict(self, state):
        self.T_max, self.eta_min = int(state["T_max"]), float(state["eta_min"])
        self.base_lr, self.last_epoch = float(state["base_lr"]), int(state["last_epoch"])
        self.warmup = int(state.get("warmup", 0))               # schedules saved before warmup existed
        self.optimizer.lr = self.get_lr()

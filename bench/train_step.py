"""Time training steps of the word-level LSTM language model, and put the figure in context.

    python -m bench.train_step                        # the reference model, NumPy (+ PyTorch if importable)
    python -m bench.train_step --preset default       # train.py's default recipe (train.PRESETS)
    python -m bench.train_step --backend cupy         # on a GPU, beside PyTorch on CUDA
    python -m bench.train_step --no-torch --steps 5   # mytorch alone, quickly

Reference model (the course notebook): V = 33,280 words, 128-dim embedding, two
128-unit LSTMCells, untied projection, full softmax, Adam, batch 32 x 10 words, float32.

Shapes: B batch, T time steps (--bptt), D embedding size, H hidden size,
V vocabulary, N = B*T rows (tokens per step).

Everything runs in one process, so all figures share one machine state:

1. Full steps, as train.py's ``Run.train_step`` does them: zero_grad, forward_loss
   (the projection fused with the cross-entropy), backward_loss, clip_grad_norm,
   optimizer step, on random token ids over the real vocabulary size. The median step gives tokens/s.
   Peak RSS is read right after these steps (before the other parts allocate).
2. The same step again, cut into phases: the model's pieces (embedding, cells,
   LinearCrossEntropyLoss's product / softmax pass / backward, optimizer) are called
   here in the order LanguageModel.forward_loss/backward_loss call them, with a timer (and a device sync)
   between pieces (phases: zero_grad + ids, embedding, LSTM forward, LSTM backward,
   projection, softmax + loss, optimizer; each the median over the steps). The phase
   sum is printed beside the full step: they should agree.
3. The float32 GEMM rate of the projection's product (N, D) x (D, V), the one
   the forward issues; gemm_gflops is the best of --gemm-reps products (a peak
   rate), the median is printed too. The matrix products of a step cost, per token,

       6 * (D_last * V + sum_k 4 H_k (I_k + H_k))  FLOP

   (forward, dX and dW products: 3 GEMMs of 2 FLOP per multiply-add, over every
   weight a token touches: the projection and each LSTM layer's W_ih and W_hh).
   At that GEMM rate, the matrix products alone cap the speed at
   floor = GEMM rate / FLOP per token; gemm_floor_fraction = tokens/s / floor.
   Reference model: 27.1 MFLOP a token.
4. PyTorch, when ``import torch`` works (it is an optional, benchmark-only
   dependency: the ``bench`` extra): the same model (nn.Embedding; two
   nn.LSTMCell stepped in a Python loop as the notebook does, and nn.LSTM;
   nn.Linear, F.cross_entropy, clip_grad_norm_, the same optimizer), same
   batch, same step count, torch.set_num_threads(--threads). The faster variant
   is the headline (ratio = mytorch tokens/s / torch tokens/s); both are reported.
   With --backend cupy, PyTorch runs on CUDA (not at all if it has no CUDA).

The last line printed is one JSON object (tokens_per_s, torch_tokens_per_s,
ratio, gemm_gflops, floor_tokens_per_s, gemm_floor_fraction, phases, config,
backend, ...) for other tools to read.
"""
import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import mytorch  # noqa: F401  (before numpy: it tunes OpenBLAS before NumPy loads it)
import numpy as np

from models.language_model import LanguageModel, check_ids
from models.step import train_step
from mytorch import backend, optim
from mytorch.nn import LinearCrossEntropyLoss
from mytorch.parallel import openblas_thread_timeout

ROOT = Path(__file__).resolve().parents[1]

# The reference model of the issue (= train.PRESETS["notebook"] at the time of writing).
REFERENCE = dict(emsize=128, nhid=128, nlayers=2, tied=False, dropout=0.0, dropouth=0.0,
                 bptt=10, batch_size=32, lr=1e-3, optimizer="adam", wdecay=0.0, clip=0.0)
WIKITEXT2_VOCAB = 33280

# (key, label): the order a step runs them in, bar the first
PHASES = [
    ("zero_grad", "zero_grad + ids to device"),
    ("embedding", "embedding (lookup + backward)"),
    ("lstm_forward", "LSTM forward"),
    ("lstm_backward", "LSTM backward (BPTT)"),
    ("projection", "projection (fwd + bwd)"),
    ("softmax_loss", "softmax + loss (fwd + bwd)"),
    ("optimizer", "optimizer (clip + {opt})"),
]
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}
TORCH_VARIANTS = ("lstmcell", "lstm")


class UsageError(Exception):
    """A bad flag: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------- configuration

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", help="take the model, batch and optimizer from train.PRESETS[NAME] (e.g. "
                                    "default, notebook) instead of the reference model; flags override it")
    p.add_argument("--batch", "--batch_size", "--batch-size", dest="batch_size", type=int,
                   help="sequences per batch (reference 32)")
    p.add_argument("--bptt", type=int, help="words per sequence (reference 10)")
    p.add_argument("--emsize", type=int, help="embedding size (reference 128)")
    p.add_argument("--nhid", type=int, help="hidden units per LSTM layer (reference 128)")
    p.add_argument("--nlayers", type=int, help="LSTM cells (reference 2)")
    p.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None,
                   help="share the embedding and the projection (reference: untied)")
    p.add_argument("--dropout", type=float, help="locked dropout on embeddings and top layer (reference 0)")
    p.add_argument("--dropouth", type=float, help="locked dropout between LSTM layers (reference 0)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="optimizer (reference adam)")
    p.add_argument("--lr", type=float, help="learning rate (reference 1e-3)")
    p.add_argument("--clip", type=float, help="gradient-norm clipping, 0: norm computed, no clipping "
                                              "(reference 0, as train.py with --clip 0)")
    p.add_argument("--vocab", type=int, default=WIKITEXT2_VOCAB, help="vocabulary size V")
    p.add_argument("--steps", type=int, default=20, help="timed steps (full steps, phased steps, and torch)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed series")
    p.add_argument("--gemm-reps", type=int, default=10, help="timed GEMMs for the GEMM rate")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="BLAS threads, mytorch row-block threads (MYTORCH_THREADS) and torch threads")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="mytorch array backend")
    p.add_argument("--no-torch", action="store_true", help="do not time PyTorch")
    p.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS),
                   help="PyTorch recurrences to time: lstmcell (Python loop over nn.LSTMCell), "
                        "lstm (nn.LSTM)")
    p.add_argument("--check", action="store_true",
                   help="first check that the phased step computes the model's own loss and gradients")
    p.add_argument("--seed", type=int, default=1111, help="random seed (weights and token ids)")
    return p.parse_args(argv)


def load_presets():
    """train.PRESETS (train.py lives in the repository root, not in an installed package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import train
    return train.PRESETS


def resolve_config(args):
    """The reference model, or a train.py preset, overridden by the flags given; validated."""
    if args.preset is None:
        cfg, preset = dict(REFERENCE), "reference"
    else:
        presets = load_presets()
        if args.preset not in presets:
            raise UsageError(f"--preset {args.preset}: train.PRESETS has {', '.join(sorted(presets))}")
        cfg, preset = {k: presets[args.preset].get(k, v) for k, v in REFERENCE.items()}, args.preset
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    torch_variants = [v.strip() for v in args.torch_variants.split(",") if v.strip()]
    cfg.update(preset=preset, vocab=args.vocab, steps=args.steps, warmup=args.warmup, threads=args.threads,
               backend=args.backend, seed=args.seed, gemm_reps=args.gemm_reps, dtype="float32",
               tokens_per_step=cfg["batch_size"] * cfg["bptt"])
    checks = [
        (cfg["vocab"] >= 2, f"--vocab must be >= 2, got {cfg['vocab']}"),
        (min(cfg["emsize"], cfg["nhid"], cfg["nlayers"]) >= 1, "--emsize, --nhid and --nlayers must be >= 1"),
        (cfg["batch_size"] >= 1 and cfg["bptt"] >= 1, "--batch and --bptt must be >= 1"),
        (cfg["steps"] >= 1, f"--steps must be >= 1, got {cfg['steps']}"),
        (cfg["warmup"] >= 0, f"--warmup must be >= 0, got {cfg['warmup']}"),
        (cfg["gemm_reps"] >= 1, f"--gemm-reps must be >= 1, got {cfg['gemm_reps']}"),
        (cfg["threads"] >= 1, f"--threads must be >= 1, got {cfg['threads']}"),
        (0 <= cfg["dropout"] < 1 and 0 <= cfg["dropouth"] < 1, "--dropout and --dropouth must lie in [0, 1)"),
        (cfg["lr"] > 0 and cfg["clip"] >= 0, "--lr must be > 0 and --clip >= 0"),
        (cfg["optimizer"] in OPTIMIZERS, f"optimizer {cfg['optimizer']!r} is not one of "
                                         f"{', '.join(sorted(OPTIMIZERS))}"),
        (all(v in TORCH_VARIANTS for v in torch_variants),
         f"--torch-variants: choose from {', '.join(TORCH_VARIANTS)}, got {args.torch_variants!r}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    return cfg, torch_variants


def layer_sizes(cfg):
    """[D, H_1, ..., H_L]: input size of layer 0, then each layer's hidden size (as LanguageModel)."""
    L = cfg["nlayers"]
    return [cfg["emsize"]] + [cfg["nhid"]] * (L - 1) + [cfg["emsize"] if cfg["tied"] else cfg["nhid"]]


def matmul_flops_per_token(cfg):
    """FLOP per token of the step's matrix products: 3 GEMMs x 2 FLOP x weights touched.

    Projection D_last x V, and per LSTM layer k: W_ih 4H_k x I_k (input side) and W_hh 4H_k x H_k
    (recurrent side). Each is used once forward (Z = X W^T) and twice backward (dX = dZ W,
    dW = dZ^T X). The embedding is a row gather, not a product.
    """
    sizes = layer_sizes(cfg)
    touched = sizes[-1] * cfg["vocab"]
    for k in range(cfg["nlayers"]):
        touched += 4 * sizes[k + 1] * (sizes[k] + sizes[k + 1])
    return 6 * touched


# ----------------------------------------------------------------------------- timing helpers

def device_sync():
    """A function that waits for the device's queued work (a no-op on the host)."""
    if backend.get_backend() == "cupy":
        return backend.xp().cuda.Device().synchronize
    return lambda: None


class Laps:
    """Accumulates wall time per phase name; lap(name) charges the time since the last lap."""

    def __init__(self, sync):
        self.sync, self.ms, self.t = sync, {}, None

    def start(self):
        self.sync()
        self.t = time.perf_counter()

    def lap(self, name):
        self.sync()
        now = time.perf_counter()
        self.ms[name] = self.ms.get(name, 0.0) + (now - self.t) * 1e3
        self.t = now


def peak_rss_mb():
    """Peak resident set size of this process so far, in MB (None where unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)  # bytes on macOS, else KiB


@contextmanager
def thread_limits(n):
    """BLAS limited to n threads and MYTORCH_THREADS=n inside the block; both restored after."""
    old_env = os.environ.get("MYTORCH_THREADS")
    os.environ["MYTORCH_THREADS"] = str(n)
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        limits = nullcontext()
    try:
        with limits:
            yield
    finally:
        if old_env is None:
            os.environ.pop("MYTORCH_THREADS", None)
        else:
            os.environ["MYTORCH_THREADS"] = old_env


def blas_libraries():
    """["openblas 0.3.27 (2 threads, haswell, idle spin 2^16 cycles)", ...]: the BLAS libraries loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    spin = openblas_thread_timeout()
    return [f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads, "
            f"{i.get('architecture', '?')}"
            f"{f', idle spin 2^{spin} cycles' if spin and i.get('internal_api') == 'openblas' else ''})"
            for i in threadpool_info() if i.get("user_api") == "blas"]


def random_batches(cfg, count):
    """count (x, y) pairs of (B, T) int64 ids in [0, V) on the host, as the loader yields them."""
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["batch_size"], cfg["bptt"])
    V = cfg["vocab"]
    return [(rng.integers(0, V, shape), rng.integers(0, V, shape)) for _ in range(count)]


# ----------------------------------------------------------------------------- mytorch

def build_mytorch(cfg):
    model = LanguageModel(cfg["vocab"], cfg["emsize"], cfg["nhid"], cfg["nlayers"], cfg["tied"],
                          cfg["dropout"], cfg["dropouth"], seed=cfg["seed"])
    opt_cls = {"adam": optim.Adam, "adamw": optim.AdamW, "sgd": optim.SGD}[cfg["optimizer"]]
    return model, opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def full_step(model, opt, x, y, clip):
    """One training step exactly as train.py runs it (less the lr schedule). -> loss."""
    return train_step(model, opt, x, y, clip)[0]


class PhasedStep:
    """full_step with a timer between the model's pieces.

    The pieces are the ones LanguageModel.forward_loss/backward_loss call, in their order
    (``check_phased_step`` tests that both give the same loss and gradients). Locked
    dropout, when on, is charged to the LSTM phases.
    """

    def __init__(self, model, opt, clip):
        self.model, self.opt, self.clip = model, opt, clip

    def __call__(self, x, y, laps, step_optimizer=True):
        model = self.model
        laps.start()
        # -- zero_grad + ids to the device
        model.train()
        model.zero_grad()
        x, y = backend.to_device(x), backend.to_device(y)
        laps.lap("zero_grad")
        # -- embedding lookup: ids (B, T) -> X (B, T, D)
        check_ids(x, model.vocab_size, "LanguageModel")
        X = model.embedding.forward(x)                  # (B, T, D)
        laps.lap("embedding")
        # -- LSTM forward: input side for all T at once, recurrent side step by step
        X, _ = model.run_cells(X)                       # (B, T, H_last)
        B, T, H = X.shape
        laps.lap("lstm_forward")
        # -- projection forward: (B*T, H_last) -> logits (B*T, V), bias not yet added
        head = LinearCrossEntropyLoss(model.decoder)
        Z = head.project(X.reshape(B * T, H), out=model._logits_buffer(X).reshape(B * T, -1))
        laps.lap("projection")
        # -- softmax + loss: bias, max, exp, row sums in one cache-blocked pass (the backward
        #    needs no pass of its own: it reads exp(Z - m) inside the projection's products)
        loss = head.softmax_loss(Z, y.reshape(-1))
        laps.lap("softmax_loss")
        # -- projection backward: dW, db and dX (B*T, H_last)
        dX = head.backward().reshape(B, T, H)
        laps.lap("projection")
        # -- LSTM backward: reverse time loop per layer, then one input-side product
        dX = model.cells_backward(dX)                   # (B, T, D)
        laps.lap("lstm_backward")
        # -- embedding backward: scatter-add dX into the looked-up rows
        model.embedding.backward(dX)
        laps.lap("embedding")
        # -- optimizer: global norm (and clipping), then the update
        if step_optimizer:
            optim.clip_grad_norm(self.opt, self.clip or None)
            self.opt.step()
            laps.lap("optimizer")
        return loss


def check_phased_step(model, opt, x, y):
    """Raise AssertionError unless PhasedStep reproduces the model's own loss and gradients.

    Dropout is switched off for the check (both paths would draw different masks).
    Parameters are not updated.
    """
    saved_p = [d.p for d in model.drops]
    try:
        for d in model.drops:
            d.p = 0.0
        model.train()
        model.zero_grad()
        loss_ref, _ = model.forward_loss(backend.to_device(x), backend.to_device(y))
        model.backward_loss()
        grads_ref = {name: backend.to_numpy(g).copy() for name, _, g in model.named_parameters()}
        loss = PhasedStep(model, opt, 0.0)(x, y, Laps(lambda: None), step_optimizer=False)
        grads = {name: backend.to_numpy(g) for name, _, g in model.named_parameters()}
    finally:
        for d, p in zip(model.drops, saved_p):
            d.p = p
    assert abs(loss - loss_ref) <= 1e-6 * max(1.0, abs(loss_ref)), f"loss {loss} != model's {loss_ref}"
    for name, g_ref in grads_ref.items():
        np.testing.assert_allclose(grads[name], g_ref, rtol=1e-5, atol=1e-7, err_msg=f"gradient {name}")
    model.zero_grad()


def time_mytorch(cfg, batches, check=False):
    """-> dict(step_ms=[...], phases={name: median ms}, peak_rss_mb, loss)."""
    sync = device_sync()
    model, opt = build_mytorch(cfg)
    n, clip = len(batches), cfg["clip"]
    step_ms, loss = [], None
    for i in range(cfg["warmup"] + cfg["steps"]):
        sync()
        t0 = time.perf_counter()
        loss = full_step(model, opt, *batches[i % n], clip)
        sync()                                                  # the update may still be queued on a GPU
        if i >= cfg["warmup"]:
            step_ms.append((time.perf_counter() - t0) * 1e3)
    rss = peak_rss_mb()                                         # the training step's own footprint
    if check:                                                   # (its copy of the gradients is not)
        check_phased_step(model, opt, *batches[0])
    phased = PhasedStep(model, opt, clip)
    per_phase = {key: [] for key, _ in PHASES}
    for i in range(cfg["warmup"] + cfg["steps"]):
        laps = Laps(sync)
        phased(*batches[i % n], laps)
        if i >= cfg["warmup"]:
            for key in per_phase:
                per_phase[key].append(laps.ms.get(key, 0.0))
    phase_sum = [sum(ms) for ms in zip(*per_phase.values())]
    pool_mb = None
    if backend.get_backend() == "cupy":
        pool_mb = round(backend.xp().get_default_memory_pool().total_bytes() / 2**20, 1)
    return dict(step_ms=step_ms, phases={k: statistics.median(v) for k, v in per_phase.items()},
                phase_sum_ms=statistics.median(phase_sum), peak_rss_mb=rss, gpu_pool_mb=pool_mb, loss=loss)


def gemm_rate(cfg):
    """float32 GFLOP/s of the projection's product (N, D) x (D, V), as Linear.forward issues it.

    -> (best, median) over --gemm-reps timed products, after one untimed.
    """
    xp, sync = backend.xp(), device_sync()
    N, D, V = cfg["tokens_per_step"], layer_sizes(cfg)[-1], cfg["vocab"]
    rng = np.random.default_rng(cfg["seed"])
    X = backend.to_device(rng.standard_normal((N, D), dtype=np.float32))    # (N, D)
    W = backend.to_device(rng.standard_normal((V, D), dtype=np.float32))    # (V, D), PyTorch's layout
    out = xp.empty((N, V), dtype=np.float32)
    xp.matmul(X, W.T, out=out)
    times = []
    for _ in range(cfg["gemm_reps"]):
        sync()
        t0 = time.perf_counter()
        xp.matmul(X, W.T, out=out)
        sync()
        times.append(time.perf_counter() - t0)
    flop = 2.0 * N * D * V
    return flop / max(min(times), 1e-12) / 1e9, flop / max(statistics.median(times), 1e-12) / 1e9


# ----------------------------------------------------------------------------- PyTorch

def build_torch(torch, cfg, variant, device):
    """The same language model in PyTorch (float32), and its optimizer."""
    nn = torch.nn
    sizes, L, V = layer_sizes(cfg), cfg["nlayers"], cfg["vocab"]
    drop_p = [cfg["dropout"] if k in (0, L) else cfg["dropouth"] for k in range(L + 1)]

    def locked_dropout(X, p, training):
        """One (B, 1, D) mask per sequence, as mytorch's LockedDropout."""
        if not training or p == 0:
            return X
        return X * X.new_empty(X.shape[0], 1, X.shape[2]).bernoulli_(1 - p).div_(1 - p)

    class TorchLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, cfg["emsize"])
            if variant == "lstmcell":
                self.rnns = nn.ModuleList(nn.LSTMCell(sizes[k], sizes[k + 1]) for k in range(L))
            else:
                self.rnns = nn.ModuleList(nn.LSTM(sizes[k], sizes[k + 1], batch_first=True) for k in range(L))
            self.decoder = nn.Linear(sizes[-1], V)
            if cfg["tied"]:
                self.decoder.weight = self.embedding.weight

        def forward(self, ids):                          # ids (B, T) -> logits (B, T, V)
            B, T = ids.shape
            X = self.embedding(ids)                      # (B, T, D)
            for k, rnn in enumerate(self.rnns):
                X = locked_dropout(X, drop_p[k], self.training)
                if variant == "lstmcell":                # the notebook's loop over time
                    h = c = X.new_zeros(B, sizes[k + 1])
                    hs = []
                    for t in range(T):
                        h, c = rnn(X[:, t], (h, c))
                        hs.append(h)
                    X = torch.stack(hs, dim=1)           # (B, T, H)
                else:
                    X, _ = rnn(X)                        # (B, T, H)
            X = locked_dropout(X, drop_p[L], self.training)
            return self.decoder(X)

    torch.manual_seed(cfg["seed"])
    model = TorchLM().to(device=device, dtype=torch.float32)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[cfg["optimizer"]]
    return model, opt_cls(model.parameters(), lr=cfg["lr"], weight_decay=cfg["wdecay"])


def time_torch(cfg, batches, variants):
    """-> (result dict or None, note). Imports torch here and nowhere else."""
    try:
        import torch
        import torch.nn.functional as F
    except Exception as err:  # ImportError, or a broken install
        return None, f"PyTorch not importable ({type(err).__name__}: {err})"
    device = "cpu"
    if cfg["backend"] == "cupy":
        if not torch.cuda.is_available():
            return None, f"PyTorch {torch.__version__} has no CUDA device: not timed beside --backend cupy"
        device = "cuda"
    torch.set_num_threads(cfg["threads"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    clip, V = cfg["clip"], cfg["vocab"]
    result = dict(version=torch.__version__, device=device, threads=torch.get_num_threads(),
                  tokens_per_s={}, step_ms={})
    for variant in variants:
        model, opt = build_torch(torch, cfg, variant, device)
        model.train()
        params = list(model.parameters())
        step_ms = []
        for i in range(cfg["warmup"] + cfg["steps"]):
            x, y = batches[i % len(batches)]
            sync()
            t0 = time.perf_counter()
            opt.zero_grad()
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            logits = model(x)                                           # (B, T, V)
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            elif hasattr(torch.nn.utils, "get_total_norm"):           # the norm only, as mytorch with clip 0
                torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            else:
                torch.nn.utils.clip_grad_norm_(params, float("inf"))
            opt.step()
            loss.item()                                                  # train.py reads the loss each step
            sync()
            if i >= cfg["warmup"]:
                step_ms.append((time.perf_counter() - t0) * 1e3)
        median = statistics.median(step_ms)
        result["step_ms"][variant] = median
        result["tokens_per_s"][variant] = cfg["tokens_per_step"] / (median / 1e3)
        del model, opt, params
    result["fastest"] = max(result["tokens_per_s"], key=result["tokens_per_s"].get)
    return result, None


# ----------------------------------------------------------------------------- report

def run(cfg, torch_variants, no_torch=False, check=False):
    """Every measurement, in order: mytorch full steps, phased steps, GEMM rate, PyTorch."""
    batches = random_batches(cfg, min(cfg["warmup"] + cfg["steps"], 8))
    mt = time_mytorch(cfg, batches, check=check)
    gemm_best, gemm_median = gemm_rate(cfg)
    blas = blas_libraries() if cfg["backend"] == "numpy" else ["cuBLAS (CuPy)"]
    if no_torch:
        tr, torch_note = None, "PyTorch not timed (--no-torch)"
    elif not torch_variants:
        tr, torch_note = None, "PyTorch not timed (--torch-variants is empty)"
    else:
        tr, torch_note = time_torch(cfg, batches, torch_variants)

    step_ms = statistics.median(mt["step_ms"])
    tokens_per_s = cfg["tokens_per_step"] / (step_ms / 1e3)
    flops = matmul_flops_per_token(cfg)
    floor = gemm_best * 1e9 / flops
    torch_tps = tr["tokens_per_s"][tr["fastest"]] if tr else None
    return dict(
        tokens_per_s=tokens_per_s,
        torch_tokens_per_s=torch_tps,
        ratio=tokens_per_s / torch_tps if torch_tps else None,
        gemm_gflops=gemm_best,
        gemm_gflops_median=gemm_median,
        floor_tokens_per_s=floor,
        gemm_floor_fraction=tokens_per_s / floor,
        matmul_flops_per_token=flops,
        step_ms=step_ms,
        step_ms_all=mt["step_ms"],
        total_s=sum(mt["step_ms"]) / 1e3,
        phases=mt["phases"],
        phase_sum_ms=mt["phase_sum_ms"],
        peak_rss_mb=mt["peak_rss_mb"],
        peak_rss_mb_end=peak_rss_mb(),
        gpu_pool_mb=mt["gpu_pool_mb"],
        loss=mt["loss"],
        torch=tr,
        torch_note=torch_note,
        blas=blas,
        openblas_thread_timeout=openblas_thread_timeout() if cfg["backend"] == "numpy" else None,
        numpy=np.__version__,
    )


def format_report(cfg, r):
    """The plain-text table and headline lines (without the JSON line)."""
    sizes = layer_sizes(cfg)
    opt_name = OPTIMIZERS[cfg["optimizer"]]
    lstm = " -> ".join(str(s) for s in sizes)
    lines = [
        f"train-step benchmark: {cfg['preset']} model, V={cfg['vocab']:,} D={cfg['emsize']} "
        f"LSTM {lstm} ({cfg['nlayers']} layers) {'tied' if cfg['tied'] else 'untied'}, {opt_name}, "
        f"clip {cfg['clip'] or 'off (norm only)'}, dropout {cfg['dropout']}/{cfg['dropouth']}",
        f"batch {cfg['batch_size']} x bptt {cfg['bptt']} = {cfg['tokens_per_step']} tokens/step, float32, "
        f"backend {cfg['backend']}, {cfg['threads']} threads; medians of {cfg['steps']} steps "
        f"after {cfg['warmup']} warmup",
        f"numpy {r['numpy']}, BLAS: {'; '.join(r['blas']) or 'unknown (no threadpoolctl)'}",
        "",
        f"{'phase':34s} {'ms/step':>9s} {'share':>7s}",
        "-" * 52,
    ]
    total = r["phase_sum_ms"] or 1e-12
    for key, label in PHASES:
        ms = r["phases"][key]
        lines.append(f"{label.format(opt=opt_name):34s} {ms:9.2f} {100 * ms / total:6.1f}%")
    lines.append("-" * 52)
    lines.append(f"{'sum of phases':34s} {r['phase_sum_ms']:9.2f} {100.0:6.1f}%")
    off = r["phase_sum_ms"] / r["step_ms"] - 1
    lines.append(f"{'full step (timed on its own)':34s} {r['step_ms']:9.2f}   phases {off:+.0%} vs full")
    if abs(off) > 0.15:
        lines.append("WARNING: the phase sum and the full step differ by more than 15% "
                     "(a busy machine, or the phased step no longer mirrors the model)")
    lines.append("")
    lines.append(f"mytorch          {r['tokens_per_s']:10,.0f} tokens/s  ({r['step_ms']:.2f} ms/step, "
                 f"{r['total_s']:.2f} s for {cfg['steps']} steps)")
    N, D, V = cfg["tokens_per_step"], sizes[-1], cfg["vocab"]
    lines.append(f"float32 GEMM     {r['gemm_gflops']:10.1f} GFLOP/s   (best of {cfg['gemm_reps']}, median "
                 f"{r['gemm_gflops_median']:.1f}; ({N}, {D}) x ({D}, {V}))")
    lines.append(f"floor            {r['floor_tokens_per_s']:10,.0f} tokens/s  "
                 f"(matrix products {r['matmul_flops_per_token'] / 1e6:.2f} MFLOP/token at that rate); "
                 f"reached {r['gemm_floor_fraction']:.2f} of it")
    tr = r["torch"]
    if tr is None:
        lines.append(f"PyTorch          {'n/a':>10s}           {r['torch_note']}; ratio n/a")
    else:
        names = {"lstmcell": "nn.LSTMCell loop", "lstm": "nn.LSTM"}
        for variant, tps in tr["tokens_per_s"].items():
            mark = "  <- faster" if variant == tr["fastest"] and len(tr["tokens_per_s"]) > 1 else ""
            lines.append(f"PyTorch          {tps:10,.0f} tokens/s  ({tr['step_ms'][variant]:.2f} ms/step; "
                         f"torch {tr['version']} {tr['device']}, {tr['threads']} threads, "
                         f"{names[variant]}){mark}")
        lines.append(f"ratio            {r['ratio']:10.2f}           "
                     f"(mytorch / PyTorch {names[tr['fastest']]})")
    rss = "n/a" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB"
    end = "" if r["peak_rss_mb_end"] is None else f"; whole run {r['peak_rss_mb_end']:.0f} MB"
    gpu = "" if r["gpu_pool_mb"] is None else f"; CuPy pool {r['gpu_pool_mb']:.0f} MB"
    lines.append(f"peak RSS         {rss:>10s}           (after the mytorch steps{end}{gpu})")
    return "\n".join(lines)


def summary(cfg, r):
    """The JSON object of the last line."""
    def rnd(v, nd=3):
        return None if v is None else round(v, nd)
    tr = r["torch"]
    torch_part = None
    if tr is not None:
        torch_part = dict(version=tr["version"], device=tr["device"], threads=tr["threads"],
                          fastest=tr["fastest"],
                          tokens_per_s={k: rnd(v, 1) for k, v in tr["tokens_per_s"].items()},
                          step_ms={k: rnd(v) for k, v in tr["step_ms"].items()},
                          ratio={k: rnd(r["tokens_per_s"] / v) for k, v in tr["tokens_per_s"].items()})
    config = {k: cfg[k] for k in ("preset", "vocab", "emsize", "nhid", "nlayers", "tied", "dropout",
                                  "dropouth", "batch_size", "bptt", "tokens_per_step", "optimizer", "lr",
                                  "clip", "wdecay", "steps", "warmup", "threads", "seed", "dtype",
                                  "gemm_reps")}
    return dict(
        tokens_per_s=rnd(r["tokens_per_s"], 1),
        torch_tokens_per_s=rnd(r["torch_tokens_per_s"], 1),
        ratio=rnd(r["ratio"]),
        gemm_gflops=rnd(r["gemm_gflops"], 2),
        floor_tokens_per_s=rnd(r["floor_tokens_per_s"], 1),
        gemm_floor_fraction=rnd(r["gemm_floor_fraction"], 4),
        matmul_flops_per_token=r["matmul_flops_per_token"],
        step_ms=rnd(r["step_ms"]),
        phase_sum_ms=rnd(r["phase_sum_ms"]),
        phases={k: rnd(v) for k, v in r["phases"].items()},
        peak_rss_mb=r["peak_rss_mb"],
        peak_rss_mb_end=r["peak_rss_mb_end"],
        gpu_pool_mb=r["gpu_pool_mb"],
        torch=torch_part,
        torch_note=r["torch_note"],
        config=config,
        backend=cfg["backend"],
        blas=r["blas"],
        openblas_thread_timeout=r["openblas_thread_timeout"],
        numpy=r["numpy"],
    )


def main(argv=None):
    args = parse_args(argv)
    previous = backend.get_backend()
    try:
        cfg, torch_variants = resolve_config(args)
        backend.set_backend(cfg["backend"])
    except (UsageError, backend.BackendError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        with thread_limits(cfg["threads"]):
            r = run(cfg, torch_variants, no_torch=args.no_torch, check=args.check)
    finally:
        backend.set_backend(previous)
    print(format_report(cfg, r))
    print(json.dumps(summary(cfg, r)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

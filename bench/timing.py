"""Timing mytorch: the training step (whole, and by phase through the model's timer hook), the GEMM rate.

Shapes: B batch, T time steps, D embedding size, V vocabulary, N = B*T rows (tokens per step).
"""
import os
import platform
import statistics
import sys
import time
from contextlib import ExitStack, contextmanager, nullcontext

import numpy as np

from app.config import build_model, build_optimizer
from app.step import train_step
from mytorch import backend
from mytorch.fast.parallel import openblas_thread_timeout, parallel_rows

from .config import layer_sizes, zipf_probabilities


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
def environ(name, value):
    """os.environ[name] = value inside the block; the old value (or its absence) restored after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextmanager
def thread_limits(n):
    """BLAS limited to n threads and MYTORCH_THREADS=n inside the block; both restored after."""
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        limits = nullcontext()
    with environ("MYTORCH_THREADS", str(n)), limits:
        yield


def processor_name():
    """The CPU's model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) ..."), or the platform's best guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


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
    """count (x, y) pairs of (B, T) int64 ids in [0, V) on the host, as the loader yields them; the
    ids follow Zipf's law (bench.config.zipf_probabilities), id 0 the most frequent, as text does."""
    rng = np.random.default_rng(cfg["seed"])
    shape = (cfg["batch_size"], cfg["bptt"])
    p = zipf_probabilities(cfg["vocab"])
    return [(rng.choice(p.size, shape, p=p), rng.choice(p.size, shape, p=p)) for _ in range(count)]


def build_mytorch(cfg):
    """The model and optimizer train.py would build for cfg (fast-tier pieces as the switches stand)."""
    model = build_model(cfg, cfg["vocab"], seed=cfg["seed"])
    return model, build_optimizer(cfg, model)


def time_step(model, opt, cfg, batch, sync, lap=None):
    """ms of one training step (app.step.train_step), the device's queued work included; the loss.

    With `lap` (a Laps), the model's timer charges each phase to it as the step runs.
    """
    model.timer = lap.lap if lap is not None else None
    sync()
    t0 = time.perf_counter()
    if lap is not None:
        lap.start()
    loss = train_step(model, opt, *batch, cfg["clip"])[0]
    sync()                                                      # the update may still be queued on a GPU
    model.timer = None
    return (time.perf_counter() - t0) * 1e3, loss


FULL_SOFTMAX = "full softmax"   # the variant an --adaptive bench adds: the same model, the full softmax


# the fast-tier pieces a language model's step uses (the others serve the ViT: bench/vit_step.py)
LM_PIECES = ("loss", "lstm", "optim", "threads")


def variants(cfg):
    """{name: environment}: the default, every fast-tier piece off, and each piece off alone; with
    --adaptive also the full-softmax model (FULL_SOFTMAX, default switches)."""
    out = {"default": {}, "plain": {"MYTORCH_FAST": "0"}}
    out.update({f"no {name}": {f"MYTORCH_FAST_{name.upper()}": "0"} for name in LM_PIECES})
    if cfg.get("adaptive"):
        out[FULL_SOFTMAX] = {}
    return out


def variant_config(cfg, name):
    """The configuration a variant's model is built from: cfg, or without the adaptive softmax."""
    return dict(cfg, adaptive=None) if name == FULL_SOFTMAX else cfg


@contextmanager
def environment(settings):
    """The environment variables of `settings` set inside the block (the fast tier's switches)."""
    with ExitStack() as stack:
        for name, value in settings.items():
            stack.enter_context(environ(name, value))
        yield


def train_for(minutes, loader, opt, peak_lr, warmup, step, count, log_every, unit):
    """The anchors' loop: torch steps on the loader's epochs until `minutes` of stepping are spent.

    step(x, y) -> loss takes one step; count(y) -> the items it read (images, target tokens). The
    learning rate warms up linearly over `warmup` steps, then follows the cosine over the seconds:
    peak (1 + cos(pi t / budget)) / 2 after t of the budget's seconds. -> (steps, items, seconds).
    """
    import math
    budget, trained, steps, items, loss_sum, epoch = 60 * minutes, 0.0, 0, 0, 0.0, 0
    while trained < budget:
        loader.set_epoch(epoch)
        for x, y in loader.batches():
            t0 = time.perf_counter()
            lr = (peak_lr * (steps + 1) / warmup if steps < warmup
                  else peak_lr * 0.5 * (1 + math.cos(math.pi * min(trained / budget, 1.0))))
            for group in opt.param_groups:
                group["lr"] = lr
            loss_sum += step(x, y)
            trained += time.perf_counter() - t0
            steps, items = steps + 1, items + count(y)
            if steps % log_every == 0:
                print(f"| epoch {epoch + 1} | batch {steps} | lr {lr:.2e} | {items / trained:,.0f} {unit}/s "
                      f"| loss {loss_sum / log_every:.4f} | {trained / 60:.1f} of {minutes:g} min",
                      flush=True)
                loss_sum = 0.0
            if trained >= budget:
                break
        epoch += 1
    return steps, items, trained


def fast_tier_step(build, cfg, settings):
    """A closure taking one training step of the model build() makes (app.step.train_step, through
    mytorch.fast.batch_split) on (x, y) -> the loss, built and run under the fast-tier `settings`."""
    from mytorch import fast
    with environment(settings):
        model = build()
        opt = build_optimizer(cfg, model)
        stepper = fast.batch_split(model)

    def step(x, y):
        with environment(settings):
            return train_step(stepper, opt, x, y, cfg["clip"])[0]
    return step


def time_mytorch(cfg, batches):
    """-> dict(step_ms={variant: [...]}, phases={name: median ms}, phase_sum_ms, peak_rss_mb, loss, ...).

    First the default model's steps with the phase timer on (the phases, and the peak RSS of
    one model's training). Then one model per variant (the default, the plain tier alone, each
    fast-tier piece off in turn) takes steps in turn, round-robin, each under its switches: a
    busy moment of the machine falls on every variant alike, so their ratios hold.
    """
    sync, n = device_sync(), len(batches)
    models = {"default": build_mytorch(cfg)}
    per_phase, loss = {}, None
    for i in range(cfg["warmup"] + cfg["steps"]):
        lap = Laps(sync)
        _, loss = time_step(*models["default"], cfg, batches[i % n], sync, lap)
        if i >= cfg["warmup"]:
            for key, ms in lap.ms.items():
                per_phase.setdefault(key, []).append(ms)
    rss = peak_rss_mb()                                         # the training step's own footprint
    for name, settings in variants(cfg).items():
        if name not in models:
            with environment(settings):
                models[name] = build_mytorch(variant_config(cfg, name))
    step_ms = {name: [] for name in models}
    for i in range(cfg["warmup"] + cfg["steps"]):
        for name, settings in variants(cfg).items():
            with environment(settings):
                ms, _ = time_step(*models[name], cfg, batches[i % n], sync)
            if i >= cfg["warmup"]:
                step_ms[name].append(ms)
    phase_sum = [sum(ms) for ms in zip(*per_phase.values())]
    pool_mb = None
    if backend.get_backend() == "cupy":
        pool_mb = round(backend.xp().get_default_memory_pool().total_bytes() / 2**20, 1)
    return dict(step_ms=step_ms, phases={k: statistics.median(v) for k, v in per_phase.items()},
                n_params=sum(p.size for _, p, _ in models["default"][1].params),
                phase_sum_ms=statistics.median(phase_sum), peak_rss_mb=rss, gpu_pool_mb=pool_mb, loss=loss)


def memory_bandwidth(cfg, megabytes=64):
    """GB/s of a streaming pass a += b over two (megabytes)-MB float32 arrays (3 x that many bytes
    cross the memory bus), best of --gemm-reps; on the host the better of one thread and the
    row-parallel pass on every thread (mytorch.fast.parallel), what an optimizer update can reach.
    """
    xp, sync = backend.xp(), device_sync()
    n = megabytes * (1 << 20) // 4
    a = xp.ones((1024, n // 1024), dtype=np.float32)
    b = xp.ones_like(a)

    def one_pass(a, b):
        xp.add(a, b, out=a)
    passes = [one_pass]
    if backend.get_backend() == "numpy":
        passes.append(lambda a, b: parallel_rows(one_pass, a, b))
    best = float("inf")
    for run in passes:
        run(a, b)
        for _ in range(cfg["gemm_reps"]):
            sync()
            t0 = time.perf_counter()
            run(a, b)
            sync()
            best = min(best, time.perf_counter() - t0)
    return 3 * a.nbytes / max(best, 1e-12) / 1e9


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

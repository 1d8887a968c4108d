"""Time training steps of the word-level LSTM language model, and put the figure in context.

    python -m bench.train_step                        # the reference model, NumPy (+ PyTorch if importable)
    python -m bench.train_step --preset default       # train.py's default recipe (app.config.PRESETS)
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
2. The same steps again with the model's timer set (``LanguageModel.timer``: the model and
   app.step call ``lap(phase)`` where each phase ends, so the phases are those of the
   model's own step, never a copy of it), a device sync at each lap (phases: zero_grad + ids,
   embedding, LSTM forward, LSTM backward, projection, softmax + loss, optimizer; each the
   median over the steps). The phase sum is printed beside the full step: they should agree.
   Then full steps of a model built with every fast-tier piece off (MYTORCH_FAST=0): the
   plain tier alone, beside the default.
3. The float32 GEMM rate of the projection's product (N, D) x (D, V), the one
   the forward issues; gemm_gflops is the best of --gemm-reps products (a peak
   rate), the median is printed too. The matrix products of a step cost, per token,

       6 * (D_last * V + sum_k 4 H_k (I_k + H_k))  FLOP

   (forward, dX and dW products: 3 GEMMs of 2 FLOP per multiply-add, over every
   weight a token touches: the projection and each LSTM layer's W_ih and W_hh).
   At that GEMM rate, the matrix products alone cap the speed at GEMM rate / FLOP per
   token (gemm_floor_tokens_per_s). Reference model: 27.1 MFLOP a token.
   The optimizer's update is the other cost no implementation avoids: its least memory
   traffic (Adam reads p, g, m, v and writes p, m, v: 7 x 4 bytes a parameter, 246 MB a
   step for the reference model's 8.8 M parameters) at the measured streaming bandwidth
   (a += b over 64 MB arrays, the better of one thread and every thread). The combined
   floor is one step of both: floor_tokens_per_s = N / (products / GEMM rate + optimizer
   bytes / bandwidth); floor_fraction = tokens/s / floor.
4. PyTorch, when ``import torch`` works (it is an optional, benchmark-only
   dependency: the ``bench`` extra): the same model (nn.Embedding; two
   nn.LSTMCell stepped in a Python loop as the notebook does, and nn.LSTM;
   nn.Linear, F.cross_entropy, clip_grad_norm_, the same optimizer), same
   batch, same step count, torch.set_num_threads(--threads). The faster variant
   is the headline (ratio = mytorch tokens/s / torch tokens/s); both are reported.
   With --backend cupy, PyTorch runs on CUDA (not at all if it has no CUDA).
   A Transformer (--preset transformer) is compared with the same architecture in torch.nn, eager
   (token + learned positions, pre-LN blocks, GELU tanh, tied projection, AdamW): "transformer" writes
   the causal attention out as mytorch computes it, "mha" uses nn.MultiheadAttention; the faster
   is the headline, as for the LSTM.

The code: bench/config.py (flags, presets, FLOP count), bench/timing.py (mytorch, the GEMM
rate), bench/torch_reference.py (PyTorch), bench/report.py (the table and the JSON line).

The last line printed is one JSON object (tokens_per_s, torch_tokens_per_s,
ratio, gemm_gflops, floor_tokens_per_s, gemm_floor_fraction, phases, config,
backend, ...) for other tools to read.
"""
import json
import statistics
import sys

import mytorch  # noqa: F401  (before numpy: it tunes OpenBLAS before NumPy loads it)
import numpy as np

from mytorch import backend, fast
from mytorch.fast.parallel import openblas_thread_timeout

from .config import UsageError, matmul_flops_per_token, optimizer_bytes_per_step, parse_args, resolve_config
from .report import format_report, summary
from .timing import (LM_PIECES, blas_libraries, gemm_rate, memory_bandwidth, peak_rss_mb, processor_name,
                     random_batches, thread_limits, time_mytorch)
from .torch_reference import time_torch


def gpu_name():
    """The CUDA device's name, as CuPy reports it."""
    cp = backend.xp()
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def run(cfg, torch_variants, no_torch=False):
    """Every measurement, in order: mytorch full steps, phased steps, GEMM rate, PyTorch."""
    batches = random_batches(cfg, min(cfg["warmup"] + cfg["steps"], 8))
    mt = time_mytorch(cfg, batches)
    gemm_best, gemm_median = gemm_rate(cfg)
    bandwidth = memory_bandwidth(cfg)
    blas = blas_libraries() if cfg["backend"] == "numpy" else ["cuBLAS (CuPy)"]
    if no_torch:
        tr, torch_note = None, "PyTorch not timed (--no-torch)"
    elif not torch_variants:
        tr, torch_note = None, "PyTorch not timed (--torch-variants is empty)"
    else:
        tr, torch_note = time_torch(cfg, batches, torch_variants)

    tps = {name: cfg["tokens_per_step"] / (statistics.median(ms) / 1e3) for name, ms in mt["step_ms"].items()}
    step_ms = statistics.median(mt["step_ms"]["default"])
    tokens_per_s = tps["default"]
    flops = matmul_flops_per_token(cfg)
    gemm_floor = gemm_best * 1e9 / flops
    opt_bytes = optimizer_bytes_per_step(cfg, mt["n_params"])
    floor_step_s = flops * cfg["tokens_per_step"] / (gemm_best * 1e9) + opt_bytes / (bandwidth * 1e9)
    floor = cfg["tokens_per_step"] / floor_step_s
    torch_tps = tr["tokens_per_s"][tr["fastest"]] if tr else None
    plain_tps = tps["plain"]
    return dict(
        tokens_per_s=tokens_per_s,
        plain_tokens_per_s=plain_tps,
        fast_speedup=tokens_per_s / plain_tps,
        fast={name: on for name, on in fast.settings().items() if name in LM_PIECES},
        variants_tokens_per_s=tps,
        processor=processor_name() if cfg["backend"] == "numpy" else gpu_name(),
        torch_tokens_per_s=torch_tps,
        ratio=tokens_per_s / torch_tps if torch_tps else None,
        gemm_gflops=gemm_best,
        gemm_gflops_median=gemm_median,
        gemm_floor_tokens_per_s=gemm_floor,
        bandwidth_gbs=bandwidth,
        optimizer_mb=opt_bytes / 1e6,
        n_params=mt["n_params"],
        floor_tokens_per_s=floor,
        floor_fraction=tokens_per_s / floor,
        matmul_flops_per_token=flops,
        step_ms=step_ms,
        step_ms_all=mt["step_ms"]["default"],
        total_s=sum(mt["step_ms"]["default"]) / 1e3,
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
            r = run(cfg, torch_variants, no_torch=args.no_torch)
    finally:
        backend.set_backend(previous)
    print(format_report(cfg, r))
    print(json.dumps(summary(cfg, r)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark's report: a plain-text table for people, one JSON line for tools."""
from app.config import describe_model

from .config import OPTIMIZERS, TORCH_NAMES, is_transformer, layer_sizes

PHASES = [
    ("zero_grad", "zero_grad + ids to device"),
    ("embedding", "embedding (lookup + backward)"),
    ("layers_forward", "{layers} forward"),
    ("layers_backward", "{layers} backward"),
    ("projection", "projection (fwd + bwd)"),
    ("softmax_loss", "softmax + loss (fwd + bwd)"),
    ("optimizer", "optimizer (clip + {opt})"),
]


def format_report(cfg, r):
    """The plain-text table and headline lines (without the JSON line)."""
    sizes = layer_sizes(cfg)
    opt_name = OPTIMIZERS[cfg["optimizer"]].__name__
    lstm = " -> ".join(str(s) for s in sizes)
    model = (f"{describe_model(cfg)}, tied" if is_transformer(cfg) else
             f"LSTM {lstm} ({cfg['nlayers']} layers) {'tied' if cfg['tied'] else 'untied'}")
    lines = [
        f"train-step benchmark: {cfg['preset']} model, V={cfg['vocab']:,} D={cfg['emsize']} "
        f"{model}, {opt_name}, clip {cfg['clip'] or 'off (norm only)'}, "
        f"dropout {cfg['dropout']}/{cfg.get('dropouth', cfg['dropout'])}",
        f"batch {cfg['batch_size']} x bptt {cfg['bptt']} = {cfg['tokens_per_step']} tokens/step, float32, "
        f"backend {cfg['backend']}, {cfg['threads']} threads; medians of {cfg['steps']} steps "
        f"after {cfg['warmup']} warmup",
        f"processor {r['processor']}; numpy {r['numpy']}, BLAS: "
        f"{'; '.join(r['blas']) or 'unknown (no threadpoolctl)'}",
        "",
        f"{'phase':34s} {'ms/step':>9s} {'share':>7s}",
        "-" * 52,
    ]
    total = r["phase_sum_ms"] or 1e-12
    for key, label in PHASES:
        ms = r["phases"][key]
        label = label.format(opt=opt_name, layers="blocks" if is_transformer(cfg) else "LSTM")
        lines.append(f"{label:34s} {ms:9.2f} {100 * ms / total:6.1f}%")
    lines.append("-" * 52)
    lines.append(f"{'sum of phases':34s} {r['phase_sum_ms']:9.2f} {100.0:6.1f}%")
    off = r["phase_sum_ms"] / r["step_ms"] - 1
    lines.append(f"{'full step (timed on its own)':34s} {r['step_ms']:9.2f}   phases {off:+.0%} vs full")
    if abs(off) > 0.15:
        lines.append("WARNING: the phase sum and the full step differ by more than 15% "
                     "(a busy machine, or a phase the model's timer does not mark)")
    lines.append("")
    lines.append(f"mytorch          {r['tokens_per_s']:10,.0f} tokens/s  ({r['step_ms']:.2f} ms/step, "
                 f"{r['total_s']:.2f} s for {cfg['steps']} steps)")
    on = ", ".join(k for k, v in r["fast"].items() if v) or "none"
    lines.append(f"mytorch, plain   {r['plain_tokens_per_s']:10,.0f} tokens/s  (every fast-tier piece off, "
                 f"MYTORCH_FAST=0; the default, with {on} on, is {r['fast_speedup']:.2f}x it)")
    for name, tps in r["variants_tokens_per_s"].items():
        if name.startswith("no "):
            piece = name[3:]
            lines.append(f"  without {piece:8s} {tps:10,.0f} tokens/s  (MYTORCH_FAST_{piece.upper()}=0: "
                         f"the piece is worth {r['tokens_per_s'] / tps:.2f}x)")
        elif name == "full softmax":
            lines.append(f"  full softmax     {tps:10,.0f} tokens/s  (the same model, --adaptive none: the "
                         f"adaptive softmax is worth {r['tokens_per_s'] / tps:.2f}x)")
    N, D, V = cfg["tokens_per_step"], sizes[-1], cfg["vocab"]
    lines.append(f"float32 GEMM     {r['gemm_gflops']:10.1f} GFLOP/s   (best of {cfg['gemm_reps']}, median "
                 f"{r['gemm_gflops_median']:.1f}; ({N}, {D}) x ({D}, {V}))")
    lines.append(f"memory bandwidth {r['bandwidth_gbs']:10.1f} GB/s      (a += b over 64 MB float32, "
                 f"best of {cfg['gemm_reps']})")
    lines.append(f"products floor   {r['gemm_floor_tokens_per_s']:10,.0f} tokens/s  (matrix products "
                 f"{r['matmul_flops_per_token'] / 1e6:.2f} MFLOP/token at the GEMM rate)")
    lines.append(f"floor            {r['floor_tokens_per_s']:10,.0f} tokens/s  (the products, and "
                 f"{opt_name}'s least traffic {r['optimizer_mb']:.0f} MB/step for "
                 f"{r['n_params'] / 1e6:.2f} M parameters at that bandwidth); "
                 f"reached {r['floor_fraction']:.2f} of it")
    tr = r["torch"]
    if tr is None:
        lines.append(f"PyTorch          {'n/a':>10s}           {r['torch_note']}; ratio n/a")
    else:
        names = TORCH_NAMES
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
                          fastest=tr["fastest"], names={k: TORCH_NAMES[k] for k in tr["tokens_per_s"]},
                          tokens_per_s={k: rnd(v, 1) for k, v in tr["tokens_per_s"].items()},
                          step_ms={k: rnd(v) for k, v in tr["step_ms"].items()},
                          ratio={k: rnd(r["tokens_per_s"] / v) for k, v in tr["tokens_per_s"].items()})
    config = {k: cfg[k] for k in ("preset", "model", "vocab", "emsize", "nhid", "nhead", "nlayers", "tied",
                                  "dropout", "dropouth", "batch_size", "bptt", "tokens_per_step", "optimizer",
                                  "lr", "clip", "wdecay", "steps", "warmup", "threads", "seed", "dtype",
                                  "gemm_reps") if k in cfg}          # the LSTM's keys or the Transformer's
    return dict(
        tokens_per_s=rnd(r["tokens_per_s"], 1),
        plain_tokens_per_s=rnd(r["plain_tokens_per_s"], 1),
        fast_speedup=rnd(r["fast_speedup"]),
        fast=r["fast"],
        variants_tokens_per_s={k: rnd(v, 1) for k, v in r["variants_tokens_per_s"].items()},
        processor=r["processor"],
        torch_tokens_per_s=rnd(r["torch_tokens_per_s"], 1),
        ratio=rnd(r["ratio"]),
        gemm_gflops=rnd(r["gemm_gflops"], 2),
        floor_tokens_per_s=rnd(r["floor_tokens_per_s"], 1),
        floor_fraction=rnd(r["floor_fraction"], 4),
        gemm_floor_tokens_per_s=rnd(r["gemm_floor_tokens_per_s"], 1),
        bandwidth_gbs=rnd(r["bandwidth_gbs"], 2),
        optimizer_mb=rnd(r["optimizer_mb"], 1),
        n_params=r["n_params"],
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

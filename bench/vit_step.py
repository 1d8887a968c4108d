"""Time the Vision Transformer's training step: mytorch beside the same ViT in torch.nn, in one run.

    python -m bench.vit_step                          # the vit preset, batch 128, 20 steps each
    python -m bench.vit_step --steps 40 --no-torch    # mytorch alone (the default and the plain tier)

The variants take turns in --rounds rounds, each a block of --warmup untimed then --steps / --rounds
timed steps, on the same uint8 batch of random images, so a busy moment of the machine falls on all
alike and their ratios hold. Blocks, not single steps in turn: one library's idle threads (OpenBLAS's,
torch's OpenMP pool) spin for a while after its step and would slow the other's next step (turn by
turn, torch.nn measured 664 img/s here against 1,100 on its own):

    mytorch          app.step.train_step on the model train.py builds (models.ViT of fast-tier blocks),
                     through mytorch.fast.batch_split (the batch's rows on every core)
    mytorch no split the same with MYTORCH_FAST_SPLIT=0: the block's fast twins, on one core
    mytorch plain    the same with MYTORCH_FAST=0: the plain tier alone, on one core
    torch.nn         bench.torch_vit: nn.TransformerEncoder (pre-LN, GELU tanh), eager, AdamW,
                     torch.set_num_threads(--threads); skipped without torch

A step is zero_grad, forward, cross-entropy, backward, clip, AdamW: img/s = batch / median step.
The last line is one JSON object for other tools.
"""
import json
import os
import statistics
import sys
import time

from .config import Parser  # (puts the repository root on sys.path)

import numpy as np  # noqa: E402

from app.tasks.vision import PRESETS, build_model  # noqa: E402
from models.vit import FASHION_MEAN, FASHION_STD  # noqa: E402
from mytorch import fast  # noqa: E402

from . import torch_vit  # noqa: E402
from .timing import fast_tier_step, processor_name  # noqa: E402


def parse_args(argv=None):
    p = Parser(prog="python -m bench.vit_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="vit", choices=sorted(PRESETS),
                   help="the ViT recipe (app.tasks.vision)")
    p.add_argument("--batch_size", "--batch-size", type=int, help="images per step (default: the preset's)")
    p.add_argument("--steps", type=int, default=30, help="timed steps of each variant, over all rounds")
    p.add_argument("--rounds", type=int, default=3, help="blocks of steps per variant, taken in turn")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each block")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--no-torch", action="store_true", help="do not time torch.nn")
    p.add_argument("--no-plain", action="store_true", help="do not time the plain tier and the no-split step")
    return p.parse_args(argv)


def mytorch_step(cfg, settings):
    """A closure taking one mytorch step on (x, y), built under the fast-tier `settings`."""
    return fast_tier_step(lambda: build_model(cfg, seed=0), cfg, settings)


def torch_step(cfg, threads):
    import torch
    torch.set_num_threads(threads)
    model = torch_vit.build(cfg)
    opt = torch_vit.optimizer(model, cfg)

    def step(x, y):
        X = torch_vit.to_input(x, FASHION_MEAN, FASHION_STD)
        return torch_vit.step(model, opt, X, torch.from_numpy(y), cfg["clip"])
    return step


def main(argv=None):
    args = parse_args(argv)
    cfg = dict(PRESETS[args.preset])
    if args.batch_size:
        cfg["batch_size"] = args.batch_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (cfg["batch_size"], 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, cfg["batch_size"])
    steps = {"mytorch": mytorch_step(cfg, {})}
    if not args.no_plain:
        steps["mytorch no split"] = mytorch_step(cfg, {"MYTORCH_FAST_SPLIT": "0"})
        steps["mytorch plain"] = mytorch_step(cfg, {"MYTORCH_FAST": "0"})
    torch_version = None
    if not args.no_torch:
        try:
            import torch
            torch_version = torch.__version__
            steps["torch.nn"] = torch_step(cfg, args.threads)
        except ImportError:
            print("torch is not installed (pip install -e '.[bench]'): mytorch alone")
    ms = {name: [] for name in steps}
    per_round = max(1, args.steps // max(args.rounds, 1))
    for _ in range(max(args.rounds, 1)):
        for name, step in steps.items():
            for i in range(args.warmup + per_round):
                t0 = time.perf_counter()
                step(x, y)
                if i >= args.warmup:
                    ms[name].append((time.perf_counter() - t0) * 1e3)
    rate = {name: cfg["batch_size"] / statistics.median(v) * 1e3 for name, v in ms.items()}
    print(f"ViT training step ({args.preset}: patch {cfg['patch']}, d {cfg['emsize']}, {cfg['nlayers']} "
          f"blocks, batch {cfg['batch_size']}) on {processor_name()}, {len(ms['mytorch'])} steps each "
          f"in {args.rounds} rounds:")
    for name in steps:
        print(f"  {name:<16} {statistics.median(ms[name]):7.1f} ms/step  {rate[name]:8,.0f} img/s")
    ratio = rate["mytorch"] / rate["torch.nn"] if "torch.nn" in rate else None
    if ratio:
        print(f"  mytorch / torch.nn: {ratio:.2f}x")
    print(json.dumps(dict(images_per_s={k: round(v, 1) for k, v in rate.items()},
                          ratio=ratio and round(ratio, 3), processor=processor_name(), torch=torch_version,
                          threads=args.threads, batch_size=cfg["batch_size"], steps=len(ms["mytorch"]),
                          rounds=args.rounds, preset=args.preset,
                          fast=fast.settings())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time the translator: its training step beside the same model in torch.nn, and decoding with and
without the KV cache, in one run.

    python -m bench.translate_step --data ../shared/data/ding/de-en        # the translate preset
    python -m bench.translate_step --data FILE --no-torch --no-decode        # mytorch's steps alone

Training steps: the variants take turns in --rounds rounds, each a block of --warmup untimed then
--steps / --rounds timed steps, all on the same --batches real batches of the preset (dataset.pairs,
about --batch_size tokens), so a busy moment falls on all alike (bench.vit_step says why blocks):

    mytorch          app.step.train_step on the model train.py builds, through mytorch.fast.batch_split
    mytorch no split the same with MYTORCH_FAST_SPLIT=0 (one core but for BLAS)
    mytorch plain    the same with MYTORCH_FAST=0: the plain tier alone
    torch.nn         bench.torch_translate (nn.Transformer, pre-LN, eager), torch.set_num_threads(--threads)

tokens/s = the batches' target tokens / their summed median step times. Decoding: --sentences
validation sentences translated greedily and with --beams beams, with the decoder's KV caches
(models.translation_search) and without (the whole prefix re-read each step); sentences/s of each,
the median of --rounds runs taken in turn after one untimed run of each.
The model is untrained (the cost does not depend on the weights, but an untrained model's outputs run
to the length limit: --trained M.npz decodes with a trained model instead). The last line is JSON.
"""
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .config import Parser  # (puts the repository root on sys.path)

from app.tasks import translate as task  # noqa: E402
from mytorch import fast  # noqa: E402

from . import torch_translate  # noqa: E402
from .timing import fast_tier_step, processor_name  # noqa: E402


def parse_args(argv=None):
    p = Parser(prog="python -m bench.translate_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="the Ding de-en file or a TSV (default: /usr/share/trans/de-en)")
    p.add_argument("--preset", default="translate", choices=sorted(task.PRESETS), help="the recipe")
    p.add_argument("--batch_size", "--batch-size", type=int, help="tokens per batch (default: the preset's)")
    p.add_argument("--batches", type=int, default=4, help="real batches each timed step cycles through")
    p.add_argument("--steps", type=int, default=24, help="timed steps of each variant, over all rounds")
    p.add_argument("--rounds", type=int, default=3, help="blocks of steps per variant, taken in turn")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each block")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--sentences", type=int, default=128, help="validation sentences decoded")
    p.add_argument("--beams", type=int, default=4, help="the beam search's beams")
    p.add_argument("--trained", metavar="M.npz", help="decode with this trained model")
    p.add_argument("--no-torch", action="store_true", help="do not time torch.nn")
    p.add_argument("--no-plain", action="store_true", help="do not time the plain tier and the no-split step")
    p.add_argument("--no-decode", action="store_true", help="do not time decoding")
    p.add_argument("--no-train", action="store_true", help="do not time training steps")
    return p.parse_args(argv)


def mytorch_step(cfg, vocab_size, settings):
    return fast_tier_step(lambda: task.build_model(cfg, vocab_size, seed=0), cfg, settings)


def torch_step(cfg, vocab_size, threads):
    import torch
    torch.set_num_threads(threads)
    model = torch_translate.build(cfg, vocab_size)
    opt = torch_translate.optimizer(model, cfg)
    return lambda x, y: torch_translate.step(model, opt, x, y, cfg)


def time_steps(steps, batches, args):
    """{name: [median ms of batch i]} over rounds of blocks (see the module docstring)."""
    ms = {name: [[] for _ in batches] for name in steps}
    per_round = max(1, args.steps // max(args.rounds, 1))
    for _ in range(max(args.rounds, 1)):
        for name, step in steps.items():
            for i in range(args.warmup + per_round):
                k = i % len(batches)
                t0 = time.perf_counter()
                step(*batches[k])
                if i >= args.warmup:
                    ms[name][k].append((time.perf_counter() - t0) * 1e3)
    return {name: [statistics.median(v) if v else float("nan") for v in per] for name, per in ms.items()}


def time_decoding(model, sentences, beams, rounds=3):
    """{variant: sentences/s} of greedy and beam search, with and without the KV cache: the median of
    `rounds` runs each, the variants taking turns, after one untimed run of each (its first
    allocations)."""
    variants = {f"{'greedy' if b == 1 else f'beam {b}'} {'cache' if cache else 'no cache'}": (b, cache)
                for b in (1, beams) for cache in (True, False)}
    seconds = {name: [] for name in variants}
    for r in range(max(rounds, 1) + 1):
        for name, (b, cache) in variants.items():
            t0 = time.perf_counter()
            model.translate(sentences, beams=b, cache=cache)
            if r:
                seconds[name].append(time.perf_counter() - t0)
    return {name: len(sentences) / statistics.median(s) for name, s in seconds.items()}


def main(argv=None):
    args = parse_args(argv)
    cfg = dict(task.PRESETS[args.preset])
    if args.batch_size:
        cfg["batch_size"] = args.batch_size
    cfg.update(seed=1111, data=args.data, dry_run=False)
    splits = task.load_splits(args.data, cfg["langs"])
    with tempfile.TemporaryDirectory() as tmp:
        data = task.Task(cfg, Path(tmp), splits)
    V = data.subwords.vocab_size
    gen = data.loader.batches()
    batches = [next(gen) for _ in range(min(args.batches, len(data.loader)))]
    tokens = [int((y[:, 1:] != 0).sum()) for _, y in batches]
    steps = {} if args.no_train else {"mytorch": mytorch_step(cfg, V, {})}
    if not args.no_plain and not args.no_train:
        steps["mytorch no split"] = mytorch_step(cfg, V, {"MYTORCH_FAST_SPLIT": "0"})
        steps["mytorch plain"] = mytorch_step(cfg, V, {"MYTORCH_FAST": "0"})
    torch_version = None
    if not args.no_torch and not args.no_train:
        try:
            import torch
            torch_version = torch.__version__
            steps["torch.nn"] = torch_step(cfg, V, args.threads)
        except ImportError:
            print("torch is not installed (pip install -e '.[bench]'): mytorch alone")
    rate, ratio = {}, None
    if steps:
        ms = time_steps(steps, batches, args)
        rate = {name: sum(tokens) / sum(v) * 1e3 for name, v in ms.items()}
        print(f"translation training step ({args.preset}: d {cfg['emsize']}, {cfg['enc_layers']} + "
              f"{cfg['dec_layers']} blocks, {V} subwords, {len(batches)} batches of "
              f"~{sum(tokens) / len(tokens):,.0f} target tokens) on {processor_name()}:")
        for name in steps:
            mean = sum(ms[name]) / len(ms[name])
            print(f"  {name:<16} {mean:8.1f} ms/step  {rate[name]:8,.0f} target tok/s")
        ratio = rate["mytorch"] / rate["torch.nn"] if "torch.nn" in rate else None
        if ratio:
            print(f"  mytorch / torch.nn: {ratio:.2f}x")
    decode = {}
    if not args.no_decode:
        if args.trained:
            from models import load
            model = load(args.trained)
        else:
            model = data.model.eval()
        sentences = [s for s, _ in splits["valid"]["sentences"][:args.sentences]]
        decode = time_decoding(model, sentences, args.beams, args.rounds)
        which = f"trained: {args.trained}" if args.trained else "untrained"
        print(f"decoding {len(sentences)} validation sentences ({which}):")
        for name, r in decode.items():
            print(f"  {name:<18} {r:8.1f} sentences/s")
        for b in ("greedy", f"beam {args.beams}"):
            print(f"  {b}: the cache {decode[f'{b} cache'] / decode[f'{b} no cache']:.2f}x")
    print(json.dumps(dict(tokens_per_s={k: round(v, 1) for k, v in rate.items()},
                          ratio=ratio and round(ratio, 3),
                          decode_sentences_per_s={k: round(v, 2) for k, v in decode.items()},
                          processor=processor_name(), torch=torch_version, threads=args.threads,
                          batch_size=cfg["batch_size"], preset=args.preset, fast=fast.settings())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

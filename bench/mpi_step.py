"""Data-parallel training on this machine: tokens/s of N ranks x 1 BLAS thread against 1 process x N
threads, and the all-reduce's share of the step, for the language model's presets; then the ring
all-reduce cost model (bench.allreduce_model) fed with what was measured.

    python -m bench.mpi_step --data ../shared/data/hw4p1              # runs both layouts itself
    python -m bench.mpi_step --data ... --presets default --steps 30

Each layout runs `python -m bench.mpi_step --worker` (under `mpiexec -n N` for the ranks): the
trainer's own Run on the real training batches, --warmup steps untimed, then --steps timed; the
all-reduce is timed inside mytorch.communicator's reduce_step. Shapes: B the global batch, T bptt.
"""
import argparse
import json
import os
import subprocess
import sys
import time

WORKER_PRESETS = ("notebook", "default", "transformer")   # the course notebook's, ours, the GPT-style


def worker(args):
    """One layout's measurement, printed as one JSON line by rank 0."""
    from app.train_command import open_run, parse_args, resolve_config
    from mytorch import communicator
    comm = communicator.create()
    cfg = resolve_config(parse_args(["--data", args.data, "--preset", args.preset]))
    run = open_run(cfg, "/tmp/unused-bench-run", comm)
    run.start_ranks()
    spent = [0.0]
    real = comm.reduce_step

    def timed(*a):
        t0 = time.perf_counter()
        out = real(*a)
        spent[0] += time.perf_counter() - t0
        return out
    comm.reduce_step = timed
    run.loader.set_epoch(0)
    batches = run.loader.batches(0)
    for _ in range(args.warmup):
        run.train_step(*run.shard(*next(batches)))
    comm.sum([0])                                    # start the clock together
    spent[0], t0 = 0.0, time.perf_counter()
    for _ in range(args.steps):
        run.train_step(*run.shard(*next(batches)))
    comm.sum([0])
    seconds = time.perf_counter() - t0
    grads = sum(p.size for _, p, _ in run.opt.params)
    if comm.rank == 0:
        print(json.dumps(dict(preset=args.preset, ranks=comm.size, steps=args.steps, seconds=seconds,
                              tokens_per_s=args.steps * run.task.items_per_batch / seconds,
                              allreduce_ms=1e3 * spent[0] / args.steps, step_ms=1e3 * seconds / args.steps,
                              grad_bytes=4 * grads)), flush=True)


def measure(args, preset, ranks):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "bench.mpi_step", "--worker", "--data", args.data, "--preset", preset,
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), *cmd]           # each rank takes cores / ranks threads (mytorch)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.mpi_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/hw4p1")
    p.add_argument("--presets", nargs="+", default=list(WORKER_PRESETS), choices=WORKER_PRESETS)
    p.add_argument("--ranks", type=int, default=os.cpu_count() or 2, help="ranks of the MPI layout")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    from bench.allreduce_model import print_model
    from bench.timing import processor_name
    print(f"processor: {processor_name()}, {os.cpu_count()} cores; {args.steps} timed steps after "
          f"{args.warmup}")
    print(f"| preset | 1 process x {args.ranks} threads, tok/s | {args.ranks} ranks x 1 thread, tok/s "
          f"| ratio | all-reduce ms / step | share of the step | gradient MB |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets:
        one, many = measure(args, preset, 1), measure(args, preset, args.ranks)
        rows.append(many)
        print(f"| {preset} | {one['tokens_per_s']:,.0f} | {many['tokens_per_s']:,.0f} | "
              f"{many['tokens_per_s'] / one['tokens_per_s']:.2f}x | {many['allreduce_ms']:.1f} | "
              f"{many['allreduce_ms'] / many['step_ms']:.0%} | {many['grad_bytes'] / 1e6:.1f} |", flush=True)
    print()
    print_model(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

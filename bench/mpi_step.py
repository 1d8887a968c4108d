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
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER_PRESETS = ("notebook", "default", "transformer")   # the course notebook's, ours, the GPT-style


def worker(args):
    """One layout's measurement, printed as one JSON line by rank 0."""
    from app.train_command import open_run, parse_args, resolve_config
    from mytorch import communicator
    comm = communicator.create()
    cfg = resolve_config(parse_args(["--data", args.data, "--preset", args.preset]))
    out_dir = comm.share(tempfile.mkdtemp(prefix="mpi-bench-") if comm.rank == 0 else None)
    run = open_run(cfg, Path(out_dir), comm)            # (the evaluation's files go there)
    run.start_ranks()
    spent = {"allreduce": 0.0, "optimizer": 0.0}
    reduce_step = comm.reduce_step
    comm.reduce_step = timed(reduce_step, spent, "allreduce")
    run.opt.step = timed(run.opt.step, spent, "optimizer")
    run.loader.set_epoch(0)
    batches = run.loader.batches(0)
    for _ in range(args.warmup):
        run.train_step(*run.shard(*next(batches)))
    comm.sum([0])                                    # start the clock together
    spent.update(allreduce=0.0, optimizer=0.0)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        run.train_step(*run.shard(*next(batches)))
    comm.sum([0])
    seconds = time.perf_counter() - t0
    grads = sum(p.size for _, p, _ in run.opt.params)
    row = dict(preset=args.preset, ranks=comm.size, steps=args.steps, seconds=seconds,
               tokens_per_s=args.steps * run.task.items_per_batch / seconds,
               allreduce_ms=1e3 * spent["allreduce"] / args.steps,
               optimizer_ms=1e3 * spent["optimizer"] / args.steps, step_ms=1e3 * seconds / args.steps,
               grad_bytes=4 * grads)
    if comm.size > 1:
        row.update(reduce_parts(comm, reduce_step, [g for _, _, g in run.opt.params]))
    if args.evaluate:
        row.update(evaluation(run, comm))
    if comm.rank == 0:
        print(json.dumps(row), flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)


def timed(fn, spent, key):
    """fn, adding its seconds to spent[key]."""
    def call(*a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        spent[key] += time.perf_counter() - t0
        return out
    return call


def reduce_parts(comm, reduce_step, grads, repeats=10):
    """The all-reduce with the ranks started together (no wait for a slower rank, as inside training):
    the whole reduce_step (pack, MPI, divide, unpack) and its bare MPI Allreduce of the packed buffer
    -> {"reduce_alone_ms", "mpi_call_ms"}."""
    def bare():
        comm.comm.Allreduce(comm.MPI.IN_PLACE, comm._flat, op=comm.MPI.SUM)
    out = {}
    for key, call in (("reduce_alone_ms", lambda: reduce_step(grads, 1, 0.0)), ("mpi_call_ms", bare)):
        total = 0.0
        for _ in range(repeats):
            comm.sum([0])                                # each call starts together
            t0 = time.perf_counter()
            call()
            total += time.perf_counter() - t0
        out[key] = 1e3 * total / repeats
    return out


def evaluation(run, comm):
    """The epoch's evaluation as the trainer runs it (each rank its share, summed) and, with several
    ranks, by rank 0 alone (one rank's threads, the others waiting): {"eval_s", "eval_alone_s"}."""
    from mytorch.communicator import SingleProcess
    comm.sum([0])
    t0 = time.perf_counter()
    run.task.evaluate(1, print)
    comm.sum([0])
    out = {"eval_s": time.perf_counter() - t0}
    if comm.size > 1:
        t0 = time.perf_counter()
        if comm.rank == 0:
            run.task.comm = SingleProcess()
            run.task.evaluate(1, print)
            run.task.comm = comm
        comm.sum([0])
        out["eval_alone_s"] = time.perf_counter() - t0
    return out


def measure(args, preset, ranks, evaluate=False):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "bench.mpi_step", "--worker", "--data", args.data, "--preset", preset,
           "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--evaluate"] if evaluate else [])
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), *cmd]           # each rank takes cores / ranks threads (mytorch)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_round(rounds):
    """The (one process, ranks) pair of the round whose ratio is the median: a shared machine's noise
    moves single rounds by 10-20%."""
    order = sorted(rounds, key=lambda r: r[1]["tokens_per_s"] / r[0]["tokens_per_s"])
    return order[len(order) // 2]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.mpi_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/hw4p1")
    p.add_argument("--presets", nargs="+", default=list(WORKER_PRESETS), choices=WORKER_PRESETS)
    p.add_argument("--ranks", type=int, default=os.cpu_count() or 2, help="ranks of the MPI layout")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3,
                   help="each layout measured this many times, in turn; the table shows the round with the "
                        "median ratio, the ratio column the range (default: 3)")
    p.add_argument("--evaluate", action="store_true",
                   help="time the epoch's evaluation too: split over the ranks, and by rank 0 alone "
                        "(minutes)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--preset", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    from bench.allreduce_model import print_model
    from bench.timing import processor_name
    print(f"processor: {processor_name()}, {os.cpu_count()} cores; {args.steps} timed steps after "
          f"{args.warmup}, {args.rounds} rounds of both layouts in turn")
    print(f"| preset | 1 process x {args.ranks} threads, tok/s | {args.ranks} ranks x 1 thread, tok/s "
          f"| ratio | all-reduce ms / step (share) | optimizer ms / step (share), 1 process / ranks "
          f"| gradient MB |")
    print("|---|---|---|---|---|---|---|")
    rows, evals = [], []
    for preset in args.presets:
        rounds = [(measure(args, preset, 1), measure(args, preset, args.ranks)) for _ in range(args.rounds)]
        if args.evaluate:                               # once: an evaluation takes a minute
            evals.append((preset, measure(args, preset, 1, True), measure(args, preset, args.ranks, True)))
        ratios = sorted(m["tokens_per_s"] / o["tokens_per_s"] for o, m in rounds)
        one, many = median_round(rounds)
        rows.append(many)
        spread = f" ({ratios[0]:.2f}-{ratios[-1]:.2f})" if args.rounds > 1 else ""
        print(f"| {preset} | {one['tokens_per_s']:,.0f} | {many['tokens_per_s']:,.0f} | "
              f"{many['tokens_per_s'] / one['tokens_per_s']:.2f}x{spread} | {many['allreduce_ms']:.1f} "
              f"({many['allreduce_ms'] / many['step_ms']:.0%}) | {one['optimizer_ms']:.1f} "
              f"({one['optimizer_ms'] / one['step_ms']:.0%}) / {many['optimizer_ms']:.1f} "
              f"({many['optimizer_ms'] / many['step_ms']:.0%}) | {many['grad_bytes'] / 1e6:.1f} |",
              flush=True)
    print()
    for preset, many in zip(args.presets, rows):
        print(f"{preset}: the all-reduce alone, ranks started together: {many['reduce_alone_ms']:.1f} ms, "
              f"of which the MPI call {many['mpi_call_ms']:.1f} ms (the rest: packing, dividing, unpacking)")
    print()
    if args.evaluate:
        print(f"| preset | evaluation, 1 process x {args.ranks} threads | {args.ranks} ranks, split "
              f"| rank 0 alone, the others waiting |")
        print("|---|---|---|---|")
        for preset, one, many in evals:
            print(f"| {preset} | {one['eval_s']:.1f} s | {many['eval_s']:.1f} s | "
                  f"{many['eval_alone_s']:.1f} s |")
        print()
    print_model(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

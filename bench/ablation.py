"""The ablation of a recipe: the same training with one of its pieces switched off per row.

    python -m bench.ablation --preset awd --epochs 3 --data ../shared/data/hw4p1 --out runs/ablation
    python -m bench.ablation --out runs/ablation --table          # the table of runs already made
    python -m bench.ablation --preset awd --epochs 7 --out runs/sweep --variant light="--dropout 0.1" \
        --variant none="--dropout 0 --dropouth 0"                # any rows: a sweep instead

Each row is `python train.py --preset P --epochs E --save OUT/<row> <row's flags>`: the recipe, then
each regulariser and the adaptive softmax off in turn, and the carried state flipped (ROWS). Every row trains
for the same number of epochs (the same tokens; the cosine schedule spread over them), so the rows
compare what each piece buys at that budget. --jobs N runs N rows at once (on a GPU, whose small
kernels leave room for several; on this 2-core CPU keep 1, or the rows' times mean nothing).
The table (markdown, printed and written to OUT/ablation.md) reads each run's metrics.jsonl: the
last epoch's whole-split validation perplexity and fixture NLL, and the training seconds summed
over the epochs, beside the command of the row.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .config import PRESETS, ROOT      # bench.config puts the repository root on sys.path
# (row name, flags that switch the piece off, what is off)
ROWS = [
    ("recipe", [], "nothing: the recipe as it is"),
    ("no-dropoute", ["--dropoute", "0"], "embedding dropout"),
    ("no-wdrop", ["--wdrop", "0"], "weight dropout (DropConnect on W_hh)"),
    ("no-locked-dropout", ["--dropout", "0", "--dropouth", "0"],
     "locked dropout (inputs, between layers, output)"),
    ("no-ar", ["--alpha", "0"], "activation regularisation (AR)"),
    ("no-tar", ["--beta", "0"], "temporal activation regularisation (TAR)"),
    ("no-wdecay", ["--wdecay", "0"], "weight decay"),
    ("carry", ["--carry"], "(on) the carried state instead of fresh-state windows"),
    ("no-carry", ["--no-carry"], "the carried state (fresh-state windows instead)"),
    ("full-softmax", ["--adaptive", "none"], "the adaptive softmax (the full softmax instead)"),
]


def preset_carries(preset):
    """Whether the preset trains on a carried state: its row flips it the other way."""
    return bool(PRESETS[preset].get("carry"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--preset", default="awd", help="the recipe (a train.py preset; default: awd)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of every row (default: 3)")
    p.add_argument("--data", help="train.py --data (default: the bundled WikiText-2)")
    p.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    p.add_argument("--out", required=True, help="folder of the rows' run directories and the table")
    p.add_argument("--jobs", type=int, default=1, help="rows trained at once (default: 1)")
    p.add_argument("--rows", help="comma-separated row names to run (default: every row)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                   help="a row of your own instead of the ablation's: train.py flags over the preset "
                        "(repeatable; NAME= alone: the preset as it is)")
    p.add_argument("--extra", default="", help="more train.py flags for every row, one string "
                                               "(e.g. '--max-batches 50' for a smoke run)")
    p.add_argument("--table", action="store_true", help="only print the table of the runs in --out")
    return p.parse_args(argv)


def command(args, name, flags):
    """The train.py command line of one row, as a list."""
    cmd = [sys.executable, "train.py", "--preset", args.preset, "--epochs", str(args.epochs),
           "--save", str(Path(args.out) / name), "--no-progress", "--backend", args.backend, *flags,
           *args.extra.split()]
    return cmd + (["--data", args.data] if args.data else [])


def shown(cmd):
    """The command as a reader would type it (python, not the interpreter's path)."""
    return " ".join(["python", *cmd[1:]]).replace(" --no-progress", "")


def run_rows(args, rows):
    """Start the rows, at most --jobs at a time; each one's output goes to OUT/<row>.log."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pending, running = list(rows), []
    while pending or running:
        while pending and len(running) < args.jobs:
            name, flags, _ = pending.pop(0)
            log = open(out / f"{name}.log", "w")
            running.append((name, subprocess.Popen(command(args, name, flags), cwd=ROOT, stdout=log,
                                                   stderr=subprocess.STDOUT), log))
            print(f"started {name}", flush=True)
        time.sleep(2)
        for item in list(running):
            name, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"finished {name} (exit {proc.returncode})", flush=True)


def table(args, rows):
    """Markdown: one line per row that has metrics."""
    lines = ["| row | valid ppl (whole split) | fixture NLL | train s | epochs | command |",
             "|---|---|---|---|---|---|"]
    for name, flags, what in rows:
        path = Path(args.out) / name / "metrics.jsonl"
        if not path.exists():
            continue
        metrics = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        last = metrics[-1]
        seconds = sum(m["train_seconds"] for m in metrics)
        lines.append(f"| {what} | {last['valid_ppl']:.1f} | {last['val_nll']:.3f} | {seconds:,.0f} | "
                     f"{last['epoch']} | `{shown(command(args, name, flags))}` |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    rows = [r for r in ROWS if r[0] != ("no-carry" if not preset_carries(args.preset) else "carry")]
    if args.variant:
        rows = []
        for spec in args.variant:
            name, sep, flags = spec.partition("=")
            if not sep or not name or "/" in name:
                print(f"error: --variant {spec!r}: expected NAME=FLAGS", file=sys.stderr)
                return 2
            rows.append((name, flags.split(), f"`{flags}`" if flags else "the preset as it is"))
    if args.rows:
        wanted = args.rows.split(",")
        unknown = [w for w in wanted if w not in {r[0] for r in rows}]
        if unknown:
            print(f"error: unknown rows {', '.join(unknown)} (rows: {', '.join(r[0] for r in rows)})",
                  file=sys.stderr)
            return 2
        rows = [r for r in rows if r[0] in wanted]
    if not args.table:
        run_rows(args, rows)
    text = table(args, rows)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    (Path(args.out) / "ablation.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

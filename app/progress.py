"""What a run shows while it trains: tqdm bars or plain log lines, and the curves plot at each epoch end.

Where the output goes decides what is shown:

    stderr a terminal, no --no-progress   two tqdm bars on stderr: the whole run (its time left,
                                          evaluations included) and the current epoch (loss, lr, tok/s)
    otherwise (nohup, `> log`, CI, or     a plain line on stdout, flushed, every --log-interval batches
    --no-progress)                        and at each epoch's last batch:
        | epoch   1 |   200/3245 batches | lr 2.00e-03 | 1,234 tok/s | loss 6.4210 | run 3%, 1:02:03 left
    stdout not a terminal (`> log`)       the lines as well, even when the bars are on stderr

(img/s for the ViT.) `loss` is the mean training loss of the epoch so far. The run's time left is
the batches left at this process's training rate plus one evaluation per epoch left, each as long
as the last one measured (nothing is added before the first).
"""
import os
import sys
import time


class Progress:
    """The progress of one training run, from batch `done` of `epochs` x `batches` to the end.

    start_epoch(epoch, batch) / step(batch, loss, lr) / end_epoch() around each epoch's training,
    evaluated(seconds) after its evaluation, write(text) for any other line, close() at the end.
    quiet: no bars and no lines (the ranks of a data-parallel run but rank 0).
    """

    def __init__(self, epochs, batches, items_per_batch, done=0, bars=True, log_interval=200,
                 eval_seconds=None, stdout=None, stderr=None, unit="tok/s", quiet=False):
        self.epochs, self.batches, self.tpb, self.unit = epochs, batches, items_per_batch, unit
        self.total, self.done = epochs * batches, done
        self.out, self.err = stdout or sys.stdout, stderr or sys.stderr
        self.tqdm = _tqdm() if bars and not quiet and _terminal(self.err) else None
        self.lines = not quiet and (self.tqdm is None or not _isatty(self.out))
        self.log_interval = log_interval
        self.eval_seconds = eval_seconds              # the last evaluation's length, None before one
        self.trained, self.train_time = 0, 0.0        # batches and seconds of training in this process
        self.rate = None                              # batches per second of training, once known
        self.run_bar = self.epoch_bar = None
        if self.tqdm is not None:
            self.run_bar = self.tqdm(total=self.total, initial=done, desc="run", position=0, file=self.err,
                                     dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| "
                                     "{n_fmt}/{total_fmt} batches [{elapsed}{postfix}]")

    def start_epoch(self, epoch, batch=0):
        """Epoch `epoch` (0-based) starts or resumes at `batch`."""
        self.epoch, self.t0 = epoch, time.time()
        if self.tqdm is not None:
            self.epoch_bar = self.tqdm(total=self.batches, initial=batch, unit="batch", position=1,
                                       desc=f"epoch {epoch + 1}/{self.epochs}", leave=False, file=self.err,
                                       dynamic_ncols=True)

    def step(self, batch, loss, lr):
        """Batch number `batch` (1-based) of the epoch is done; loss: the epoch's mean so far."""
        self.done += 1
        self.trained += 1
        now = time.time()
        self.rate = rate = self.trained / max(self.train_time + now - self.t0, 1e-9)
        left = self.time_left(rate)
        if self.epoch_bar is not None:
            self.epoch_bar.set_postfix_str(f"loss {loss:.3f}, lr {lr:.2e}, "
                                           f"{rate * self.tpb:,.0f} {self.unit}",
                                           refresh=False)
            self.epoch_bar.update()
            self.run_bar.set_postfix_str(f"{_clock(left)} left", refresh=False)
            self.run_bar.update()
        if self.lines and (batch == self.batches or self.log_interval and batch % self.log_interval == 0):
            width = len(str(self.batches))
            self.write(f"| epoch {self.epoch + 1:3d} | {batch:{width}d}/{self.batches} batches "
                       f"| lr {lr:.2e} | {rate * self.tpb:,.0f} {self.unit} | loss {loss:.4f} "
                       f"| run {100 * self.done / max(self.total, 1):.0f}%, {_clock(left)} left")

    def time_left(self, rate):
        """Seconds to the end of the run: the batches left at `rate`, and the evaluations left."""
        evals = self.epochs - self.epoch
        return (self.total - self.done) / max(rate, 1e-9) + evals * (self.eval_seconds or 0.0)

    def end_epoch(self):
        """The epoch's training is done (its evaluation follows)."""
        self.train_time += time.time() - self.t0
        if self.epoch_bar is not None:
            self.epoch_bar.refresh()                  # its last state drawn once, however fast the epoch
            self.epoch_bar.close()
            self.epoch_bar = None
            self.run_bar.set_postfix_str(f"evaluating epoch {self.epoch + 1}")

    def evaluated(self, seconds):
        """The epoch's evaluation took `seconds` (the estimate for the evaluations left)."""
        self.eval_seconds = seconds
        if self.run_bar is not None and self.rate:
            left = self.time_left(self.rate) - self.eval_seconds          # this epoch's is done
            self.run_bar.set_postfix_str(f"{_clock(left)} left" if self.done < self.total else "done")

    def write(self, text, err=False):
        """Print a line (stdout, or stderr) without breaking the bars; flushed."""
        file = self.err if err else self.out
        if self.tqdm is not None:
            self.tqdm.write(text, file=file)
        else:
            print(text, file=file)
        file.flush()

    def close(self):
        for bar in (self.epoch_bar, self.run_bar):
            if bar is not None:
                bar.close()
        self.epoch_bar = self.run_bar = None


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):     # no isatty, or closed
        return False


def _terminal(stream):
    """A terminal a bar can be drawn on (a pseudo-terminal of width 0, as `script` makes, is not)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):
        return False


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:                      # an install without it (pip install -e . brings it)
        return None
    return tqdm


def _clock(seconds):
    """'1:02:03' (or '2:03' under an hour)."""
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def plot_curves(metrics, path, left, ylabel, right=(), rlabel=None):
    """curves.png: per epoch, the metrics' keys of `left` [(key, label)] on the left axis (ylabel) and
    of `right` on a second axis (rlabel); a warning, not a crash, without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"\nwarning: matplotlib is not installed (pip install -e .): {path} not written",
              file=sys.stderr)
        return
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = []
    for (key, label), marker in zip(left, "os^vD"):
        lines += ax.plot(epochs, [m[key] for m in metrics], marker + "-", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if right:
        ax2 = ax.twinx()
        for (key, label), marker in zip(right, "Dv^so"):
            lines += ax2.plot(epochs, [m[key] for m in metrics], marker + "--", color="C3", label=label)
        ax2.set_ylabel(rlabel)
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

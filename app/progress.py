"""What a run shows while it trains: a one-line progress bar, and the curves plot at each epoch end."""
import os
import sys
import time


class Progress:
    """A one-line progress bar on stderr: batches, loss, lr, tokens/s and time left."""

    def __init__(self, total, tokens_per_batch, label, start=0, enabled=True):
        self.total, self.tpb, self.label, self.n = total, tokens_per_batch, label, start
        self.start_n, self.t0, self.last = start, time.time(), 0.0
        self.enabled = enabled and sys.stderr.isatty() or os.environ.get("MYTORCH_PROGRESS") == "1"

    def update(self, loss, lr):
        self.n += 1
        now = time.time()
        if not self.enabled or (now - self.last < 0.5 and self.n < self.total):
            return
        self.last = now
        rate = (self.n - self.start_n) / max(now - self.t0, 1e-9)
        left = (self.total - self.n) / max(rate, 1e-9)
        width = 24
        fill = int(width * self.n / max(self.total, 1))
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {self.n}/{self.total} "
                         f"loss {loss:.3f} lr {lr:.2e} {rate * self.tpb:,.0f} tok/s "
                         f"{int(left // 60)}:{int(left % 60):02d} left ")
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def plot_curves(metrics, path):
    """curves.png: train loss and validation NLL per epoch (a warning, not a crash, without matplotlib)."""
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
    ax.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="train loss (mean over epoch)")
    ax.plot(epochs, [m["val_nll"] for m in metrics], "s-", label="validation NLL (fixtures)")
    ax.plot(epochs, [m["valid_nll"] for m in metrics], "^-", label="validation NLL (whole split)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per word")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

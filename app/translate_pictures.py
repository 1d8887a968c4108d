"""The translator's picture: the last decoder block's cross-attention, target pieces (rows) over source
pieces (columns), for a few sentences side by side. One PNG (matplotlib, a dependency of the package)."""


def attention_png(examples, path):
    """examples: [(source pieces (S,), target pieces (T,), weights (T, S))] -> path (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(examples), figsize=(5.2 * len(examples), 5.2), squeeze=False)
    for ax, (src, tgt, A) in zip(axes[0], examples):
        ax.imshow(A, cmap="Greys", vmin=0, vmax=max(float(A.max()), 1e-6), aspect="auto")
        ax.set_xticks(range(len(src)), src, rotation=70, ha="right", fontsize=8)
        ax.set_yticks(range(len(tgt)), tgt, fontsize=8)
        ax.set_xlabel("source (German subwords)")
        ax.set_ylabel("translation, each piece as it is predicted")
    fig.suptitle("Cross-attention of the last decoder block, mean over heads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The Vision Transformer's pictures: a confusion matrix, the misclassified images, the class token's
attention over the patches. Each writes one PNG (matplotlib, a dependency of the package).

Shapes: N images, H x W pixels, K classes, h heads, S = 1 + P patches (the class token first),
G = sqrt(P) patches a side.
"""
import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def confusion_png(confusion, classes, path, title):
    """confusion (K, K) counts, rows the true class, columns the predicted one -> path (PNG)."""
    plt = _pyplot()
    K = len(classes)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            if confusion[i, j]:
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(K), classes, rotation=45, ha="right")
    ax.set_yticks(range(K), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def errors_png(images, true, predicted, probs, classes, path, count=32):
    """The first `count` misclassified images (N, H, W) with their predicted and true classes -> PNG."""
    plt = _pyplot()
    wrong = np.flatnonzero(predicted != true)[:count]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{classes[predicted[i]]} {probs[i, predicted[i]]:.0%}\n(true: {classes[true[i]]})",
                     fontsize=7, color="firebrick")
    fig.suptitle(f"misclassified test images: predicted (probability), true class; {len(wrong)} shown")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def attention_png(images, weights, true, predicted, classes, path):
    """What the class token reads in the last block: weights (N, h, S, S), row 0 over the P patches, the
    heads averaged, drawn over each image (N, H, W) -> PNG, the image above its map."""
    plt = _pyplot()
    N, H = len(images), images.shape[1]
    cls_row = weights[:, :, 0, 1:].mean(axis=1)                       # (N, P)
    G = int(round(np.sqrt(cls_row.shape[1])))
    maps = cls_row.reshape(N, G, G)
    fig, axes = plt.subplots(2, N, figsize=(N * 1.6, 3.6), squeeze=False)
    for k in range(N):
        axes[0, k].imshow(images[k], cmap="gray", vmin=0, vmax=255)
        axes[0, k].set_title(f"{classes[predicted[k]]}" + ("" if predicted[k] == true[k] else
                                                           f"\n(true: {classes[true[k]]})"), fontsize=7)
        axes[1, k].imshow(images[k], cmap="gray", vmin=0, vmax=255)
        axes[1, k].imshow(maps[k], cmap="inferno", alpha=0.65, extent=(-0.5, H - 0.5, H - 0.5, -0.5),
                          interpolation="nearest")
        for ax in axes[:, k]:
            ax.axis("off")
    fig.suptitle("the class token's attention over the patches (last block, heads averaged)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

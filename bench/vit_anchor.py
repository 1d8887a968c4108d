"""The accuracy anchor: the same ViT in torch.nn, trained for the same minutes on the same batches.

    python -m bench.vit_anchor --minutes 27 --data ../shared/data/fashion-mnist

What is the same as `python train.py --task vit` (app.tasks.vision): the model's sizes (bench.torch_vit),
the training images and their order and augmentation (dataset.images.ImageLoader, the same seed),
AdamW with the preset's learning rate, weight decay, clipping and linear warmup over --lr-warmup
batches. The schedule differs only where a time budget must: after the warmup the learning rate
follows the cosine over the *minutes* (lr = peak (1 + cos(pi t / budget)) / 2 at t seconds of
training), and training stops when they are spent. Then the validation and test accuracy are printed,
as they are and with test-time augmentation (the test images read once, at the end).
torch.set_num_threads(--threads) (default: every core).

The last line is one JSON object (minutes, epochs, images_per_s, valid_acc, test_acc, their _tta twins,
processor).
"""
import json
import os
import sys

from .config import Parser, UsageError  # noqa: F401  (puts the repository root on sys.path)

from app.tasks.vision import PRESETS  # noqa: E402
from dataset import fashion_mnist  # noqa: E402
from dataset.images import ImageLoader, tta_views  # noqa: E402
from models.vit import FASHION_MEAN, FASHION_STD  # noqa: E402

from . import torch_vit  # noqa: E402
from .timing import processor_name, train_for  # noqa: E402


def parse_args(argv=None):
    p = Parser(prog="python -m bench.vit_anchor", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="training budget in minutes")
    p.add_argument("--data", help="Fashion-MNIST's folder (default: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--preset", default="vit", choices=sorted(PRESETS), help="the recipe (app.tasks.vision)")
    p.add_argument("--lr", type=float, help="the peak learning rate (default: the preset's)")
    p.add_argument("--pad", type=int, help="random shifts of up to this many pixels (default: the preset's)")
    p.add_argument("--seed", type=int, default=1111, help="the batches' seed (train.py's default)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--log-every", type=int, default=100, metavar="N", help="a line every N batches")
    return p.parse_args(argv)


def accuracy(model, images, labels, torch, tta=False):
    """The share of images classified right; tta: by the mean log-probability of tta_views' ten views,
    as models.ViT.predict(images, tta=True)."""
    model.eval()
    with torch.no_grad():
        logp = 0
        for view in (tta_views(images) if tta else [images]):
            logp = logp + torch.cat([model(torch_vit.to_input(view[i:i + 1000], FASHION_MEAN, FASHION_STD))
                                     for i in range(0, len(view), 1000)]).log_softmax(1)
    model.train()
    return float((logp.argmax(1).numpy() == labels).mean())


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("error: the anchor needs PyTorch: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cfg = dict(PRESETS[args.preset])
    cfg.update({key: getattr(args, key) for key in ("lr", "pad") if getattr(args, key) is not None})
    data = fashion_mnist.load(args.data)
    loader = ImageLoader(data["train"].images, data["train"].labels, cfg["batch_size"], seed=args.seed,
                         pad=cfg["pad"], flip=cfg["flip"])
    model = torch_vit.build(cfg, seed=args.seed)
    opt = torch_vit.optimizer(model, cfg)

    def step(x, y):
        X = torch_vit.to_input(x, FASHION_MEAN, FASHION_STD)
        return torch_vit.step(model, opt, X, torch.from_numpy(y), cfg["clip"])
    _, images, trained = train_for(args.minutes, loader, opt, cfg["lr"], cfg["lr_warmup"], step, len,
                                   args.log_every, "img")
    scores = {f"{name}_acc{suffix}": accuracy(model, data[name].images, data[name].labels, torch, tta)
              for name in ("valid", "test") for tta, suffix in ((False, ""), (True, "_tta"))}
    epochs = images / len(data["train"].labels)
    rate = images / trained
    print(f"torch.nn ViT after {args.minutes:g} minutes ({epochs:.1f} epochs, {rate:,.0f} img/s): "
          f"validation accuracy {scores['valid_acc']:.2%} ({scores['valid_acc_tta']:.2%} with test-time "
          f"augmentation), test accuracy {scores['test_acc']:.2%} ({scores['test_acc_tta']:.2%})")
    print(json.dumps(dict(minutes=args.minutes, epochs=round(epochs, 2), images_per_s=round(rate, 1),
                          **scores, torch=torch.__version__, processor=processor_name(),
                          threads=args.threads, preset=args.preset, lr=cfg["lr"], pad=cfg["pad"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Use a trained Vision Transformer: score it on Fashion-MNIST, or classify image files.

    python -m app.vision evaluate --checkpoint checkpoints/vit-fashion.npz           # the 10,000 test images
    python -m app.vision evaluate --checkpoint M.npz --split valid --pictures docs/   # + the PNGs
    python -m app.vision classify --checkpoint M.npz shirt.png boot.jpg               # image files (Pillow)
    python -m app.vision classify --checkpoint M.npz t10k-images-idx3-ubyte.gz   # an IDX file's images
    python -m app.vision export runs/vit-<time>/best.npz --out checkpoints/vit-fashion   # + its card

(`mytorch-vision` once the package is installed.) evaluate prints the accuracy, each class's
accuracy and the confusion matrix (rows: the true class, columns: the predicted one); --pictures DIR
also writes confusion.png, errors.png (misclassified images) and attention.png (the class token's
attention over the patches). export writes P.npz (the model) and P.json (its card: the validation and
test accuracy of the file as written, and the correct count on the first TEST_SLICE test images, which
tests/test_vit_reference.py recomputes). classify prints each image's most likely classes: an image file
is read as grey, resized to the model's 28 x 28 if it is not (Pillow), and taken as Fashion-MNIST draws its
images, a light object on a black ground (--invert for a dark object on a light ground). --tta
(evaluate, classify) averages each image's ten views (ViT.predict(images, tta=True)); the card holds
both accuracies.
"""
import sys
from pathlib import Path

import numpy as np

from .errors import Parser, UsageError, command, prog


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.vision"), description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="{evaluate,classify,export}")
    e = sub.add_parser("evaluate", help="accuracy, per-class accuracy and the confusion matrix on a split")
    c = sub.add_parser("classify", help="the most likely classes of image files or of an IDX file's images")
    x = sub.add_parser("export", help="publish a trained ViT: P.npz and its card P.json")
    x.add_argument("model", help="the model file of a run (runs/vit-<time>/best.npz)")
    x.add_argument("--out", required=True, metavar="P", help="the prefix of P.npz and P.json")
    x.add_argument("--data", help="the folder of Fashion-MNIST's IDX files")
    for q in (e, c):
        q.add_argument("--checkpoint", required=True, help="a ViT model file (best.npz of a run, or "
                                                           "checkpoints/vit-fashion.npz)")
    e.add_argument("--data", help="the folder of Fashion-MNIST's IDX files (default: "
                                  "/usr/share/datasets/fashion-mnist)")
    e.add_argument("--split", choices=("test", "valid"), default="test",
                   help="test: the 10,000 test images; valid: the 5,000 held out of the training images")
    e.add_argument("--limit", type=int, help="score only the first N images of the split")
    e.add_argument("--pictures", metavar="DIR", help="also write confusion.png, errors.png, attention.png")
    for q in (e, c):
        q.add_argument("--tta", action="store_true",
                       help="test-time augmentation: average ten views of each image (it and its mirror, "
                            "each shifted a pixel every way)")
    c.add_argument("files", nargs="+", metavar="FILE", help="PNG/JPEG/... images, or IDX image files")
    c.add_argument("--top", type=int, default=3, help="classes shown per image")
    c.add_argument("--invert", action="store_true", help="image files show a dark object on a light ground")
    return p.parse_args(argv)


def load_vit(path):
    from models import load
    model = load(path)
    if model.config.get("model") != "vit":
        raise UsageError(f"{path} holds a {model.config.get('model', 'lstm')} model, not a ViT "
                         "(python train.py --task vit trains one)")
    return model


def confusion_matrix(true, predicted, K):
    """(K, K) int64: [i, j] = how many images of class i were predicted as j."""
    out = np.zeros((K, K), dtype=np.int64)
    np.add.at(out, (true, predicted), 1)
    return out


def format_scores(confusion, classes):
    """The accuracy, each class's accuracy and the confusion matrix, as text."""
    n = int(confusion.sum())
    correct = np.diag(confusion)
    per_class = correct / np.maximum(confusion.sum(axis=1), 1)
    width = max(map(len, classes))
    lines = [f"accuracy: {correct.sum() / n:.2%} ({int(correct.sum())} of {n} images)", "", "per class:"]
    lines += [f"  {name:<{width}}  {acc:7.2%}  ({int(confusion[k].sum())} images)"
              for k, (name, acc) in enumerate(zip(classes, per_class))]
    lines += ["", "confusion matrix (rows: true class, columns: predicted, in class order):"]
    lines += [f"  {name:<{width}} " + " ".join(f"{v:5d}" for v in row)
              for name, row in zip(classes, confusion)]
    return "\n".join(lines)


def evaluate(args):
    from dataset import fashion_mnist
    model = load_vit(args.checkpoint)
    split = fashion_mnist.load(args.data, (args.split,))[args.split]
    images, labels = split.images, split.labels
    if args.limit is not None:
        if args.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {args.limit}")
        images, labels = images[:args.limit], labels[:args.limit]
    probs = model.predict(images, tta=args.tta)
    predicted = probs.argmax(axis=1)
    confusion = confusion_matrix(labels, predicted, model.num_classes)
    views = " (test-time augmentation: ten views an image)" if args.tta else ""
    print(f"{args.checkpoint} on the {args.split} split{views}:")
    print(format_scores(confusion, model.classes))
    if args.pictures:
        from . import vision_pictures as pictures
        out = Path(args.pictures)
        out.mkdir(parents=True, exist_ok=True)
        acc = np.mean(predicted == labels)
        pictures.confusion_png(confusion, model.classes, out / "confusion.png",
                               f"ViT on Fashion-MNIST's {args.split} images: {acc:.2%}")
        pictures.errors_png(images, labels, predicted, probs, model.classes, out / "errors.png")
        show = np.arange(min(8, len(images)))
        pictures.attention_png(images[show], model.attention(images[show]), labels[show], predicted[show],
                               model.classes, out / "attention.png")
        print(f"wrote {out / 'confusion.png'}, {out / 'errors.png'}, {out / 'attention.png'}")
    return 0


def read_images(path, size, invert):
    """The images of one file -> (N, size, size) uint8: an IDX image file (every image), else an image
    file Pillow reads (one image, grey, resized to size x size if it is not)."""
    from dataset.idx import IMAGES, IDXError, parse_idx, read_bytes
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    raw = read_bytes(path)
    if raw[:4] == bytes([0, 0, 8, 3]):                 # an IDX image file (gzipped or not)
        try:
            images = parse_idx(raw, path, IMAGES)
        except IDXError as err:
            raise UsageError(str(err)) from None
        if images.shape[1:] != (size, size):
            raise UsageError(f"{path}: IDX images of {images.shape[1]} x {images.shape[2]} pixels; the model "
                             f"reads {size} x {size}")
        return images
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UsageError("reading image files needs Pillow: pip install -e '.[vision]'") from None
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise UsageError(f"{path}: neither an image Pillow can read nor an IDX image file ({err})") from None
    return (255 - a if invert else a)[None]


def classify(args):
    model = load_vit(args.checkpoint)
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    top = min(args.top, model.num_classes)
    for path in args.files:
        images = read_images(path, model.image_size, args.invert)
        probs = model.predict(images, tta=args.tta)
        for i, p in enumerate(probs):
            best = np.argsort(-p, kind="stable")[:top]
            name = path if len(images) == 1 else f"{path}[{i}]"
            print(f"{name}: " + ", ".join(f"{model.classes[k]} {p[k]:.1%}" for k in best))
    return 0


TEST_SLICE = 1000                   # the test images whose correct count the card records for the tests


def export(args):
    """P.npz, and P.json with the accuracy of the file as written (validation, test, the test slice)."""
    import json
    from dataset import fashion_mnist
    model = load_vit(args.model)
    data = fashion_mnist.load(args.data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out.with_name(out.name + ".npz"), meta=model.meta)
    model = load_vit(out.with_name(out.name + ".npz"))
    card = {"source": str(args.model), "config": model.config, "meta": model.meta, "storage": "float32"}
    for name in ("valid", "test"):
        for tta, suffix in ((False, ""), (True, "_tta")):
            predicted = model.predict(data[name].images, tta=tta).argmax(axis=1)
            confusion = confusion_matrix(data[name].labels, predicted, model.num_classes)
            card[f"{name}_acc{suffix}"] = float(np.trace(confusion) / confusion.sum())
            per_class = (np.diag(confusion) / confusion.sum(1)).tolist()
            card[f"{name}_per_class{suffix}"] = dict(zip(model.classes, per_class))
            if name == "test":
                hit = predicted[:TEST_SLICE] == data[name].labels[:TEST_SLICE]
                card.setdefault("test_slice", {"images": TEST_SLICE})[f"correct{suffix}"] = int(hit.sum())
    out.with_name(out.name + ".json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {out}.npz and {out}.json: validation accuracy {card['valid_acc']:.2%} "
          f"({card['valid_acc_tta']:.2%} with --tta), test accuracy {card['test_acc']:.2%} "
          f"({card['test_acc_tta']:.2%} with --tta)")
    return 0


def run(args):
    return {"evaluate": evaluate, "classify": classify, "export": export}[args.command](args)


def main(argv=None):
    return command(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())

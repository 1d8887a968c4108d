"""Publish a trained model: checkpoint, test-fixture predictions, generated text and a model card.

    python -m app.export runs/default-<time>/best.npz --data ../shared/data/hw4p1 \
        --out checkpoints/reference

writes, for a prefix P (here checkpoints/reference):

    P.npz                          the model file (configuration, weights, vocabulary)
    P-predictions-test.npy         (128, V) float32 scores for fixtures/prediction_test.npz
    P-generated-texts-test.txt     10-word continuations of fixtures/generation_test.npy
    P.json                         the scores measured here: fixture NLL, whole-split perplexity

Every number in P.json is recomputed from P.npz as written (float16 storage included), so
what the card says is what the file does. ``--float16`` halves the file; the card records
how much it moved the fixture NLL.
"""
import json
import sys
from pathlib import Path

import numpy as np

from .errors import Parser, command, prog


def export(model_path, data_dir, out_prefix, float16=False):
    from dataset.corpus import load_fixtures, load_hw4p1
    from fixtures import format_generation

    from models import load as load_model, save_model
    from .evaluate import fixture_nll, perplexity, stream_nll

    model = load_model(model_path)
    data = load_hw4p1(data_dir)
    fx = load_fixtures(data_dir, len(data.vocab))
    V = len(data.vocab)
    card = {"source": str(model_path), "config": model.config, "meta": model.meta}
    card["val_nll_float32"] = fixture_nll(model, fx["prediction_inp"], fx["prediction_out"])

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    target = out_prefix.with_name(out_prefix.name + ".npz")
    save_model(model, target, float16=float16, meta=model.meta, vocab=data.vocab)
    model = load_model(target)                               # score the file as written
    card["storage"] = "float16" if float16 else "float32"
    card["val_nll"] = fixture_nll(model, fx["prediction_inp"], fx["prediction_out"])
    mean_nll, n_words = stream_nll(model, data.valid, V - 2, V - 1)
    card.update(valid_nll=mean_nll, valid_ppl=perplexity(mean_nll), valid_words=n_words)

    scores = model.predict(fx["prediction_test_inp"]).astype(np.float32)
    np.save(out_prefix.with_name(out_prefix.name + "-predictions-test.npy"), scores)
    generated = model.generate(fx["generation_test"], 10)
    out_prefix.with_name(out_prefix.name + "-generated-texts-test.txt").write_text(
        format_generation(data.vocab, fx["generation_test"], generated))
    out_prefix.with_name(out_prefix.name + ".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def parse_args(argv=None):
    p = Parser(prog=prog("python -m app.export"), description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a model file (best.npz of a run)")
    p.add_argument("--data", default="../shared/data/hw4p1", help="HW4P1 directory")
    p.add_argument("--out", default="checkpoints/reference", help="output prefix")
    p.add_argument("--float16", action="store_true", help="store the weights as float16")
    return p.parse_args(argv)


def main(argv=None):
    return command(parse_args, run, argv, also=(OSError,))


def run(args):
    card = export(args.model, args.data, args.out, args.float16)
    print(json.dumps({k: card[k] for k in ("storage", "val_nll_float32", "val_nll", "valid_ppl")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m app.decode_report on the tiny corpus: the table, the files, the oracle cache, errors."""
import json

import numpy as np

from dataset.corpus import load_vocab
from models import LanguageModel
from app.decode_report import STRATEGIES, main


def _checkpoint(tmp_path, data_dir):
    vocab = load_vocab(data_dir)
    model = LanguageModel(len(vocab), emsize=6, nhid=7, nlayers=1, seed=0)
    path = tmp_path / "tiny.npz"
    model.save(path, vocab=vocab)
    return path


def test_report_writes_every_strategy_and_caches_the_oracle(tmp_path, data_dir, capsys):
    ckpt, oracle, out = _checkpoint(tmp_path, data_dir), tmp_path / "kn4.npz", tmp_path / "report"
    argv = ["--checkpoint", str(ckpt), "--data", str(data_dir), "--oracle", str(oracle), "--out", str(out),
            "--words", "6"]
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + len(STRATEGIES) + 1                      # header, rule, strategies, true text
    assert table[-1].startswith("| true text (held-out) |")
    assert oracle.is_file()
    results = json.loads((out / "report.json").read_text())
    prompts = np.load(data_dir / "fixtures" / "generation_test.npy")
    for name, fig in results.items():
        assert 0 < fig["distinct_2"] <= 1 and fig["oracle_ppl"] > 1
    default = results["default: top-p 0.85, no repeated 4-gram"]
    assert default["repeating_4gram_rows"] == 0 and default["unk_share"] == 0
    lines = (out / "greedy.txt").read_text().splitlines()
    assert len(lines) == len(prompts) and lines[0].startswith("Input | Output #0: <sos> ")
    assert len(lines[0].rsplit(" | ", 1)[1].split()) == 6
    stamp = oracle.stat().st_mtime_ns
    assert main(argv) == 0 and oracle.stat().st_mtime_ns == stamp    # loaded, not rebuilt
    capsys.readouterr()


def test_report_errors_are_one_line_and_exit_2(tmp_path, data_dir, capsys):
    ckpt = _checkpoint(tmp_path, data_dir)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[0.5, 1.5]]))
    for argv in (["--checkpoint", str(tmp_path / "missing.npz"), "--data", str(data_dir)],
                 ["--checkpoint", str(ckpt), "--data", str(data_dir), "--fixtures", str(bad)],
                 ["--checkpoint", str(ckpt), "--data", str(data_dir), "--words", "0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1

"""bench.ablation: the rows (each piece off, the carried state flipped), the commands, the table."""
import json

import pytest

from bench import ablation


def _metrics(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_table_reads_each_runs_last_epoch(tmp_path, capsys):
    _metrics(tmp_path / "recipe", [dict(epoch=1, val_nll=5.0, valid_ppl=200.0, train_seconds=100.0),
                                   dict(epoch=2, val_nll=4.5, valid_ppl=120.3, train_seconds=90.0)])
    _metrics(tmp_path / "no-wdrop", [dict(epoch=2, val_nll=4.6, valid_ppl=130.0, train_seconds=80.0)])
    assert ablation.main(["--out", str(tmp_path), "--table", "--epochs", "2"]) == 0
    text = (tmp_path / "ablation.md").read_text()
    assert text in capsys.readouterr().out              # printed and written
    lines = text.splitlines()
    assert len(lines) == 4                              # header, rule, the two rows that have metrics
    assert "| nothing: the recipe as it is | 120.3 | 4.500 | 190 | 2 |" in lines[2]
    assert "--wdrop 0" in lines[3] and "python train.py --preset awd --epochs 2" in lines[3]


def test_rows_switch_each_piece_off_and_flip_the_carry(monkeypatch):
    names = {name: flags for name, flags, _ in ablation.ROWS}
    assert names["no-dropoute"] == ["--dropoute", "0"] and names["full-softmax"] == ["--adaptive", "none"]
    args = ablation.parse_args(["--out", "x", "--preset", "awd"])
    cmd = ablation.command(args, "no-ar", names["no-ar"])
    assert cmd[1:4] == ["train.py", "--preset", "awd"] and cmd[-2:] == ["--alpha", "0"]
    assert ablation.preset_carries("awd") is False      # the awd recipe reads windows: its row is --carry
    from app.config import PRESETS
    monkeypatch.setitem(PRESETS, "awd", dict(PRESETS["awd"], carry=True))
    assert ablation.preset_carries("awd") is True


def test_unknown_rows_are_refused(tmp_path, capsys):
    assert ablation.main(["--out", str(tmp_path), "--rows", "recipe,no-such"]) == 2
    assert "unknown rows no-such" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--epoch", "--row"])
def test_no_abbreviations(flag):
    with pytest.raises(SystemExit):
        ablation.parse_args(["--out", "x", flag, "1"])


def test_variants_replace_the_rows(tmp_path, capsys):
    _metrics(tmp_path / "light", [dict(epoch=1, val_nll=4.4, valid_ppl=110.0, train_seconds=60.0)])
    assert ablation.main(["--out", str(tmp_path), "--table", "--variant", "light=--dropout 0.1",
                          "--variant", "as-is="]) == 0
    lines = (tmp_path / "ablation.md").read_text().splitlines()
    assert len(lines) == 3 and "| `--dropout 0.1` | 110.0 | 4.400 | 60 | 1 |" in lines[2]
    assert lines[2].endswith("--save " + str(tmp_path / "light") + " --backend numpy --dropout 0.1` |")
    assert ablation.main(["--out", str(tmp_path), "--table", "--variant", "nameless"]) == 2
    assert "expected NAME=FLAGS" in capsys.readouterr().err

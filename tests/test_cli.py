"""The trainer's command line as a new user meets it: --help with the preset's defaults, --preset list,
no abbreviated flags, progress (log lines off a terminal, bars on one), where runs are written,
the bundled data by default, the data's fingerprint on --resume, and the installed commands.

Runs use tests/tinydata.py's corpus and a tiny model (22 batches an epoch, under a second).
"""
import configparser
import importlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from models.checkpoint import load_npz, save_npz_atomic  # noqa: E402

MODEL = ["--emsize", "8", "--nhid", "8", "--batch_size", "4", "--bptt", "5", "--save-every", "2"]
TINY = MODEL + ["--epochs", "2", "--no-progress"]
BATCHES = 22


def one_error_line(capsys, rc, *phrases):
    out = capsys.readouterr()
    assert rc == 2, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out.err, out.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- flags and help

def help_line(text, flag):
    """The help of `flag` (its lines joined) in --help's output."""
    block = re.search(rf"^  {re.escape(flag)}\b.*?(?=^  -|\Z|^\S)", text, re.S | re.M).group(0)
    return " ".join(block.split())


@pytest.mark.parametrize("preset, nhid, bptt, epochs, tied", [
    ("default", 384, 20, 8, True), ("notebook", 128, 10, 5, False)])
def test_help_shows_the_chosen_presets_defaults(capsys, preset, nhid, bptt, epochs, tied):
    assert train.main(["--preset", preset, "--help"]) == 0
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    assert f"(defaults: --preset {preset})" in text
    assert help_line(text, "--nhid").endswith(f"(default: {nhid})")
    assert help_line(text, "--bptt").endswith(f"(default: {bptt})")
    assert help_line(text, "--epochs").endswith(f"(default: {epochs})")
    assert help_line(text, "--tied").endswith(f"(default: {tied})")
    assert "the bundled WikiText-2" in help_line(text, "--data")
    assert "--preset list" in text


def test_preset_list_describes_each_preset(capsys):
    assert train.main(["--preset", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[::2]] == list(train.PRESETS)
    assert "--nhid 384" in lines[1] and "--tied" in lines[1] and "--no-tied" in lines[3]


@pytest.mark.parametrize("flags, phrase", [
    (["--epoch", "3"], "unrecognized arguments: --epoch 3"),
    (["--no-prog"], "unrecognized arguments: --no-prog"),
    (["--dry-run", "--epochs", "2"], "--dry-run trains 3 batches of one epoch"),
    (["--dry-run", "--max-batches", "5"], "drop --epochs and --max-batches, or drop --dry-run"),
    (["--dry-run", "--resume", "runs/x"], "--dry-run starts a new run in a temporary directory; it does not "
                                          "go with --resume"),
    (["--log-interval", "-1"], "--log-interval must be >= 0"),
    (["--preset", "fast"], "invalid choice: 'fast'"),
    (["--allow-other-data"], "--allow-other-data goes with --resume DIR"),
])
def test_mistaken_flags_are_one_line_and_exit_2(data_dir, tmp_path, capsys, flags, phrase):
    rc = train.main(["--data", str(data_dir), "--save", str(tmp_path / "run"), *MODEL, *flags])
    one_error_line(capsys, rc, phrase)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, argv", [
    ("predict", ["--checkpoint", "m.npz", "w1", "--wor", "3"]),
    ("generate", ["--checkpoint", "m.npz", "--prompt", "w1", "--wor", "3"]),
    ("evaluate", ["--checkpoint", "m.npz", "--data", "d", "--dat", "d"]),
    ("export", ["m.npz", "--floa"]),
    ("decode_report", ["--checkpoint", "m.npz", "--wor", "3"]),
])
def test_no_command_takes_an_abbreviated_flag(capsys, command, argv):
    rc = importlib.import_module(f"app.{command}").main(argv)
    one_error_line(capsys, rc, "unrecognized arguments: --")


# ----------------------------------------------------------------------------- progress

LOG_LINE = re.compile(r"^\| epoch +(\d+) \| +(\d+)/22 batches \| lr \d\.\d\de[-+]\d\d \| [\d,]+ tok/s "
                      r"\| loss \d+\.\d{4} \| run (\d+)%, (\d+:)?\d+:\d\d left$")


def test_log_lines_when_the_output_is_not_a_terminal(data_dir, tmp_path):
    argv = [sys.executable, "train.py", "--data", str(data_dir), "--save", str(tmp_path / "run"), *MODEL,
            "--epochs", "2", "--log-interval", "10"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    logs = [LOG_LINE.match(line) for line in done.stdout.splitlines() if line.startswith("| epoch")]
    assert all(logs), done.stdout
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in logs] == [
        (1, 10, 23), (1, 20, 45), (1, 22, 50), (2, 10, 73), (2, 20, 95), (2, 22, 100)]
    assert done.stdout.count("| end of epoch") == 2 and "\r" not in done.stdout + done.stderr


def test_the_run_time_left_counts_the_evaluations(monkeypatch):
    import app.progress as progress
    now = [100.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    lines = []
    view = progress.Progress(3, 10, 640, done=10, bars=False, log_interval=5, eval_seconds=30.0)
    view.write = lines.append
    view.start_epoch(1)
    for batch in range(1, 6):
        now[0] += 2.0                                     # 2 s a batch
        view.step(batch, 5.0, 1e-3)
    # 15 batches left at 0.5 batch/s (30 s) + this epoch's and the last one's evaluations (2 x 30 s)
    assert view.time_left(view.rate) == pytest.approx(90.0)
    assert lines == ["| epoch   2 |  5/10 batches | lr 1.00e-03 | 320 tok/s | loss 5.0000 "
                     "| run 50%, 1:30 left"]


def run_in_terminal(argv, cols=120):
    """Run argv on a pseudo-terminal of `cols` columns (stdout and stderr both): (exit code, output)."""
    pty = pytest.importorskip("pty")
    import fcntl
    import struct
    import termios
    pid, fd = pty.fork()
    if pid == 0:                                         # the child: the command, on the terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, *argv])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    out = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            data = os.read(fd, 65536)
        except OSError:                                  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize("no_progress", [False, True])
def test_bars_on_a_terminal_and_log_lines_with_no_progress(data_dir, tmp_path, no_progress):
    argv = ["train.py", "--data", str(data_dir), "--save", str(tmp_path / "run"), *MODEL, "--epochs", "2",
            "--log-interval", "10", *(["--no-progress"] if no_progress else [])]
    rc, out = run_in_terminal(argv)
    assert rc == 0, out
    logs = [line for line in out.replace("\r", "\n").splitlines() if LOG_LINE.match(line.strip())]
    if no_progress:
        assert len(logs) == 6 and "batches [" not in out
    else:
        assert not logs, out
        assert re.search(r"run +\d+%\|.*\| +\d+/44 batches \[[\d:]+, [\d:]+ left\]", out), out
        assert re.search(r"epoch 2/2: +\d+%\|.*\| +\d+/22 \[.*loss \d\.\d{3}, lr .*tok/s\]", out), out
        assert "44/44 batches" in out and "done]" in out
    assert out.count("| end of epoch") == 2


# ----------------------------------------------------------------------------- where runs go

def test_a_dry_run_without_save_leaves_nothing_behind(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert train.main(["--data", str(data_dir), "--dry-run", *MODEL, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "dry run: its files go to" in out and "removed at exit" in out and "nothing kept" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"] and not list((tmp_path / "tmp").iterdir())


def test_a_run_without_save_goes_to_runs_under_the_current_directory(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train.main(["--data", str(data_dir), *TINY, "--epochs", "1"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"default-\d{8}-\d{6}", run.name) and (run / "best.npz").is_file()


def test_without_data_the_bundled_corpus_is_used(data_dir, tmp_path, monkeypatch, capsys):
    import dataset.bundled
    calls = []

    def hw4p1_dir(cache_dir=None, log=print):
        calls.append(cache_dir)
        log("building the HW4P1 layout (stub)")
        return data_dir
    monkeypatch.setattr(dataset.bundled, "hw4p1_dir", hw4p1_dir)
    assert train.main(["--save", str(tmp_path / "run"), *TINY, "--epochs", "1"]) == 0
    assert calls == [None] and "building the HW4P1 layout (stub)" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(data_dir)


# ----------------------------------------------------------------------------- the data's identity

@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(["--data", str(data_dir), "--save", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    return Path(shutil.copytree(finished, tmp_path / "run"))


def other_articles(data_dir, dest):
    """A copy of data_dir with the same vocabulary but each training article reversed."""
    dest = Path(shutil.copytree(data_dir, dest))
    path = dest / "dataset" / "wiki.train.npy"
    articles = np.load(path, allow_pickle=True)
    reversed_ = np.empty(len(articles), dtype=object)
    reversed_[:] = [a[::-1].copy() for a in articles]
    np.save(path, reversed_, allow_pickle=True)
    return dest


def test_the_fingerprint_is_saved_with_the_run(finished, data_dir):
    from dataset.corpus import fingerprint, load_hw4p1
    want = fingerprint(load_hw4p1(data_dir))
    assert json.loads((finished / "config.json").read_text())["data_fingerprint"] == want
    run = json.loads(bytes(load_npz(finished / "state.npz")["__run__"]).decode())
    assert run["cfg"]["data_fingerprint"] == want


def test_resume_on_other_articles_is_refused_unless_allowed(run_copy, data_dir, tmp_path, capsys):
    other = other_articles(data_dir, tmp_path / "other")
    rc = train.main(["--resume", str(run_copy), "--data", str(other), "--epochs", "3"])
    one_error_line(capsys, rc, f"{other} holds other training data than the run was trained on",
                   "--allow-other-data")
    assert train.main(["--resume", str(run_copy), "--data", str(other), "--epochs", "3",
                       "--allow-other-data"]) == 0
    assert "warning: continuing" in capsys.readouterr().err
    from dataset.corpus import fingerprint, load_hw4p1
    saved = json.loads((run_copy / "config.json").read_text())["data_fingerprint"]
    assert saved == fingerprint(load_hw4p1(other))              # the data it now continues on


def test_resume_on_the_same_data_in_a_new_place(run_copy, data_dir, tmp_path, capsys):
    moved = Path(shutil.copytree(data_dir, tmp_path / "moved"))
    assert train.main(["--resume", str(run_copy), "--data", str(moved), "--epochs", "3"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_an_old_state_without_a_fingerprint_resumes_with_a_warning(run_copy, data_dir, capsys):
    arrays = load_npz(run_copy / "state.npz")
    run = json.loads(bytes(arrays["__run__"]).decode())
    del run["cfg"]["data_fingerprint"]
    arrays["__run__"] = np.frombuffer(json.dumps(run).encode(), dtype=np.uint8)
    save_npz_atomic(run_copy / "state.npz", arrays)
    assert train.main(["--resume", str(run_copy), "--epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert "records no data fingerprint" in err and "Traceback" not in err
    assert json.loads((run_copy / "config.json").read_text()).get("data_fingerprint")


# ----------------------------------------------------------------------------- installed commands

def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(part.strip() for part in line.split("=")) for line in lines)


def test_the_console_scripts_name_the_commands_mains():
    scripts = console_scripts()
    assert set(scripts) == {"mytorch-train", "mytorch-generate", "mytorch-predict", "mytorch-evaluate",
                            "mytorch-vision", "mytorch-translate"}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_the_trainer_names_itself_as_it_was_called(monkeypatch, capsys):
    from app import train_command
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/mytorch-train"])
    assert train_command.prog() == "mytorch-train"
    assert train_command.main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: mytorch-train")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert train_command.prog() == "python train.py"


def test_a_closed_stdout_ends_the_trainer_quietly(data_dir):
    """`python train.py ... | head`: the reader went away; no traceback, exit 128 + SIGPIPE."""
    for argv in (["--preset", "list"], ["--data", str(data_dir), "--dry-run", *MODEL]):
        proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, err
        assert "Traceback" not in err, err


@pytest.mark.skipif(shutil.which("mytorch-predict") is None, reason="the package is not installed here")
def test_the_installed_commands_run():
    for argv in (["mytorch-train", "--preset", "list"], ["mytorch-predict", "--checkpoint",
                 "checkpoints/reference.npz", "The cat", "--words", "3"]):
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


def test_the_run_lock_is_exclusive_and_removed_on_release(tmp_path):
    from app.errors import UsageError
    from app.rundir import RunLock
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(UsageError, match=rf"is in use by another training process \(pid {os.getpid()}\)"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):                                   # free again
        pass

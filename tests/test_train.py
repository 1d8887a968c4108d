"""train.py end to end on a tiny corpus: checkpoints, resuming after SIGKILL / SIGTERM / SIGINT
(during training and during the end-of-epoch evaluation), one process per run directory,
divergence, and failed saves.

Every run uses a tiny model (--emsize 8 --nhid 8 --batch_size 4 --bptt 5): 22 batches per epoch,
about half a second for two epochs. A killed run is a subprocess that pauses inside a chosen
training step (CHILD below), so the kill always lands at the same batch.
"""
import errno
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from models.checkpoint import load_npz, save_npz_atomic  # noqa: E402

TINY = ["--emsize", "8", "--nhid", "8", "--batch_size", "4", "--bptt", "5", "--epochs", "2",
        "--save-every", "2", "--no-progress"]
BATCHES = 22  # per epoch, with TINY on make_tiny_hw4p1's corpus
TIMEOUT = 60  # seconds, for any wait on a child process

# Runs train.main(argv) in a child that stops inside training step number $PAUSE_AT (counted
# from the start of this process), prints PAUSED, and waits there for a signal.
CHILD = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
import train
pause_at, steps = int(os.environ["PAUSE_AT"]), [0]
real_step = train.Run.train_step
def train_step(self, x, y):
    out = real_step(self, x, y)
    steps[0] += 1
    if steps[0] == pause_at:
        print("PAUSED", flush=True)
        deadline = time.time() + 60
        while self.stop_signal is None and time.time() < deadline:
            time.sleep(0.005)
    return out
train.Run.train_step = train_step
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """A run that was never interrupted (in-process)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    assert train.main(["--data", str(data_dir), "--save", str(out), *TINY]) == 0
    return out


# The same, but the pause is inside the end-of-epoch evaluation: a long computation that never
# looks at the signal (the handler must interrupt it).
CHILD_IN_EVALUATION = r"""
import os, sys, time
sys.path.insert(0, os.getcwd())
import train
import app.tasks.language
real_stream_nll = app.tasks.language.stream_nll
def stream_nll(*args, **kwargs):
    print("PAUSED", flush=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        pass
    return real_stream_nll(*args, **kwargs)
app.tasks.language.stream_nll = stream_nll
sys.exit(train.main(sys.argv[1:]))
"""


@contextmanager
def paused_child(argv, pause_at, child=CHILD):
    """Start `child` with argv and yield (process, its stdout lines so far, the line queue) once it
    printed PAUSED; kill it on the way out if it still runs."""
    env = dict(os.environ, PAUSE_AT=str(pause_at), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", child, *argv], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)],
                              daemon=True)
    reader.start()
    out = []
    try:
        while True:
            line = lines.get(timeout=TIMEOUT)
            if line is None:
                pytest.fail(f"child ended before pausing: {''.join(out)}{proc.stderr.read()}")
            out.append(line)
            if line.strip() == "PAUSED":
                break
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=TIMEOUT)
    while True:
        line = lines.get_nowait() if not lines.empty() else None
        if line is None:
            break
        out.append(line)


def run_child(argv, pause_at, sig, child=CHILD, took=None):
    """Start `child`, wait until it pauses (at step `pause_at`), send `sig`; return (rc, stdout, stderr).
    took: a list that gets the seconds from the signal to the child's exit."""
    with paused_child(argv, pause_at, child) as (proc, out):
        start = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=TIMEOUT)
        if took is not None:
            took.append(time.monotonic() - start)
    return rc, "".join(out), proc.stderr.read()


def strip_seconds(obj):
    """obj without the timing fields (keys ending in _seconds), recursively."""
    if isinstance(obj, dict):
        return {k: strip_seconds(v) for k, v in obj.items() if not k.endswith("_seconds")}
    if isinstance(obj, list):
        return [strip_seconds(v) for v in obj]
    return obj


def assert_same_run(ours, ref):
    """Same weights, optimizer state and metrics, bit for bit (timings excepted)."""
    for name in ("best.npz", "state.npz"):
        a, b = load_npz(ours / name), load_npz(ref / name)
        assert sorted(a) == sorted(b), name
        for key in a:
            if key == "__run__":
                continue
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), f"{name}: {key} differs"
        if "__run__" in a:
            run_a, run_b = (json.loads(bytes(x["__run__"]).decode()) for x in (a, b))
            run_a["cfg"].pop("save_every"), run_b["cfg"].pop("save_every")
            assert strip_seconds(run_a) == strip_seconds(run_b)
    rows = [[strip_seconds(json.loads(line)) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (ours, ref)]
    assert len(rows[0]) == 2 and rows[0] == rows[1]
    name = "predictions-test-2.npy"
    np.testing.assert_array_equal(np.load(ours / name), np.load(ref / name))


# ----------------------------------------------------------------------------- checkpoints

def test_state_holds_everything_to_continue(reference):
    arrays = load_npz(reference / "state.npz")
    assert int(arrays["__format__"]) >= 1
    run = json.loads(bytes(arrays["__run__"]).decode())
    assert run["pos"]["epoch"] == 2 and run["pos"]["batch"] == 0 and len(run["pos"]["metrics"]) == 2
    assert run["cfg"]["nhid"] == 8 and run["opt_t"] == 2 * BATCHES
    assert run["sched"]["last_epoch"] == 2 * BATCHES and run["dropout_rngs"]
    assert any(k.startswith("opt/m/") for k in arrays) and any(k.startswith("param/") for k in arrays)
    assert not list(reference.glob(".tmp-*"))                      # no temp files left behind
    assert oct((reference / "state.npz").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_state_is_written_every_save_every_batches(data_dir, tmp_path, monkeypatch):
    saved = []
    real = train.Run.save_state
    monkeypatch.setattr(train.Run, "save_state", lambda self: saved.append(
        (self.pos["epoch"], self.pos["batch"])) or real(self))
    argv = ["--data", str(data_dir), "--save", str(tmp_path / "r"), *TINY, "--epochs", "1",
            "--save-every", "5"]
    assert train.main(argv) == 0
    assert saved == [(0, 5), (0, 10), (0, 15), (0, 20), (1, 0)]


# ----------------------------------------------------------------------------- interrupted runs

def test_sigkill_then_resume_equals_uninterrupted(data_dir, reference, tmp_path):
    exp = tmp_path / "run"
    argv = ["--data", str(data_dir), "--save", str(exp), *TINY]
    # epoch 2, batch 5: state.npz was written after batch 4; batch 5 is lost with the process
    rc, out, err = run_child(argv, BATCHES + 5, signal.SIGKILL)
    assert rc == -signal.SIGKILL, err
    run = json.loads(bytes(load_npz(exp / "state.npz")["__run__"]).decode())
    assert (run["pos"]["epoch"], run["pos"]["batch"]) == (1, 4)
    (exp / ".tmp-abc.npz").write_bytes(b"PK half")     # as a kill in the middle of a save leaves
    assert train.main(["--resume", str(exp)]) == 0
    assert not list(exp.glob(".tmp-*"))
    assert_same_run(exp, reference)


def test_only_the_writing_process_removes_temporary_files(reference, tmp_path):
    """Under mpiexec the ranks that write nothing leave the run's .tmp-* files alone on resume: one of
    them may be rank 0's config.json on its way (a race that failed a two-rank resume)."""
    import shutil
    from app.resume import resume
    from app.train_command import open_run
    from mytorch.communicator import SingleProcess
    exp = tmp_path / "run"
    shutil.copytree(reference, exp)
    for writer in (False, True):
        (exp / ".tmp-abc.txt").write_text("being written")
        resume(exp, {"epochs": 3}, lambda cfg: open_run(cfg, exp, SingleProcess()), writer=writer)
        assert (exp / ".tmp-abc.txt").exists() != writer


@pytest.mark.parametrize("sig, pause_at", [(signal.SIGTERM, BATCHES + 7), (signal.SIGINT, 3)])
def test_signal_saves_and_resume_equals_uninterrupted(data_dir, reference, tmp_path, sig, pause_at, capsys):
    exp = tmp_path / "run"
    argv = ["--data", str(data_dir), "--save", str(exp), *TINY]
    rc, out, err = run_child(argv, pause_at, sig)
    assert rc == 128 + sig, err
    assert "Traceback" not in err
    assert f"Resume with: python train.py --resume {exp}" in err
    run = json.loads(bytes(load_npz(exp / "state.npz")["__run__"]).decode())
    # the step in progress finished and was saved (an odd batch: not a --save-every point)
    assert run["pos"]["epoch"] * BATCHES + run["pos"]["batch"] == pause_at
    capsys.readouterr()
    assert train.main(["--resume", str(exp), "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert_same_run(exp, reference)


def test_a_signal_during_the_evaluation_stops_it_within_a_second(data_dir, reference, tmp_path, capsys):
    """Ctrl-C in the end-of-epoch evaluation: no wait for it to finish; the state saved is the end of
    the epoch's training, and the resumed run (which evaluates the epoch again) equals the reference."""
    exp = tmp_path / "run"
    argv = ["--data", str(data_dir), "--save", str(exp), *TINY]
    took = []
    rc, out, err = run_child(argv, 0, signal.SIGINT, child=CHILD_IN_EVALUATION, took=took)
    assert rc == 128 + signal.SIGINT, err
    assert took[0] < 2.0, f"{took[0]:.2f} s from SIGINT to exit"
    assert "Traceback" not in err and "SIGINT: stopping the evaluation and saving" in err
    assert (f"stopped at epoch 1, batch {BATCHES} (the end of its training: epoch 1 is evaluated on resume); "
            f"state saved. Resume with: python train.py --resume {exp}") in err
    run = json.loads(bytes(load_npz(exp / "state.npz")["__run__"]).decode())
    assert (run["pos"]["epoch"], run["pos"]["batch"], run["pos"]["metrics"]) == (0, BATCHES, [])
    capsys.readouterr()
    assert train.main(["--resume", str(exp), "--no-progress"]) == 0
    assert f"resuming {exp} from epoch 1, batch {BATCHES}" in capsys.readouterr().out
    assert_same_run(exp, reference)


# ----------------------------------------------------------------------------- one process per run

def test_a_second_process_is_refused_while_one_trains(data_dir, tmp_path, capsys):
    exp = tmp_path / "run"
    argv = ["--data", str(data_dir), "--save", str(exp), *TINY]
    with paused_child(argv, 1, CHILD) as (proc, out):          # before the first state.npz
        assert (exp / ".lock").read_text().strip() == str(proc.pid)
        for second in (argv, ["--resume", str(exp)]):
            rc = train.main(second)
            err = capsys.readouterr().err
            assert rc == 2 and err.count("\n") == 1, err
            assert err.startswith(f"error: {exp} is in use by another training process (pid {proc.pid})")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 128 + signal.SIGTERM
    assert not (exp / ".lock").exists()                           # removed when the process ended
    assert train.main(["--resume", str(exp)]) == 0                # and the directory is free again
    assert not (exp / ".lock").exists()


def test_a_lock_left_by_a_killed_process_is_taken_over(data_dir, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                                   # a pid that is no longer running
    exp = tmp_path / "run"
    exp.mkdir()
    (exp / ".lock").write_text(f"{dead.pid}\n")
    assert train.main(["--data", str(data_dir), "--save", str(exp), *TINY, "--epochs", "1"]) == 0
    assert not (exp / ".lock").exists()
    (exp / ".lock").write_text(f"{dead.pid}\n")
    assert train.main(["--resume", str(exp), "--epochs", "2"]) == 0
    assert not (exp / ".lock").exists()
    assert "in use" not in capsys.readouterr().err


def test_second_signal_quits_without_saving(data_dir, tmp_path, monkeypatch, capsys):
    exp = tmp_path / "run"
    real_step, n = train.Run.train_step, {"steps": 0}

    def step(self, x, y):
        out = real_step(self, x, y)
        n["steps"] += 1
        if n["steps"] == 5:
            handler = signal.getsignal(signal.SIGTERM)   # train.main's handler
            handler(signal.SIGTERM, None)                # the first: stop after this step
            handler(signal.SIGTERM, None)                # the second: quit at once
        return out
    monkeypatch.setattr(train.Run, "train_step", step)
    handler_before = signal.getsignal(signal.SIGTERM)
    rc = train.main(["--data", str(data_dir), "--save", str(exp), *TINY])
    assert signal.getsignal(signal.SIGTERM) is handler_before          # main puts the handlers back
    err = capsys.readouterr().err
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err
    assert "quit without saving; the previous checkpoint" in err and f"--resume {exp}" in err
    run = json.loads(bytes(load_npz(exp / "state.npz")["__run__"]).decode())
    assert (run["pos"]["epoch"], run["pos"]["batch"]) == (0, 4)   # the last --save-every checkpoint


# ----------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch, capsys, where):
    from mytorch import optim
    import models.base as lm
    calls = {"n": 0}
    if where == "loss":
        real_forward_loss = lm.LanguageModelBase.forward_loss

        def nan_loss(self, ids, targets, state=None):          # the training steps' loss only
            loss, state = real_forward_loss(self, ids, targets, state)
            calls["n"] += 1
            return (float("nan") if calls["n"] == BATCHES + 7 else loss), state
        monkeypatch.setattr(lm.LanguageModelBase, "forward_loss", nan_loss)
    else:
        real_clip = optim.clip_grad_norm

        def nan_clip(opt, max_norm):
            calls["n"] += 1
            if calls["n"] == BATCHES + 7:
                opt.params[0][2].reshape(-1)[0] = np.nan      # one gradient entry
            return real_clip(opt, max_norm)
        monkeypatch.setattr(optim, "clip_grad_norm", nan_clip)
    exp = tmp_path / "run"
    saved = {}
    real_save = train.Run.save_state
    monkeypatch.setattr(train.Run, "save_state", lambda self: real_save(self) and saved.update(
        bytes=(exp / "state.npz").read_bytes()) is None)
    rc = train.main(["--data", str(data_dir), "--save", str(exp), *TINY])
    err = capsys.readouterr().err
    assert rc == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: non-finite"), err
    assert "epoch 2, batch 7" in err and "Traceback" not in err
    assert f"{exp / 'state.npz'} (epoch 2, batch 6) is intact" in err
    assert (exp / "state.npz").read_bytes() == saved["bytes"]            # untouched since
    arrays = load_npz(exp / "state.npz")
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith(("param/", "opt/")))


# ----------------------------------------------------------------------------- failed saves

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_save_npz_atomic_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    save_npz_atomic(path, {"a": np.arange(3)})
    before = path.read_bytes()

    def half_written(f, **arrays):   # the disk fills up in the middle of the write
        f.write(b"PK\x03\x04 partial")
        _enospc()
    monkeypatch.setattr(np, "savez", half_written)
    with pytest.raises(OSError) as info:
        save_npz_atomic(path, {"a": np.arange(5)})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]       # the temp file is gone


def test_failed_saves_warn_and_training_goes_on(data_dir, tmp_path, monkeypatch, capsys):
    exp = tmp_path / "run"
    real_replace, first = os.replace, {}

    def replace(src, dst):
        if Path(dst).name in ("state.npz", "best.npz", "metrics.jsonl") and first:
            _enospc()
        real_replace(src, dst)
        if Path(dst).name == "state.npz":
            first["bytes"] = Path(dst).read_bytes()
    monkeypatch.setattr(os, "replace", replace)
    rc = train.main(["--data", str(data_dir), "--save", str(exp), *TINY])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    assert (f"warning: could not write {exp / 'state.npz'} (No space left on device); "
            f"the previous checkpoint {exp / 'state.npz'} (epoch 1, batch 2) is intact") in err
    assert f"warning: could not write {exp / 'best.npz'} (No space left on device); it was not written" in err
    assert (exp / "state.npz").read_bytes() == first["bytes"]
    assert not list(exp.glob(".tmp-*"))


def test_signal_with_a_failed_save_says_what_is_kept(data_dir, tmp_path, monkeypatch, capsys):
    exp = tmp_path / "run"
    real_step, real_replace, n = train.Run.train_step, os.replace, {"steps": 0}

    def step(self, x, y):
        n["steps"] += 1
        if n["steps"] == 5:
            self.stop_signal = signal.SIGTERM
            monkeypatch.setattr(os, "replace", lambda src, dst: _enospc())
        return real_step(self, x, y)
    monkeypatch.setattr(train.Run, "train_step", step)
    rc = train.main(["--data", str(data_dir), "--save", str(exp), *TINY])
    monkeypatch.setattr(os, "replace", real_replace)
    err = capsys.readouterr().err
    assert rc == 128 + signal.SIGTERM and "Traceback" not in err
    assert "SIGTERM: stopped at epoch 1, batch 5 but could not save; the previous checkpoint" in err
    assert "(epoch 1, batch 4) is intact: resume with: python train.py --resume" in err


# ----------------------------------------------------------------------------- carried state (--carry)

CARRY = [*TINY, "--carry"]   # dataset.streams: (L - 1) // bptt = 22 batches per epoch as well


@pytest.fixture(scope="module")
def carry_reference(data_dir, tmp_path_factory):
    """A --carry run that was never interrupted (in-process)."""
    out = tmp_path_factory.mktemp("carry") / "run"
    assert train.main(["--data", str(data_dir), "--save", str(out), *CARRY]) == 0
    return out


def _copy_state(state):
    return None if state is None else [(h.copy(), c.copy()) for h, c in state]


def test_carry_passes_each_batchs_final_state_to_the_next_at_a_scaled_lr(data_dir, tmp_path, monkeypatch):
    import app.tasks.language
    from models import LanguageModel
    from mytorch import optim
    calls = []                  # per forward_loss: (T, state given, its copy, final state, its copy)
    real_forward = LanguageModel.forward_loss

    def forward_loss(self, ids, targets, state=None):
        loss, new = real_forward(self, ids, targets, state)
        calls.append((ids.shape[1], state, _copy_state(state), new, _copy_state(new)))
        return loss, new
    steps, used = [], []        # per Run.train_step: the lrs around it; the lr inside the step
    real_run_step, real_step_state = train.Run.train_step, app.tasks.language.train_step_state

    def run_step(self, x, y):
        scheduled = self.opt.lr
        out = real_run_step(self, x, y)
        steps.append(dict(T=x.shape[1], scheduled=scheduled, after=self.opt.lr, tick=self.sched.get_lr()))
        return out
    ticked = []                 # the lr when the schedule ticks: the scheduled one, restored
    real_tick = optim.CosineAnnealingLR.step
    monkeypatch.setattr(optim.CosineAnnealingLR, "step", lambda self: ticked.append(self.optimizer.lr) or
                        real_tick(self))
    monkeypatch.setattr(LanguageModel, "forward_loss", forward_loss)
    monkeypatch.setattr(train.Run, "train_step", run_step)
    monkeypatch.setattr(app.tasks.language, "train_step_state",
                        lambda model, opt, *args, **kw: (used.append(opt.lr)
                                                         or real_step_state(model, opt, *args, **kw)))
    assert train.main(["--data", str(data_dir), "--save", str(tmp_path / "r"), *CARRY]) == 0

    assert len(calls) == len(steps) == len(used) == len(ticked) == 2 * BATCHES
    for k, (T, given, given_copy, _, _) in enumerate(calls):
        if k % BATCHES == 0:
            assert given is None, f"batch {k}: each epoch starts from a zero state"
            continue
        prev = calls[k - 1]
        assert len(given) == 2 and given[0][0].shape == (4, 8)
        for (h, c), (h0, c0), (h1, c1) in zip(given_copy, prev[4], prev[3]):
            np.testing.assert_array_equal(h, h0)               # the state batch k-1 ended in
            np.testing.assert_array_equal(c, c0)
        assert all(g is not p for pair, prev_pair in zip(given, prev[3]) for g, p in zip(pair, prev_pair))
        assert any(np.abs(h).max() > 0 for h, _ in given_copy)
    assert len({s["T"] for s in steps}) > 1                       # the lengths vary
    base, T_max = 2e-3, 2 * BATCHES                               # the default preset's lr; the schedule
    for t, (s, lr) in enumerate(zip(steps, used)):
        cosine = base * (1 + np.cos(np.pi * t / T_max)) / 2
        assert s["scheduled"] == pytest.approx(cosine, rel=1e-12, abs=1e-15)
        assert lr == pytest.approx(s["scheduled"] * s["T"] / 5, rel=1e-12, abs=1e-15)   # bptt 5
        assert ticked[t] == s["scheduled"] and s["after"] == s["tick"]   # restored, then one tick


@pytest.mark.parametrize("sig, pause_at", [(signal.SIGKILL, BATCHES + 5), (signal.SIGTERM, 7)])
def test_carry_resume_equals_uninterrupted(data_dir, carry_reference, tmp_path, sig, pause_at):
    """The carried state is saved in state.npz (carry/<k>/h, c) and restored: a resumed --carry run ends
    bit-identical to one never interrupted; the same run resumed from a zero state does not."""
    exp = tmp_path / "run"
    rc, out, err = run_child(["--data", str(data_dir), "--save", str(exp), *CARRY], pause_at, sig)
    assert rc == (-sig if sig == signal.SIGKILL else 128 + sig), err
    arrays = load_npz(exp / "state.npz")
    run = json.loads(bytes(arrays["__run__"]).decode())
    # SIGKILL: the --save-every checkpoint after batch 4 of epoch 2; SIGTERM: saved after batch 7
    assert (run["pos"]["epoch"], run["pos"]["batch"]) == ((1, 4) if sig == signal.SIGKILL else (0, 7))
    carry = sorted(k for k in arrays if k.startswith("carry/"))
    assert carry == ["carry/0/c", "carry/0/h", "carry/1/c", "carry/1/h"] and run["cfg"]["carry"] is True
    assert arrays["carry/1/h"].shape == (4, 8) and np.abs(arrays["carry/1/h"]).max() > 0
    if sig == signal.SIGKILL:                                     # the check can fail: zero the state
        zeroed = tmp_path / "zeroed"
        zeroed.mkdir()
        save_npz_atomic(zeroed / "state.npz", {k: v for k, v in arrays.items() if not k.startswith("carry/")})
        assert train.main(["--resume", str(zeroed), "--data", str(data_dir), "--no-progress"]) == 0
        a, b = load_npz(zeroed / "state.npz"), load_npz(carry_reference / "state.npz")
        assert not all(np.array_equal(a[k], b[k]) for k in a if k.startswith("param/"))
    assert train.main(["--resume", str(exp), "--no-progress"]) == 0
    assert_same_run(exp, carry_reference)
    assert not [k for k in load_npz(exp / "state.npz") if k.startswith("carry/")]   # epoch end: zeros


def test_carry_with_the_transformer_is_a_usage_error(data_dir, tmp_path, capsys):
    exp = tmp_path / "run"
    rc = train.main(["--data", str(data_dir), "--save", str(exp), "--model", "transformer", "--carry"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --carry: the Transformer has no recurrent state to carry")
    assert not exp.exists()


def test_a_run_saved_before_carry_existed_resumes_as_window_training(data_dir, tmp_path, capsys):
    exp = tmp_path / "run"
    assert train.main(["--data", str(data_dir), "--save", str(exp), *TINY, "--epochs", "1"]) == 0
    arrays = load_npz(exp / "state.npz")
    run = json.loads(bytes(arrays["__run__"]).decode())
    assert run["cfg"].pop("carry") is False
    arrays["__run__"] = np.frombuffer(json.dumps(run).encode(), dtype=np.uint8)
    save_npz_atomic(exp / "state.npz", arrays)
    capsys.readouterr()
    assert train.main(["--resume", str(exp), "--epochs", "2", "--carry"]) == 2
    assert "flags differ from the saved run: --carry True (saved: False)" in capsys.readouterr().err
    assert train.main(["--resume", str(exp), "--epochs", "2", "--no-carry"]) == 0
    run = json.loads(bytes(load_npz(exp / "state.npz")["__run__"]).decode())
    assert run["cfg"]["carry"] is False and run["pos"]["epoch"] == 2


def test_train_step_keeps_its_return_and_train_step_state_adds_a_copied_state():
    from app.step import train_step, train_step_state
    from models import LanguageModel
    from mytorch import optim
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 12, (3, 4)), rng.integers(0, 12, (3, 4))
    model = LanguageModel(12, emsize=6, nhid=5, nlayers=2, seed=0)
    opt = optim.Adam(model.parameters())
    loss, norm, state = train_step_state(model, opt, x, y)
    assert [(h.shape, c.shape) for h, c in state] == [((3, 5), (3, 5))] * 2
    given = _copy_state(state)
    out = train_step(model, opt, x, y, 0.5, state)
    assert len(out) == 2 and all(np.isfinite(out))
    for (h, c), (h0, c0) in zip(state, given):                   # the step left the given state alone
        np.testing.assert_array_equal(h, h0)
        np.testing.assert_array_equal(c, c0)
    _, _, again = train_step_state(model, opt, x, y, None, state)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(again, state))


def test_lr_warmup_ramps_the_lr_then_anneals_it(data_dir, tmp_path, monkeypatch):
    """--lr-warmup W: the lr of batch t is base (t + 1) / W for t < W, then the cosine over the rest."""
    used, real_step = [], train.Run.train_step
    monkeypatch.setattr(train.Run, "train_step", lambda self, x, y: used.append(self.opt.lr) or
                        real_step(self, x, y))
    W, T_max, base = 5, 2 * BATCHES, 2e-3                         # the default preset's lr
    assert train.main(["--data", str(data_dir), "--save", str(tmp_path / "r"), *TINY,
                       "--lr-warmup", str(W)]) == 0
    expected = [base * (t + 1) / W if t < W else base * (1 + np.cos(np.pi * (t - W) / (T_max - W))) / 2
                for t in range(T_max)]
    np.testing.assert_allclose(used, expected, rtol=1e-12, atol=1e-15)
    run = json.loads(bytes(load_npz(tmp_path / "r" / "state.npz")["__run__"]).decode())
    assert run["cfg"]["lr_warmup"] == W and run["sched"]["warmup"] == W


def test_lr_warmup_longer_than_the_run_is_refused(data_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert train.main(["--data", str(data_dir), "--save", str(out), *TINY,
                       "--lr-warmup", str(2 * BATCHES)]) == 2
    assert f"the run has {2 * BATCHES} batches in all" in capsys.readouterr().err
    assert not out.exists()
    assert train.main(["--data", str(data_dir), "--dry-run", "--lr-warmup", "1000", "--emsize", "8",
                       "--nhid", "8", "--batch_size", "4", "--bptt", "5", "--no-progress"]) == 0


def test_sos_first_leads_the_runs_windows_with_sos_and_is_saved(data_dir, tmp_path, monkeypatch):
    """--sos-first 1: every training window's first input is <sos> (V - 2), its other words and its
    targets untouched; the setting is in the run's configuration."""
    seen, real_step = [], train.Run.train_step
    monkeypatch.setattr(train.Run, "train_step", lambda self, x, y: seen.append((x, y)) or
                        real_step(self, x, y))
    assert train.main(["--data", str(data_dir), "--save", str(tmp_path / "r"), *TINY,
                       "--sos-first", "1"]) == 0
    sos = len(np.load(Path(data_dir) / "dataset" / "vocab.npy")) - 2
    x, y = seen[0]
    assert len(seen) == 2 * BATCHES
    assert all((xb[:, 0] == sos).all() for xb, _ in seen)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    run = json.loads(bytes(load_npz(tmp_path / "r" / "state.npz")["__run__"]).decode())
    assert run["cfg"]["sos_first"] == 1.0


@pytest.mark.parametrize("argv, phrase", [
    (["--sos-first", "1.5"], "--sos-first must lie in [0, 1]"),
    (["--sos-first", "0.5", "--carry"], "--sos-first needs fresh-state"),
])
def test_bad_sos_first_is_refused(data_dir, tmp_path, capsys, argv, phrase):
    assert train.main(["--data", str(data_dir), "--save", str(tmp_path / "r"), *TINY, *argv]) == 2
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "r").exists()

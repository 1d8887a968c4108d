"""Data-parallel training under `mpiexec -n 2` (mytorch.communicator, app.trainer): every task.

Two ranks with half of each batch reach the weights of one process with the whole batch (dropout
off, float32 tolerance: only the order of the sums differs); a run saved by two ranks resumes in
one process and the other way round; a rank that raises ends the job at once, naming itself; a
batch that two ranks cannot share is one clear error. CI installs the extra (mpi4py, MPICH): there
these tests must run; elsewhere they skip without it. Every mpiexec has a time limit.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fashiondata import write_fashion
from models.checkpoint import load_npz
from mytorch.communicator import SingleProcess
from test_communicator import needs_mpi
from test_translate_train import TINY as TRANSLATE, tsv  # noqa: F401  (the en-zh pairs fixture)

ROOT = Path(__file__).resolve().parent.parent
ONE = SingleProcess()
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MYTORCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
# plain SGD: Adam's first steps divide each gradient by its own size, so an entry that is 0 up to
# rounding moves by +-lr either way; SGD keeps the comparison about the gradients
STEPS = ["--epochs", "1", "--max-batches", "3", "--lr-warmup", "1", "--no-progress", "--dropout", "0",
         "--optimizer", "sgd", "--lr", "0.5"]
LSTM = ["--emsize", "8", "--nhid", "8", "--batch_size", "4", "--bptt", "5", "--dropouth", "0"]
TRANSFORMER = ["--model", "transformer", "--emsize", "8", "--nhead", "2", "--nlayers", "1",
               "--batch_size", "4", "--bptt", "6"]
VIT = ["--task", "vit", "--patch", "7", "--emsize", "8", "--nhead", "2", "--nlayers", "1", "--d-ff", "8",
       "--batch_size", "16"]


def train(ranks, *args, timeout=180):
    """python train.py args, in one process or under mpiexec -n ranks -> CompletedProcess."""
    cmd = [sys.executable, str(ROOT / "train.py"), *map(str, args)]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks), *cmd]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def weights(run_dir):
    arrays = load_npz(Path(run_dir) / "state.npz")
    return {k: v for k, v in arrays.items() if k.startswith("param/")}


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert_allclose(wa[k], wb[k], rtol=2e-4, atol=2e-6, err_msg=k)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return write_fashion(tmp_path_factory.mktemp("fashion") / "f")


@needs_mpi
@pytest.mark.parametrize("case", ["lstm", "lstm-carry", "transformer", "vit", "translate"])
def test_two_ranks_with_half_batches_reach_one_process_weights(case, data_dir, fashion,
                                                               tsv, tmp_path):  # noqa: F811
    data, flags = {"lstm": (data_dir, LSTM), "lstm-carry": (data_dir, [*LSTM, "--carry"]),
                   "transformer": (data_dir, TRANSFORMER), "vit": (fashion, VIT),
                   "translate": (tsv, [f for f in TRANSLATE if f not in ("--no-progress",)])}[case]
    flags = [*flags, *STEPS]
    if case == "translate":                     # its own --epochs and --lr-warmup: the last one given wins
        flags += ["--label-smoothing", "0"]
    one = train(1, "--data", data, "--save", tmp_path / "one", *flags)
    assert one.returncode == 0, one.stderr
    two = train(2, "--data", data, "--save", tmp_path / "two", *flags)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 processes (MPI)" in two.stdout and two.stdout.count("model: ") == 1    # rank 0 speaks
    assert two.stdout.count("| epoch   1 |") == one.stdout.count("| epoch   1 |") == 1
    same_weights(tmp_path / "one", tmp_path / "two")
    same_evaluation(tmp_path / "one", tmp_path / "two")


def same_evaluation(a, b):
    """The epoch's evaluation, split over the ranks and summed, = one process's reading all of it."""
    ra, rb = (json.loads((Path(d) / "metrics.jsonl").read_text().splitlines()[-1]) for d in (a, b))
    counts = ("_words", "_images", "_sentences")
    measured = [k for k in ra if k.startswith(("val", "valid")) and not k.endswith(counts)]
    assert measured and ra.keys() == rb.keys()
    for k in ra:
        if k in measured:
            assert_allclose(rb[k], ra[k], rtol=1e-4, err_msg=k)
        elif k.endswith(counts):
            assert rb[k] == ra[k], k                # every rank's share counted once
    name = "predictions-test-1.npy"                     # the language model's (rank 0's alone)
    if (Path(a) / name).exists():
        assert_allclose(np.load(Path(b) / name), np.load(Path(a) / name), rtol=1e-3, atol=1e-5)
    # (the translator's texts: these 3 steps translate every sentence to nothing; their order is
    # test_the_split_translations_come_back_in_order's)


@needs_mpi
def test_the_split_translations_come_back_in_order(tsv, tmp_path):  # noqa: F811
    """Each rank translates its share of the validation sentences; rank 0 gathers them in order
    (a translator that echoes its input: the file must be the sentences themselves, one per line)."""
    flags = ["--data", tsv, *[f for f in TRANSLATE if f != "--no-progress"], *STEPS]
    script = ROOT / "tests" / "mpi" / "echo_translations.py"
    files = []
    for ranks in (1, 2):
        cmd = [sys.executable, str(script), "--save", str(tmp_path / f"r{ranks}"), *map(str, flags)]
        out = subprocess.run((["mpiexec", "-n", "2"] if ranks > 1 else []) + cmd, cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stdout + out.stderr
        files.append((tmp_path / f"r{ranks}" / "valid-translations-1.txt").read_text().splitlines())
    assert files[1] == files[0] and len(set(files[0])) == len(files[0]) > 2


@needs_mpi
def test_a_run_resumes_across_process_counts(data_dir, tmp_path):
    """An epoch on 2 ranks, then one more on 1 process (and the other way round) = both on 1 process:
    state.npz (the carried state of all the streams included) does not depend on the process count."""
    flags = [*LSTM, *STEPS[2:], "--carry"]
    for first, second in ((1, 1), (2, 1), (1, 2)):
        run = tmp_path / f"r{first}{second}"
        out = train(first, "--data", data_dir, "--save", run, "--epochs", "1", *flags)
        assert out.returncode == 0, out.stderr
        out = train(second, "--resume", run, "--epochs", "2", "--no-progress")
        assert out.returncode == 0, out.stdout + out.stderr
        same_weights(tmp_path / "r11", run)


@needs_mpi
def test_a_batch_two_ranks_cannot_share_is_one_error(data_dir, tmp_path):
    out = train(2, "--data", data_dir, "--save", tmp_path / "odd", *LSTM[:-4], "--batch_size", "3",
                "--bptt", "5", "--dry-run", "--no-progress")
    assert out.returncode != 0
    assert "--batch_size 3 cannot be shared by 2 processes" in out.stderr


@needs_mpi
def test_a_rank_that_raises_ends_the_job_naming_itself(data_dir, tmp_path):
    """Rank 1 fails at its second step (tests/mpi/failing_rank.py); rank 0 would wait in the
    all-reduce forever: the job must end within seconds, non-zero, the rank named."""
    t0 = time.time()
    script = ROOT / "tests" / "mpi" / "failing_rank.py"
    out = subprocess.run(["mpiexec", "-n", "2", sys.executable, str(script),
                          "--data", str(data_dir), "--save", str(tmp_path / "f"), *LSTM, *STEPS],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "error: rank 1 of 2: RuntimeError: a test's failure at step 2" in out.stderr
    assert time.time() - t0 < 60


@needs_mpi
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_mpiexec_saves_once_and_names_the_resume(signum, data_dir, tmp_path):
    """SIGTERM, or SIGINT (Ctrl-C: MPICH's mpiexec passes it on to the ranks)."""
    run = tmp_path / "sig"
    cmd = ["mpiexec", "-n", "2", sys.executable, str(ROOT / "train.py"), "--data", str(data_dir), "--save",
           str(run), *LSTM, "--epochs", "500", "--max-batches", "4", "--no-progress", "--log-interval", "0"]
    child = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.time() + 60
        while not (run / "state.npz").exists() and time.time() < deadline:    # an epoch or more trained
            time.sleep(0.2)
        child.send_signal(signum)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 128 + signum, err
    assert err.count("state saved. Resume with:") == 1 and f"--resume {run}" in err
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    resumed = train(1, "--resume", run, "--no-progress", "--epochs", last + 2)
    assert resumed.returncode == 0, resumed.stderr


def test_a_single_process_step_is_the_plain_step_to_the_bit(data_dir, tmp_path):
    """The one-process twin changes nothing: the trainer's step = zero_grad, forward_loss,
    backward_loss, clip, optimizer step written out here, to the bit."""
    from app.train_command import open_run, parse_args, resolve_config
    from mytorch import optim
    cfg = resolve_config(parse_args(["--data", str(data_dir), *LSTM, "--dropout", "0"]))
    runs = [open_run(dict(cfg), tmp_path / f"r{i}", ONE) for i in range(2)]
    x = np.random.default_rng(0).integers(0, 20, (4, 5))
    for _ in range(2):
        runs[0].task.train_step(runs[0].opt, x, x, 0.25)
        model, opt = runs[1].model, runs[1].opt
        model.train()
        model.zero_grad()
        model.forward_loss(x, x)
        model.backward_loss()
        optim.clip_grad_norm(opt, 0.25)
        opt.step()
    for (_, p, _), (_, q, _) in zip(runs[0].model.named_parameters(), runs[1].model.named_parameters()):
        assert np.array_equal(p, q)

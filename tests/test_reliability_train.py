"""Fault injection into `thoracic train`: SIGKILL at random points, Ctrl-C, a full disk while saving a
checkpoint (a file-size limit in the child: no root needed). After each, continuing the run ends with
the same weights, optimizer state and per-epoch metrics as the uninterrupted run; a start that never
reached a checkpoint leaves no folder (or one the same command reuses under the same name).

Kill points are drawn from a seeded generator over every training and validation step and every
``os.replace`` (checkpoints, run_info.json, summary.json), just before and just after the rename.
``THORACIC_FAULT_SEED=<n>`` draws other points (the seed is in every failure message).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch import Callback

from thoracic.cli import main
from thoracic.errors import DiskFullError, Interrupted
from thoracic.training.trainer import config_for_resume, train, train_or_resume
from thoracic.config import load_config_by_name
from thoracic.training.run_folder import read_epoch_metrics

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

SRC = Path(__file__).resolve().parents[1] / "src"
SEED = int(os.environ.get("THORACIC_FAULT_SEED", "0"))


def overrides(phantom_dir: Path, out: Path, *extra: str) -> list[str]:
    """A tiny run: resnet10 at 64 px, 3 training and 2 validation batches per epoch, 2 epochs, augmentation
    and a step schedule (both must survive a resume exactly)."""
    return ["model.backbone=resnet10", "--no-model.pretrained", "data.image_size=64", f"data.root={phantom_dir}",
            "data.val_fraction=0.3", "data.num_workers=0", f"output_dir={out}", "train.batch_size=16",
            "train.max_epochs=2", "train.patience=5", "--no-train.progress_bar", "train.log_every_n_steps=1",
            "train.accelerator=cpu", "train.devices=1", "optim.lr=1e-3", "optim.lr_step_epochs=1",
            "optim.lr_gamma=0.5", "data.augment=true", "train.limit_train_batches=3", "train.limit_val_batches=2",
            *extra]


#: Child: `thoracic train` through the command line, SIGKILLed at event KILL_AT (0: never), each training
#: step slowed by SLOW seconds (to leave time for a signal).
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    kill_at, slow = int(sys.argv[1]), float(sys.argv[2])
    from thoracic.training import module
    count = [0]
    def tick():
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace = os.replace
    def replace(*args, **kwargs):
        tick()
        real_replace(*args, **kwargs)
        tick()
    os.replace = replace
    real_train, real_val = module.ThoracicModule.training_step, module.ThoracicModule.validation_step
    def training_step(self, batch, batch_idx):
        tick()
        time.sleep(slow)
        return real_train(self, batch, batch_idx)
    def validation_step(self, batch, batch_idx):
        tick()
        return real_val(self, batch, batch_idx)
    module.ThoracicModule.training_step = training_step
    module.ThoracicModule.validation_step = validation_step
    from thoracic.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def _child(argv: list[str], kill_at: int = 0, slow: float = 0.0, limit: int | None = None,
           **popen) -> subprocess.Popen:
    def limit_size() -> None:
        # Ctrl-C as in a terminal, even when the test run itself was started with SIGINT ignored
        # (`cmd &` in a script): the child must not inherit the ignore
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(kill_at), str(slow), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limit_size, **popen)


def _finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def _states(run: Path, which: str) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / f"{which}.ckpt", map_location="cpu", weights_only=True)
    states = {f"w.{k}": v for k, v in ckpt["state_dict"].items()}
    for k, state in enumerate(ckpt["optimizer_states"][0]["state"].values()):
        states.update({f"adam.{k}.{name}": value for name, value in state.items()})
    states["epoch"] = torch.tensor(ckpt["epoch"])
    states["global_step"] = torch.tensor(ckpt["global_step"])
    return states


def _assert_same_run(run: Path, reference: Path, note: str) -> None:
    leftovers = [str(p.relative_to(run)) for p in run.rglob("*") if ".tmp" in p.name]
    assert not leftovers, f"temporary files left: {leftovers} ({note})"
    for which in ("last", "best"):
        a, b = _states(run, which), _states(reference, which)
        assert a.keys() == b.keys(), note
        differing = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differing, f"{which}.ckpt differs in {differing[:4]} ({note})"
    pd.testing.assert_frame_equal(read_epoch_metrics(run), read_epoch_metrics(reference), obj=note, check_like=True)
    got, want = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    for key in ("best_epoch", "best_val_loss", "epochs_completed", "metrics"):
        assert got[key] == want[key], f"summary.json {key} ({note})"


@pytest.fixture(scope="module")
def reference(phantom_dir, phantom_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train_ref")
    return train(load_config_by_name("baseline", overrides(phantom_dir, out, "run_name=ref")))


def test_sigkill_at_random_points_then_continue_ends_like_the_uninterrupted_run(phantom_dir, reference, tmp_path):
    """Two kills at random events (steps, checkpoint writes, the summary...), each followed by what a user
    does: `train RUN` when the run has a last.ckpt, else the same command again."""
    rng = random.Random(SEED)
    points = sorted(rng.sample(range(1, 23), 2))
    cfg_args = ["train", "--config", "baseline", *overrides(phantom_dir, tmp_path), "--run-name", "killed"]
    run = tmp_path / "killed"
    for point in points:
        argv = (["train", "--resume", str(run)] if (run / "checkpoints" / "last.ckpt").is_file() else cfg_args)
        code, err = _finish(_child(argv, kill_at=point))
        assert code in (-signal.SIGKILL, 0), f"seed {SEED}, kill at event {point}: {err[-2000:]}"
    train_or_resume(load_config_by_name("baseline", overrides(phantom_dir, tmp_path, "run_name=killed")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed"]  # the same folder, never "killed-2"
    _assert_same_run(run, reference, f"seed {SEED}, kills at events {points}")


def test_ctrl_c_names_the_run_and_the_resume_command(phantom_dir, reference, tmp_path):
    run = tmp_path / "ctrl_c"
    process = _child(["train", "--config", "baseline", *overrides(phantom_dir, tmp_path), "--run-name", "ctrl_c"],
                     slow=0.5, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (run / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (run / "checkpoints" / "last.ckpt").is_file(), "no epoch finished in time"
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
    code, err = _finish(process)
    assert code == 130, err[-2000:]
    assert f"run folder {run}: checkpoints/last.ckpt holds epoch 0" in err
    assert f"resume with `thoracic train {run}`" in err
    assert "Traceback" not in err and "graceful shutdown" not in err, err[-2000:]
    train(None, resume=run)
    _assert_same_run(run, reference, "after Ctrl-C")


class CtrlCAt(Callback):
    """Sends this process a real SIGINT (what Ctrl-C does) at the start of one training batch."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def terminal_sigint():
    """SIGINT handled as Python does in a terminal, even when the test run was started with it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(phantom_dir, phantom_cache, tmp_path, terminal_sigint):
    cfg = load_config_by_name("baseline", overrides(phantom_dir, tmp_path / "runs", "run_name=early"))
    with pytest.raises(Interrupted) as error:
        train(cfg, callbacks=[CtrlCAt(epoch=0, batch=1)])
    message = str(error.value)
    assert error.value.exit_code == 130
    assert "no epoch had finished, so there is nothing to resume" in message
    assert "was removed; rerun the same command to start again" in message
    assert not (tmp_path / "runs" / "early").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back


@contextlib.contextmanager
def file_size_limit(limit: int):
    """``ulimit -f`` for this process (the soft limit only, so it can be lifted again): writes past it
    fail with EFBIG where a full disk fails with ENOSPC (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_full_disk_while_saving_keeps_last_ckpt_and_the_run_resumes(phantom_dir, reference, tmp_path, capsys):
    """A checkpoint of this model is ~60 MB: a 20 MB file-size limit makes the next save fail as a full
    disk would, after the logs and run_info.json (small) were written."""
    first = train(load_config_by_name("baseline", overrides(phantom_dir, tmp_path, "run_name=full",
                                                            "train.max_epochs=1")))
    last = first / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with file_size_limit(20_000_000):
        code = main(["train", "--resume", str(first), "train.max_epochs=2"])
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "cannot write a checkpoint or log of the run" in err and "the file-size limit of this process" in err
    assert "needs" in err and "free on the file system" in err and "Traceback" not in err
    assert f"The previous checkpoints are intact; run folder {first}: checkpoints/last.ckpt holds epoch 0" in err
    assert f"resume with `thoracic train {first}`" in err
    assert last.read_bytes() == before
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp file
    train(config_for_resume(first, ["train.max_epochs=2"]), resume=first)
    _assert_same_run(first, reference, "after a full disk")


def test_full_disk_at_the_first_checkpoint_leaves_no_folder(phantom_dir, phantom_cache, tmp_path):
    cfg = load_config_by_name("baseline", overrides(phantom_dir, tmp_path / "runs", "run_name=first"))
    with file_size_limit(20_000_000), pytest.raises(DiskFullError) as error:
        train(cfg)
    message = str(error.value)
    assert "the file-size limit of this process" in message and "needs" in message
    assert "No epoch had finished, so there is nothing to resume: the run folder" in message
    assert not (tmp_path / "runs" / "first").exists()


def test_a_diverged_run_is_flagged(phantom_dir, reference, tmp_path, caplog):
    cfg = load_config_by_name("baseline", overrides(phantom_dir, tmp_path, "run_name=lr1", "optim.lr=1",
                                                    "train.max_epochs=1", "data.augment=false"))
    with caplog.at_level(logging.WARNING, logger="thoracic.training.run_folder"):
        run = train(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["diverged"] is True and summary["divergence"], summary
    assert any("the run diverged" in r.getMessage() and "lower optim.lr" in r.getMessage() for r in caplog.records)
    assert summary["data"]["kind"] == "phantom"
    fine = json.loads((reference / "summary.json").read_text())
    assert fine["diverged"] is False and fine["divergence"] == []


# --------------------------------------------------------------------------------------------------
# Runs tied by content, one writer at a time, damaged logs
# --------------------------------------------------------------------------------------------------


def _issue_overrides(phantom_dir: Path, out: Path, *extra: str) -> list[str]:
    """The plain settings of a small run (whole epochs, no augmentation), under which epoch 1 of this phantom
    set validates worse than epoch 0."""
    return ["model.backbone=resnet10", "--no-model.pretrained", "data.image_size=64", f"data.root={phantom_dir}",
            "data.num_workers=0", f"output_dir={out}", "train.batch_size=16", "train.patience=50",
            "--no-train.progress_bar", "train.accelerator=cpu", "train.devices=1", *extra]


def test_a_moved_run_keeps_its_best_checkpoint(phantom_dir, phantom_cache, tmp_path, capsys):
    """Lightning keeps the best score only for the folder it was saved in; a moved run must not lose it
    (else the next epoch, however worse, overwrites best.ckpt while summary.json names the earlier one)."""
    first = train(load_config_by_name("baseline", _issue_overrides(phantom_dir, tmp_path / "runs", "run_name=m",
                                                                   "train.max_epochs=1")))
    moved = tmp_path / "mv" / "m"
    moved.parent.mkdir()
    first.rename(moved)
    assert main(["train", str(moved), "train.max_epochs=2"]) == 0
    err = capsys.readouterr().err
    assert "dirpath has changed" not in err and "Traceback" not in err
    epochs = read_epoch_metrics(moved)
    best_epoch = int(epochs["val_loss"].idxmin())
    best = torch.load(moved / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == best_epoch == json.loads((moved / "summary.json").read_text())["best_epoch"]
    last = torch.load(moved / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint") and "val_loss" in k)
    assert float(state["best_model_score"]) == pytest.approx(float(epochs["val_loss"].min()))
    assert state["dirpath"] == str((moved / "checkpoints").resolve())
    assert state["best_model_path"] == str((moved / "checkpoints" / "best.ckpt").resolve())


def _hold_lock(folder: Path, what: str, command: str) -> subprocess.Popen:
    """Another process holding ``folder``'s lock until it is killed."""
    code = ("import sys, time; from thoracic.safety import folder_lock\n"
            "with folder_lock(sys.argv[1], sys.argv[2], sys.argv[3]):\n"
            "    print('locked', flush=True); time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-c", code, str(folder), what, command], stdout=subprocess.PIPE,
                               text=True, env=env)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_two_resumes_of_one_run_the_second_is_refused_and_a_dead_holder_is_taken_over(reference, tmp_path, capsys):
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    argv = ["train", str(run), "train.max_epochs=3"]
    first = _child(argv, slow=1.0)
    deadline = time.monotonic() + 240
    while not (run / ".thoracic.lock").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # its holder information is written right after the lock is taken
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"run folder {run} is in use by `thoracic train {run} train.max_epochs=3` (process {first.pid}" \
        in err, err
    assert "Traceback" not in err
    first.kill()  # SIGKILL: its lock file stays, its lock does not
    first.wait()
    assert (run / ".thoracic.lock").is_file()
    assert main(argv) == 0, capsys.readouterr().err
    assert not (run / ".thoracic.lock").exists()
    assert list(read_epoch_metrics(run).index) == [0, 1, 2]


def test_a_second_experiment_into_the_same_folder_is_refused(phantom_dir, tmp_path, capsys):
    folder = tmp_path / "exp"
    folder.mkdir()
    holder = _hold_lock(folder, "experiment folder", f"thoracic experiment --out {folder}")
    try:
        assert main(["experiment", "--config", "baseline", "--seeds", "0", "--out", str(folder),
                     f"data.root={phantom_dir}", "--no-model.pretrained"]) == 2
        err = capsys.readouterr().err
        assert f"experiment folder {folder} is in use by `thoracic experiment --out {folder}` (process " \
               f"{holder.pid}" in err, err
        assert sorted(p.name for p in folder.iterdir()) == [".thoracic.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_damaged_metrics_log_is_recovered_with_a_warning(reference, tmp_path, caplog):
    """Two writers once left a log whose header has 3 columns and whose rows have many more."""
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    log_path = run / "logs" / "metrics.csv"
    lines = log_path.read_text().splitlines()
    log_path.write_text("\n".join(["epoch,step,train_loss_epoch", "0,4,17.7", *lines[1:]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="thoracic.training.run_folder"):
        epochs = read_epoch_metrics(run)
    assert list(epochs.index) == [0]
    assert any("do not have the header's 3 fields" in r.getMessage() and str(log_path) in r.getMessage()
               for r in caplog.records)
    assert main(["train", str(run), "train.max_epochs=3"]) == 0
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3
    log_path.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(Exception) as error:
        read_epoch_metrics(run)
    assert "metrics.csv" in str(error.value) and "damaged" in str(error.value)

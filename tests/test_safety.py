"""thoracic.safety: the deletion rule, space reservation, atomic writes, output folders."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import pytest

from thoracic.errors import DiskFullError, FolderInUseError, OutputPathError, UnsafeDeleteError
from thoracic.io import write_bytes_atomic
from thoracic.safety import (
    ensure_output_dir,
    folder_entries,
    format_bytes,
    is_disk_full,
    remove_owned,
    reserve_file,
)
from thoracic.training.run_folder import RUN_FILES, RUN_STUB_FILES, is_stub_run


def _tree(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(name)


def test_remove_owned_deletes_only_claimed_files_and_refuses_otherwise(tmp_path):
    run = tmp_path / "run"
    _tree(run, ["config.yaml", "run_info.json", "logs/metrics.csv", "logs/tensorboard/events.out.tfevents.1.h",
                "checkpoints/best.ckpt", "checkpoints/last.ckpt", "summary.json", "evaluation/auc_test.json",
                "evaluation/roc_test.png"])
    (run / "notes.md").write_text("mine")
    with pytest.raises(UnsafeDeleteError, match=r"1 file\(s\).*notes.md.*Nothing was deleted"):
        remove_owned(run, RUN_FILES, "run folder")
    assert len(folder_entries(run)) == 10  # nothing went
    (run / "notes.md").unlink()
    (run / "empty_of_mine").mkdir()  # an empty folder is an entry too: not claimed, so refused
    with pytest.raises(UnsafeDeleteError, match="empty_of_mine/"):
        remove_owned(run, RUN_FILES, "run folder")
    (run / "empty_of_mine").rmdir()
    removed = remove_owned(run, RUN_FILES, "run folder")
    assert len(removed) == 9 and not run.exists()


def test_links_are_entries_never_followed(tmp_path):
    outside = tmp_path / "precious"
    _tree(outside, ["a.txt", "deep/b.txt"])
    run = tmp_path / "run"
    _tree(run, ["config.yaml"])
    (run / "logs").symlink_to(outside, target_is_directory=True)
    assert "logs" in folder_entries(run) and "logs/a.txt" not in folder_entries(run)
    with pytest.raises(UnsafeDeleteError, match="logs"):
        remove_owned(run, ["config.yaml"], "run folder")
    remove_owned(run, ["config.yaml", "logs"], "run folder")  # the link itself goes, not what it points at
    assert (outside / "a.txt").is_file() and (outside / "deep" / "b.txt").is_file()


def test_a_stub_is_a_run_without_checkpoints_and_foreign_files(tmp_path):
    stub = tmp_path / "stub"
    _tree(stub, ["config.yaml", "run_info.json", "logs/metrics.csv", "logs/hparams.yaml", "checkpoints/"])
    assert is_stub_run(stub) and all(any(__import__("fnmatch").fnmatchcase(e, p) for p in RUN_STUB_FILES)
                                     for e in folder_entries(stub))
    (stub / "checkpoints" / "last.ckpt").write_text("x")
    assert not is_stub_run(stub)
    (stub / "checkpoints" / "last.ckpt").unlink()
    (stub / "thesis.txt").write_text("x")
    assert not is_stub_run(stub)


def test_reserve_file_names_the_bytes_needed_under_a_file_size_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with open(tmp_path / "big.bin", "wb") as handle, pytest.raises(DiskFullError) as error:
            reserve_file(handle, 1_000_000, "the test file", "Rerun later.")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(error.value)
    assert "the file-size limit of this process" in message and "needs 1.0 MB (1,000,000 bytes)" in message
    assert "free on the file system" in message and message.endswith("Rerun later.")
    with open(tmp_path / "ok.bin", "wb") as handle:
        reserve_file(handle, 50_000, "the test file")
    stat = os.stat(tmp_path / "ok.bin")
    assert stat.st_size == 50_000 and stat.st_blocks * 512 >= 50_000  # allocated, not a sparse hole


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old")

    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError) as error:
        write_bytes_atomic(target, b"new")
    assert is_disk_full(error.value) and target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]  # no temporary file left


def test_output_folder_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is an existing file"):
        ensure_output_dir(tmp_path / "file", "--out")
    with pytest.raises(OutputPathError, match="is a file, so no folder can be made under it"):
        ensure_output_dir(tmp_path / "file" / "sub" / "deeper", "--out")
    assert ensure_output_dir(tmp_path / "new" / "deeper", "--out").is_dir()
    assert not ensure_output_dir(tmp_path / "later", "--out", create=False).exists()


def test_format_bytes():
    assert format_bytes(999) == "999 bytes"
    assert format_bytes(491_520) == "491.5 kB (491,520 bytes)"
    assert format_bytes(7_300_000_000) == "7.3 GB (7,300,000,000 bytes)"


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------

SRC = Path(__file__).resolve().parents[1] / "src"


def _holder(folder: Path, sleep: float = 600.0):
    import subprocess
    import sys

    code = ("import sys, time; from thoracic.safety import folder_lock\n"
            "with folder_lock(sys.argv[1], 'run folder', 'thoracic train --resume x'):\n"
            f"    print('locked', flush=True); time.sleep({sleep})\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(SRC)})
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_gets_a_named_error_and_a_dead_holders_lock_is_taken_over(tmp_path):
    import json
    import socket

    from thoracic.safety import LOCK_FILE, folder_lock

    holder = _holder(tmp_path)
    try:
        with pytest.raises(FolderInUseError) as error:
            with folder_lock(tmp_path, "run folder", "thoracic evaluate x"):
                pass
        message = str(error.value)
        assert f"run folder {tmp_path} is in use by `thoracic train --resume x` (process {holder.pid} on host " \
               f"{socket.gethostname()}, since " in message and "Wait for it to finish" in message
    finally:
        holder.kill()  # SIGKILL: the file stays, the kernel drops the lock
        holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid  # stale
    with folder_lock(tmp_path, "run folder", "thoracic evaluate x"):
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid() and info["command"] == "thoracic evaluate x"
        with folder_lock(tmp_path, "run folder", "nested"):  # re-entrant within a process
            pass
        assert (tmp_path / LOCK_FILE).is_file()
    assert not (tmp_path / LOCK_FILE).exists()  # released: removed


def test_lock_files_are_not_the_users_files(tmp_path):
    from thoracic.safety import LOCK_FILE, folder_lock

    run = tmp_path / "run"
    _tree(run, ["config.yaml", "logs/metrics.csv"])
    with folder_lock(run, "run folder"):
        assert folder_entries(run) == ["config.yaml", "logs/metrics.csv"]
        remove_owned(run, RUN_STUB_FILES, "run folder", remove_folder=False)  # the lock is kept while held
        assert (run / LOCK_FILE).is_file()
    assert not any(run.iterdir())


# --------------------------------------------------------------------------------------------------
# Output folders
# --------------------------------------------------------------------------------------------------


def test_output_folder_refuses_foreign_files_records_its_own_and_their_source(tmp_path):
    import json

    from thoracic.io import write_text_atomic
    from thoracic.safety import OUTPUT_MANIFEST, OutputSource, output_folder

    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    a = OutputSource("a" * 64, "checkpoint a")
    with output_folder(out, "predict", a) as folder:
        write_text_atomic(out / "result.json", "{}")
        with pytest.raises(OutputPathError, match="mine.txt exists and was not written by thoracic"):
            write_text_atomic(out / "mine.txt", "replaced")
        assert folder.owns("result.json") and not folder.owns("mine.txt")
    assert (out / "mine.txt").read_text() == "the user's"
    manifest = json.loads((out / OUTPUT_MANIFEST).read_text())
    assert set(manifest["files"]) == {"result.json"} and manifest["files"]["result.json"]["source"] == a.id
    assert manifest["sources"][a.id]["description"] == "checkpoint a"
    # writes outside the with block are not watched; another source may replace a file (not exclusive) ...
    with output_folder(out, "evaluate", OutputSource("b" * 64, "checkpoint b")):
        write_text_atomic(out / "result.json", "{}")
    assert json.loads((out / OUTPUT_MANIFEST).read_text())["files"]["result.json"]["source"] == "b" * 64
    # ... but an exclusive folder holds one source's outputs only
    with pytest.raises(OutputPathError, match="does not mix the outputs of two models"):
        with output_folder(out, "predict", a, exclusive=True):
            pass
    # a damaged manifest is named, nothing is written
    (out / OUTPUT_MANIFEST).write_text("{")
    with pytest.raises(OutputPathError, match="thoracic_outputs.json"):
        with output_folder(out, "predict", a):
            pass


def test_output_folder_removes_temporary_files_of_killed_writes(tmp_path):
    from thoracic.safety import OutputSource, output_folder

    stale = tmp_path / ".result.json.tmp-999999999"  # no such process
    stale.write_text("half")
    live = tmp_path / f".result.json.tmp-{os.getpid()}"
    live.write_text("this process")
    with output_folder(tmp_path, "report", OutputSource("r", "report")):
        pass
    assert not stale.exists() and live.exists()

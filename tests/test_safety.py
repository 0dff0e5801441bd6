"""thoracic.safety: the deletion rule, space reservation, atomic writes, output folders."""

from __future__ import annotations

import errno
import os
import resource
from pathlib import Path

import pytest

from thoracic.errors import DiskFullError, OutputPathError, UnsafeDeleteError
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

"""thoracic.io: atomic writes keep the old file on failure, leave no temporary file, and write the same bytes."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from thoracic.io import atomic_write, save_npy_atomic, write_text_atomic


def test_text_and_binary_writes_replace_the_file(tmp_path):
    path = write_text_atomic(tmp_path / "a.json", json.dumps({"epoch": 1}))
    assert path == tmp_path / "a.json" and json.loads(path.read_text()) == {"epoch": 1}
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    with atomic_write(tmp_path / "b.bin", "wb", fsync=True) as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    path = write_text_atomic(tmp_path / "manifest.json", "complete")
    with pytest.raises(OSError, match="disk full"):
        with atomic_write(path) as handle:
            handle.write("torn")
            handle.flush()
            # while writing, the target still holds the old content; the new one is in a hidden file
            assert path.read_text() == "complete"
            hidden = [p.name for p in tmp_path.iterdir() if p.name != "manifest.json"]
            assert hidden == [f".manifest.json.tmp-{os.getpid()}"]
            raise OSError("disk full")
    assert path.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    # a failing first write leaves nothing at all
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "new.txt"):
            raise ValueError("no content")
    assert not (tmp_path / "new.txt").exists()


def test_save_npy_atomic_writes_what_numpy_save_writes(tmp_path):
    array = np.arange(12, dtype=np.int32).reshape(6, 2)
    path = save_npy_atomic(tmp_path / "sizes.npy", array)
    expected = io.BytesIO()
    np.save(expected, array)
    assert path.read_bytes() == expected.getvalue()
    np.testing.assert_array_equal(np.load(path), array)
    save_npy_atomic(tmp_path / "done", np.ones(3, dtype=bool))  # no suffix added, unlike np.save(path)
    assert (tmp_path / "done").is_file() and not (tmp_path / "done.npy").exists()


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass

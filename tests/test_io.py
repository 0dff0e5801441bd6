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


def test_npz_figure_and_named_path_writes_are_atomic(tmp_path):
    from matplotlib.figure import Figure

    from thoracic.io import atomic_path, save_figure_atomic, save_npz_atomic

    path = save_npz_atomic(tmp_path / "maps.npz", {"a|b": np.ones((2, 2), np.float32)})
    assert np.load(path)["a|b"].sum() == 4
    figure = Figure()
    figure.subplots().plot([0, 1])
    assert save_figure_atomic(figure, tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with atomic_path(tmp_path / "model.onnx") as temporary:
        assert temporary.name == f".model.onnx.tmp-{os.getpid()}.onnx" and temporary.parent == tmp_path
        temporary.write_bytes(b"graph")
    assert (tmp_path / "model.onnx").read_bytes() == b"graph"
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "model.onnx") as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("the exporter failed")
    assert (tmp_path / "model.onnx").read_bytes() == b"graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "maps.npz", "model.onnx"]


def test_a_full_disk_names_the_target_file_not_the_temporary_one(tmp_path):
    import errno

    def fail(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as error:
        with atomic_write(tmp_path / "report.html", "wb") as handle:
            fail(handle)
    assert error.value.filename == str(tmp_path / "report.html")
    from thoracic.cli import _os_error_message

    message = _os_error_message(error.value)
    assert f"({tmp_path / 'report.html'})" in message and f"file system of {tmp_path}" in message


def test_watchers_see_every_target_before_it_is_written(tmp_path):
    from thoracic.io import watch_writes, write_text_atomic

    seen = []

    def refuse_secret(path):
        seen.append(path.name)
        if path.name == "secret.txt":
            raise PermissionError("not this one")

    with watch_writes(refuse_secret):
        write_text_atomic(tmp_path / "a.txt", "x")
        with pytest.raises(PermissionError):
            write_text_atomic(tmp_path / "secret.txt", "x")
    write_text_atomic(tmp_path / "b.txt", "x")  # no longer watched
    assert seen == ["a.txt", "secret.txt"] and not (tmp_path / "secret.txt").exists()


def test_stale_temporary_files_are_those_of_dead_processes(tmp_path):
    from thoracic.io import stale_temporary_files

    (tmp_path / ".a.json.tmp-999999999").write_text("x")
    (tmp_path / ".b.onnx.tmp-999999998.onnx").write_text("x")
    (tmp_path / f".c.json.tmp-{os.getpid()}").write_text("x")
    (tmp_path / "d.tmp-1").write_text("not hidden: not ours")
    assert [p.name for p in stale_temporary_files(tmp_path)] == [".a.json.tmp-999999999", ".b.onnx.tmp-999999998.onnx"]

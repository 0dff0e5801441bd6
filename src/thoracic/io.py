"""Atomic file writes: a reader sees the old complete file or the new complete one, never a torn one.

Every file thoracic rewrites in place while a crash may interrupt it or another process may read it
(checkpoints, the image cache's done mask, sizes and manifest, ``run_info.json``, the tables and JSON files
of evaluation and the metadata of an export) goes through :func:`atomic_write`, directly or through
:func:`write_text_atomic`, :func:`write_bytes_atomic`, :func:`write_json_atomic`, :func:`write_csv_atomic`
and :func:`save_npy_atomic`: the content is written to a temporary file in the same folder, then moved over the
target with ``os.replace``, which is atomic on POSIX and Windows within one file system. The temporary
file is hidden (``.<name>.tmp-<pid>``: concurrent writers in other processes never share one) and
removed when writing fails, so a failed write leaves the previous file untouched and nothing else.

Example:

>>> import json, tempfile
>>> from pathlib import Path
>>> temporary = tempfile.TemporaryDirectory()
>>> folder = Path(temporary.name)
>>> path = write_text_atomic(folder / "info.json", json.dumps({"epoch": 3}))
>>> json.loads(path.read_text())
{'epoch': 3}
>>> with atomic_write(folder / "info.json") as handle:
...     _ = handle.write("half a fil")
...     raise OSError("disk full")
Traceback (most recent call last):
OSError: disk full
>>> json.loads(path.read_text())  # the failed write changed nothing
{'epoch': 3}
>>> sorted(p.name for p in folder.iterdir())  # and left no temporary file behind
['info.json']
>>> temporary.cleanup()
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "save_npy_atomic", "write_bytes_atomic", "write_csv_atomic", "write_json_atomic",
           "write_text_atomic"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, fsync: bool = False,
                 encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success, move it over ``path`` atomically.

    Args:
        path: the file to (re)write; its folder must exist.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        fsync: flush the data to disk before the move (checkpoints: a power cut after the move must not
            leave an empty file under the final name). Costs a disk round trip per call.
        encoding: text encoding (text mode; default: the platform's, like ``open``).

    If the ``with`` block raises, the temporary file is deleted, ``path`` is unchanged and the
    exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, encoding=encoding if mode == "w" else None) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():  # only when writing or the move failed: the file is ours, never the target
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False,
                      encoding: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""
    with atomic_write(path, "w", fsync=fsync, encoding=encoding) as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns ``path``."""
    with atomic_write(path, "wb", fsync=fsync) as handle:
        handle.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """``json.dumps(data, indent=2)`` and a final newline, UTF-8, written atomically; returns ``path``."""
    return write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def write_csv_atomic(path: str | os.PathLike, frame: Any, **to_csv: Any) -> Path:
    """``frame.to_csv(path, **to_csv)`` of a pandas DataFrame, atomically: the same bytes (UTF-8, the
    platform's line ends); returns ``path``."""
    return write_bytes_atomic(path, frame.to_csv(**to_csv).encode("utf-8"))


def save_npy_atomic(path: str | os.PathLike, array: Any, *, fsync: bool = False) -> Path:
    """``numpy.save(path, array)`` atomically (the same bytes; no ``.npy`` suffix is added); returns ``path``."""
    import io

    import numpy as np

    # Serialised in memory, then written by Python: ``np.save`` into a real file uses ``ndarray.tofile``,
    # whose short write on a full disk raises an OSError without errno (not recognisable as ENOSPC).
    buffer = io.BytesIO()
    np.save(buffer, array)
    with atomic_write(path, "wb", fsync=fsync) as handle:
        handle.write(buffer.getbuffer())
    return Path(path)

"""Atomic file writes: a reader sees the old complete file or the new complete one, never a torn one.

Every file thoracic writes (checkpoints, the image cache's small files, ``run_info.json``, evaluation tables,
JSON files, heatmaps and figures, reports, predictions, exported models and their metadata) goes through
:func:`atomic_write`, directly or through :func:`write_text_atomic`, :func:`write_bytes_atomic`,
:func:`write_json_atomic`, :func:`write_csv_atomic`, :func:`save_npy_atomic`, :func:`save_npz_atomic` and
:func:`save_figure_atomic`; libraries that write only to a file name (``torch.onnx``, ``onnx.save``,
``torch.jit.save``) get a temporary name from :func:`atomic_path`. The content is written to a temporary
file in the same folder, then moved over the target with ``os.replace``, which is atomic on POSIX and
Windows within one file system. The temporary file is hidden (``.<name>.tmp-<pid>``: concurrent writers in
other processes never share one) and removed when writing fails, so a failed write leaves the previous file
untouched and nothing else; a process killed while writing leaves the previous file and its temporary
file (:func:`stale_temporary_files` finds those of dead processes). An ``OSError`` while writing (a full
disk) names the target file, not the temporary one. (The one exception is the cache's ``images.npy``,
filled in place through a memory map: every row carries a CRC-32 and a rerun of ``prepare`` rebuilds
damaged rows, see :mod:`thoracic.data.cache_writer`.)

Writes can be watched: :func:`watch_writes` registers a callback that sees every target before it is
written (``thoracic.safety.output_folder`` uses it to refuse replacing a file thoracic did not write, and
to record the files it writes).

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
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "save_figure_atomic", "save_npy_atomic", "save_npz_atomic",
           "stale_temporary_files", "temporary_path", "watch_writes", "write_bytes_atomic", "write_csv_atomic",
           "write_json_atomic", "write_text_atomic"]

#: Callbacks that see every target path before it is written (see :func:`watch_writes`).
_WATCHERS: ContextVar[tuple[Callable[[Path], None], ...]] = ContextVar("thoracic_write_watchers", default=())

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:\.[^.]*)?")


@contextmanager
def watch_writes(callback: Callable[[Path], None]) -> Iterator[None]:
    """Within the ``with`` block, call ``callback(target)`` before every write of this module's helpers
    (in this thread or task); the callback may raise to refuse the write (nothing is written then)."""
    token = _WATCHERS.set((*_WATCHERS.get(), callback))
    try:
        yield
    finally:
        _WATCHERS.reset(token)


def _announce(path: Path) -> None:
    for callback in _WATCHERS.get():
        callback(path)


def temporary_path(path: str | os.PathLike, suffix: bool = False) -> Path:
    """The hidden temporary file of a write of ``path`` by this process: ``.<name>.tmp-<pid>`` beside it
    (``suffix``: the target's suffix appended, for libraries that choose a format by it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix if suffix else ''}")


def stale_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Temporary files of atomic writes in ``folder`` left by processes that no longer run (killed while
    writing); safe to delete: the target they were meant to replace is intact."""
    folder = Path(folder)
    stale = []
    if not folder.is_dir():
        return stale
    for entry in folder.iterdir():
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or not entry.is_file() or entry.is_symlink():
            continue
        pid = int(match["pid"])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stale.append(entry)
        except PermissionError:  # a live process of another user
            pass
    return sorted(stale)


def _name_target(exc: OSError, path: Path) -> None:
    """Make an OSError raised while writing ``path`` (through a handle: no file name) name ``path``."""
    if exc.errno is None:  # raised by Python code with a message of its own: keep it
        return
    if exc.filename is None or str(exc.filename).startswith(str(path.parent / f".{path.name}.tmp-")):
        exc.filename = str(path)


@contextmanager
def _replacing(path: Path, suffix: bool) -> Iterator[Path]:
    """The temporary file of a write of ``path``: moved over ``path`` when the block succeeds, removed
    (``path`` unchanged) when it raises; an OSError names ``path``."""
    _announce(path)
    tmp = temporary_path(path, suffix=suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _name_target(exc, path)
        raise
    finally:
        if tmp.exists():  # only when writing or the move failed: the file is ours, never the target
            tmp.unlink()


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
    with _replacing(Path(path), suffix=False) as tmp:
        with open(tmp, mode, encoding=encoding if mode == "w" else None) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """A temporary file name beside ``path`` for a library that writes only to a name (``torch.onnx``,
    ``onnx.save``, ``torch.jit.save``); on success it is moved over ``path`` atomically.

    The temporary name ends with ``path``'s suffix (libraries choose formats by it). If the ``with`` block
    raises, the temporary file is deleted and ``path`` is unchanged.
    """
    path = Path(path)
    with _replacing(path, suffix=True) as tmp:
        yield tmp
        if not tmp.is_file():
            raise OSError(f"nothing was written to the temporary file of {path}")
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())


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


def save_npz_atomic(path: str | os.PathLike, arrays: dict[str, Any], *, compressed: bool = True) -> Path:
    """``numpy.savez_compressed(path, **arrays)`` (or ``savez``) atomically; returns ``path``."""
    import numpy as np

    with atomic_write(path, "wb") as handle:
        (np.savez_compressed if compressed else np.savez)(handle, **arrays)
    return Path(path)


def save_figure_atomic(figure: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """``figure.savefig(path, **savefig)`` of a matplotlib figure, atomically; the format is ``savefig``'s
    ``format`` or ``path``'s suffix. Returns ``path``."""
    path = Path(path)
    savefig.setdefault("format", path.suffix.lstrip(".").lower() or "png")
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, **savefig)
    return path

"""Keeping the user's files safe: what thoracic may delete, disk space, output folders.

The deletion rule. thoracic deletes only files it wrote itself, and knows them by name: the files its
own manifest or marker lists (``thoracic synth``'s ``thoracic_synth.json``, a cache's ``manifest.json``)
or the fixed names of a run, experiment or sweep folder. :func:`remove_owned` refuses (deleting nothing)
when a folder holds anything else, and its error lists what is there.

Full disks. A write that fails for lack of space (``ENOSPC``), a quota (``EDQUOT``) or a file-size limit
(``EFBIG``, e.g. ``ulimit -f``) becomes a :class:`~thoracic.errors.DiskFullError` that gives the bytes
needed and free; files rewritten in place go through :mod:`thoracic.io` (temporary file + rename), so a
failed write keeps the previous file. Large files that are written through a memory map are reserved first with
``posix_fallocate`` (:func:`reserve_file`): a write into a memory-mapped hole of a full file system
raises SIGBUS and kills the process, so the space must exist before the first page is touched.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from thoracic.errors import DiskFullError, OutputPathError, UnsafeDeleteError

#: errno values that mean "no room for this write".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

_SHOW = 12


# --------------------------------------------------------------------------------------------------
# Disk space
# --------------------------------------------------------------------------------------------------


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is an OSError for lack of space."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def format_bytes(count: int | float) -> str:
    """``393.2 MB (393,216,000 bytes)``: decimal units for reading, the exact count for checking."""
    count = int(count)
    value, unit = float(count), "bytes"
    for name in ("kB", "MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, name
    if unit == "bytes":
        return f"{count:,} bytes"
    return f"{value:.1f} {unit} ({count:,} bytes)"


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Bytes available to this user on the file system that holds ``path`` (or would hold it)."""
    return int(shutil.disk_usage(_existing_ancestor(Path(path))).free)


def disk_full_error(exc: OSError | None, what: str, where: str | Path, needed: int | None,
                    kept: str = "", free: int | None = None) -> DiskFullError:
    """The named error for a write of ``what`` into ``where`` that did not fit.

    Args:
        exc: the OSError (None for a check made before writing).
        needed: bytes the write needs (None when unknown).
        kept: what is still intact, and how to continue (one sentence).
        free: the bytes free when the write failed (default: measured now).
    """
    free = free_bytes(where) if free is None else free
    if exc is not None and exc.errno == errno.EFBIG:
        cause = "the file-size limit of this process (ulimit -f) was reached"
    elif exc is not None and exc.errno == errno.EDQUOT:
        cause = "the disk quota was reached"
    else:
        cause = "the disk is full"
    need = f"needs {format_bytes(needed)}, " if needed is not None else ""
    target = exc.filename if exc is not None and exc.filename else where
    return DiskFullError(f"cannot write {what} ({target}): {cause}: {need}{format_bytes(free)} free on the file "
                         f"system of {where}. {kept}".rstrip())


def check_free_space(where: str | Path, needed: int, what: str, kept: str = "") -> None:
    """Raise :class:`DiskFullError` when fewer than ``needed`` bytes are free where ``where`` lives."""
    if free_bytes(where) < needed:
        raise disk_full_error(None, what, where, needed, kept)


def reserve_file(handle: Any, size: int, what: str, kept: str = "") -> None:
    """Make the open file ``handle`` ``size`` bytes long with every block allocated (``posix_fallocate``).

    After this, writes through a memory map of the file cannot fail for lack of space (no SIGBUS);
    blocks already allocated are kept, so calling it again on a partly written file is cheap.

    Raises:
        DiskFullError: the file system has no room (or a file-size limit is lower), with the bytes needed.
    """
    fd = handle if isinstance(handle, int) else handle.fileno()
    path = getattr(handle, "name", None) or "file"
    stat = os.fstat(fd)
    allocated = min(stat.st_size, stat.st_blocks * 512)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:  # pragma: no cover - platforms without posix_fallocate (macOS): check, then extend
            check_free_space(Path(path).parent, size - allocated, what, kept)
            os.ftruncate(fd, max(size, stat.st_size))
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            if exc.filename is None:
                exc.filename = str(path)
            raise disk_full_error(exc, what, Path(str(path)).parent, max(0, size - allocated), kept) from None
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate on this file system: check instead
            check_free_space(Path(str(path)).parent, size - allocated, what, kept)
            os.ftruncate(fd, max(size, stat.st_size))
        else:
            raise


# --------------------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------------------


def quiet_worker(parent_pid: int) -> None:
    """Initializer of a worker process: no Ctrl-C traceback, and no orphan when the parent is killed.

    Ctrl-C reaches every process of the terminal's group; only the parent reports it (and saves what
    is done), so workers ignore SIGINT. When the parent dies by SIGKILL, pool workers blocked on their
    task queue would wait forever (the queue's other end is still open in their siblings): on Linux the
    kernel is asked to kill the worker with its parent (``prctl(PR_SET_PDEATHSIG)``, through ctypes:
    the standard library has no binding for it).
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: orphans stay possible
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


# --------------------------------------------------------------------------------------------------
# Reading back what thoracic wrote
# --------------------------------------------------------------------------------------------------


def read_json(path: str | Path, what: str, error: type[Exception] = OutputPathError) -> Any:
    """``json.loads`` of a file, raising ``error`` (a ThoracicError) that names the file when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: {what} is not valid JSON ({exc}); the file is damaged") from None


# --------------------------------------------------------------------------------------------------
# The deletion rule
# --------------------------------------------------------------------------------------------------


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


def folder_entries(folder: str | Path) -> list[str]:
    """Every file (and symbolic link, never followed) under ``folder`` as a relative POSIX path, sorted;
    empty folders are listed with a trailing ``/``."""
    folder = Path(folder)
    entries = []
    for current, dirs, files in os.walk(folder):
        base = Path(current)
        for name in files:
            entries.append((base / name).relative_to(folder).as_posix())
        for name in list(dirs):
            path = base / name
            if path.is_symlink():  # os.walk does not descend into linked folders: a link is an entry
                entries.append(path.relative_to(folder).as_posix())
                dirs.remove(name)
            elif not any(path.iterdir()):
                entries.append(path.relative_to(folder).as_posix() + "/")
    return sorted(entries)


def foreign_entries(folder: str | Path, owned: Callable[[str], bool] | Iterable[str]) -> list[str]:
    """Entries of ``folder`` (see :func:`folder_entries`) that ``owned`` does not claim.

    ``owned`` is a predicate on the relative path, or fnmatch patterns (``*`` also crosses ``/``).
    An empty folder is an entry ``name/`` like a file.
    """
    if not callable(owned):
        patterns = list(owned)

        def owned(name: str, patterns: list[str] = patterns) -> bool:  # noqa: F811 - the predicate form
            return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    return [e for e in folder_entries(folder) if not owned(e)]


def remove_owned(folder: str | Path, owned: Callable[[str], bool] | Iterable[str], what: str,
                 *, remove_folder: bool = True, hint: str = "") -> list[str]:
    """Delete the files of ``folder`` that ``owned`` claims, after checking it claims all of them.

    Args:
        folder: the folder to clear.
        owned: predicate on relative POSIX paths, or fnmatch patterns (see :func:`foreign_entries`).
        what: what the folder is, for the message ("image cache", "phantom folder").
        remove_folder: also remove ``folder`` itself (and the folders it held) once empty.
        hint: appended to the refusal (what to do instead).

    Returns:
        The relative paths deleted.

    Raises:
        UnsafeDeleteError: ``folder`` holds a file ``owned`` does not claim; nothing is deleted.
    """
    folder = Path(folder)
    if not folder.exists():
        return []
    if folder.is_symlink() or not folder.is_dir():
        raise UnsafeDeleteError(f"{folder} is not a folder; thoracic deletes only folders of files it wrote")
    foreign = foreign_entries(folder, owned)
    if foreign:
        raise UnsafeDeleteError(
            f"{folder} holds {len(foreign)} file(s) that thoracic did not write as part of this {what}: "
            f"{_listing(foreign)}. Nothing was deleted (thoracic deletes only files it wrote itself)."
            + (f" {hint}" if hint else "")
        )
    removed = []
    for name in folder_entries(folder):
        if name.endswith("/"):
            continue
        (folder / name).unlink()
        removed.append(name)
    # now-empty folders, deepest first
    for current, dirs, _ in sorted(os.walk(folder, topdown=False), key=lambda t: -len(Path(t[0]).parts)):
        path = Path(current)
        if path == folder and not remove_folder:
            continue
        try:
            path.rmdir()
        except OSError:
            pass  # not empty: it held something we kept (cannot happen after the check, but never force)
    return removed


def is_within(inner: str | Path, outer: str | Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (after resolving links)."""
    inner, outer = Path(inner).resolve(), Path(outer).resolve()
    return inner == outer or outer in inner.parents


# --------------------------------------------------------------------------------------------------
# Output folders
# --------------------------------------------------------------------------------------------------


def ensure_output_dir(path: str | Path, what: str, *, create: bool = True) -> Path:
    """Check (and create) an output folder, naming the option when it cannot be one.

    Raises:
        OutputPathError: ``path`` (or a folder above it) is an existing file, or the nearest existing
            folder is not writable, or creating it fails.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is an existing file; expected a folder (or a name not yet used)")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputPathError(f"{what} {path}: {ancestor} is a file, so no folder can be made under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path}: the folder {ancestor} is not writable by this user "
                              "(permission denied); choose a folder you can write to")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"{what} {path}: cannot create the folder ({exc.strerror})") from None
    return path


def ensure_output_file(path: str | Path, what: str) -> Path:
    """Check that ``path`` can be written as a file (its folder is created)."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is an existing folder; expected a file name")
    ensure_output_dir(path.parent, f"{what} (folder of {path.name})")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path} is not writable by this user (permission denied)")
    return path

"""Keeping the user's files safe: what thoracic may delete, disk space, output folders, run locks.

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

Output folders. A folder thoracic writes results into (``predict --out``, ``report --out``, a run's
``evaluation/`` and ``export/``) holds :data:`OUTPUT_MANIFEST`, the list of the files thoracic wrote there
and the source each came from (a checkpoint's SHA-256, an exported model's). Inside
:func:`output_folder`, every write of :mod:`thoracic.io` into the folder is checked against it first: a
file thoracic did not write is never replaced (:class:`~thoracic.errors.OutputPathError` saying how to
choose another place), and the name is recorded before the file is written, so a write killed half-way
still leaves a name thoracic knows as its own. The manifest is also how ``predict`` tells its own
figures from X-rays, and how a folder refuses to mix the outputs of two models (``exclusive``).

Locks. :func:`folder_lock` takes an advisory lock (``fcntl.flock``) on :data:`LOCK_FILE` in a run,
experiment, sweep or evaluation folder, naming the holder (command, process id, host, start time) inside;
a second writer gets :class:`~thoracic.errors.FolderInUseError` naming the holder. The kernel releases the
lock of a process that dies (even by SIGKILL), so a lock file left by a dead process is simply taken over.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from thoracic.errors import DiskFullError, FolderInUseError, OutputPathError, UnsafeDeleteError
from thoracic.io import stale_temporary_files, watch_writes, write_json_atomic

#: The lock file of :func:`folder_lock` (hidden; removed when the lock is released).
LOCK_FILE = ".thoracic.lock"
#: The file list of an output folder (:func:`output_folder`).
OUTPUT_MANIFEST = "thoracic_outputs.json"

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
    empty folders are listed with a trailing ``/``; a lock file (:data:`LOCK_FILE`) is not listed."""
    folder = Path(folder)
    entries = []
    for current, dirs, files in os.walk(folder):
        base = Path(current)
        for name in files:
            if name == LOCK_FILE:  # a lock is removed by its holder, never by a deletion
                continue
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


# --------------------------------------------------------------------------------------------------
# Locks: one writer per run, experiment, sweep or evaluation folder
# --------------------------------------------------------------------------------------------------

#: Folders this process holds a lock on: resolved path -> [file descriptor, depth] (a lock is re-entrant
#: within a process: train_or_resume and the train it calls take the same run's lock).
_HELD_LOCKS: dict[str, list[int]] = {}


def _lock_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "another thoracic process (starting)"
    command = holder.get("command") or "thoracic"
    return (f"`{command}` (process {holder.get('pid', '?')} on host {holder.get('host', '?')}, since "
            f"{holder.get('since', '?')})")


def _acquire_lock(folder: Path, what: str, command: str) -> int:
    import fcntl
    import socket
    from datetime import datetime, timezone

    path = folder / LOCK_FILE
    for _ in range(50):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _lock_holder(fd)
            os.close(fd)
            raise FolderInUseError(
                f"{what} {folder} is in use by {_describe_holder(holder)}: one process at a time may write "
                f"into it (two would mix their files). Wait for it to finish (or stop it), then rerun; its lock "
                f"is {path}, released when that process ends, even if it is killed") from None
        try:  # the previous holder may have removed the file between our open and our lock: lock anew
            current = os.stat(path)
            same = (current.st_ino, current.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev)
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        # a holder's information still in the file was left by a process that died: its lock is taken over
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        return fd
    raise FolderInUseError(f"{what} {folder}: cannot take its lock {path} (other processes keep replacing it)")


def _release_lock(folder: Path, fd: int) -> None:
    path = folder / LOCK_FILE
    try:
        current = os.stat(path)
        if (current.st_ino, current.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
            path.unlink()  # while still locked: a process waiting on the old file locks anew (see above)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: str | Path, what: str, command: str = "thoracic") -> Iterator[None]:
    """Hold the advisory lock of ``folder`` (which must exist) for the ``with`` block.

    Args:
        folder: a run, experiment, sweep or evaluation folder.
        what: what the folder is, for the message ("run folder").
        command: what holds it, for the message another process gets (e.g. the command line).

    Re-entrant within a process. Where ``fcntl`` does not exist (Windows), nothing is locked.

    Raises:
        FolderInUseError: another process holds the lock; the message names it.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    held = _HELD_LOCKS.get(key)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    try:
        import fcntl  # noqa: F401 - POSIX only
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        yield
        return
    fd = _acquire_lock(folder, what, command)
    _HELD_LOCKS[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        _release_lock(folder, fd)


# --------------------------------------------------------------------------------------------------
# Output folders: the files thoracic wrote, by name, and their source
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputSource:
    """What the files of an output folder come from: ``id`` (a checkpoint's or an exported model's
    SHA-256; outputs of one ``id`` may replace each other) and a description for messages."""

    id: str
    description: str
    details: dict[str, Any] = field(default_factory=dict)


#: The output folders of the ``with`` blocks in progress (resolved): a write goes to the innermost one's list.
_ACTIVE_OUTPUTS: ContextVar[tuple[Path, ...]] = ContextVar("thoracic_output_folders", default=())


class OutputFolder:
    """An output folder and its manifest (:data:`OUTPUT_MANIFEST`); see :func:`output_folder`."""

    def __init__(self, folder: str | Path, command: str, source: OutputSource | None = None, *,
                 option: str = "--out", exclusive: bool = False, legacy: Sequence[str] = ()) -> None:
        self.folder = Path(folder)
        self.command = command
        self.source = source or OutputSource(command, f"thoracic {command}")
        self.option = option
        self.exclusive = exclusive
        self.legacy = tuple(legacy)
        self.manifest_path = self.folder / OUTPUT_MANIFEST
        self.entries: dict[str, dict[str, Any]] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.claimed: set[str] = set()
        self._root = self.folder.resolve()
        self._read()

    # -- the manifest ------------------------------------------------------------------------------

    def _read(self) -> None:
        if not self.manifest_path.is_file():
            return
        data = read_json(self.manifest_path, "thoracic's list of the files it wrote in this folder")
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise OutputPathError(f"{self.manifest_path}: not the list of files thoracic writes there (no 'files' "
                                  f"object); thoracic cannot tell its own files in {self.folder}: choose another "
                                  f"{self.option}")
        self.entries = {str(k): v for k, v in data["files"].items() if isinstance(v, dict)}
        self.sources = {str(k): v for k, v in (data.get("sources") or {}).items() if isinstance(v, dict)}

    def _write(self) -> None:
        write_json_atomic(self.manifest_path, {
            "format": "thoracic output manifest", "version": 1,
            "note": "the files thoracic wrote in this folder and what they come from; thoracic replaces only "
                    "these, and never reads them as input",
            "files": dict(sorted(self.entries.items())), "sources": dict(sorted(self.sources.items()))})

    # -- ownership ---------------------------------------------------------------------------------

    def owns(self, name: str) -> bool:
        """Whether thoracic wrote ``name`` (relative POSIX path) here: listed, or one of ``legacy``'s names."""
        return name in self.entries or any(fnmatch.fnmatchcase(name, p) for p in self.legacy)

    def source_of(self, name: str) -> dict[str, Any] | None:
        """The recorded source of ``name`` (``id``, ``description`` ...), or None."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        return {"id": entry.get("source"), **self.sources.get(str(entry.get("source")), {})}

    def foreign_sources(self) -> dict[str, list[str]]:
        """Files present here that another source wrote: ``source id -> names``."""
        found: dict[str, list[str]] = {}
        for name, entry in self.entries.items():
            if entry.get("source") != self.source.id and (self.folder / name).exists():
                found.setdefault(str(entry.get("source")), []).append(name)
        return found

    def check_exclusive(self) -> None:
        """``exclusive`` folders hold the outputs of one source: refuse when another source's files are here."""
        others = self.foreign_sources()
        if not others:
            return
        source, names = next(iter(others.items()))
        description = self.sources.get(source, {}).get("description", f"source {source}")
        written = self.entries[names[0]].get("written", "?")
        raise OutputPathError(
            f"{self.option} {self.folder} holds the outputs of thoracic {self.entries[names[0]].get('command', '?')} "
            f"of {description} ({len(names)} file(s): {_listing(sorted(names))}; written {written}); this run "
            f"uses {self.source.description}. thoracic does not mix the outputs of two models in one folder: "
            f"choose another {self.option} (e.g. {self.folder}-2), or move those files away")

    def claim(self, *names: str) -> None:
        """Check that the files ``names`` (relative POSIX paths) may be (re)written here, and record them
        as written by this source before they are.

        Raises:
            OutputPathError: a file of that name exists and thoracic did not write it.
        """
        new = [n for n in names if n not in self.claimed]
        if not new:
            return
        for name in new:
            path = self.folder / name
            if (path.exists() or path.is_symlink()) and not self.owns(name):
                raise OutputPathError(
                    f"{path} exists and was not written by thoracic (it is not in {self.manifest_path.name}, the "
                    f"list of files thoracic wrote in {self.folder}): thoracic never replaces a file it did not "
                    f"write. Move it away, or choose another {self.option}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for name in new:
            self.entries[name] = {"command": self.command, "source": self.source.id, "written": now}
        self.sources[self.source.id] = {"description": self.source.description, **self.source.details}
        self.claimed.update(new)
        self._write()

    def watch(self, path: Path) -> None:
        """The :func:`thoracic.io.watch_writes` callback: claim ``path`` when it lies in this folder (and in
        no output folder nested in it, which keeps its own list)."""
        target = Path(os.path.abspath(path))
        if self._root not in target.parents:
            target = path.resolve()
            if self._root not in target.parents:
                return
        if any(root != self._root and self._root in root.parents and root in target.parents
               for root in _ACTIVE_OUTPUTS.get()):
            return
        name = target.relative_to(self._root).as_posix()
        if name != OUTPUT_MANIFEST:
            self.claim(name)

    def previous_files(self) -> list[str]:
        """Files of this source written by an earlier command (not rewritten by this one) still present."""
        return sorted(n for n, e in self.entries.items() if e.get("source") == self.source.id
                      and n not in self.claimed and (self.folder / n).is_file())

    def remove_previous(self) -> list[str]:
        """Delete :func:`previous_files` (thoracic's own, listed; nothing else) and forget them."""
        removed = self.previous_files()
        for name in removed:
            (self.folder / name).unlink()
            del self.entries[name]
        if removed:
            self._write()
        return removed

    def remove_stale_temporary_files(self) -> None:
        """Temporary files of this folder's writes left by killed processes (the targets are intact)."""
        for path in stale_temporary_files(self.folder):
            path.unlink(missing_ok=True)


@contextmanager
def output_folder(folder: str | Path, command: str, source: OutputSource | None = None, *,
                  option: str = "--out", exclusive: bool = False, legacy: Sequence[str] = ()
                  ) -> Iterator[OutputFolder]:
    """Write into ``folder`` (created if needed) under its manifest, for the ``with`` block.

    Every write of :mod:`thoracic.io` into ``folder`` (or below) first claims its name
    (:meth:`OutputFolder.claim`): a file thoracic did not write is never replaced, and each file's
    source is recorded. Temporary files of killed writes are removed first.

    Args:
        command: the command writing (``predict``, ``report``, ``evaluate``...).
        source: what the files come from (default: the command).
        option: the option that chose the folder, for messages (``--out``).
        exclusive: the folder holds the outputs of one source only (``predict``): another source's files
            there are refused at once (:meth:`OutputFolder.check_exclusive`).
        legacy: fnmatch patterns of names thoracic owns in this folder without a manifest entry (a run's
            ``evaluation/`` written before manifests existed).

    Raises:
        OutputPathError: ``folder`` cannot be an output folder, its manifest is damaged, or (exclusive)
            it holds another source's outputs.
    """
    folder = ensure_output_dir(folder, option)
    outputs = OutputFolder(folder, command, source, option=option, exclusive=exclusive, legacy=legacy)
    if exclusive:
        outputs.check_exclusive()
    outputs.remove_stale_temporary_files()
    token = _ACTIVE_OUTPUTS.set((*_ACTIVE_OUTPUTS.get(), outputs._root))
    try:
        with watch_writes(outputs.watch):
            yield outputs
    finally:
        _ACTIVE_OUTPUTS.reset(token)


def listed_outputs(folder: str | Path) -> set[str]:
    """The files the manifest of ``folder`` lists (relative POSIX paths); empty without one. A damaged
    manifest lists nothing (readers of inputs must not fail on it)."""
    path = Path(folder) / OUTPUT_MANIFEST
    try:
        data = json.loads(path.read_text())
        return {str(name) for name in data["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()

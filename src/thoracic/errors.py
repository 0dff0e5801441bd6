"""Errors the command line reports as a one-line message (no traceback).

Every :class:`ThoracicError` is printed as ``error: <message>`` and the command exits with the error's
``exit_code`` (2: bad input or state the user can fix; 130: interrupted by Ctrl-C).
"""

from __future__ import annotations


class ThoracicError(Exception):
    """Base class: bad input or state the user can fix; the message says what and where."""

    exit_code: int = 2


class DataError(ThoracicError):
    """A dataset file, row or field is missing or malformed; the message names it and what was expected."""


class CacheMismatchError(ThoracicError):
    """An image cache does not match the data folder or the requested size, or its files are damaged."""


class WeightsUnavailableError(ThoracicError):
    """Pretrained weights were requested but can neither be downloaded nor found locally."""


class RunError(ThoracicError):
    """A run folder or checkpoint is missing or inconsistent."""


class UnsafeCheckpointError(RunError):
    """A checkpoint needs Python objects that thoracic's own checkpoints never hold (opening it could run code
    hidden in it); the message names the file, what it needs and ``--trust-checkpoint``."""


class FolderInUseError(ThoracicError):
    """Another thoracic process is writing into the same run, experiment, sweep or evaluation folder; the
    message names it (command, process id, host, since when)."""


class DiskFullError(ThoracicError):
    """A write failed, or would fail, for lack of space (or a file-size limit); the message gives the bytes
    needed and free, and what was kept so that a rerun continues."""


class UnsafeDeleteError(ThoracicError):
    """thoracic was asked to replace a folder holding files it did not write; it lists them and deletes nothing."""


class OutputPathError(ThoracicError):
    """An output path is an existing file, lies in an unwritable folder, or is the input itself."""


class Interrupted(ThoracicError):
    """Ctrl-C (SIGINT): the work done so far is kept; the message says where it is and how to continue."""

    exit_code = 130


class GeometryError(ThoracicError, ValueError):
    """A network whose geometry cannot be derived, or a heatmap that does not fit the geometry given
    (:mod:`thoracic.geometry`); also a stored heatmap grid that is not one."""


class SpecError(DataError):
    """A model spec (stored in a checkpoint or an export) that is not one: the message names the file, the
    field and what was expected (:mod:`thoracic.spec`)."""

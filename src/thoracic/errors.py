"""Errors the command line reports as a one-line message (no traceback)."""

from __future__ import annotations


class ThoracicError(Exception):
    """Base class: bad input or state the user can fix; the message says what and where."""


class DataError(ThoracicError):
    """A dataset file, row or field is missing or malformed; the message names it and what was expected."""


class CacheMismatchError(ThoracicError):
    """An image cache does not match the data folder or the requested size."""


class WeightsUnavailableError(ThoracicError):
    """Pretrained weights were requested but can neither be downloaded nor found locally."""


class RunError(ThoracicError):
    """A run folder or checkpoint is missing or inconsistent."""

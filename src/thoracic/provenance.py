"""File hashes: the SHA-256 that identifies a checkpoint in every evaluation file, report and figure
(the whole provenance record of a checkpoint is :func:`thoracic.training.checkpoints.checkpoint_info`)."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

#: Hex digits of the SHA-256 shown in reports and figures (the JSON outputs keep all 64).
SHORT_HASH = 12


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (hex), computed once per file version in a process."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


__all__ = ["SHORT_HASH", "file_sha256"]

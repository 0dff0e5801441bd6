"""File hashes: the SHA-256 that identifies a checkpoint in every evaluation file, report and figure
(the whole provenance record of a checkpoint is :func:`thoracic.training.checkpoints.checkpoint_info`).

:func:`file_sha256` is the one file hash of thoracic: checkpoints, exported models, the data-entry CSV a
cache or a run was built from.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from thoracic.safety import OutputSource

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


def checkpoint_source(info: dict[str, Any]) -> OutputSource:
    """The source an output folder records for files computed from the checkpoint of ``info`` (a
    :func:`~thoracic.training.checkpoints.checkpoint_info`): its SHA-256, path and epoch."""
    return OutputSource(str(info["sha256"]), f"checkpoint {info['path']} (epoch {info.get('epoch')}, sha256 "
                        f"{str(info['sha256'])[:SHORT_HASH]})",
                        {"kind": "checkpoint", "path": info["path"], "epoch": info.get("epoch"),
                         "sha256": info["sha256"]})


__all__ = ["SHORT_HASH", "checkpoint_source", "file_sha256"]

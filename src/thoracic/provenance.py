"""Which checkpoint, trained on what: the facts reports and predictions print beside their numbers."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

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


def checkpoint_provenance(path: str | Path) -> dict[str, Any]:
    """``path``, ``sha256``, ``epoch``, ``model_name``, ``backbone``, ``image_size``, ``data_root`` and
    ``data_kind`` (``phantom`` / ``real`` / ``unknown``) of a thoracic checkpoint.

    ``data_kind`` is what training recorded in the run's ``run_info.json`` when it did, else what the
    data folder is now (:func:`thoracic.data.synth.folder_kind`).
    """
    import torch

    from thoracic.data.synth import folder_kind

    path = Path(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config = (checkpoint.get("hyper_parameters") or {}).get("config") or {}
    data, model = config.get("data", {}), config.get("model", {})
    kind = None
    run_info = path.parent.parent / "run_info.json" if path.parent.name == "checkpoints" else None
    if run_info is not None and run_info.is_file():
        kind = json.loads(run_info.read_text()).get("data_kind")
    return {
        "path": str(path), "sha256": file_sha256(path), "epoch": checkpoint.get("epoch"),
        "model_name": model.get("name"), "backbone": model.get("backbone"), "image_size": data.get("image_size"),
        "data_root": data.get("root"), "data_kind": kind or folder_kind(data.get("root")),
    }


__all__ = ["SHORT_HASH", "checkpoint_provenance", "file_sha256"]

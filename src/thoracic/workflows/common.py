"""Set-up shared by the workflows that read a run folder: its checkpoint, its data, its evaluation folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thoracic.data.dataset import ChestXrayDataModule
from thoracic.deprecation import renamed_keywords
from thoracic.runtime import resolve_device
from thoracic.training.checkpoints import LoadedRun, load_run
from thoracic.training.factory import build_datamodule


def evaluation_dir(run_dir: Path | None, checkpoint_path: Path) -> Path:
    """``<run>/evaluation`` (or ``evaluation/`` beside a bare checkpoint file)."""
    base = run_dir if run_dir is not None else checkpoint_path.parent
    path = base / "evaluation"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class OpenedRun:
    """A run's checkpoint loaded on ``device``, its data module set up for testing and its evaluation folder."""

    loaded: LoadedRun
    data: ChestXrayDataModule
    out: Path
    device: str


@renamed_keywords(which="checkpoint", data_root="data")
def open_run(run: str | Path, checkpoint: str = "best", device: str = "auto", batch_size: int | None = None,
             data: str | Path | None = None, cache: str | Path | None = None,
             num_workers: int | None = None) -> OpenedRun:
    """Load the ``checkpoint`` (``best``, ``last`` or a ``.ckpt`` path) of ``run`` on ``device`` (``auto``,
    ``cpu``, ``cuda:N``) and the data it was trained on (or ``data`` / ``cache`` instead), ready for
    ``thoracic evaluate`` / ``localize``."""
    device = resolve_device(device)
    loaded = load_run(run, checkpoint=checkpoint, map_location=device)
    module = build_datamodule(loaded.config, stage="test", batch_size=batch_size, data_root=data, cache=cache,
                              num_workers=num_workers)
    return OpenedRun(loaded, module, evaluation_dir(loaded.run_dir, loaded.checkpoint_path), device)


__all__ = ["OpenedRun", "evaluation_dir", "open_run"]

"""Set-up shared by the workflows that read a run folder: its checkpoint, its data, its evaluation folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from thoracic.config import ConfigError
from thoracic.data.dataset import ChestXrayDataModule
from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError
from thoracic.provenance import checkpoint_source
from thoracic.runtime import resolve_device
from thoracic.safety import folder_lock, output_folder
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
             num_workers: int | None = None, *, trust_checkpoint: bool = False) -> OpenedRun:
    """Load the ``checkpoint`` (``best``, ``last`` or a ``.ckpt`` path) of ``run`` on ``device`` (``auto``,
    ``cpu``, ``cuda:N``) and the data it was trained on (or ``data`` / ``cache`` instead), ready for
    ``thoracic evaluate`` / ``localize``; ``trust_checkpoint`` opens the checkpoint with full pickle.

    Raises:
        ConfigError: ``batch_size`` below 1 or ``num_workers`` below 0 (never silently replaced).
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size: expected at least 1 image per batch, got {batch_size}")
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"--num-workers: expected 0 (load in this process) or more worker processes, got "
                          f"{num_workers}")
    device = resolve_device(device)
    loaded = load_run(run, checkpoint=checkpoint, map_location=device, trust_checkpoint=trust_checkpoint)
    module = build_datamodule(loaded.config, stage="test", batch_size=batch_size, data_root=data, cache=cache,
                              num_workers=num_workers)
    if tuple(module.class_names) != loaded.class_names:  # the labels' columns must be the model's outputs
        raise DataError(f"{module.root}: its labels ({', '.join(module.class_names)}) are not those the run was "
                        f"trained on ({', '.join(loaded.class_names)}); evaluate the run on data with its labels")
    return OpenedRun(loaded, module, evaluation_dir(loaded.run_dir, loaded.checkpoint_path), device)


@contextmanager
def evaluation_outputs(opened: OpenedRun, command: str) -> Iterator[None]:
    """Writing ``opened``'s evaluation folder: the run folder's lock (the evaluation folder's, beside a bare
    checkpoint) and the folder's manifest, every file recorded as coming from the evaluated checkpoint.

    In a run folder every file of ``evaluation/`` is thoracic's by name (``RUN_FILES``); beside a bare
    checkpoint file only those the manifest lists are.
    """
    loaded = opened.loaded
    locked, what = (loaded.run_dir, "run folder") if loaded.run_dir is not None else (opened.out, "evaluation folder")
    with folder_lock(locked, what, f"thoracic {command} {loaded.checkpoint_path}"), \
            output_folder(opened.out, command, checkpoint_source(loaded.info), option="evaluation folder",
                          legacy=("*",) if loaded.run_dir is not None else ()):
        yield


__all__ = ["OpenedRun", "evaluation_dir", "evaluation_outputs", "open_run"]

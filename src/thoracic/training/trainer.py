"""``train(config, resume=None) -> run folder``: the paper's recipes on a Lightning ``Trainer``.

The run folder (docs/ARCHITECTURE.md)::

    <output_dir>/<run_name>/
      config.yaml            the resolved Config
      run_info.json          library versions, git commit, seed, class order, command line(s), devices
      checkpoints/best.ckpt  lowest validation loss
      checkpoints/last.ckpt  end of the last finished epoch (what --resume continues from)
      logs/metrics.csv       CSV log (one row per logging step / epoch)
      logs/tensorboard/      TensorBoard events
      summary.json           best epoch, its metrics, epochs run, whether early stopping fired

Both checkpoints are written atomically (temporary file + ``os.replace``), so a crash while saving
leaves the previous file intact. Resuming (``train(None, resume=run)``) restores the epoch, the
optimizer, the LR scheduler, the early-stopping and checkpoint callbacks' state; the data order and the
global random generators depend only on ``(seed, epoch)`` (:mod:`thoracic.training.seeding`), so a run
killed at any point and resumed from ``last.ckpt`` replays the unfinished epoch exactly as the
uninterrupted run did.

Failures (docs/reliability.md): everything that can be checked (config values, model, data, cache,
devices, free space for the checkpoints) is checked before the run folder is made, so a failed start
leaves no folder behind; a run that fails or is interrupted before its first checkpoint removes its own
files. Ctrl-C stops at the end of the current batch and raises :class:`~thoracic.errors.Interrupted`
naming the run folder and the resume command (a second Ctrl-C stops at once). A full disk while saving
raises :class:`~thoracic.errors.DiskFullError`; the previous ``last.ckpt`` is intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch import seed_everything as lightning_seed_everything
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader

from thoracic.config import (
    Config,
    ConfigError,
    config_from_dict,
    load_config_by_name,  # noqa: F401 - re-exported: it lived here before moving to thoracic.config
    merge_overrides,
    parse_overrides,
    save_config,
    to_dict,
)
from thoracic.config import replace as replace_config
from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
from thoracic.errors import Interrupted, RunError, ThoracicError
from thoracic.io import atomic_write, write_json_atomic, write_text_atomic
from thoracic.models import build_model
from thoracic.safety import (
    DISK_FULL_ERRNOS,
    check_free_space,
    disk_full_error,
    ensure_output_dir,
    foreign_entries,
    free_bytes,
    is_disk_full,
    read_json,
    remove_owned,
)
from thoracic.training.checkpoints import find_checkpoint, load_checkpoint_config
from thoracic.training.module import ThoracicModule
from thoracic.training.seeding import EpochReseed, EpochSeededSampler, ShardedSampler

log = logging.getLogger(__name__)

#: Config keys that may change when a run is resumed (where and how it runs, not what it learns).
RESUMABLE_OVERRIDES: tuple[str, ...] = (
    "train.max_epochs", "train.accelerator", "train.devices", "train.num_nodes", "train.strategy",
    "train.progress_bar", "train.log_every_n_steps", "train.precision",
    "data.root", "data.cache", "data.num_workers",
)

_LIBRARIES = ("thoracic", "torch", "torchvision", "lightning", "torchmetrics", "numpy", "pandas", "scipy",
              "pillow", "pydicom", "captum", "scikit-learn", "matplotlib", "pyyaml")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint with :func:`thoracic.io.atomic_write` (temporary file, fsync, ``os.replace``).

    Readers see the old complete file or the new complete file, never a truncated one (Lightning's own
    writer opens the target for writing directly on local disks).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb", fsync=True) as handle:
            torch.save(checkpoint, handle)


# --------------------------------------------------------------------------------------------------
# Run folder
# --------------------------------------------------------------------------------------------------


def default_run_name(cfg: Config) -> str:
    """``<model>-seed<seed>-<YYYYmmdd-HHMMSS>``: readable and sortable."""
    return f"{cfg.model.name}-seed{cfg.seed}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


#: What ``thoracic train`` writes into a run folder before its first checkpoint (fnmatch patterns; the
#: only files a restart may delete): the config, run_info.json, the CSV / TensorBoard logs and the
#: temporary files of atomic writes.
RUN_STUB_FILES: tuple[str, ...] = (
    "config.yaml", "run_info.json", ".run_info.json.tmp-*", "run_info.json.tmp", ".config.yaml.tmp-*",
    "logs/", "logs/metrics.csv", "logs/metrics_part*.csv", "logs/hparams.yaml", "logs/tensorboard/",
    "logs/tensorboard/events.out.tfevents.*", "logs/tensorboard/hparams.yaml",
    "checkpoints/", "checkpoints/.*.tmp-*",
)


#: Everything ``thoracic train`` (and evaluate / localize, into ``evaluation/``) writes into a run folder:
#: what replacing a whole run (the demo, when its settings change) may delete.
RUN_FILES: tuple[str, ...] = (*RUN_STUB_FILES, "checkpoints/best.ckpt", "checkpoints/last.ckpt", "summary.json",
                              "evaluation/", "evaluation/*")


def _orphan_first_best(folder: Path) -> bool:
    """Whether ``checkpoints/best.ckpt`` is the first checkpoint of a run killed before its ``last.ckpt``.

    Every epoch writes best.ckpt, then last.ckpt: a kill between the two in the first epoch leaves a
    best.ckpt of epoch 0 and nothing to resume from. Such a run starts again (the same command gives
    the same epoch 0). Anything else named best.ckpt (another epoch, not a thoracic checkpoint) is kept.
    """
    best = folder / "checkpoints" / "best.ckpt"
    if not best.is_file() or (folder / "checkpoints" / "last.ckpt").exists() or (folder / "summary.json").exists():
        return False
    try:
        ckpt = torch.load(best, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - unreadable: not provably ours, so never deleted
        return False
    return isinstance(ckpt, dict) and "config" in (ckpt.get("hyper_parameters") or {}) and ckpt.get("epoch") == 0


def stub_files(folder: Path) -> tuple[str, ...] | None:
    """The patterns to clear when ``folder`` holds a run that died before it could be resumed (a start
    that never reached ``last.ckpt``), or None when it holds anything else."""
    if not folder.is_dir() or (folder / "summary.json").exists() or (folder / "checkpoints" / "last.ckpt").exists():
        return None
    patterns = (*RUN_STUB_FILES, "checkpoints/best.ckpt") if _orphan_first_best(folder) else RUN_STUB_FILES
    return None if foreign_entries(folder, patterns) else patterns


def is_stub_run(folder: Path) -> bool:
    """A run folder whose run died before it could be resumed (no ``last.ckpt``; at most the best.ckpt
    of its first epoch) holding only what such a run writes: safe to clear and reuse under the same name."""
    return stub_files(folder) is not None


def resolve_run_dir(cfg: Config) -> Path:
    """Where a new run of ``cfg`` goes; a folder that already holds a run gets a ``-2``, ``-3``... suffix.

    A folder left by a start that died before its first checkpoint (:func:`is_stub_run`) is reused under
    its name. Only rank 0 writes; under DDP the checkpoint folder is broadcast from rank 0 by Lightning,
    so other ranks computing a different name (another second, another suffix) is harmless.
    """
    base = Path(cfg.output_dir) / (cfg.run_name or default_run_name(cfg))
    candidate, counter = base, 1
    while candidate.exists() and any(candidate.iterdir()) and not is_stub_run(candidate):
        counter += 1
        candidate = base.with_name(f"{base.name}-{counter}")
    return candidate


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def train_or_resume(
    cfg: Config,
    *,
    callbacks: Sequence[Callback] = (),
    command_line: Sequence[str] | None = None,
) -> Path:
    """Train ``cfg`` into exactly ``<output_dir>/<run_name>``, continuing what an earlier attempt left there.

    For the orchestrators that own fixed run names and are simply rerun after a crash (lr sweep,
    multi-seed experiments); :func:`resolve_run_dir` would otherwise put the new attempt in a ``-2``
    folder and never resume.

    - a finished run (``summary.json``) is returned as it is;
    - a run with ``checkpoints/last.ckpt`` is resumed (the checkpoint must hold the same config, apart
      from :data:`RESUMABLE_OVERRIDES` and where the run lives);
    - a folder whose run died before its first checkpoint (config, logs, no ``.ckpt`` file) is removed
      and the run starts again. Only rank 0 removes anything: under DDP other ranks just train.

    Raises:
        ConfigError: ``cfg.run_name`` is not set.
        RunError: the folder holds checkpoints but no ``last.ckpt``, or a run of another config.
    """
    if not cfg.run_name:
        raise ConfigError("train_or_resume: cfg.run_name must name the run folder")
    run_dir = Path(cfg.output_dir) / cfg.run_name
    if (run_dir / "summary.json").is_file():
        return run_dir
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        stored, _ = load_checkpoint_config(last)
        old, new = _flatten(to_dict(stored)), _flatten(to_dict(cfg))
        differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)
                           and k not in RESUMABLE_OVERRIDES and k not in ("output_dir", "run_name"))
        if differing:
            raise RunError(
                f"{run_dir} holds an unfinished run of another config ({', '.join(differing)} differ); "
                "use another folder, or delete that run folder to start it again"
            )
        return train(cfg, resume=run_dir, callbacks=callbacks, command_line=command_line)
    if run_dir.exists():
        patterns = (*RUN_STUB_FILES, "checkpoints/best.ckpt") if _orphan_first_best(run_dir) else RUN_STUB_FILES
        leftovers = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.ckpt")
                           if patterns is RUN_STUB_FILES or p != run_dir / "checkpoints" / "best.ckpt")
        if leftovers:
            raise RunError(f"{run_dir} holds checkpoints ({', '.join(leftovers)}) but no checkpoints/last.ckpt "
                           "to resume from; remove the folder to start that run again")
        if rank_zero_only.rank == 0 and any(run_dir.iterdir()):
            # only what a run writes before it can be resumed; anything else is refused, not deleted
            remove_owned(run_dir, patterns, "run folder (a start that stopped before its first last.ckpt)",
                         hint="Move them away, or choose another folder.")
            log.warning("%s: the previous attempt stopped before its first checkpoint; starting it again", run_dir)
    return train(cfg, callbacks=callbacks, command_line=command_line)


def _git_commit() -> dict[str, Any]:
    """Commit and dirty flag of the repository holding this package (None outside a git checkout)."""
    where = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=20, check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape a run's numbers."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cuda_available": torch.cuda.is_available(),
                            "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_run_info(run_dir: Path, cfg: Config, command_line: Sequence[str] | None,
                   resumed_from: Path | None = None) -> Path:
    """Write (or, on resume, extend) ``run_info.json``; returns its path."""
    path = run_dir / "run_info.json"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = {"time": now, "command_line": list(command_line) if command_line is not None else None,
             "git": _git_commit(), "versions": library_versions(), "devices": _device_info()}
    if resumed_from is not None and path.is_file():
        info = read_json(path, "the run's run_info.json", RunError)
        info.setdefault("resumes", []).append({**entry, "checkpoint": str(resumed_from)})
    else:
        data = data_provenance(cfg)
        info = {"created": now, "seed": cfg.seed, "class_names": list(CLASS_NAMES),
                "model": cfg.model.name, "backbone": cfg.model.backbone,
                "data_root": cfg.data.root, "data_kind": data["kind"], "data": data, **entry}
    return write_text_atomic(path, json.dumps(info, indent=2))


def record_data_counts(run_dir: Path, datamodule: Any) -> dict[str, Any]:
    """Add the split sizes (``images``: train / val / test) and the test box rows per class
    (``box_rows``) to ``run_info.json``; reports show them in the run's setup table."""
    path = run_dir / "run_info.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    splits = datamodule.splits
    boxes = datamodule.dataset.boxes
    test_ids = set(datamodule.dataset.table["image_id"].to_numpy()[splits.test])
    box_rows = boxes[boxes["image_id"].isin(test_ids)]["class_name"].value_counts()
    info["images"] = {"train": int(len(splits.train)), "val": int(len(splits.val)), "test": int(len(splits.test))}
    info["box_rows"] = {name: int(box_rows.get(name, 0)) for name in BOX_CLASS_NAMES}
    write_text_atomic(path, json.dumps(info, indent=2))
    return info


def data_provenance(cfg: Config) -> dict[str, Any]:
    """What a run is trained on: the data folder, ``kind`` (``phantom`` for a folder ``thoracic synth``
    wrote, else ``real``) and the data-entry CSV's SHA-256. Stored in ``run_info.json`` and, as
    ``thoracic_data``, in every checkpoint."""
    from thoracic.data.metadata import file_fingerprint, find_metadata_files
    from thoracic.data.synth import folder_kind

    root = Path(cfg.data.root)
    info: dict[str, Any] = {"root": str(root.resolve()), "kind": folder_kind(root), "metadata_sha256": None}
    try:
        info["metadata_sha256"] = file_fingerprint(find_metadata_files(root).data_entry)
    except ThoracicError:
        pass
    return info


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def check_data_config(cfg: Config) -> None:
    """Fail early, naming the key, when the data folder is missing."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise ConfigError(
            f"data.root: folder {root} does not exist (expected a ChestX-ray14 folder; "
            "`thoracic synth` writes a phantom one)"
        )
    if cfg.data.cache is not None and not Path(cfg.data.cache).is_dir():
        raise ConfigError(f"data.cache: folder {cfg.data.cache} does not exist (run `thoracic prepare` first)")


def build_datamodule(cfg: Config) -> Any:
    """The project's ``ChestXrayDataModule`` for ``cfg`` (set up for fitting)."""
    from thoracic.data.dataset import ChestXrayDataModule

    # Batches travel as uint8 (4x less host memory traffic and host-to-device copy than float32) and are
    # normalised on the device by ThoracicModule.on_after_batch_transfer, with the same function.
    datamodule = ChestXrayDataModule.from_config(cfg.data, batch_size=cfg.train.batch_size, seed=cfg.seed,
                                                 as_uint8=True)
    return datamodule


def _rebuild_loader(loader: DataLoader, sampler: torch.utils.data.Sampler, **changes: Any) -> DataLoader:
    options = dict(
        batch_size=loader.batch_size, num_workers=loader.num_workers, collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator, persistent_workers=loader.persistent_workers,
        prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
    )
    options.update(changes)
    return DataLoader(loader.dataset, sampler=sampler, **options)


def reproducible_train_loader(loader: DataLoader, seed: int) -> DataLoader:
    """The same loader, shuffled by :class:`EpochSeededSampler` (order = f(seed, epoch), sharded under
    DDP) and with its own ``torch.Generator`` (reseeded per epoch by :class:`EpochReseed`; it draws the
    workers' base seed).

    Persistent workers are turned off when the dataset augments: fresh workers each epoch get their
    random state from the reseeded generator, so a resumed run draws the same augmentations.
    """
    if loader.batch_size is None:
        raise RunError("the train loader must use batch_size (not a custom batch_sampler)")
    augments = bool(getattr(loader.dataset, "augment", False))
    return _rebuild_loader(loader, EpochSeededSampler(loader.dataset, seed=seed), generator=torch.Generator(),
                           persistent_workers=loader.persistent_workers and not augments)


def sharded_eval_loader(loader: DataLoader) -> DataLoader:
    """The same (unshuffled) loader with a :class:`ShardedSampler`: each image once over all processes."""
    if loader.batch_size is None:
        raise RunError("evaluation loaders must use batch_size (not a custom batch_sampler)")
    if isinstance(loader.sampler, torch.utils.data.RandomSampler):
        raise RunError("validation/test loaders must not shuffle")
    return _rebuild_loader(loader, ShardedSampler(loader.dataset))


# --------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------


def parse_devices(devices: str) -> int | str | list[int]:
    """``auto`` -> ``auto``; ``2`` -> 2; ``-1`` -> -1 (all); ``0,1`` -> [0, 1]."""
    text = str(devices).strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise ConfigError(f"train.devices: expected auto, a count (2, -1 for all) or a list (0,1), got {devices!r}") \
            from None


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars on stderr (Lightning writes them to stdout, where results go), without the
    logger's ``v_num`` entry."""

    def _on_stderr(self, factory: Any) -> Any:
        # Lightning's init_*_tqdm pass file=sys.stdout, read when they are called.
        with contextlib.redirect_stdout(sys.stderr):
            return factory()

    def init_sanity_tqdm(self) -> Any:
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Any:
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Any:
        return self._on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self) -> Any:
        return self._on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self) -> Any:
        return self._on_stderr(super().init_predict_tqdm)

    def get_metrics(self, trainer: Trainer, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


def _progress_callbacks(enabled: bool) -> list[Callback]:
    return [StderrProgressBar()] if enabled else []


def build_trainer(cfg: Config, run_dir: Path, callbacks: Sequence[Callback] = ()) -> tuple[Trainer, EpochReseed]:
    """A Lightning Trainer with the run's checkpoints, early stopping, loggers and precision."""
    train = cfg.train
    best = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min", save_top_k=1,
        save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
    )
    # A second callback for last.ckpt: Lightning 2.6's save_last only writes when the monitored
    # checkpoint was written in the same step, i.e. not after an epoch without improvement.
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
        save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
    )
    early_stopping = EarlyStopping(
        monitor="val_loss", mode="min", patience=train.patience, min_delta=train.min_delta, check_finite=True,
    )
    reseed = EpochReseed(cfg.seed)  # the train loader's generator is attached by train()
    loggers = [
        # Flushed at every logging call so a crash loses no finished epoch's row.
        CSVLogger(save_dir=run_dir, name="logs", version="", flush_logs_every_n_steps=1),
        TensorBoardLogger(save_dir=run_dir, name="logs", version="tensorboard", default_hp_metric=False),
    ]
    _check_accelerator(train.accelerator)
    try:
        trainer = _make_trainer(train, run_dir, callbacks, reseed, early_stopping, best, last, loggers)
    except (ValueError, TypeError, RuntimeError) as exc:
        # Lightning's MisconfigurationException is a ValueError: an unknown strategy, device ids that
        # do not exist... named here instead of a traceback
        raise ConfigError(f"train: Lightning rejects accelerator={train.accelerator!r}, devices={train.devices!r}, "
                          f"num_nodes={train.num_nodes}, strategy={train.strategy!r}, precision={train.precision!r}: "
                          f"{exc}") from None
    return trainer, reseed


def _check_accelerator(accelerator: str) -> None:
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator: {accelerator!r} asks for a GPU, but torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use auto or cpu")


def _make_trainer(train: Any, run_dir: Path, callbacks: Sequence[Callback], reseed: Callback,
                  early_stopping: Callback, best: Callback, last: Callback, loggers: list) -> Trainer:
    return Trainer(
        default_root_dir=run_dir,
        max_epochs=train.max_epochs,
        accelerator=train.accelerator,
        devices=parse_devices(train.devices),
        num_nodes=train.num_nodes,
        strategy=train.strategy,
        precision=train.precision,
        callbacks=[reseed, early_stopping, *callbacks, best, last, *_progress_callbacks(train.progress_bar),
                   InterruptGuard()],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        limit_train_batches=train.limit_train_batches,
        limit_val_batches=train.limit_val_batches,
        log_every_n_steps=train.log_every_n_steps,
        enable_progress_bar=train.progress_bar,
        enable_model_summary=train.progress_bar,
        # "warn": deterministic kernels wherever torch has them; a warning (not a crash mid-run) for the
        # few GPU kernels without a deterministic version.
        deterministic="warn" if train.deterministic else False,
        benchmark=not train.deterministic,
        # The loaders shard themselves (EpochSeededSampler / ShardedSampler): see thoracic.training.seeding.
        use_distributed_sampler=False,
    )


def _resume_checkpoint(resume: str | Path) -> tuple[Path, Path]:
    """(run folder, last checkpoint) for ``--resume RUN`` (a run folder or a .ckpt inside one)."""
    resume = Path(resume)
    checkpoint = find_checkpoint(resume, "last")
    run_dir = resume if resume.is_dir() else checkpoint.parent.parent
    if not (run_dir / "checkpoints").is_dir():
        raise RunError(f"cannot resume {resume}: not inside a run folder (expected <run>/checkpoints/last.ckpt)")
    return run_dir, checkpoint


def config_for_resume(resume: str | Path, overrides: Mapping[str, Any] | Sequence[str] = ()) -> Config:
    """The config stored in the run's last checkpoint, with the few overrides a resume may change."""
    _, checkpoint = _resume_checkpoint(resume)
    cfg, _ = load_checkpoint_config(checkpoint)
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    forbidden = sorted(k for k in overrides if k not in RESUMABLE_OVERRIDES)
    if forbidden:
        raise ConfigError(
            f"cannot change {', '.join(forbidden)} when resuming (the run would no longer be the same run); "
            f"allowed: {', '.join(RESUMABLE_OVERRIDES)}"
        )
    return config_from_dict(merge_overrides(to_dict(cfg), overrides))


class InterruptGuard(Callback):
    """Ctrl-C during ``fit``: finish the current batch, then raise :class:`~thoracic.errors.Interrupted`.

    Lightning's own handling of KeyboardInterrupt prints "attempting graceful shutdown" and calls
    ``sys.exit(1)``; a flag checked between batches instead stops at a point where the run's state is
    consistent (``last.ckpt`` of the last finished epoch, logs flushed) and lets :func:`train` say where
    the run is and how to resume it. A second Ctrl-C stops at once. Only in a single process (under DDP
    every rank would stop at a different batch and the others would wait in a collective forever).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._pid = os.getpid()

    def _handler(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            # a forked DataLoader worker inherits this handler: it keeps loading, quietly, and the
            # main process stops the run between batches
            return
        if self.requested:
            raise Interrupted("interrupted twice: stopped at once")
        self.requested = True
        print("\nCtrl-C: stopping at the end of this batch (press Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def on_fit_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._pid = os.getpid()
        if (trainer.world_size == 1 and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):  # e.g. `nohup`, `cmd &` in scripts
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def _check(self) -> None:
        if self.requested:
            raise Interrupted("interrupted (Ctrl-C)")

    def on_train_batch_end(self, *args: Any) -> None:
        self._check()

    def on_validation_batch_end(self, *args: Any) -> None:
        self._check()

    def on_train_epoch_start(self, *args: Any) -> None:
        self._check()

    def restore(self) -> None:
        """Give SIGINT back to the handler it had before the fit. Called at the end of the fit and again
        by :func:`train` after it: Lightning's teardown re-installs the handlers it saw at fit start."""
        if self._previous is not None and signal.getsignal(signal.SIGINT) == self._handler:
            signal.signal(signal.SIGINT, self._previous)

    def on_fit_end(self, *args: Any) -> None:
        self.restore()

    def on_exception(self, *args: Any) -> None:
        self.restore()


def estimated_checkpoint_bytes(model: torch.nn.Module) -> int:
    """Bytes of one checkpoint: the weights and buffers, plus Adam's two moments per trainable weight."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + 2 * trainable + (1 << 20)


def train(
    cfg: Config | None,
    resume: str | Path | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    command_line: Sequence[str] | None = None,
) -> Path:
    """Train ``cfg`` (or continue the run ``resume``) and return the run folder.

    Args:
        cfg: the resolved config; with ``resume`` it may be None (the run's own config is used).
        resume: a run folder (or its ``last.ckpt``) to continue exactly where its last finished epoch ended.
        callbacks: extra Lightning callbacks (tests use them to interrupt a run).
        command_line: recorded in ``run_info.json`` (library code never reads ``sys.argv``).

    Raises:
        ConfigError: missing data folder, bad devices; RunError: nothing to resume, non-finite loss;
        DiskFullError: no room for a checkpoint (the previous ``last.ckpt`` is kept);
        Interrupted: Ctrl-C (the message names the run folder and the resume command).
    """
    checkpoint_path: Path | None = None
    if resume is not None:
        run_dir, checkpoint_path = _resume_checkpoint(resume)
        if cfg is None:
            cfg, _ = load_checkpoint_config(checkpoint_path)
    elif cfg is None:
        raise ConfigError("train: give a config or a run to resume")
    check_data_config(cfg)
    if resume is None:
        ensure_output_dir(cfg.output_dir, "output_dir", create=False)
        run_dir = resolve_run_dir(cfg)

    # Everything that can fail on bad input is built before the run folder is made: a failed start
    # leaves nothing behind. Seeding first: it fixes the model's initialisation.
    lightning_seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    frequencies = getattr(datamodule, "class_frequencies", None)
    # On resume the checkpoint supplies every weight: do not fetch ImageNet weights just to overwrite them.
    model = _model_without_pretrained_weights(cfg) if checkpoint_path is not None else None
    module = ThoracicModule(cfg, class_frequencies=frequencies, model=model)
    module.data_provenance = data_provenance(cfg)
    trainer, reseed = build_trainer(cfg, run_dir, callbacks)
    guard = next(c for c in trainer.callbacks if isinstance(c, InterruptGuard))
    checkpoint_bytes = estimated_checkpoint_bytes(module.model)
    # best.ckpt + last.ckpt, each written beside the old file before replacing it
    check_free_space(run_dir, checkpoint_bytes * (1 if checkpoint_path is not None else 2),
                     f"the checkpoints of {run_dir}", "Nothing was written; free some space and rerun.")

    created = not run_dir.exists()
    try:
        if rank_zero_only.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            if resume is None:
                if any(run_dir.iterdir()):  # a stub of a start that died (resolve_run_dir checked it)
                    remove_owned(run_dir, stub_files(run_dir) or RUN_STUB_FILES, "run folder", remove_folder=False)
                save_config(cfg, run_dir / "config.yaml")
            else:
                _remove_stale_temporary_files(run_dir)
            write_run_info(run_dir, cfg, command_line, resumed_from=checkpoint_path)
            record_data_counts(run_dir, datamodule)
            if checkpoint_path is not None:
                _keep_previous_csv_log(run_dir)

        train_loader = reproducible_train_loader(datamodule.train_dataloader(), cfg.seed)
        reseed.generator = train_loader.generator
        val_loader = sharded_eval_loader(datamodule.val_dataloader())
        # Lightning builds the first train iterator of a fit before on_train_epoch_start and set_epoch:
        # position the sampler and the generators on the first epoch now.
        start_epoch = 0 if checkpoint_path is None else _next_epoch(checkpoint_path)
        train_loader.sampler.set_epoch(start_epoch)
        reseed.reseed(start_epoch)
        try:
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader,
                        ckpt_path=str(checkpoint_path) if checkpoint_path is not None else None)
        finally:
            guard.restore()
        if trainer.interrupted:
            raise Interrupted("interrupted")
        if trainer.world_size > 1:
            # Other ranks may have computed another folder name (another second); rank 0's is the run.
            run_dir = Path(trainer.strategy.broadcast(str(run_dir), src=0))
        if trainer.is_global_zero:
            write_summary(run_dir, trainer)
    except BaseException as exc:
        interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt)) or guard.requested
        replacement = _failed(exc, run_dir, resume is None, interrupted, checkpoint_bytes, remove_folder=created)
        if replacement is exc:
            raise
        raise replacement from None
    return run_dir


def _remove_stale_temporary_files(run_dir: Path) -> None:
    """Temporary files of atomic writes a kill interrupted (a checkpoint's is as large as the checkpoint)."""
    for pattern in ("checkpoints/.*.tmp-*", ".run_info.json.tmp-*", ".summary.json.tmp-*"):
        for path in run_dir.glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)


def _failed(exc: BaseException, run_dir: Path, new_run: bool, interrupted: bool, checkpoint_bytes: int,
            remove_folder: bool = True) -> BaseException:
    """The exception to raise when a fit stops early: named for Ctrl-C and full disks; a new run that
    never saved a checkpoint has its own files removed (and its folder, when this call made it: a failed
    start leaves no folder)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    removed = False
    free = free_bytes(run_dir)  # before any cleanup gives space back
    if new_run and not last.is_file() and rank_zero_only.rank == 0 and run_dir.is_dir():
        try:
            # this call made the folder: a best.ckpt in it (saved just before last.ckpt failed) is its own too
            remove_owned(run_dir, (*RUN_STUB_FILES, "checkpoints/best.ckpt"), "run folder",
                         remove_folder=remove_folder)
            removed = True
        except (ThoracicError, OSError):
            pass  # something else is there: leave it all
    if last.is_file():
        epoch = _checkpoint_epoch(last)
        state = (f"run folder {run_dir}: checkpoints/last.ckpt holds epoch {epoch} (the last one finished); "
                 f"resume with `thoracic train --resume {run_dir}`")
    elif removed:
        state = (f"no epoch had finished, so there is nothing to resume: the run folder {run_dir} was "
                 + ("removed" if remove_folder else "emptied of its files"))
    else:
        state = f"no epoch had finished, so there is nothing to resume in {run_dir}"
    if interrupted:
        rerun = "" if last.is_file() else "; rerun the same command to start again"
        return Interrupted(f"interrupted (Ctrl-C); {state}{rerun}")
    if is_disk_full(exc):
        cause = exc if isinstance(exc, OSError) else next(
            e for e in _chain(exc) if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS)
        kept = (f"The previous checkpoints are intact; {state}." if last.is_file()
                else f"{state[0].upper()}{state[1:]}.")
        return disk_full_error(cause, "a checkpoint or log of the run", run_dir, checkpoint_bytes, kept, free)
    return exc


def _chain(exc: BaseException) -> list[BaseException]:
    chain = []
    while exc is not None and len(chain) < 8:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain


def _checkpoint_epoch(path: Path) -> int | str:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False).get("epoch", -1))
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def _model_without_pretrained_weights(cfg: Config) -> torch.nn.Module:
    """The model of ``cfg`` built for loading a checkpoint into (no ImageNet download)."""
    return build_model(replace_config(cfg.model, pretrained=False, weights=None))


def _next_epoch(checkpoint_path: Path) -> int:
    """The epoch a resumed fit starts with: one past the epoch the end-of-epoch checkpoint recorded."""
    ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    return int(ckpt.get("epoch", -1)) + 1


# --------------------------------------------------------------------------------------------------
# Reading logs back
# --------------------------------------------------------------------------------------------------


def _csv_parts(run_dir: Path) -> list[Path]:
    """CSV logs of the sessions before each resume, oldest first (``metrics_part<k>.csv``)."""
    parts = list((run_dir / "logs").glob("metrics_part*.csv"))
    return sorted(parts, key=lambda p: int(p.stem.removeprefix("metrics_part") or 0))


def _keep_previous_csv_log(run_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv; move it aside so a resume keeps history."""
    current = run_dir / "logs" / "metrics.csv"
    if current.is_file():
        os.replace(current, current.with_name(f"metrics_part{len(_csv_parts(run_dir)) + 1}.csv"))


def read_epoch_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per epoch (index ``epoch``) of the run's CSV log: losses, per-class val AUC, learning rate.

    The logs of sessions before a resume (``metrics_part<k>.csv``) come first; a resumed run replays the
    epoch it was killed in, and the later rows win.
    """
    run_dir = Path(run_dir)
    path = run_dir / "logs" / "metrics.csv"
    files = [*_csv_parts(run_dir), *([path] if path.is_file() else [])]
    if not files:
        raise RunError(f"run {run_dir} has no CSV log ({path} is missing)")
    table = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if "epoch" not in table.columns:
        raise RunError(f"{path}: no 'epoch' column")
    table = table.dropna(subset=["epoch"])
    table["epoch"] = table["epoch"].astype(int)
    columns = [c for c in table.columns if c not in ("step", "epoch") and not c.endswith("_step")]
    per_epoch = table.groupby("epoch")[columns].last()
    return per_epoch.dropna(how="all")


#: Divergence: a validation loss above this many times the loss of predicting 0.5 for every class.
DIVERGED_LOSS_FACTOR = 100.0


def chance_loss(loss_name: str, focal_gamma: float = 2.0) -> float:
    """The loss per image of predicting 0.5 for every class (every term ``-ln 0.5``), by loss.

    Eq. 1's weights make the positive and the negative terms of a batch each sum to its image count,
    so the weighted losses score twice the plain binary cross-entropy's ``14 ln 2``.
    """
    base = len(CLASS_NAMES) * math.log(2.0)
    if loss_name in ("wcel", "wcel_per_class"):
        return 2.0 * base
    if loss_name == "focal":
        return base * 0.5 ** focal_gamma
    return base


def divergence_reasons(epochs: pd.DataFrame, cfg: Config) -> list[str]:
    """Why a finished run looks diverged (empty list: it does not).

    - the last epoch's validation loss exceeds :data:`DIVERGED_LOSS_FACTOR` times :func:`chance_loss`
      (a finite loss can still be absurd: lr=1 gives ~1e8);
    - every class with a defined validation AUC has exactly 0.5 (to 1e-3) at the last epoch: the network
      gives every image the same score, i.e. its outputs saturated.
    """
    reasons: list[str] = []
    if epochs.empty:
        return reasons
    last = epochs.iloc[-1]
    chance = chance_loss(cfg.loss.name, cfg.loss.focal_gamma)
    loss = last.get("val_loss")
    if loss is not None and np.isfinite(loss) and loss > DIVERGED_LOSS_FACTOR * chance:
        reasons.append(f"validation loss {loss:.3g} at epoch {int(epochs.index[-1])} is over "
                       f"{DIVERGED_LOSS_FACTOR:g} x the {chance:.3g} of predicting 0.5 for every class")
    aucs = np.array([last.get(f"val_auc/{name}", np.nan) for name in CLASS_NAMES], dtype=float)
    aucs = aucs[np.isfinite(aucs)]
    if len(aucs) and np.all(np.abs(aucs - 0.5) < 1e-3):
        reasons.append(f"every validation AUC is 0.5 at epoch {int(epochs.index[-1])}: the network gives "
                       "every image the same score")
    return reasons


def write_summary(run_dir: Path, trainer: Trainer) -> dict[str, Any]:
    """``summary.json``: the best epoch (lowest val loss) and its metrics, epochs run, early stop, and
    ``diverged`` / ``divergence`` (:func:`divergence_reasons`; a warning is logged when it diverged)."""
    checkpoint = trainer.checkpoint_callback
    early = trainer.early_stopping_callback
    epochs = read_epoch_metrics(run_dir)
    summary: dict[str, Any] = {"class_names": list(CLASS_NAMES), "epochs_completed": int(trainer.current_epoch),
                               "stopped_early": bool(early is not None and early.stopped_epoch > 0),
                               "best_epoch": None, "best_val_loss": None, "metrics": {}}
    if "val_loss" in epochs.columns and epochs["val_loss"].notna().any():
        best_epoch = int(epochs["val_loss"].idxmin())
        row = epochs.loc[best_epoch]
        summary["best_epoch"] = best_epoch
        summary["best_val_loss"] = float(row["val_loss"])
        summary["metrics"] = {k: _finite_or_none(v) for k, v in row.items()
                              if k.startswith("val_") or k.startswith("train_loss")}
    if checkpoint is not None and checkpoint.best_model_path:
        summary["best_checkpoint"] = os.path.relpath(checkpoint.best_model_path, run_dir)
    module = trainer.lightning_module
    reasons = divergence_reasons(epochs, module.config) if hasattr(module, "config") else []
    summary["diverged"] = bool(reasons)
    summary["divergence"] = reasons
    if reasons:
        log.warning("%s: the run diverged: %s. Its numbers mean nothing; lower optim.lr (now %g) and train "
                    "again.", run_dir, "; ".join(reasons), module.config.optim.lr)
    summary["data"] = getattr(module, "data_provenance", None)
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def evaluate_checkpoint(run_dir: str | Path, which: str = "best", split: str = "test",
             overrides: Mapping[str, Any] | None = None) -> dict[str, float | None]:
    """Loss and per-class AUC of a run's checkpoint on ``split`` (``test`` or ``val``), with Lightning.

    Runs on the run's own accelerator/devices settings (``overrides`` may change them, e.g.
    ``{"train.devices": "1"}``); the AUC is gathered over all processes. Also stored in
    ``summary.json`` under ``<split>_metrics``.
    """
    run_dir = Path(run_dir)
    checkpoint = find_checkpoint(run_dir, which)
    cfg, ckpt = load_checkpoint_config(checkpoint)
    if overrides:
        cfg = config_from_dict(merge_overrides(to_dict(cfg), overrides))
    if split not in ("test", "val"):
        raise ConfigError(f"split: expected test or val, got {split!r}")
    check_data_config(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "fit")
    loader = sharded_eval_loader(datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader())
    module = ThoracicModule(cfg, class_frequencies=ckpt["hyper_parameters"].get("class_frequencies"),
                            model=_model_without_pretrained_weights(cfg))
    module.load_state_dict(ckpt["state_dict"])
    trainer = Trainer(accelerator=cfg.train.accelerator, devices=parse_devices(cfg.train.devices),
                      num_nodes=cfg.train.num_nodes, strategy=cfg.train.strategy, precision=cfg.train.precision,
                      logger=False, enable_progress_bar=cfg.train.progress_bar, enable_model_summary=False,
                      callbacks=_progress_callbacks(cfg.train.progress_bar),
                      limit_test_batches=1.0, deterministic="warn" if cfg.train.deterministic else False,
                      use_distributed_sampler=False)
    results = trainer.test(module, dataloaders=loader, verbose=False)[0]
    metrics = {k.replace("test_", f"{split}_", 1): _finite_or_none(v) for k, v in results.items()}
    if trainer.is_global_zero:
        path = run_dir / "summary.json"
        summary = read_json(path, "the run's summary.json", RunError) if path.is_file() else {}
        summary[f"{split}_metrics"] = metrics
        summary[f"{split}_checkpoint"] = os.path.relpath(checkpoint, run_dir)
        write_json_atomic(path, summary)
    return metrics

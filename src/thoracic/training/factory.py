"""The one place a run's Lightning ``Trainer`` and its ``ChestXrayDataModule`` are built.

:func:`build_datamodule` serves training (``stage="fit"``: uint8 batches normalised on the device) and
evaluation (``stage="test"``: another data folder or cache may be given); :func:`lightning_trainer` holds
the settings every Trainer of a run shares (devices, strategy, precision, determinism, the loaders
sharding themselves), :func:`build_trainer` adds the training callbacks and loggers and
:func:`test_trainer` is the one :func:`thoracic.workflows.evaluate.evaluate_checkpoint` tests with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from thoracic.config import Config, ConfigError, TrainConfig
from thoracic.config import replace as replace_config
from thoracic.data.dataset import ChestXrayDataModule
from thoracic.errors import RunError
from thoracic.io import atomic_write
from thoracic.training.callbacks import InterruptGuard, progress_callbacks
from thoracic.training.checkpoints import read_checkpoint
from thoracic.training.seeding import EpochReseed, EpochSeededSampler, ShardedSampler


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint with :func:`thoracic.io.atomic_write` (temporary file, fsync, ``os.replace``),
    and read it with :func:`thoracic.training.checkpoints.read_checkpoint`.

    Readers see the old complete file or the new complete file, never a truncated one (Lightning's own
    writer opens the target for writing directly on local disks). Lightning's resume (``fit(ckpt_path=)``)
    reads through :meth:`load_checkpoint`: without code execution unless ``trust`` (Lightning 2.6 itself
    passes ``weights_only=None`` to ``torch.load``, which means full pickle before PyTorch 2.6).
    """

    def __init__(self, trust: bool = False) -> None:
        super().__init__()
        self.trust = trust

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, trust=self.trust, map_location=map_location or "cpu")

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb", fsync=True) as handle:
            torch.save(checkpoint, handle)


def check_data_config(cfg: Config) -> None:
    """Fail early, naming the key, when the data folder is missing."""
    root = Path(cfg.data.root)
    if not root.is_dir():
        raise ConfigError(
            f"data.root: folder {root} does not exist (expected a dataset folder as distributed; "
            "`thoracic synth` writes a phantom one)"
        )
    if cfg.data.cache is not None and not Path(cfg.data.cache).is_dir():
        raise ConfigError(f"data.cache: folder {cfg.data.cache} does not exist (run `thoracic prepare` first)")


def build_datamodule(cfg: Config, stage: str = "fit", batch_size: int | None = None,
                     data_root: str | Path | None = None, cache: str | Path | None = None,
                     num_workers: int | None = None) -> ChestXrayDataModule:
    """The ``ChestXrayDataModule`` of ``cfg``.

    ``stage="fit"`` (training): batches travel as uint8 (4x less host memory traffic and host-to-device
    copy than float32) and are normalised on the device by ``ThoracicModule.on_after_batch_transfer``,
    with the same function; not set up yet (``train`` calls ``prepare_data`` / ``setup``).
    ``stage="test"`` (evaluate / localize): float batches, no pinned memory, set up for testing; the data
    folder (``data_root``: its own cache then), the ``cache``, ``num_workers`` and ``batch_size`` may
    differ from the run's.
    """
    if stage == "fit":
        return ChestXrayDataModule.from_config(cfg.data, batch_size=cfg.train.batch_size, seed=cfg.seed,
                                               as_uint8=True)
    if stage != "test":
        raise ValueError(f"build_datamodule: stage must be fit or test, got {stage!r}")
    changes: dict[str, Any] = {}
    if data_root is not None:
        changes["root"] = str(data_root)
        changes["cache"] = None  # the run's cache belongs to its own root
    if cache is not None:
        changes["cache"] = str(cache)
    if num_workers is not None:
        changes["num_workers"] = int(num_workers)
    data = replace_config(cfg.data, **changes) if changes else cfg.data
    module = ChestXrayDataModule.from_config(data, batch_size=batch_size or cfg.train.batch_size, seed=cfg.seed,
                                             pin_memory=False)
    module.setup("test")
    return module


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


def lightning_trainer(train: TrainConfig, callbacks: Sequence[Callback] = (), after_progress: Sequence[Callback] = (),
                      **settings: Any) -> Trainer:
    """A Lightning ``Trainer`` on the run's devices: ``train``'s accelerator, devices, nodes, strategy and
    precision, its progress bar (on stderr) between ``callbacks`` and ``after_progress``, deterministic kernels when it asks for them
    (``"warn"``: a warning, not a crash mid-run, for the few GPU kernels without a deterministic version),
    and the loaders sharding themselves (:mod:`thoracic.training.seeding`). ``settings`` are passed on.

    Lightning's rejections (its MisconfigurationException is a ValueError: an unknown strategy, device
    ids that do not exist...) become a :class:`~thoracic.config.ConfigError` naming the settings.
    """
    _check_accelerator(train.accelerator)
    try:
        return Trainer(
            accelerator=train.accelerator,
            devices=parse_devices(train.devices),
            num_nodes=train.num_nodes,
            strategy=train.strategy,
            precision=train.precision,
            callbacks=[*callbacks, *progress_callbacks(train.progress_bar), *after_progress],
            enable_progress_bar=train.progress_bar,
            deterministic="warn" if train.deterministic else False,
            use_distributed_sampler=False,
            **settings,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"train: Lightning rejects accelerator={train.accelerator!r}, devices={train.devices!r}, "
                          f"num_nodes={train.num_nodes}, strategy={train.strategy!r}, precision={train.precision!r}: "
                          f"{exc}") from None


class RunFolderCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose state survives a moved or copied run folder.

    Lightning restores the best score only when the checkpoint folder is the very path it was saved
    from; otherwise it warns and starts from no best score, so the next epoch, however worse, overwrites
    ``best.ckpt``. The paths stored in the state are rebased onto the run's current ``checkpoints/``
    folder instead: the files are the same ones, by name, in the moved folder.
    """

    @property
    def state_key(self) -> str:
        """Lightning's own key (``ModelCheckpoint{...}``): runs saved before this class existed resume too."""
        return "ModelCheckpoint" + super().state_key[len(type(self).__qualname__):]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and str(old) != str(self.dirpath):
            state_dict = rebase_checkpoint_state(state_dict, str(old), str(self.dirpath))
        super().load_state_dict(state_dict)


def rebase_checkpoint_state(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A ``ModelCheckpoint`` state with every path under folder ``old`` moved under ``new``."""
    def move(path: Any) -> Any:
        if isinstance(path, str) and path and os.path.dirname(path) == old.rstrip(os.sep):
            return os.path.join(new, os.path.basename(path))
        return path

    state = dict(state)
    state["dirpath"] = new
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return state


def build_trainer(cfg: Config, run_dir: Path, callbacks: Sequence[Callback] = (), *,
                  trust_checkpoint: bool = False) -> tuple[Trainer, EpochReseed]:
    """The training ``Trainer``: the run's checkpoints (``best.ckpt``, ``last.ckpt``, written atomically,
    read back without running code unless ``trust_checkpoint``, their best score kept when the run folder
    moved), early stopping, CSV and TensorBoard loggers, Ctrl-C between batches; and the callback that
    reseeds the train loader's generator each epoch."""
    train = cfg.train
    best = RunFolderCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min", save_top_k=1,
        save_last=False, auto_insert_metric_name=False, enable_version_counter=False,
    )
    # A second callback for last.ckpt: Lightning 2.6's save_last only writes when the monitored
    # checkpoint was written in the same step, i.e. not after an epoch without improvement.
    last = RunFolderCheckpoint(
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
    trainer = lightning_trainer(
        train,
        callbacks=[reseed, early_stopping, *callbacks, best, last],
        after_progress=[InterruptGuard()],
        default_root_dir=run_dir,
        max_epochs=train.max_epochs,
        logger=loggers,
        plugins=[AtomicCheckpointIO(trust=trust_checkpoint)],
        limit_train_batches=train.limit_train_batches,
        limit_val_batches=train.limit_val_batches,
        log_every_n_steps=train.log_every_n_steps,
        enable_model_summary=train.progress_bar,
        benchmark=not train.deterministic,
    )
    return trainer, reseed


def test_trainer(cfg: Config) -> Trainer:
    """The ``Trainer`` that tests a checkpoint on the run's devices (no logger, no checkpoints)."""
    return lightning_trainer(cfg.train, logger=False, enable_model_summary=False, limit_test_batches=1.0)


def _check_accelerator(accelerator: str) -> None:
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.accelerator: {accelerator!r} asks for a GPU, but torch sees no CUDA device "
                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use auto or cpu")


__all__ = ["AtomicCheckpointIO", "RunFolderCheckpoint", "build_datamodule", "build_trainer", "check_data_config", "lightning_trainer",
           "parse_devices", "rebase_checkpoint_state", "reproducible_train_loader", "sharded_eval_loader",
           "test_trainer"]

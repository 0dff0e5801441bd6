"""``train(config, resume=None) -> run folder``: the paper's recipes on a Lightning ``Trainer``.

What a run writes and reads back is in :mod:`thoracic.training.run_folder`; its Trainer and data module
come from :mod:`thoracic.training.factory`.

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

One writer at a time: the run folder is locked (:func:`thoracic.safety.folder_lock`) while a run trains
or resumes, so a second ``thoracic train RUN`` of the same run gets a named error instead of mixing its logs
and checkpoints with the first's. Checkpoints are read without running code
(:func:`~thoracic.training.checkpoints.read_checkpoint`) unless ``trust_checkpoint``. Resuming a run that
already finished (early stopping, or every epoch of ``train.max_epochs``) changes nothing and says so.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch import seed_everything as lightning_seed_everything
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from thoracic.config import (
    Config,
    ConfigError,
    config_from_dict,
    merge_overrides,
    parse_overrides,
    save_config,
    to_dict,
)
from thoracic.config import replace as replace_config
from thoracic.errors import Interrupted, RunError, ThoracicError
from thoracic.models import build_model, check_model_config
from thoracic.safety import (
    DISK_FULL_ERRNOS,
    check_free_space,
    disk_full_error,
    ensure_output_dir,
    folder_lock,
    free_bytes,
    is_disk_full,
    remove_owned,
)
from thoracic.training.callbacks import InterruptGuard
from thoracic.spec import SPEC_KEY, legacy_class_names
from thoracic.training.checkpoints import (
    find_checkpoint,
    load_checkpoint_config,
    read_checkpoint,
    training_spec,
)
from thoracic.training.factory import (
    build_datamodule,
    build_trainer,
    check_data_config,
    reproducible_train_loader,
    sharded_eval_loader,
)
from thoracic.training.module import ThoracicModule
from thoracic.training.run_folder import (
    RUN_STUB_FILES,
    _keep_previous_csv_log,
    _orphan_first_best,
    data_provenance,
    describe_training_data,
    record_data_counts,
    resolve_run_dir,
    stub_files,
    write_run_info,
    write_summary,
)

logger = logging.getLogger(__name__)

#: Config keys that may change when a run is resumed (where and how it runs, not what it learns).
RESUMABLE_OVERRIDES: tuple[str, ...] = (
    "train.max_epochs", "train.accelerator", "train.devices", "train.num_nodes", "train.strategy",
    "train.progress_bar", "train.log_every_n_steps", "train.precision",
    "data.root", "data.cache", "data.num_workers",
)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _command(command_line: Sequence[str] | None, fallback: str) -> str:
    """How a lock names its holder: the command line when known."""
    return " ".join(str(a) for a in command_line) if command_line else fallback


def train_or_resume(
    cfg: Config,
    *,
    callbacks: Sequence[Callback] = (),
    command_line: Sequence[str] | None = None,
    trust_checkpoint: bool = False,
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
        FolderInUseError: another process trains this run.
    """
    if not cfg.run_name:
        raise ConfigError("train_or_resume: cfg.run_name must name the run folder")
    run_dir = Path(cfg.output_dir) / cfg.run_name
    if (run_dir / "summary.json").is_file():
        return run_dir
    # the decision (resume, restart, start) and what follows under one lock: two processes never both
    # clear and restart the same folder
    locked = run_dir.is_dir() and rank_zero_only.rank == 0
    with folder_lock(run_dir, "run folder", _command(command_line, "thoracic train")) if locked else nullcontext():
        return _train_or_resume(cfg, run_dir, callbacks, command_line, trust_checkpoint)


def _train_or_resume(cfg: Config, run_dir: Path, callbacks: Sequence[Callback],
                     command_line: Sequence[str] | None, trust_checkpoint: bool) -> Path:
    if (run_dir / "summary.json").is_file():
        return run_dir
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        stored, _ = load_checkpoint_config(last, trust=trust_checkpoint)
        if cfg.model.num_classes is None:  # follows the data: the stored run has it resolved
            cfg = replace_config(cfg, **{"model.num_classes": stored.model.num_classes})
        old, new = _flatten(to_dict(stored)), _flatten(to_dict(cfg))
        differing = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)
                           and k not in RESUMABLE_OVERRIDES and k not in ("output_dir", "run_name"))
        if differing:
            raise RunError(
                f"{run_dir} holds an unfinished run of another config ({', '.join(differing)} differ); "
                "use another folder, or delete that run folder to start it again"
            )
        return train(cfg, resume=run_dir, callbacks=callbacks, command_line=command_line,
                     trust_checkpoint=trust_checkpoint)
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
            logger.warning("%s: the previous attempt stopped before its first checkpoint; starting it again", run_dir)
    return train(cfg, callbacks=callbacks, command_line=command_line, trust_checkpoint=trust_checkpoint)


def _resume_checkpoint(resume: str | Path) -> tuple[Path, Path]:
    """(run folder, last checkpoint) of a run to continue (a run folder or a .ckpt inside one)."""
    resume = Path(resume)
    checkpoint = resume if resume.is_file() else find_checkpoint(resume, "last")
    run_dir = resume if resume.is_dir() else checkpoint.parent.parent
    if not (run_dir / "checkpoints").is_dir():
        raise RunError(f"cannot resume {resume}: not inside a run folder (expected <run>/checkpoints/last.ckpt)")
    return run_dir, checkpoint


def config_for_resume(resume: str | Path, overrides: Mapping[str, Any] | Sequence[str] = (), *,
                      trust_checkpoint: bool = False) -> Config:
    """The config stored in the run's last checkpoint, with the few overrides a resume may change."""
    _, checkpoint = _resume_checkpoint(resume)
    cfg, _ = load_checkpoint_config(checkpoint, trust=trust_checkpoint)
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    forbidden = sorted(k for k in overrides if k not in RESUMABLE_OVERRIDES)
    if forbidden:
        raise ConfigError(
            f"cannot change {', '.join(forbidden)} when resuming (the run would no longer be the same run); "
            f"allowed: {', '.join(RESUMABLE_OVERRIDES)}"
        )
    return config_from_dict(merge_overrides(to_dict(cfg), overrides))


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
    log: Callable[[str], None] | None = None,
    trust_checkpoint: bool = False,
) -> Path:
    """Train ``cfg`` (or continue the run ``resume``) and return the run folder.

    Args:
        cfg: the resolved config; with ``resume`` it may be None (the run's own config is used).
        resume: a run folder (or its ``last.ckpt``) to continue exactly where its last finished epoch ended.
            A run that already finished (early stopping, or ``cfg.train.max_epochs`` epochs done) is left
            as it is (a warning says so).
        callbacks: extra Lightning callbacks (tests use them to interrupt a run).
        command_line: recorded in ``run_info.json`` (library code never reads ``sys.argv``).
        log: receives the messages for the user (the data trained on, :func:`describe_training_data`; a run
            that already finished); the CLI prints them on stderr.
        trust_checkpoint: read the run's checkpoint with full pickle (it may run code; see
            :func:`~thoracic.training.checkpoints.read_checkpoint`).

    Raises:
        ConfigError: missing data folder, bad devices, a model option the model does not take
            (:func:`thoracic.models.check_model_config`); RunError: nothing to resume, non-finite loss;
        UnsafeCheckpointError: the checkpoint to resume needs more than plain data;
        FolderInUseError: another process trains this run;
        DiskFullError: no room for a checkpoint (the previous ``last.ckpt`` is kept);
        Interrupted: Ctrl-C (the message names the run folder and the resume command).
    """
    checkpoint_path: Path | None = None
    checkpoint: Mapping[str, Any] = {}
    if resume is not None:
        run_dir, checkpoint_path = _resume_checkpoint(resume)
        stored, checkpoint = load_checkpoint_config(checkpoint_path, trust=trust_checkpoint)
        cfg = stored if cfg is None else cfg
        finished = finished_reason(run_dir, checkpoint, cfg)
        if finished is not None:
            message = f"run {run_dir} already finished: {finished}; nothing was changed"
            if log is not None:
                log(message)
            else:
                logger.warning(message)
            return run_dir
    elif cfg is None:
        raise ConfigError("train: give a config or a run to resume")
    else:
        check_model_config(cfg.model)  # a misplaced model option is refused before any data is read
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
    # the label space travels with the run: the model gets one output per label of the data
    cfg = resolve_num_classes(cfg, datamodule.class_names, datamodule.dataset.kind)
    if checkpoint_path is not None:
        check_resumed_labels(checkpoint, datamodule.class_names, checkpoint_path)
    frequencies = getattr(datamodule, "class_frequencies", None)
    # On resume the checkpoint supplies every weight: do not fetch ImageNet weights just to overwrite them.
    model = model_without_pretrained_weights(cfg) if checkpoint_path is not None else build_model(cfg.model)
    spec = training_spec(cfg, datamodule.class_names, model, dataset=datamodule.dataset.kind)
    module = ThoracicModule(cfg, class_frequencies=frequencies, model=model, spec=spec)
    module.data_provenance = data_provenance(cfg)
    trainer, reseed = build_trainer(cfg, run_dir, callbacks, trust_checkpoint=trust_checkpoint)
    checkpoint_bytes = estimated_checkpoint_bytes(module.model)
    # best.ckpt + last.ckpt, each written beside the old file before replacing it
    check_free_space(run_dir, checkpoint_bytes * (1 if checkpoint_path is not None else 2),
                     f"the checkpoints of {run_dir}", "Nothing was written; free some space and rerun.")

    created = not run_dir.exists()
    rank_zero = rank_zero_only.rank == 0
    if rank_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = (folder_lock(run_dir, "run folder", _command(command_line, "thoracic train")) if rank_zero
            else nullcontext())
    try:
        with lock:
            start_epoch = 0 if checkpoint_path is None else int(checkpoint.get("epoch", -1)) + 1
            return _fit(cfg, run_dir, resume, checkpoint_path, start_epoch, datamodule, module, trainer, reseed,
                        command_line, checkpoint_bytes, created, log)
    finally:
        if created and rank_zero and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a failed start leaves no folder (its files went in _failed, its lock just now)


#: Lightning warns on resume that the log folder and the checkpoint folder are not empty ("previous log files
#: ... will be deleted"): a resume moves the previous metrics.csv aside first (:func:`_keep_previous_csv_log`)
#: and continues the run's own checkpoints, so nothing is lost and the warnings would be wrong.
_RESUME_WARNINGS = (r".*Previous log files in this directory will be deleted.*",
                    r"Checkpoint directory .* exists and is not empty.*")


def _fit(cfg: Config, run_dir: Path, resume: str | Path | None, checkpoint_path: Path | None, start_epoch: int,
         datamodule: Any, module: ThoracicModule, trainer: Any, reseed: Any, command_line: Sequence[str] | None,
         checkpoint_bytes: int, created: bool, say: Callable[[str], None] | None) -> Path:
    """The fit of :func:`train`, under the run folder's lock (``say``: :func:`train`'s ``log``)."""
    guard = next(c for c in trainer.callbacks if isinstance(c, InterruptGuard))
    try:
        if rank_zero_only.rank == 0:
            if resume is None:
                if any(run_dir.iterdir()):  # a stub of a start that died (resolve_run_dir checked it)
                    remove_owned(run_dir, stub_files(run_dir) or RUN_STUB_FILES, "run folder", remove_folder=False)
                save_config(cfg, run_dir / "config.yaml")
            else:
                _remove_stale_temporary_files(run_dir)
            write_run_info(run_dir, cfg, command_line, resumed_from=checkpoint_path,
                           class_names=module.class_names)
            record_data_counts(run_dir, datamodule)
            if say is not None:
                say(f"{'continuing' if checkpoint_path is not None else 'training'} {run_dir}\n"
                    + describe_training_data(datamodule, module.data_provenance))
            if checkpoint_path is not None:
                _keep_previous_csv_log(run_dir)

        train_loader = reproducible_train_loader(datamodule.train_dataloader(), cfg.seed)
        reseed.generator = train_loader.generator
        val_loader = sharded_eval_loader(datamodule.val_dataloader())
        # Lightning builds the first train iterator of a fit before on_train_epoch_start and set_epoch:
        # position the sampler and the generators on the first epoch now (one past the epoch the
        # end-of-epoch checkpoint recorded).
        train_loader.sampler.set_epoch(start_epoch)
        reseed.reseed(start_epoch)
        try:
            with warnings.catch_warnings():
                for pattern in _RESUME_WARNINGS:
                    warnings.filterwarnings("ignore", message=pattern)
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
                 f"resume with `thoracic train {run_dir}`")
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
        return int(read_checkpoint(path).get("epoch", -1))
    except Exception:  # noqa: BLE001 - only for a message
        return "?"


def finished_reason(run_dir: Path, checkpoint: Mapping[str, Any], cfg: Config) -> str | None:
    """Why the run whose last checkpoint is ``checkpoint`` has nothing left to train under ``cfg``, or None.

    Finished: its ``summary.json`` was written (the fit ended) and early stopping stopped it, or it
    trained every epoch of ``cfg.train.max_epochs`` (a larger ``train.max_epochs`` continues it). A run
    killed after its last epoch but before its summary is not finished: resuming writes the summary.
    """
    if not (run_dir / "summary.json").is_file():
        return None
    epoch = int(checkpoint.get("epoch", -1))
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("EarlyStopping") and isinstance(state, Mapping):
            if int(state.get("stopped_epoch", 0) or 0) > 0:
                return (f"early stopping ended it after epoch {int(state['stopped_epoch'])} (no improvement of the "
                        f"validation loss for train.patience = {state.get('patience', cfg.train.patience)} epochs)")
    if epoch + 1 >= cfg.train.max_epochs:
        return (f"it trained all {cfg.train.max_epochs} epochs of train.max_epochs (to train it longer, resume "
                f"with a larger train.max_epochs, e.g. train.max_epochs={cfg.train.max_epochs + 5})")
    return None


def same_config(stored: Config, cfg: Config) -> bool:
    """Whether a run folder's stored (resolved) config is ``cfg``: ``model.num_classes`` left to the data
    in ``cfg`` (null) matches the count the run resolved."""
    if cfg.model.num_classes is None:
        cfg = replace_config(cfg, **{"model.num_classes": stored.model.num_classes})
    return stored == cfg


def resolve_num_classes(cfg: Config, class_names: Sequence[str], dataset: str = "the data") -> Config:
    """``cfg`` with ``model.num_classes`` set to the number of labels the run trains on.

    ``model.num_classes`` null (the default) follows the data; a number must equal it.

    Raises:
        ConfigError: ``model.num_classes`` set to another count, naming both and the labels.
    """
    wanted = len(class_names)
    given = cfg.model.num_classes
    if given is None:
        return replace_config(cfg, **{"model.num_classes": wanted})
    if given != wanted:
        shown = ", ".join(class_names[:8]) + (", ..." if wanted > 8 else "")
        raise ConfigError(f"model.num_classes={given}, but the run trains on {wanted} labels of {dataset} ({shown}; "
                          f"data.classes chooses them): leave model.num_classes unset (it follows the data) or set "
                          f"it to {wanted}")
    return cfg


def check_resumed_labels(checkpoint: Mapping[str, Any], class_names: Sequence[str], path: Path) -> None:
    """A resumed run trains on the labels its checkpoint was trained on (the data folder may move, its labels
    may not change).

    Raises:
        RunError: the data now has other labels (or another order), naming both.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    stored = legacy_class_names((hparams.get(SPEC_KEY) or {}).get("class_names") or hparams.get("class_names"))
    if tuple(class_names) != stored:
        raise RunError(f"cannot resume {path}: it was trained on the labels {', '.join(stored)}, but the data now "
                       f"has {', '.join(class_names)}; resume with the data it was trained on")


def model_without_pretrained_weights(cfg: Config) -> torch.nn.Module:
    """The model of ``cfg`` built for loading a checkpoint into (no ImageNet download; options the model does
    not take are left out, as they were when the checkpoint's run built it)."""
    return build_model(replace_config(cfg.model, pretrained=False, weights=None), strict=False)


__all__ = ["RESUMABLE_OVERRIDES", "check_resumed_labels", "config_for_resume", "estimated_checkpoint_bytes", "same_config",
           "finished_reason", "model_without_pretrained_weights", "resolve_num_classes", "train", "train_or_resume"]

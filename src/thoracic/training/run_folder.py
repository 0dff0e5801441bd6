"""The run folder: its name, the files a run writes, its provenance (``run_info.json``), its logs read back
and its ``summary.json``.

::

    <output_dir>/<run_name>/
      config.yaml            the resolved Config
      run_info.json          library versions, git commit, seed, the labels and their order, command line(s),
                             devices
      checkpoints/best.ckpt  lowest validation loss
      checkpoints/last.ckpt  end of the last finished epoch (what `thoracic train RUN` continues from)
      logs/metrics.csv       CSV log (one row per logging step / epoch)
      logs/tensorboard/      TensorBoard events
      summary.json           best epoch, its metrics, epochs run, whether early stopping fired
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from thoracic.config import Config
from thoracic.data.datasets import box_class_names, metadata_fingerprint, resolve_dataset_kind
from thoracic.data.synth import folder_kind
from thoracic.errors import RunError, ThoracicError
from thoracic.io import write_json_atomic, write_text_atomic
from thoracic.safety import foreign_entries, read_json
from thoracic.training.checkpoints import read_checkpoint

log = logging.getLogger(__name__)

_LIBRARIES = ("thoracic", "torch", "torchvision", "lightning", "torchmetrics", "numpy", "pandas", "scipy",
              "pillow", "pydicom", "captum", "scikit-learn", "matplotlib", "pyyaml")


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


#: Everything ``thoracic train`` (and evaluate / localize into ``evaluation/``, export into ``export/``, report
#: beside them, with the folders' ``thoracic_outputs.json``) writes into a run folder: what replacing a whole
#: run (the demo, when its settings change) may delete.
RUN_FILES: tuple[str, ...] = (*RUN_STUB_FILES, "checkpoints/best.ckpt", "checkpoints/last.ckpt", "summary.json",
                              "evaluation/", "evaluation/*", "export/", "export/*", "report.md", "report.html",
                              "compare_overlays.png", "explorer/", "explorer/*", "thoracic_outputs.json", ".*.tmp-*")


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
        ckpt = read_checkpoint(best)
    except ThoracicError:  # unreadable (or not plain data): not provably ours, so never deleted
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
                   resumed_from: Path | None = None, class_names: Sequence[str] = ()) -> Path:
    """Write (or, on resume, extend) ``run_info.json`` (``class_names``: the labels the run trains on, in the
    order of the model's outputs); returns its path."""
    path = run_dir / "run_info.json"
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entry = {"time": now, "command_line": list(command_line) if command_line is not None else None,
             "git": _git_commit(), "versions": library_versions(), "devices": _device_info()}
    if resumed_from is not None and path.is_file():
        info = read_json(path, "the run's run_info.json", RunError)
        info.setdefault("resumes", []).append({**entry, "checkpoint": str(resumed_from)})
    else:
        data = data_provenance(cfg)
        info = {"created": now, "seed": cfg.seed, "class_names": list(class_names),
                "model": cfg.model.name, "backbone": cfg.model.backbone,
                "data_root": cfg.data.root, "data_kind": data["kind"], "data": data, **entry}
    return write_text_atomic(path, json.dumps(info, indent=2))


def record_data_counts(run_dir: Path, datamodule: Any) -> dict[str, Any]:
    """Add the split sizes (``images``: train / val / test), the test box rows per class (``box_rows``) and
    the test images they are on (``box_images``) to ``run_info.json``; reports show them in the run's setup
    table."""
    path = run_dir / "run_info.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    splits = datamodule.splits
    boxes = datamodule.dataset.boxes
    test_ids = set(datamodule.dataset.table["image_id"].to_numpy()[splits.test])
    test_boxes = boxes[boxes["image_id"].isin(test_ids)]
    box_rows = test_boxes["class_name"].value_counts()
    info["images"] = {"train": int(len(splits.train)), "val": int(len(splits.val)), "test": int(len(splits.test))}
    # the run's labels that carry boxes (ChestX-ray14: its 8 box classes, present or not)
    box_classes = box_class_names(datamodule.dataset)
    info["box_rows"] = {name: int(box_rows.get(name, 0)) for name in box_classes}
    info["box_images"] = int(test_boxes["image_id"].nunique())
    write_text_atomic(path, json.dumps(info, indent=2))
    return info


def describe_training_data(datamodule: Any, provenance: Mapping[str, Any] | None) -> str:
    """What a run trains on, in two lines for the user: the data folder and its kind (``phantom`` /
    ``real``), the images per split, and the positive images per class in the train and val splits."""
    splits = datamodule.splits
    dataset = datamodule.dataset
    folder = (provenance or {}).get("root") or datamodule.root
    kind = (provenance or {}).get("kind") or "unknown"
    labels = np.asarray(dataset.labels, dtype=np.float64)
    train, val = (np.nansum(labels[splits[name]], axis=0).astype(int) for name in ("train", "val"))
    names = dataset.class_names
    sizes = splits.sizes()
    return (f"data: {folder} ({kind}); images: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}\n"
            "positives per class (train/val): " + ", ".join(f"{n} {t}/{v}" for n, t, v in zip(names, train, val)))


def data_provenance(cfg: Config) -> dict[str, Any]:
    """What a run is trained on: the data folder, ``kind`` (``phantom`` for a folder ``thoracic synth``
    wrote, else ``real``), ``dataset`` (its layout: ``chestxray14``, ``chexpert``, ...), the label choices
    of the run (``uncertain`` policy, ``views``, ``classes``) and the SHA-256 of the dataset's metadata
    (:func:`thoracic.data.datasets.metadata_fingerprint`; ChestX-ray14: the data-entry CSV's). Stored in
    ``run_info.json`` and, as ``thoracic_data``, in every checkpoint."""
    root = Path(cfg.data.root)
    info: dict[str, Any] = {"root": str(root.resolve()), "kind": folder_kind(root), "dataset": None,
                            "uncertain": cfg.data.uncertain, "views": list(cfg.data.views),
                            "classes": list(cfg.data.classes), "metadata_sha256": None}
    try:
        info["dataset"] = resolve_dataset_kind(root, cfg.data.dataset)
        info["metadata_sha256"] = metadata_fingerprint(root, info["dataset"])[1]
    except ThoracicError:
        pass
    return info


def _csv_parts(run_dir: Path) -> list[Path]:
    """CSV logs of the sessions before each resume, oldest first (``metrics_part<k>.csv``)."""
    parts = list((run_dir / "logs").glob("metrics_part*.csv"))
    return sorted(parts, key=lambda p: int(p.stem.removeprefix("metrics_part") or 0))


def _keep_previous_csv_log(run_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv; move it aside so a resume keeps history."""
    current = run_dir / "logs" / "metrics.csv"
    if current.is_file():
        os.replace(current, current.with_name(f"metrics_part{len(_csv_parts(run_dir)) + 1}.csv"))


def _read_csv_log(path: Path) -> pd.DataFrame:
    """One CSV log; a damaged one is recovered, never a parser traceback.

    Rows with another number of fields than the header (two processes that wrote one log at once, a
    kill mid-line) cannot be told apart column by column: they are left out, with a warning naming the
    file and the lines. A file that is not text at all is a named error.
    """
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except UnicodeDecodeError as exc:
        raise RunError(f"{path}: the run's CSV log is not text ({exc}); the file is damaged: move it away and "
                       "rerun (the checkpoints are intact)") from None
    except pd.errors.ParserError:
        pass
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        rows = list(csv.reader(handle))
    header, body = (rows[0], rows[1:]) if rows else ([], [])
    kept = [row for row in body if len(row) == len(header)]
    dropped = [k + 2 for k, row in enumerate(body) if len(row) != len(header) and any(row)]
    if not dropped:
        raise RunError(f"{path}: the run's CSV log cannot be parsed; the file is damaged: move it away and rerun "
                       "(the checkpoints are intact)")
    log.warning("%s: %d line(s) of the CSV log do not have the header's %d fields (e.g. line %d has %d): written "
                "by two processes at once, or cut by a kill; they are left out of the epoch metrics", path,
                len(dropped), len(header), dropped[0], len(body[dropped[0] - 2]))
    table = pd.DataFrame(kept, columns=header).replace("", np.nan)
    return table.apply(pd.to_numeric, errors="coerce")


def read_epoch_metrics(run_dir: str | Path) -> pd.DataFrame:
    """One row per epoch (index ``epoch``) of the run's CSV log: losses, per-class val AUC, learning rate.

    The logs of sessions before a resume (``metrics_part<k>.csv``) come first; a resumed run replays the
    epoch it was killed in, and the later rows win. Damaged lines are left out with a warning
    (:func:`_read_csv_log`).
    """
    run_dir = Path(run_dir)
    path = run_dir / "logs" / "metrics.csv"
    files = [*_csv_parts(run_dir), *([path] if path.is_file() else [])]
    if not files:
        raise RunError(f"run {run_dir} has no CSV log ({path} is missing)")
    table = pd.concat([_read_csv_log(f) for f in files], ignore_index=True)
    if "epoch" not in table.columns:
        raise RunError(f"{path}: no 'epoch' column")
    table = table.dropna(subset=["epoch"])
    table["epoch"] = table["epoch"].astype(int)
    columns = [c for c in table.columns if c not in ("step", "epoch") and not c.endswith("_step")]
    per_epoch = table.groupby("epoch")[columns].last()
    return per_epoch.dropna(how="all")


#: Divergence: a validation loss above this many times the loss of predicting 0.5 for every class.
DIVERGED_LOSS_FACTOR = 100.0


def chance_loss(loss_name: str, num_classes: int, focal_gamma: float = 2.0) -> float:
    """The loss per image of predicting 0.5 for every one of ``num_classes`` classes (every term
    ``-ln 0.5``), by loss.

    Eq. 1's weights make the positive and the negative terms of a batch each sum to its image count,
    so the weighted losses score twice the plain binary cross-entropy's ``C ln 2``.
    """
    base = num_classes * math.log(2.0)
    if loss_name in ("wcel", "wcel_per_class"):
        return 2.0 * base
    if loss_name == "focal":
        return base * 0.5 ** focal_gamma
    return base


def divergence_reasons(epochs: pd.DataFrame, cfg: Config, class_names: Sequence[str]) -> list[str]:
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
    chance = chance_loss(cfg.loss.name, len(class_names), cfg.loss.focal_gamma)
    loss = last.get("val_loss")
    if loss is not None and np.isfinite(loss) and loss > DIVERGED_LOSS_FACTOR * chance:
        reasons.append(f"validation loss {loss:.3g} at epoch {int(epochs.index[-1])} is over "
                       f"{DIVERGED_LOSS_FACTOR:g} x the {chance:.3g} of predicting 0.5 for every class")
    aucs = np.array([last.get(f"val_auc/{name}", np.nan) for name in class_names], dtype=float)
    aucs = aucs[np.isfinite(aucs)]
    if len(aucs) and np.all(np.abs(aucs - 0.5) < 1e-3):
        reasons.append(f"every validation AUC is 0.5 at epoch {int(epochs.index[-1])}: the network gives "
                       "every image the same score")
    return reasons


def write_summary(run_dir: Path, trainer: Any) -> dict[str, Any]:
    """``summary.json``: the best epoch (lowest val loss) and its metrics, epochs run, early stop, and
    ``diverged`` / ``divergence`` (:func:`divergence_reasons`; a warning is logged when it diverged)."""
    checkpoint = trainer.checkpoint_callback
    early = trainer.early_stopping_callback
    epochs = read_epoch_metrics(run_dir)
    module = trainer.lightning_module
    class_names = list(module.class_names)
    summary: dict[str, Any] = {"class_names": class_names, "epochs_completed": int(trainer.current_epoch),
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
    reasons = divergence_reasons(epochs, module.config, class_names) if hasattr(module, "config") else []
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


__all__ = ["DIVERGED_LOSS_FACTOR", "RUN_FILES", "RUN_STUB_FILES", "chance_loss", "data_provenance",
           "default_run_name", "describe_training_data", "divergence_reasons", "is_stub_run", "library_versions", "read_epoch_metrics",
           "record_data_counts", "resolve_run_dir", "stub_files", "write_run_info", "write_summary"]

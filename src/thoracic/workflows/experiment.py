"""Multi-seed experiments: the same split, one run per seed, then mean +- std of every metric.

The seed paper reports single runs; its discussion names repeated runs as what it lacked. Here
``data.split_seed`` stays fixed (same train/val/test images for every run) and only ``seed`` changes
(initialisation of the new layers, data order, augmentation).

Folder layout::

    <output_dir>/<run_name or experiment-<model>-<time>>/
      config.yaml             the experiment's config (before the per-seed changes)
      seed0/ seed1/ ...       ordinary run folders; with testing (default) each gets evaluation/
                              (predictions, AUC with bootstrap CIs, ROC, Table 1; localization on request)
      per_seed.csv            one row per seed, one column per metric
      summary.csv|json|md     mean, std (sample, ddof=1), n, min, max per metric

Rerunning the same experiment folder skips seeds whose run finished, resumes a seed whose run
stopped after at least one epoch and restarts (in the same folder) one that died before its first
checkpoint. ``thoracic report <folder>`` reports the seeds as mean +- std beside the published numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from thoracic.config import Config, ConfigError, load_config, replace, save_config
from thoracic.deprecation import renamed_keywords
from thoracic.errors import Interrupted, ThoracicError, UnsafeDeleteError
from thoracic.io import write_csv_atomic, write_text_atomic
from thoracic.safety import ensure_output_dir, folder_entries, folder_lock
from thoracic.training.trainer import train_or_resume
from thoracic.workflows.evaluate import evaluate_checkpoint, evaluate_run
from thoracic.workflows.localize import localize_run


@dataclass(frozen=True)
class ExperimentResult:
    folder: Path
    per_seed: pd.DataFrame
    """Index ``seed``; one column per metric."""
    summary: pd.DataFrame
    """Index ``metric``; columns mean, std, n, min, max."""


def aggregate_metrics(per_seed: Mapping[Any, Mapping[str, float | None]] | pd.DataFrame) -> pd.DataFrame:
    """Mean +- standard deviation of every metric over runs (pure function; used by the reports too).

    Args:
        per_seed: ``{seed: {metric: value}}`` or a DataFrame with one row per run. Missing, None and
            NaN values are left out of that metric's statistics (``n`` says how many values counted).

    Returns:
        DataFrame indexed by metric (in first-seen order) with ``mean``, ``std`` (sample standard
        deviation, ddof=1; NaN with fewer than 2 values), ``n``, ``min`` and ``max``.
    """
    frame = per_seed if isinstance(per_seed, pd.DataFrame) else pd.DataFrame.from_dict(
        {k: dict(v) for k, v in per_seed.items()}, orient="index")
    rows = {}
    for column in frame.columns:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        n = len(values)
        rows[column] = {
            "mean": float(values.mean()) if n else math.nan,
            "std": float(values.std(ddof=1)) if n > 1 else math.nan,
            "n": n,
            "min": float(values.min()) if n else math.nan,
            "max": float(values.max()) if n else math.nan,
        }
    summary = pd.DataFrame.from_dict(rows, orient="index", columns=["mean", "std", "n", "min", "max"])
    summary.index.name = "metric"
    return summary


def format_mean_std(summary: pd.DataFrame, digits: int = 3) -> str:
    """Markdown table ``| metric | mean +- std | n |`` of :func:`aggregate_metrics`' output."""
    lines = ["| metric | mean +- std | n |", "|---|---|---|"]
    for metric, row in summary.iterrows():
        if math.isnan(row["mean"]):
            cell = "n/a"
        elif math.isnan(row["std"]):
            cell = f"{row['mean']:.{digits}f}"
        else:
            cell = f"{row['mean']:.{digits}f} +- {row['std']:.{digits}f}"
        lines.append(f"| {metric} | {cell} | {int(row['n'])} |")
    return "\n".join(lines) + "\n"


def seed_metrics(run_dir: Path) -> dict[str, float | None]:
    """The metrics of one finished run from its ``summary.json``: best-epoch validation metrics, the
    best epoch, epochs run, and the test metrics if they were computed."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics: dict[str, float | None] = {"best_epoch": summary.get("best_epoch"),
                                        "epochs_completed": summary.get("epochs_completed")}
    metrics.update(summary.get("metrics") or {})
    metrics.update(summary.get("test_metrics") or {})
    return metrics


@renamed_keywords(folder="out", n_bootstrap="bootstrap", eval_device="device")
def run_experiment(
    cfg: Config,
    seeds: Sequence[int],
    *,
    out: str | Path | None = None,
    test: bool = True,
    bootstrap: int = 200,
    localize: bool = False,
    device: str | None = None,
    callbacks: Sequence[Callback] = (),
    command_line: Sequence[str] | None = None,
    trust_checkpoint: bool = False,
) -> ExperimentResult:
    """One run of ``cfg`` per seed (same ``data.split_seed``), then :func:`aggregate_metrics`.

    Args:
        cfg: the config; only ``seed``, ``output_dir`` and ``run_name`` change between runs.
        seeds: distinct seeds.
        out: the experiment folder; default ``<output_dir>/<run_name or experiment-<model>-<time>>``.
        test: evaluate each run's best checkpoint on the official test split: the test loss and AUC in
            ``summary.json`` (Lightning, all devices) and ``thoracic evaluate``'s files in
            ``seed<k>/evaluation/`` (predictions, AUC with ``bootstrap`` bootstrap resamples, ROC
            curves, Table 1), which ``thoracic report <folder>`` aggregates as mean +- std.
        bootstrap: bootstrap resamples of the per-seed confidence intervals (0: none).
        localize: also run ``thoracic localize`` (native heatmaps) on each seed's best checkpoint; the
            test images must carry boxes.
        device: torch device of that evaluation; default ``cuda`` when the run trains on a GPU and
            one is visible, else ``cpu`` (the command's ``--device`` also sets the training's accelerator).
        trust_checkpoint: read the seeds' checkpoints with full pickle (they may run code).

    The experiment folder is locked for the whole call: a second experiment into the same folder gets a
    :class:`~thoracic.errors.FolderInUseError` naming this one (it would otherwise restart a live seed).
    """
    if not seeds:
        raise ThoracicError("experiment: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ThoracicError(f"experiment: seeds must be distinct, got {list(seeds)}")
    if bootstrap < 0:
        raise ThoracicError(f"experiment: bootstrap must be >= 0, got {bootstrap}")
    if out is None:
        name = cfg.run_name or f"experiment-{cfg.model.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        out = Path(cfg.output_dir) / name
    folder = Path(out)
    check_experiment_folder(folder)
    ensure_output_dir(folder, "--out")
    command = " ".join(command_line) if command_line else "thoracic experiment"
    lock = folder_lock(folder, "experiment folder", command) if rank_zero_only.rank == 0 else nullcontext()
    with lock:
        return _run_experiment(cfg, seeds, folder, test, bootstrap, localize, device, callbacks, command_line,
                               trust_checkpoint)


def _run_experiment(cfg: Config, seeds: Sequence[int], folder: Path, test: bool, bootstrap: int, localize: bool,
                    device: str | None, callbacks: Sequence[Callback], command_line: Sequence[str] | None,
                    trust_checkpoint: bool) -> ExperimentResult:
    """The body of :func:`run_experiment`, under the experiment folder's lock."""
    save_config(cfg, folder / "config.yaml")
    per_seed: dict[int, dict[str, float | None]] = {}
    for seed in seeds:
        run_cfg = replace(cfg, seed=int(seed), output_dir=str(folder), run_name=f"seed{seed}")
        # skips a finished seed, resumes an interrupted one, restarts one that died before its first epoch
        try:
            run_dir = train_or_resume(run_cfg, callbacks=callbacks, command_line=command_line,
                                      trust_checkpoint=trust_checkpoint)
        except Interrupted as exc:
            raise Interrupted(f"{exc}; or rerun the same experiment command: finished seeds are kept and this "
                              "one continues") from None
        if test:
            if "test_metrics" not in json.loads((run_dir / "summary.json").read_text()):
                evaluate_checkpoint(run_dir, checkpoint="best", split="test", trust_checkpoint=trust_checkpoint)
            if rank_zero_only.rank == 0:  # single-process evaluation: one rank writes the files
                _evaluate_seed(run_dir, run_cfg, bootstrap, localize, device, trust_checkpoint)
        per_seed[int(seed)] = seed_metrics(run_dir)
    table = pd.DataFrame.from_dict(per_seed, orient="index")
    table.index.name = "seed"
    summary = aggregate_metrics(table)
    write_csv_atomic(folder / "per_seed.csv", table)
    write_csv_atomic(folder / "summary.csv", summary)
    write_text_atomic(folder / "summary.json", json.dumps(
        {"seeds": [int(s) for s in seeds], "split_seed": cfg.data.split_seed,
         "std": "sample standard deviation (ddof=1)",
         "metrics": {m: {k: _jsonable(v) for k, v in row.items()}
                     for m, row in summary.to_dict(orient="index").items()}}, indent=2))
    write_text_atomic(
        folder / "summary.md",
        f"# {cfg.model.name}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), split seed {cfg.data.split_seed}\n\n"
        + format_mean_std(summary))
    return ExperimentResult(folder=folder, per_seed=table, summary=summary)


#: The files ``run_experiment`` writes at the top of an experiment folder (besides ``seed<k>/`` runs), and
#: what ``thoracic report FOLDER`` writes there by default.
EXPERIMENT_FILES = ("config.yaml", "per_seed.csv", "summary.csv", "summary.json", "summary.md")


def check_experiment_folder(folder: Path) -> None:
    """Refuse a folder that is not (the start of) an experiment folder, before anything is written.

    An experiment folder is new or empty, or holds the experiment's ``config.yaml`` (a thoracic config)
    beside ``seed<k>/`` run folders and the files it writes; a run folder (checkpoints, run_info.json)
    or a folder of other files is refused with what it holds (the experiment would overwrite or, on a
    restart, delete them).
    """
    if folder.exists() and not folder.is_dir():
        raise ThoracicError(f"--out {folder} is an existing file; expected an experiment folder (new or empty)")
    if not folder.is_dir() or not folder_entries(folder):  # empty, or only a lock of a process that died
        return
    if (folder / "run_info.json").exists() or (folder / "checkpoints").is_dir():
        raise ThoracicError(f"--out {folder} is a run folder (it holds run_info.json / checkpoints/), not an "
                            "experiment folder; choose a new folder for the experiment")
    config = folder / "config.yaml"
    if config.is_file():
        try:
            load_config(config)
            return
        except ConfigError as exc:
            raise ThoracicError(f"--out {folder}: its config.yaml is not a thoracic config ({exc}); it is not an "
                                "experiment folder: choose a new folder") from None
    entries = folder_entries(folder)
    raise UnsafeDeleteError(
        f"--out {folder} is not empty and is not an experiment folder (no config.yaml); it holds "
        f"{len(entries)} file(s): {', '.join(entries[:12])}{' ...' if len(entries) > 12 else ''}. thoracic writes "
        "an experiment only into a new or empty folder (or one it made): choose another --out")


def _evaluate_seed(run_dir: Path, cfg: Config, bootstrap: int, localize: bool, device: str | None,
                   trust_checkpoint: bool = False) -> None:
    """``thoracic evaluate`` (and ``localize``) on a seed's best checkpoint, unless already done."""
    if device is None:
        on_gpu = cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        device = "cuda" if on_gpu else "cpu"
    evaluation = run_dir / "evaluation"
    progress = cfg.train.progress_bar
    if not (evaluation / "auc_test.json").is_file():
        evaluate_run(run_dir, split="test", bootstrap=bootstrap, device=device, checkpoint="best",
                     progress=progress, trust_checkpoint=trust_checkpoint)
    if localize and not (evaluation / "localization_native.json").is_file():
        localize_run(run_dir, method="native", device=device, checkpoint="best", progress=progress,
                     trust_checkpoint=trust_checkpoint)


def _jsonable(value: Any) -> float | int | None:
    value = float(value)
    if math.isnan(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value

"""``thoracic evaluate``: classification of a run on a split (the command only parses arguments).

``evaluate_run`` writes into ``<run>/evaluation/``::

    predictions_<split>.csv   image_id, prob_<class> and label_<class> for each of the run's classes
    auc_<split>.csv / .json   per-class AUC, bootstrap 95% CI, counts, notes; the mean over defined classes
    roc_<split>.png           ROC curves (paper Figs. 3-5)
    table1_<split>.md / .csv  Table 1: per-class AUC beside Wang et al. 2017 and the seed paper's columns
    operating_points.json     per-class thresholds chosen on the validation split (Youden's J or F1)
    operating_points_<split>.csv  per class: AUC, threshold, sensitivity and specificity on <split>
    predictions_val.csv       (also with --split test) the validation predictions the thresholds come from
    subgroups_<split>.csv / .json / .png, subgroup_gaps_<split>.csv
                              AUC and TPR per sex, age band, view and follow-up group; gaps (subgroups.py)
    calibration_<split>.csv / .json, reliability_<split>.csv / .png
                              ECE and reliability bins, before / after temperature scaling (calibration.py)
    calibration.json          the fitted temperature (with ``calibrate``), applied by ``thoracic predict``

``evaluate_checkpoint`` is the multi-process (Lightning) loss and AUC a training run records in its
``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.config import ConfigError, config_from_dict, merge_overrides, to_dict
from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError, RunError
from thoracic.evaluation.calibration import (
    CALIBRATION_FILE,
    DEFAULT_BINS,
    calibration_for_checkpoint,
    evaluate_calibration,
    fit_temperature,
    save_calibration,
    write_calibration,
)
from thoracic.evaluation.classification import AUCResult, compute_auc, roc_curves
from thoracic.evaluation.figures import roc_figure, save_figure
from thoracic.evaluation.operating_points import (
    OPERATING_POINT_METHODS,
    OPERATING_POINTS_FILE,
    choose_thresholds,
    operating_point_table,
    save_operating_points,
)
from thoracic.evaluation.predictions import predict, save_predictions
from thoracic.evaluation.sample_size import (
    fitted_on_few_warnings,
    positives_warnings,
    subgroup_warnings,
    temperature_warnings,
)
from thoracic.evaluation.subgroups import DEFAULT_AGE_BANDS, evaluate_subgroups, save_subgroups, thresholds_with_source
from thoracic.evaluation.table1 import write_table1
from thoracic.io import write_csv_atomic, write_json_atomic, write_text_atomic
from thoracic.metrics import label_counts
from thoracic.safety import folder_lock, read_json
from thoracic.training.checkpoints import checkpoint_spec, find_checkpoint, load_checkpoint_config
from thoracic.training.factory import build_datamodule, check_data_config, sharded_eval_loader, test_trainer
from thoracic.training.module import ThoracicModule
from thoracic.training.trainer import model_without_pretrained_weights
from thoracic.workflows.common import OpenedRun, evaluation_outputs, open_run


@dataclass(frozen=True)
class EvaluationResult:
    auc: AUCResult
    files: dict[str, Path]
    operating_points: pd.DataFrame
    """:func:`~thoracic.evaluation.operating_points.operating_point_table` of the evaluated split."""
    warnings: list[str] = field(default_factory=list)
    """Small samples (:mod:`thoracic.evaluation.sample_size`): classes with few positives, thresholds or
    temperatures fitted on few validation positives, small subgroups, temperatures at their bound."""


@renamed_keywords(n_bootstrap="bootstrap", data_root="data", which="checkpoint")
def evaluate_run(
    run: str | Path,
    split: str = "test",
    bootstrap: int = 1000,
    batch_size: int | None = None,
    device: str = "auto",
    data: str | Path | None = None,
    cache: str | Path | None = None,
    num_workers: int | None = None,
    checkpoint: str = "best",
    seed: int = 0,
    progress: bool = True,
    operating_point: str = "youden",
    subgroups: bool = True,
    age_bands: Sequence[int] | None = None,
    subgroup_min_count: int = 1,
    calibrate: str | None = None,
    calibration_bins: int | None = None,
    *,
    trust_checkpoint: bool = False,
) -> EvaluationResult:
    """Predictions, per-class AUC with bootstrap CIs, ROC curves, and per-class operating points of a run
    on ``split`` (test or val): ``thoracic evaluate``, with its option names as keywords.

    ``run`` is a run folder (or a ``.ckpt`` file), ``checkpoint`` ``best``, ``last`` or a ``.ckpt`` path;
    ``data`` / ``cache`` / ``num_workers`` replace the run's ``data.root`` / ``data.cache`` /
    ``data.num_workers``; ``bootstrap`` resamples give the 95% CIs (0: none).

    The operating points (``operating_point``: ``youden`` or ``f1``) are always chosen on the validation
    split (:mod:`thoracic.evaluation.operating_points`) and their sensitivity / specificity reported on
    ``split``. ``device``: ``auto`` (a GPU when there is one), ``cpu``, ``cuda:N``.

    Also, per sex / age band / view / follow-up group (``subgroups``; ``age_bands`` lower edges, default
    0 20 40 60 80), AUC and TPR at those operating points (passed in memory) with their gaps; and
    calibration (ECE, reliability diagrams). ``calibrate`` (``per_class`` or ``single``) fits temperature
    scaling on the validation split and stores it as ``calibration.json``; without it, a stored calibration
    of the same checkpoint is still measured. ``EvaluationResult.warnings`` lists the numbers that rest on
    small samples (:mod:`thoracic.evaluation.sample_size`).

    ``trust_checkpoint`` opens the checkpoint with full pickle (see
    :func:`~thoracic.training.checkpoints.read_checkpoint`). The run folder is locked while its files are
    written, and every file is recorded in ``evaluation/thoracic_outputs.json`` with the checkpoint it
    came from.

    Raises:
        DataError / ConfigError: a split, operating point, bootstrap count (< 0), bin count (< 1), batch
            size (< 1) out of range: named, never silently replaced.
    """
    if split not in ("test", "val"):
        raise DataError(f"split must be 'test' or 'val', got {split!r}")
    if operating_point not in OPERATING_POINT_METHODS:
        raise DataError(f"operating point must be one of {OPERATING_POINT_METHODS}, got {operating_point!r}")
    if bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected 0 (no confidence intervals) or a positive number of resamples, "
                          f"got {bootstrap}")
    if calibration_bins is not None and calibration_bins < 1:
        raise ConfigError(f"--calibration-bins: expected at least 1 probability bin, got {calibration_bins}")
    opened = open_run(run, checkpoint, device, batch_size, data, cache, num_workers,
                      trust_checkpoint=trust_checkpoint)
    with evaluation_outputs(opened, "evaluate"):
        return _evaluate_opened(opened, split, bootstrap, seed, progress, operating_point, subgroups, age_bands,
                                subgroup_min_count, calibrate, calibration_bins)


def _evaluate_opened(opened: OpenedRun, split: str, bootstrap: int, seed: int, progress: bool,
                     operating_point: str, subgroups: bool, age_bands: Sequence[int] | None,
                     subgroup_min_count: int, calibrate: str | None, calibration_bins: int | None
                     ) -> EvaluationResult:
    """The body of :func:`evaluate_run`, under the run folder's lock and the evaluation folder's manifest."""
    loaded, module, out, device = opened.loaded, opened.data, opened.out, opened.device
    names = loaded.class_names  # the run's labels (its spec), the order of the model's outputs
    predictions = predict(loaded.model, module.dataloader(split), device=device, progress=progress,
                          class_names=names)
    files = {"predictions": save_predictions(predictions, out / f"predictions_{split}.csv")}
    if split == "val":
        validation = predictions
    else:
        validation = predict(loaded.model, module.dataloader("val"), device=device, progress=progress,
                             class_names=names)
        files["predictions_val"] = save_predictions(validation, out / "predictions_val.csv")
    auc = compute_auc(predictions.labels, predictions.probabilities, names, bootstrap=bootstrap,
                      seed=seed, progress=progress)
    write_csv_atomic(out / f"auc_{split}.csv", auc.to_frame(), index=False, float_format="%.6f")
    thresholds = choose_thresholds(validation.labels, validation.probabilities, names, operating_point)
    files["operating_points"] = save_operating_points(out / OPERATING_POINTS_FILE, operating_point, thresholds,
                                                      checkpoint=loaded.info)
    points = operating_point_table(predictions.labels, predictions.probabilities, thresholds, auc.auc,
                                   names, operating_point)
    files["operating_points_csv"] = out / f"operating_points_{split}.csv"
    write_csv_atomic(files["operating_points_csv"], points, index=False, float_format="%.6f")
    val_positives = {name: int(n) for name, n in zip(names, label_counts(validation.labels)[0])}
    info = auc.to_dict()
    info.update({"split": split, "dataset": module.dataset.kind, "n_images": int(len(predictions.image_ids)),
                 "model": loaded.config.model.name,
                 "seed": loaded.config.seed, "checkpoint": loaded.info,
                 "n_val_images": int(len(validation.image_ids)), "n_val_positive": val_positives})
    warnings = positives_warnings(names, auc.n_positive, split, len(predictions.image_ids))
    if split != "val":
        warnings += fitted_on_few_warnings(names, val_positives, "operating-point thresholds")
    info["warnings"] = list(warnings)
    write_text_atomic(out / f"auc_{split}.json", json.dumps(info, indent=2))
    files["auc_csv"] = out / f"auc_{split}.csv"
    files["auc_json"] = out / f"auc_{split}.json"
    # Table 1: this run beside Wang et al. 2017 and the seed paper's three columns
    files["table1_md"], files["table1_csv"] = write_table1(info, loaded.config.model.name, out, split)
    curves = roc_curves(predictions.labels, predictions.probabilities, names)
    title = f"ROC, {loaded.config.model.name} ({split}, mean AUC {auc.mean_auc:.3f})"
    left_out = {name: auc.reasons.get(name, "no AUC") for name in names if name not in curves}
    files["roc"] = save_figure(roc_figure(curves, dict(zip(names, auc.auc)), title,
                                          positives=dict(zip(names, auc.n_positive.tolist())),
                                          left_out=left_out), out / f"roc_{split}.png")
    if subgroups:
        subgroup_files, subgroup_groups = _subgroups(predictions, module, out, split, bootstrap, seed, age_bands,
                                                     subgroup_min_count, thresholds, operating_point, progress,
                                                     loaded.info)
        files.update(subgroup_files)
        warnings += subgroup_warnings(subgroup_groups)
    calibration_files, calibration_table = _calibration(loaded, validation, predictions, out, split, calibrate,
                                                        calibration_bins, device, progress)
    files.update(calibration_files)
    if calibrate is not None:
        warnings += fitted_on_few_warnings(names, val_positives, "temperatures")
    fitted = calibration_table[calibration_table["class_name"] != "Mean"]
    if fitted["temperature"].notna().any():
        warnings += temperature_warnings(list(fitted["class_name"]), fitted["temperature"].to_numpy(float),
                                         len(validation.image_ids) if calibrate is not None else None)
    return EvaluationResult(auc, files, points, warnings)


def _subgroups(predictions: Any, module: Any, out: Path, split: str, n_bootstrap: int, seed: int,
               age_bands: Sequence[int] | None, min_count: int, chosen: Mapping[str, float | None], method: str,
               progress: bool, checkpoint: dict[str, Any] | None = None) -> tuple[dict[str, Path], pd.DataFrame]:
    """Subgroup AUC / TPR files of one split (see :mod:`thoracic.evaluation.subgroups`) at the operating
    points ``chosen`` on the validation split (by ``method``), recording ``checkpoint`` (its
    :func:`~thoracic.training.checkpoints.checkpoint_info`) in the JSON; also returns the subgroup table."""
    names = predictions.class_names
    thresholds, source = thresholds_with_source(chosen, method, "val", names)
    result = evaluate_subgroups(predictions.labels, predictions.probabilities, predictions.image_ids,
                                module.dataset.table, thresholds, source, names,
                                age_bands=tuple(age_bands or DEFAULT_AGE_BANDS), bootstrap=n_bootstrap,
                                seed=seed, min_count=min_count, progress=progress)
    return (save_subgroups(result, out, split, extra={"checkpoint": checkpoint} if checkpoint else None),
            result.groups)


def _calibration(loaded: Any, validation: Any, predictions: Any, out: Path, split: str, calibrate: str | None,
                 n_bins: int | None, device: str, progress: bool) -> tuple[dict[str, Path], pd.DataFrame]:
    """ECE / reliability files of one split and the per-class table; with ``calibrate``, first fit
    temperatures on the validation split's predictions ``validation``."""
    n_bins = n_bins or DEFAULT_BINS
    names = predictions.class_names
    files: dict[str, Path] = {}
    if calibrate is not None:
        fitting = validation
        temperature, notes = fit_temperature(fitting.logits, fitting.labels, calibrate, names)
        settings = {"split": split, "temperature_source": f"fitted on the val split ({calibrate}) by this evaluation"}
        result = evaluate_calibration(predictions.labels, predictions.logits, names, temperature, n_bins,
                                      notes, settings)
        files["calibration"] = write_calibration(out / CALIBRATION_FILE, temperature, calibrate,
                                                 loaded.checkpoint_path, result, split, len(fitting.labels), notes,
                                                 class_names=names, n_positive=label_counts(fitting.labels)[0])
    else:
        stored, message = calibration_for_checkpoint(out, loaded.checkpoint_path, names)
        settings = {"split": split, "temperature_source": message}
        notes = {name: entry.get("note") or "" for name, entry in (stored.info.get("per_class") or {}).items()
                 if isinstance(entry, dict)} if stored else {}
        result = evaluate_calibration(predictions.labels, predictions.logits, names,
                                      stored.temperature if stored else None, n_bins, notes, settings)
    files.update(save_calibration(result, out, split))
    return files, result.table



def _finite_or_none(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


@renamed_keywords(which="checkpoint")
def evaluate_checkpoint(run_dir: str | Path, checkpoint: str = "best", split: str = "test",
                        overrides: Mapping[str, Any] | None = None, *,
                        trust_checkpoint: bool = False) -> dict[str, float | None]:
    """Loss and per-class AUC of a run's checkpoint (``best``, ``last`` or a ``.ckpt`` path) on ``split``
    (``test`` or ``val``), with Lightning.

    Runs on the run's own accelerator/devices settings (``overrides`` may change them, e.g.
    ``{"train.devices": "1"}``); the AUC is gathered over all processes. Also stored in
    ``summary.json`` under ``<split>_metrics``.
    """
    run_dir = Path(run_dir)
    checkpoint_path = find_checkpoint(run_dir, checkpoint)
    cfg, ckpt = load_checkpoint_config(checkpoint_path, trust=trust_checkpoint)
    if overrides:
        cfg = config_from_dict(merge_overrides(to_dict(cfg), overrides))
    if split not in ("test", "val"):
        raise ConfigError(f"split: expected test or val, got {split!r}")
    check_data_config(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test" if split == "test" else "fit")
    loader = sharded_eval_loader(datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader())
    model = model_without_pretrained_weights(cfg)
    module = ThoracicModule(cfg, class_frequencies=ckpt["hyper_parameters"].get("class_frequencies"),
                            model=model, spec=checkpoint_spec(ckpt, cfg, model, checkpoint_path))
    module.load_state_dict(ckpt["state_dict"])
    trainer = test_trainer(cfg)
    results = trainer.test(module, dataloaders=loader, verbose=False)[0]
    metrics = {k.replace("test_", f"{split}_", 1): _finite_or_none(v) for k, v in results.items()}
    if trainer.is_global_zero:
        with folder_lock(run_dir, "run folder", f"thoracic evaluate {checkpoint_path}"):
            path = run_dir / "summary.json"
            summary = read_json(path, "the run's summary.json", RunError) if path.is_file() else {}
            summary[f"{split}_metrics"] = metrics
            summary[f"{split}_checkpoint"] = os.path.relpath(checkpoint_path, run_dir)
            write_json_atomic(path, summary)
    return metrics


__all__ = ["EvaluationResult", "evaluate_checkpoint", "evaluate_run"]

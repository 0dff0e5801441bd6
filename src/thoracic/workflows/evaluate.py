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

On another dataset (``dataset``, with ``data`` its folder: cross-dataset validation) the run is scored on
that dataset's test split over the labels both share, and the files go to the test set's sub-folder
``<run>/evaluation/<kind>-<folder>/`` (:mod:`thoracic.workflows.common`): ``test_set.json``,
``label_mapping.csv``, ``predictions_test.csv``, ``auc_test.*``, ``roc_test.png``, ``operating_points_test.csv``
(at the thresholds chosen on the run's *own* validation split), subgroups where the dataset records them,
calibration (with the run's stored temperature) and, with a mapping of shared images, ``shared_images.csv``.

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
from thoracic.errors import DataError, RunError, ThoracicError
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
    DEFAULT_THRESHOLD,
    OPERATING_POINT_METHODS,
    OPERATING_POINTS_FILE,
    choose_thresholds,
    load_operating_points,
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
from thoracic.evaluation.subgroups import (
    DEFAULT_AGE_BANDS,
    evaluate_subgroups,
    informative_attributes,
    save_subgroups,
    thresholds_with_source,
)
from thoracic.evaluation.table1 import write_table1
from thoracic.io import write_csv_atomic, write_json_atomic, write_text_atomic
from thoracic.metrics import label_counts
from thoracic.safety import folder_lock, read_json
from thoracic.training.checkpoints import checkpoint_spec, find_checkpoint, load_checkpoint_config
from thoracic.training.factory import build_datamodule, check_data_config, sharded_eval_loader, test_trainer
from thoracic.training.module import ThoracicModule
from thoracic.training.trainer import model_without_pretrained_weights
from thoracic.workflows.common import OpenedRun, evaluation_outputs, flag_shared_images, open_run, write_test_set


@dataclass(frozen=True)
class EvaluationResult:
    auc: AUCResult
    files: dict[str, Path]
    operating_points: pd.DataFrame
    """:func:`~thoracic.evaluation.operating_points.operating_point_table` of the evaluated split."""
    warnings: list[str] = field(default_factory=list)
    """Small samples (:mod:`thoracic.evaluation.sample_size`): classes with few positives, thresholds or
    temperatures fitted on few validation positives, small subgroups, temperatures at their bound; on another
    dataset also its test images the run was trained on."""
    test_set: dict[str, Any] | None = None
    """On another dataset: :meth:`~thoracic.workflows.common.TestSet.record` (kind, folder, fingerprint,
    label mapping ...); None on the run's own."""
    threshold_source: str = ""
    """Where the operating points come from (on another dataset: the run's own validation split)."""
    shared_images: dict[str, Any] | None = None
    """On another dataset with a mapping of shared images: the counts of ``shared_images.csv``."""


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
    dataset: str | None = None,
    shared_images: str | Path | None = None,
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

    ``dataset`` (a layout other than the run's, ``data`` its folder, ``cache`` its image cache): score the run
    on that dataset's test split over the labels both share (cross-dataset validation; module docs), at the
    operating points of the run's own validation split (its stored ``operating_points.json`` when chosen
    for this checkpoint by ``operating_point``, else chosen again), with its stored calibration;
    ``shared_images``: a file mapping the two datasets' image ids
    (:func:`thoracic.data.shared_images.read_image_mapping`): the test images the run was trained on are
    counted, listed and warned about.

    ``trust_checkpoint`` opens the checkpoint with full pickle (see
    :func:`~thoracic.training.checkpoints.read_checkpoint`). The run folder is locked while its files are
    written, and every file is recorded in ``evaluation/thoracic_outputs.json`` (a test set's sub-folder:
    its own) with the checkpoint it came from.

    Raises:
        DataError / ConfigError: a split, operating point, bootstrap count (< 0), bin count (< 1), batch
            size (< 1) out of range: named, never silently replaced; on another dataset, a split other than
            test or ``calibrate`` (a temperature is fitted on the run's own validation split: evaluate the
            run on its own data with it).
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
                      trust_checkpoint=trust_checkpoint, dataset=dataset, shared_images=shared_images)
    if opened.test_set is not None:
        if split != "test":
            raise ConfigError(f"--split {split}: on another dataset ({opened.test_set.kind}) a run is scored on "
                              "that dataset's test split (--split test)")
        if calibrate is not None:
            raise ConfigError("--calibrate: a temperature is fitted on the run's own validation split; run `thoracic "
                              "evaluate RUN --calibrate` on the run's own data, and the evaluation on "
                              f"{opened.test_set.kind} measures the calibration with it")
    with evaluation_outputs(opened, "evaluate"):
        if opened.test_set is not None:
            return _evaluate_other(opened, bootstrap, seed, progress, operating_point, subgroups, age_bands,
                                   subgroup_min_count, calibration_bins)
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


def _own_operating_points(opened: OpenedRun, method: str, progress: bool
                          ) -> tuple[dict[str, float | None], str, dict[str, int] | None, list[str]]:
    """The operating points of the run's own validation split, for scoring it on another dataset:
    ``(thresholds by the run's label, where they come from, validation positives per label or None,
    warnings)``. The run's ``operating_points.json`` when it was chosen by ``method`` on the validation split
    for this checkpoint; else chosen again on the run's own validation split (its data and cache); else
    (that split unreadable) :data:`DEFAULT_THRESHOLD` for every label, with a warning."""
    loaded, own_out = opened.loaded, opened.own_out or opened.out
    names = loaded.class_names
    path = own_out / OPERATING_POINTS_FILE
    if path.is_file():
        try:
            stored = load_operating_points(path, names, strict=False)
        except ThoracicError:
            stored = {}
        if (stored.get("method") == method and stored.get("split") == "val"
                and (stored.get("checkpoint") or {}).get("sha256") == (loaded.info or {}).get("sha256")):
            auc_path = own_out / "auc_test.json"
            try:
                positives = json.loads(auc_path.read_text()).get("n_val_positive") if auc_path.is_file() else None
            except (OSError, ValueError):
                positives = None
            return (stored["thresholds"], f"chosen on the run's own validation split by {method} ({path})",
                    positives if isinstance(positives, dict) else None, [])
    try:
        own = build_datamodule(loaded.config, stage="test", batch_size=opened.data.batch_size,
                               num_workers=opened.data.num_workers)
        validation = predict(loaded.model, own.dataloader("val"), device=opened.device, progress=progress,
                             class_names=tuple(own.class_names))
    except ThoracicError as exc:
        why = f"the run's own validation split could not be read ({exc})"
        return ({}, f"{DEFAULT_THRESHOLD:g} for every label: {why}", None,
                [f"operating points: {DEFAULT_THRESHOLD:g} for every label, as {why}; evaluate the run on its own "
                 "data first (its operating_points.json is then used)"])
    own_names = tuple(own.class_names)
    columns = [own_names.index(n) for n in names if n in own_names]
    labels, probabilities = validation.labels[:, columns], validation.probabilities[:, columns]
    kept = [n for n in names if n in own_names]
    chosen = choose_thresholds(labels, probabilities, kept, method)
    positives = {name: int(n) for name, n in zip(kept, label_counts(labels)[0])}
    return (chosen, f"chosen on the run's own validation split by {method} ({len(validation.image_ids)} images of "
            f"{own.root})", positives, [])


def _evaluate_other(opened: OpenedRun, bootstrap: int, seed: int, progress: bool, operating_point: str,
                    subgroups: bool, age_bands: Sequence[int] | None, subgroup_min_count: int,
                    calibration_bins: int | None) -> EvaluationResult:
    """:func:`evaluate_run` on another dataset's test split (``opened.test_set``), under the run folder's lock
    and the test set's sub-folder manifest."""
    loaded, module, out, device, test_set = opened.loaded, opened.data, opened.out, opened.device, opened.test_set
    assert test_set is not None
    mapping = test_set.labels
    names = mapping.run_labels
    files = write_test_set(opened)
    run_columns = list(mapping.run_indices)
    predictions = predict(loaded.model, module.dataloader("test"), device=device, progress=progress,
                          class_names=names, output_columns=run_columns, label_columns=mapping.test_indices)
    files["predictions"] = save_predictions(predictions, out / "predictions_test.csv")
    auc = compute_auc(predictions.labels, predictions.probabilities, names, bootstrap=bootstrap, seed=seed,
                      progress=progress)
    files["auc_csv"] = out / "auc_test.csv"
    write_csv_atomic(files["auc_csv"], auc.to_frame(), index=False, float_format="%.6f")
    chosen, source, val_positives, warnings = _own_operating_points(opened, operating_point, progress)
    thresholds = {name: chosen.get(name) for name in names}
    points = operating_point_table(predictions.labels, predictions.probabilities, thresholds, auc.auc, names,
                                   operating_point)
    files["operating_points_csv"] = out / "operating_points_test.csv"
    write_csv_atomic(files["operating_points_csv"], points, index=False, float_format="%.6f")
    shared, shared_warnings = flag_shared_images(opened, [str(i) for i in predictions.image_ids])
    if shared is not None:
        files["shared_images"] = out / shared["file"]
    n_images = int(len(predictions.image_ids))
    warnings = positives_warnings(names, auc.n_positive, f"{test_set.kind} test", n_images) + warnings
    if val_positives:
        warnings += fitted_on_few_warnings(names, {n: val_positives.get(n, 0) for n in names},
                                           "operating-point thresholds")
    warnings += shared_warnings
    info = auc.to_dict()
    info.update({"split": "test", "n_images": n_images, "model": loaded.config.model.name,
                 "seed": loaded.config.seed, "checkpoint": loaded.info, "test_dataset": test_set.record(),
                 "operating_points": {"method": operating_point, "source": source,
                                      "thresholds": {n: thresholds[n] for n in names}},
                 "n_val_positive": {n: val_positives.get(n) for n in names} if val_positives else None,
                 "shared_images": shared})
    files["auc_json"] = out / "auc_test.json"
    title = (f"ROC, {loaded.config.model.name} on {test_set.kind} ({n_images} test images, mean AUC over "
             f"{len(names)} shared labels {auc.mean_auc:.3f})")
    curves = roc_curves(predictions.labels, predictions.probabilities, names)
    left_out = {name: auc.reasons.get(name, "no AUC") for name in names if name not in curves}
    files["roc"] = save_figure(roc_figure(curves, dict(zip(names, auc.auc)), title,
                                          positives=dict(zip(names, auc.n_positive.tolist())), left_out=left_out),
                               out / "roc_test.png")
    if subgroups:
        subgroup_files, subgroup_groups = _subgroups(predictions, module, out, "test", bootstrap, seed, age_bands,
                                                     subgroup_min_count, thresholds, operating_point, progress,
                                                     loaded.info, source_text=f"operating points {source}")
        files.update(subgroup_files)
        warnings += subgroup_warnings(subgroup_groups)
    stored, message = calibration_for_checkpoint(opened.own_out or out, loaded.checkpoint_path)
    temperature = None if stored is None else stored.temperature[run_columns]
    calibration = evaluate_calibration(predictions.labels, predictions.logits, names, temperature,
                                       calibration_bins or DEFAULT_BINS, None,
                                       {"split": "test", "temperature_source": message})
    files.update(save_calibration(calibration, out, "test"))
    info["warnings"] = list(warnings)
    write_text_atomic(files["auc_json"], json.dumps(info, indent=2))
    return EvaluationResult(auc, files, points, warnings, test_set.record(), source, shared)


def _subgroups(predictions: Any, module: Any, out: Path, split: str, n_bootstrap: int, seed: int,
               age_bands: Sequence[int] | None, min_count: int, chosen: Mapping[str, float | None], method: str,
               progress: bool, checkpoint: dict[str, Any] | None = None, source_text: str = ""
               ) -> tuple[dict[str, Path], pd.DataFrame]:
    """Subgroup AUC / TPR files of one split (see :mod:`thoracic.evaluation.subgroups`) at the operating
    points ``chosen`` on the validation split (by ``method``; ``source_text``: where they come from, when
    not from this evaluation), recording ``checkpoint`` (its
    :func:`~thoracic.training.checkpoints.checkpoint_info`) in the JSON; also returns the subgroup table.
    Only the attributes with two known groups are evaluated (none: no files)."""
    class_names = tuple(predictions.class_names)
    thresholds, source = thresholds_with_source(chosen, method, "val", class_names)
    bands = tuple(age_bands or DEFAULT_AGE_BANDS)
    table = module.dataset.table
    # the attributes the dataset records (ChestX-ray14: all four; others: sex, age or views where known)
    attributes = informative_attributes(table, predictions.image_ids, bands)
    if not attributes:
        return {}, pd.DataFrame(columns=["attribute", "group", "class_name", "n_images"])
    result = evaluate_subgroups(predictions.labels, predictions.probabilities, predictions.image_ids,
                                table, thresholds, source_text or source, class_names, age_bands=bands,
                                attributes=attributes, bootstrap=n_bootstrap, seed=seed, min_count=min_count,
                                progress=progress)
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

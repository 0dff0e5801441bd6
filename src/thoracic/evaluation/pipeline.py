"""What ``thoracic evaluate`` and ``thoracic localize`` do to a run folder (the commands only parse arguments).

``evaluate_run`` writes into ``<run>/evaluation/``::

    predictions_<split>.csv   image_id, prob_<class> x 14, label_<class> x 14
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

``localize_run`` writes::

    heatmaps_<method>.npz         native-resolution heatmap of every (box image, box class)
    boxes_<method>.csv            image_id, class_name, threshold, x, y, w, h (original pixels), score, area
    scores_<method>.csv           best IoU / IoBB of every ground-truth box row (all rows kept) per
                                  heatmap threshold, with the ground-truth box, the image size, the
                                  heatmap's peak pixel (peak_x, peak_y) and its pointing-game hit
    baselines_<method>.csv        every random box (each draw) and centre box: source, draw, image_id,
                                  class_name, x, y, w, h
    localization_<method>.csv     long table: source, threshold, metric, t, class_name, accuracy,
                                  accuracy_sd, n_draws, n_boxes, n_localized, false_positives_per_image,
                                  n_classes (the method, both baselines; IoU, IoBB and the pointing game)
    localization_<method>.json    the same records, plus the protocol settings and the heatmap registration
    registration_<method>.csv     the same heatmaps boxed under both registrations (geometric, legacy):
                                  mean accuracy and false positives at T(IoU)=0.3 / T(IoBB)=0.25, per
                                  heatmap threshold and pooled (how much the result hangs on it)
    overlays_<method>.png         heatmap overlays with boxes (paper Figs. 6-8)

Every number of ``localization_<method>.csv`` recomputes from the three CSV files before it (written at
full precision).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from thoracic.config import Config, replace, to_dict
from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES, METHOD_LABELS, MODEL_LABELS
from thoracic.errors import DataError
from thoracic.geometry import REGISTRATIONS, Registration, make_registration
from thoracic.evaluation.classification import AUCResult, compute_auc, roc_curves
from thoracic.evaluation.figures import (
    OverlayPanel,
    OverlayRow,
    box_legend_handles,
    overlay_figure,
    roc_figure,
    save_figure,
)
from thoracic.evaluation.localization import (
    ACCURACY_COLUMNS,
    HEADLINE_THRESHOLD,
    MEAN,
    POINTING,
    POOLED,
    baseline_accuracy,
    centre_boxes,
    localization_accuracy,
    pointing_accuracy,
    pointing_game,
    random_boxes,
    score_localization,
)
from thoracic.evaluation.predictions import (
    HEATMAP_METHODS,
    compute_heatmaps,
    predict,
    save_heatmaps,
    save_predictions,
)
from thoracic.evaluation.operating_points import (
    OPERATING_POINT_METHODS,
    OPERATING_POINTS_FILE,
    choose_thresholds,
    operating_point_table,
    save_operating_points,
)
from thoracic.evaluation.report import write_run_table1
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS, CellCentres, extract_boxes, extract_boxes_and_peaks
from thoracic.runtime import resolve_device
from thoracic.io import write_text_atomic

#: ``source`` values of the baselines in localization tables.
RANDOM_BOX = "random box"
CENTRE_BOX = "centre box"
#: Seeded draws of the random-box baseline (its accuracy is their mean, with their standard deviation).
RANDOM_DRAWS = 100
#: The localization headline: accuracy at T(IoU) = 0.3 and T(IoBB) = 0.25.
HEADLINE_METRICS: tuple[tuple[str, float], ...] = (("IoU", 0.3), ("IoBB", 0.25))


def evaluation_dir(run_dir: Path | None, checkpoint_path: Path) -> Path:
    """``<run>/evaluation`` (or ``evaluation/`` beside a bare checkpoint file)."""
    base = run_dir if run_dir is not None else checkpoint_path.parent
    path = base / "evaluation"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _data_config(config: Config, data_root: str | Path | None, cache: str | Path | None,
                 num_workers: int | None) -> Any:
    data = config.data
    changes: dict[str, Any] = {}
    if data_root is not None:
        changes["root"] = str(data_root)
        changes["cache"] = None  # the run's cache belongs to its own root
    if cache is not None:
        changes["cache"] = str(cache)
    if num_workers is not None:
        changes["num_workers"] = int(num_workers)
    return replace(data, **changes) if changes else data


def _datamodule(config: Config, batch_size: int | None, data_root: str | Path | None,
                cache: str | Path | None, num_workers: int | None) -> Any:
    from thoracic.data.dataset import ChestXrayDataModule

    data = _data_config(config, data_root, cache, num_workers)
    module = ChestXrayDataModule.from_config(data, batch_size=batch_size or config.train.batch_size,
                                             seed=config.seed, pin_memory=False)
    module.setup("test")
    return module


def _load(run: str | Path, which: str, device: str) -> Any:
    from thoracic.training.checkpoints import load_run

    return load_run(run, which=which, map_location=device)


@dataclass(frozen=True)
class EvaluationResult:
    auc: AUCResult
    files: dict[str, Path]
    operating_points: pd.DataFrame
    """:func:`~thoracic.evaluation.operating_points.operating_point_table` of the evaluated split."""


def evaluate_run(
    run: str | Path,
    split: str = "test",
    n_bootstrap: int = 1000,
    batch_size: int | None = None,
    device: str = "auto",
    data_root: str | Path | None = None,
    cache: str | Path | None = None,
    num_workers: int | None = None,
    which: str = "best",
    seed: int = 0,
    progress: bool = True,
    operating_point: str = "youden",
    subgroups: bool = True,
    age_bands: Sequence[int] | None = None,
    subgroup_min_count: int = 1,
    calibrate: str | None = None,
    calibration_bins: int | None = None,
) -> EvaluationResult:
    """Predictions, per-class AUC with bootstrap CIs, ROC curves, and per-class operating points of a run
    on ``split`` (test or val).

    The operating points (``operating_point``: ``youden`` or ``f1``) are always chosen on the validation
    split (:mod:`thoracic.evaluation.operating_points`) and their sensitivity / specificity reported on
    ``split``. ``device``: ``auto`` (a GPU when there is one), ``cpu``, ``cuda:N``.

    Also, per sex / age band / view / follow-up group (``subgroups``; ``age_bands`` lower edges, default
    0 20 40 60 80), AUC and TPR at those operating points with their gaps; and calibration (ECE,
    reliability diagrams). ``calibrate`` (``per_class`` or ``single``) fits temperature scaling on the
    validation split and stores it as ``calibration.json``; without it, a stored calibration of the same
    checkpoint is still measured.
    """
    if split not in ("test", "val"):
        raise DataError(f"split must be 'test' or 'val', got {split!r}")
    if operating_point not in OPERATING_POINT_METHODS:
        raise DataError(f"operating point must be one of {OPERATING_POINT_METHODS}, got {operating_point!r}")
    device = resolve_device(device)
    loaded = _load(run, which, device)
    module = _datamodule(loaded.config, batch_size, data_root, cache, num_workers)
    predictions = predict(loaded.model, module.dataloader(split), device=device, progress=progress)
    out = evaluation_dir(loaded.run_dir, loaded.checkpoint_path)
    files = {"predictions": save_predictions(predictions, out / f"predictions_{split}.csv")}
    if split == "val":
        validation = predictions
    else:
        validation = predict(loaded.model, module.dataloader("val"), device=device, progress=progress)
        files["predictions_val"] = save_predictions(validation, out / "predictions_val.csv")
    auc = compute_auc(predictions.labels, predictions.probabilities, CLASS_NAMES, n_bootstrap=n_bootstrap,
                      seed=seed, progress=progress)
    auc.to_frame().to_csv(out / f"auc_{split}.csv", index=False, float_format="%.6f")
    thresholds = choose_thresholds(validation.labels, validation.probabilities, CLASS_NAMES, operating_point)
    files["operating_points"] = save_operating_points(out / OPERATING_POINTS_FILE, operating_point, thresholds)
    points = operating_point_table(predictions.labels, predictions.probabilities, thresholds, auc.auc,
                                   CLASS_NAMES, operating_point)
    files["operating_points_csv"] = out / f"operating_points_{split}.csv"
    points.to_csv(files["operating_points_csv"], index=False, float_format="%.6f")
    info = auc.to_dict()
    info.update({"split": split, "n_images": int(len(predictions.image_ids)), "model": loaded.config.model.name,
                 "seed": loaded.config.seed, "checkpoint": loaded.info,
                 "n_val_images": int(len(validation.image_ids))})
    write_text_atomic(out / f"auc_{split}.json", json.dumps(info, indent=2))
    files["auc_csv"] = out / f"auc_{split}.csv"
    files["auc_json"] = out / f"auc_{split}.json"
    # Table 1: this run beside Wang et al. 2017 and the seed paper's three columns
    files["table1_md"], files["table1_csv"] = write_run_table1(info, to_dict(loaded.config), out, split)
    curves = roc_curves(predictions.labels, predictions.probabilities, CLASS_NAMES)
    title = f"ROC, {loaded.config.model.name} ({split}, mean AUC {auc.mean_auc:.3f})"
    files["roc"] = save_figure(roc_figure(curves, dict(zip(CLASS_NAMES, auc.auc)), title), out / f"roc_{split}.png")
    if subgroups:
        files.update(_subgroups(predictions, module, out, split, n_bootstrap, seed, age_bands, subgroup_min_count,
                                progress))
    files.update(_calibration(loaded, validation, predictions, out, split, calibrate, calibration_bins, device,
                              progress))
    return EvaluationResult(auc, files, points)


def _subgroups(predictions: Any, module: Any, out: Path, split: str, n_bootstrap: int, seed: int,
               age_bands: Sequence[int] | None, min_count: int, progress: bool) -> dict[str, Path]:
    """Subgroup AUC / TPR files of one split (see :mod:`thoracic.evaluation.subgroups`)."""
    from thoracic.evaluation.subgroups import (
        DEFAULT_AGE_BANDS,
        evaluate_subgroups,
        save_subgroups,
        subgroup_thresholds,
    )

    thresholds, source = subgroup_thresholds(out)
    result = evaluate_subgroups(predictions.labels, predictions.probabilities, predictions.image_ids,
                                module.dataset.table, thresholds, source, CLASS_NAMES,
                                age_bands=tuple(age_bands or DEFAULT_AGE_BANDS), n_bootstrap=n_bootstrap,
                                seed=seed, min_count=min_count, progress=progress)
    return save_subgroups(result, out, split)


def _calibration(loaded: Any, validation: Any, predictions: Any, out: Path, split: str, calibrate: str | None,
                 n_bins: int | None, device: str, progress: bool) -> dict[str, Path]:
    """ECE / reliability files of one split; with ``calibrate``, first fit temperatures on the validation
    split's predictions ``validation``."""
    from thoracic.evaluation.calibration import (
        CALIBRATION_FILE,
        DEFAULT_BINS,
        calibration_for_checkpoint,
        evaluate_calibration,
        fit_temperature,
        save_calibration,
        write_calibration,
    )

    n_bins = n_bins or DEFAULT_BINS
    files: dict[str, Path] = {}
    if calibrate is not None:
        fitting = validation
        temperature, notes = fit_temperature(fitting.logits, fitting.labels, calibrate, CLASS_NAMES)
        settings = {"split": split, "temperature_source": f"fitted on the val split ({calibrate}) by this evaluation"}
        result = evaluate_calibration(predictions.labels, predictions.logits, CLASS_NAMES, temperature, n_bins,
                                      notes, settings)
        files["calibration"] = write_calibration(out / CALIBRATION_FILE, temperature, calibrate,
                                                 loaded.checkpoint_path, result, split, len(fitting.labels), notes)
    else:
        stored, message = calibration_for_checkpoint(out, loaded.checkpoint_path)
        settings = {"split": split, "temperature_source": message}
        notes = {name: entry.get("note") or "" for name, entry in (stored.info.get("per_class") or {}).items()
                 if isinstance(entry, dict)} if stored else {}
        result = evaluate_calibration(predictions.labels, predictions.logits, CLASS_NAMES,
                                      stored.temperature if stored else None, n_bins, notes, settings)
    files.update(save_calibration(result, out, split))
    return files


def ground_truth_boxes(box_table: pd.DataFrame) -> pd.DataFrame:
    """Box rows in original pixels (the data layer's ``x_original...`` columns) plus the original size."""
    columns = {"x_original": "x", "y_original": "y", "w_original": "w", "h_original": "h"}
    missing = [c for c in ["image_id", "class_name", "box_row", *columns, "original_width", "original_height"]
               if c not in box_table.columns]
    if missing:
        raise DataError(f"box table lacks columns {missing}")
    gt = box_table[["image_id", "class_name", "box_row", *columns, "original_width", "original_height"]]
    return gt.rename(columns=columns).reset_index(drop=True)


@dataclass(frozen=True)
class LocalizationRunResult:
    accuracy: pd.DataFrame
    scores: pd.DataFrame
    boxes: pd.DataFrame
    files: dict[str, Path]
    registrations: pd.DataFrame | None = None
    """:func:`registration_table` of the run's heatmaps (the registration used first)."""


class LocalizationTables(NamedTuple):
    """What :func:`localize_boxes` computes (and ``thoracic localize`` writes)."""

    boxes: pd.DataFrame
    """The method's boxes (``boxes_<method>.csv``): ``PREDICTED_BOX_COLUMNS`` and ``area``."""
    scores: pd.DataFrame
    """Per heatmap threshold and ground-truth row (``scores_<method>.csv``, :data:`SCORE_COLUMNS`): best
    IoU / IoBB, the ground-truth box and image size, the heatmap's peak pixel and whether it hits."""
    accuracy: pd.DataFrame
    """The long table (``localization_<method>.csv``): ``source`` then ``ACCURACY_COLUMNS``."""
    baseline_boxes: pd.DataFrame
    """Every baseline box (``baselines_<method>.csv``, :data:`BASELINE_BOX_COLUMNS`)."""


#: Columns of ``scores_<method>.csv``.
SCORE_COLUMNS = ["box_row", "image_id", "class_name", "threshold", "n_predicted", "best_iou", "best_iobb",
                 "x", "y", "w", "h", "original_width", "original_height", "peak_x", "peak_y", "pointing"]
#: Columns of ``baselines_<method>.csv``.
BASELINE_BOX_COLUMNS = ["source", "draw", "image_id", "class_name", "x", "y", "w", "h"]


def localize_boxes(
    ground_truth: pd.DataFrame,
    heatmaps: dict[tuple[str, str], np.ndarray],
    method: str,
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
    seed: int = 0,
    progress: bool = False,
    draws: int = RANDOM_DRAWS,
    registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None = None,
) -> LocalizationTables:
    """Boxes, per-row scores and the accuracy table of a method and of the random-box and centre-box
    baselines, from heatmaps (no network).

    ``ground_truth`` needs ``original_width`` / ``original_height`` per row. The accuracy table holds,
    per ``source`` (``method``, :data:`RANDOM_BOX`, :data:`CENTRE_BOX`), IoU and IoBB accuracy with false
    positives per image (the method per heatmap threshold and pooled; the random box as mean and standard
    deviation over ``draws`` seeded draws) and the pointing game (the method's heatmap maximum in original
    pixels, through ``registration`` as the boxes; the baselines' box centres). Everything in it can be
    recomputed from the three tables returned beside it. ``registration`` places the heatmap cells in the
    image (:class:`thoracic.geometry.Registration`; ``None``: the ``align_corners=False`` convention).
    """
    sizes = {i: (int(h), int(w)) for i, w, h in
             ground_truth[["image_id", "original_width", "original_height"]].itertuples(index=False)}
    boxes, peaks = extract_boxes_and_peaks(heatmaps, sizes, thresholds, largest_only=largest_only,
                                           progress=progress, registration=registration)
    # the peak pixel's centre, in box coordinates, is the point of the pointing game
    hits = pointing_game(ground_truth, peaks.assign(x=peaks["peak_x"] + 0.5, y=peaks["peak_y"] + 0.5))
    scores = score_localization(ground_truth, boxes)
    # the ground-truth box and image size beside each score, so the file alone recomputes everything
    scores = scores.merge(ground_truth[["box_row", "x", "y", "w", "h", "original_width", "original_height"]],
                          on="box_row", how="left")
    scores = scores.merge(peaks, on=["image_id", "class_name"], how="left")
    scores = scores.merge(hits[["box_row", "hit"]].rename(columns={"hit": "pointing"}), on="box_row", how="left")
    scores["pointing"] = scores["pointing"].astype(int)
    random = random_boxes(ground_truth, sizes, seed=seed, draws=draws)
    centre = centre_boxes(ground_truth, sizes).assign(draw=0)
    tables = [pd.concat([localization_accuracy(ground_truth, boxes),
                         pointing_accuracy(ground_truth, hits)], ignore_index=True).assign(source=method),
              baseline_accuracy(ground_truth, random).assign(source=RANDOM_BOX),
              baseline_accuracy(ground_truth, centre).assign(source=CENTRE_BOX)]
    accuracy = pd.concat(tables, ignore_index=True)[["source", *ACCURACY_COLUMNS]]
    baseline_boxes = pd.concat([random.assign(source=RANDOM_BOX), centre.assign(source=CENTRE_BOX)],
                               ignore_index=True)[BASELINE_BOX_COLUMNS]
    return LocalizationTables(boxes, scores[SCORE_COLUMNS], accuracy, baseline_boxes)


def headline(accuracy: pd.DataFrame, method: str) -> dict[str, float]:
    """The localization headline of one ``localization_<method>.csv`` table (means over the box classes
    with boxes).

    Keys: ``classes`` (how many box classes the means are over), ``boxes`` (box rows), then for
    ``IoU>0.3`` and ``IoBB>0.25`` (``m``): ``m`` (the method at the paper's heatmap threshold,
    ``HEADLINE_THRESHOLD``), ``m FP`` (its false positives per image), ``m T60`` and ``m pooled``
    (beside it), ``m random`` and ``m random sd`` (mean and standard deviation over the random draws),
    ``m centre``; and ``pointing``, ``pointing random``, ``pointing centre``. NaN where a number is
    missing (e.g. threshold 60 was not run).
    """
    table = accuracy.assign(threshold=accuracy["threshold"].fillna("").astype(str))
    mean = table[table["class_name"] == MEAN]

    def pick(source: str, threshold: str, metric: str, t: float | None, column: str = "accuracy") -> float:
        rows = mean[(mean["source"] == source) & (mean["threshold"] == threshold) & (mean["metric"] == metric)]
        if t is not None:
            rows = rows[np.isclose(rows["t"], t)]
        return float(rows[column].iloc[0]) if len(rows) and column in rows.columns else float("nan")

    own = mean[(mean["source"] == method) & (mean["metric"] != POINTING)]

    def most(column: str) -> float:  # (tables written before a column existed lack it)
        return float(own[column].max()) if len(own) and column in own.columns else float("nan")

    row: dict[str, float] = {"classes": most("n_classes"), "boxes": most("n_boxes")}
    for metric, t in HEADLINE_METRICS:
        name = f"{metric}>{t:g}"
        row[name] = pick(method, HEADLINE_THRESHOLD, metric, t)
        row[f"{name} FP"] = pick(method, HEADLINE_THRESHOLD, metric, t, "false_positives_per_image")
        row[f"{name} T60"] = pick(method, "60", metric, t)
        row[f"{name} pooled"] = pick(method, POOLED, metric, t)
        row[f"{name} random"] = pick(RANDOM_BOX, "", metric, t)
        row[f"{name} random sd"] = pick(RANDOM_BOX, "", metric, t, "accuracy_sd")
        row[f"{name} centre"] = pick(CENTRE_BOX, "", metric, t)
    row["pointing"] = pick(method, "", POINTING, None)
    row["pointing random"] = pick(RANDOM_BOX, "", POINTING, None)
    row["pointing centre"] = pick(CENTRE_BOX, "", POINTING, None)
    return row


def headline_text(row: dict[str, float], method: str) -> str:
    """:func:`headline` as a few plain lines (what ``thoracic localize`` prints)."""
    def number(value: float) -> str:
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"

    def count(value: float) -> str:
        return "n/a" if not np.isfinite(value) else str(int(value))

    lines = [f"{method}: heatmap threshold {HEADLINE_THRESHOLD} (the paper's); means over {count(row['classes'])} "
             f"of {len(BOX_CLASS_NAMES)} box classes ({count(row['boxes'])} box rows)"]
    for metric, t in HEADLINE_METRICS:
        name = f"{metric}>{t:g}"
        lines.append(f"  {name:<10} {number(row[name])} (false positives / image {number(row[name + ' FP'])}); "
                     f"threshold 60 {number(row[name + ' T60'])}, pooled {number(row[name + ' pooled'])}; "
                     f"random box {number(row[name + ' random'])} ± {number(row[name + ' random sd'])}, "
                     f"centre box {number(row[name + ' centre'])}")
    lines.append(f"  pointing game {number(row['pointing'])}; random box centre {number(row['pointing random'])}, "
                 f"image centre {number(row['pointing centre'])}")
    return "\n".join(lines)


def write_localization(out: Path, method: str, tables: LocalizationTables, info: dict[str, Any]) -> dict[str, Path]:
    """Write ``boxes_``, ``scores_``, ``baselines_``, ``localization_<method>.csv`` and
    ``localization_<method>.json`` (``info`` plus the protocol and the table) into ``out``.

    Boxes, scores and baseline boxes are written at full precision (shortest round-trip decimals), so
    every number of the accuracy table recomputes exactly from them; the accuracy table has 6 decimals.
    """
    files = {"boxes": out / f"boxes_{method}.csv", "scores": out / f"scores_{method}.csv",
             "baselines": out / f"baselines_{method}.csv", "localization_csv": out / f"localization_{method}.csv",
             "localization_json": out / f"localization_{method}.json"}
    tables.boxes.to_csv(files["boxes"], index=False)
    tables.scores.to_csv(files["scores"], index=False)
    tables.baseline_boxes.to_csv(files["baselines"], index=False)
    tables.accuracy.to_csv(files["localization_csv"], index=False, float_format="%.6f")
    document = {
        **info, "headline_threshold": HEADLINE_THRESHOLD,
        "metric": "IoBB = intersection / area of the predicted box; localized when value > T; pointing game: "
                  "the heatmap maximum (pixel centre) inside a ground-truth box of its class and image",
        "table": json.loads(tables.accuracy.to_json(orient="records")),
    }
    write_text_atomic(files["localization_json"], json.dumps(document, indent=2))
    return files


def _original_sizes(ground_truth: pd.DataFrame) -> dict[str, tuple[int, int]]:
    return {i: (int(h), int(w)) for i, w, h in
            ground_truth[["image_id", "original_width", "original_height"]].itertuples(index=False)}


#: Criteria of the registration table (the headline's).
REGISTRATION_CRITERIA: tuple[tuple[str, float], ...] = (("IoU", 0.3), ("IoBB", 0.25))


def registration_table(
    ground_truth: pd.DataFrame,
    heatmaps: dict[tuple[str, str], np.ndarray],
    registrations: Sequence[Registration],
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
) -> pd.DataFrame:
    """The same heatmaps boxed under each registration: mean accuracy over the box classes and false
    positives per image at T(IoU)=0.3 and T(IoBB)=0.25, per heatmap threshold (and pooled).

    Columns: ``registration, threshold, metric, t, accuracy, false_positives_per_image``.
    """
    sizes = _original_sizes(ground_truth)
    frames = []
    for registration in registrations:
        boxes = extract_boxes(heatmaps, sizes, thresholds, largest_only=largest_only, registration=registration)
        table = localization_accuracy(ground_truth, boxes)
        keep = pd.Series(False, index=table.index)
        for metric, t in REGISTRATION_CRITERIA:
            keep |= table["class_name"].eq(MEAN) & table["metric"].eq(metric) & np.isclose(table["t"], t)
        part = table.loc[keep, ["threshold", "metric", "t", "accuracy", "false_positives_per_image"]]
        frames.append(part.assign(registration=registration.name))
    result = pd.concat(frames, ignore_index=True)
    return result[["registration", "threshold", "metric", "t", "accuracy", "false_positives_per_image"]]


def load_registration(evaluation: Path, method: str) -> Registration | None:
    """The registration ``localize`` used for ``method`` in an evaluation folder (``None`` when its
    ``localization_<method>.json`` predates registrations or is missing: the legacy convention)."""
    path = Path(evaluation) / f"localization_{method}.json"
    try:
        info = json.loads(path.read_text()).get("registration")
        return Registration.from_description(info) if info else None
    except (OSError, ValueError):
        return None


def localize_run(
    run: str | Path,
    method: str = "native",
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
    batch_size: int | None = None,
    device: str = "auto",
    data_root: str | Path | None = None,
    cache: str | Path | None = None,
    num_workers: int | None = None,
    which: str = "best",
    seed: int = 0,
    n_examples: int = 8,
    progress: bool = True,
    draws: int = RANDOM_DRAWS,
    registration: str = "geometric",
) -> LocalizationRunResult:
    """Weakly supervised localization of every box row of the test images (Wang et al. 2017 protocol).

    ``registration``: where heatmap cells sit in the image, ``geometric`` (their receptive-field centres,
    derived from the network) or ``legacy`` (``align_corners=False``); the other one is also scored on
    the same heatmaps (``registration_<method>.csv``).
    """
    if method not in HEATMAP_METHODS:
        raise DataError(f"method must be one of {HEATMAP_METHODS}, got {method!r}")
    device = resolve_device(device)
    if registration not in REGISTRATIONS:
        raise DataError(f"registration must be one of {list(REGISTRATIONS)}, got {registration!r}")
    loaded = _load(run, which, device)
    module = _datamodule(loaded.config, batch_size, data_root, cache, num_workers)
    ground_truth = ground_truth_boxes(module.box_table)
    if ground_truth.empty:
        raise DataError(f"{module.root}: no test image carries a box (BBox_List_2017.csv rows)")
    needed = ground_truth.groupby("image_id")["class_name"].apply(list).to_dict()
    heatmaps = compute_heatmaps(loaded.model, module.box_dataloader(), needed, method=method, device=device,
                                progress=progress)
    from thoracic.heatmaps import create_heatmap_method

    grid = create_heatmap_method(method, loaded.model).grid(loaded.config.data.image_size)
    registered = make_registration(registration, grid)
    out = evaluation_dir(loaded.run_dir, loaded.checkpoint_path)
    files = {"heatmaps": save_heatmaps(heatmaps, out / f"heatmaps_{method}.npz")}
    tables = localize_boxes(ground_truth, heatmaps, method, thresholds, largest_only, seed, progress=progress,
                            draws=draws, registration=registered)
    sensitivity = registration_table(ground_truth, heatmaps, [registered, registered.other()], thresholds,
                                     largest_only)
    sensitivity.to_csv(out / f"registration_{method}.csv", index=False, float_format="%.6f")
    info = {
        "method": method, "model": loaded.config.model.name, "seed": loaded.config.seed,
        "checkpoint": loaded.info, "heatmap_thresholds": [float(t) for t in thresholds],
        "largest_only": bool(largest_only), "baseline_seed": seed, "random_box_draws": int(draws),
        "n_box_rows": int(len(ground_truth)), "n_images": int(ground_truth["image_id"].nunique()),
        "registration": registered.describe(),
        "registrations": json.loads(sensitivity.to_json(orient="records")),
    }
    files.update(write_localization(out, method, tables, info))
    files["registration"] = out / f"registration_{method}.csv"
    boxes, scores, accuracy = tables.boxes, tables.scores, tables.accuracy
    name = loaded.config.model.name
    label = f"{MODEL_LABELS.get(name, name)}, {METHOD_LABELS.get(method, method)}"
    rows = overlay_rows(module, ground_truth, {label: (heatmaps, boxes)}, n_examples,
                        registrations={label: registered})
    if rows:
        top = int(max(thresholds))
        figure = overlay_figure(rows, legend=box_legend_handles(solid_label=f"predicted box (heatmap > {top})"),
                                title=f"{label}: test images with boxes")
        files["overlays"] = save_figure(figure, out / f"overlays_{method}.png")
    return LocalizationRunResult(accuracy, scores, boxes, files, sensitivity)


def example_rows(ground_truth: pd.DataFrame, n_examples: int) -> pd.DataFrame:
    """Up to ``n_examples`` (image, class) pairs, taking the box classes in turn (first rows in file order)."""
    pairs = ground_truth.drop_duplicates(["image_id", "class_name"])
    by_class = [pairs[pairs["class_name"] == name] for name in BOX_CLASS_NAMES]
    depth = max((len(rows) for rows in by_class), default=0)
    chosen = [rows.iloc[rank] for rank in range(depth) for rows in by_class if rank < len(rows)]
    return pd.DataFrame(chosen[:n_examples])


def overlay_rows(module: Any, ground_truth: pd.DataFrame,
                 sources: dict[str, tuple[dict[tuple[str, str], np.ndarray], pd.DataFrame]],
                 n_examples: int, threshold: float | None = None,
                 registrations: dict[str, Registration] | None = None) -> list[OverlayRow]:
    """Overlay rows for up to ``n_examples`` (image, class) pairs and each ``name -> (heatmaps, boxes)``.

    ``registrations`` (by source name) places each source's heatmap in the image as localization did.

    Predicted boxes shown are those of the highest heatmap threshold of ``boxes`` (unless ``threshold`` is
    given).
    The image is read from its original file (falls back to the cache image, stretched to the original
    size, when the file is not on disk).
    """
    from thoracic.data.images import read_image

    rows = []
    table = module.dataset.table.set_index("image_id")
    for example in example_rows(ground_truth, n_examples).itertuples(index=False):
        image_id, class_name = example.image_id, example.class_name
        path = table.at[image_id, "path"] if "path" in table.columns else None
        try:
            image = read_image(path) if path else None
        except Exception:  # noqa: BLE001 - a figure must not fail the evaluation
            image = None
        if image is None:
            small = module.cache.image(image_id)
            repeat = max(1, int(example.original_height) // small.shape[0])
            image = np.kron(small, np.ones((repeat, repeat), dtype=small.dtype))
        truth = ground_truth[(ground_truth["image_id"] == image_id) & (ground_truth["class_name"] == class_name)]
        panels = []
        for name, (heatmaps, boxes) in sources.items():
            mine = boxes[(boxes["image_id"] == image_id) & (boxes["class_name"] == class_name)]
            # the same heatmap threshold in every panel (an image without a box at it shows none)
            shown = threshold if threshold is not None else (boxes["threshold"].max() if len(boxes) else None)
            mine = mine[mine["threshold"] == shown] if shown is not None else mine
            panels.append(OverlayPanel(name, heatmaps.get((image_id, class_name)),
                                       mine[["x", "y", "w", "h"]].to_numpy(dtype=float),
                                       registration=(registrations or {}).get(name)))
        rows.append(OverlayRow(image, f"{image_id}\n{class_name}", truth[["x", "y", "w", "h"]].to_numpy(float),
                               panels))
    return rows


__all__ = [
    "BASELINE_BOX_COLUMNS", "CENTRE_BOX", "HEADLINE_METRICS", "POOLED", "RANDOM_BOX", "RANDOM_DRAWS",
    "SCORE_COLUMNS", "EvaluationResult", "LocalizationRunResult", "LocalizationTables", "evaluate_run",
    "evaluation_dir", "ground_truth_boxes", "headline", "headline_text", "load_registration", "localize_boxes",
    "localize_run", "overlay_rows", "registration_table", "write_localization",
]

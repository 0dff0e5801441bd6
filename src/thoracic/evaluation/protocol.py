"""The localization protocol after the network: heatmaps -> boxes -> per-row scores -> accuracy tables.

What ``thoracic localize`` computes from the heatmaps of a run (:func:`localize_boxes`), the threshold-180
headline of its table (:func:`headline`), the same heatmaps under each registration
(:func:`registration_table`) and the files it writes (:func:`write_localization`)::

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
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from thoracic.errors import DataError
from thoracic.geometry import Registration
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
from thoracic.evaluation.readers import HUMAN_SOURCE
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS, CellCentres, extract_boxes, extract_boxes_and_peaks
from thoracic.io import write_csv_atomic, write_text_atomic
from thoracic.safety import read_json

#: ``source`` values of the baselines in localization tables.
RANDOM_BOX = "random box"
CENTRE_BOX = "centre box"
#: Seeded draws of the random-box baseline (its accuracy is their mean, with their standard deviation).
RANDOM_DRAWS = 100
#: The localization headline: accuracy at T(IoU) = 0.3 and T(IoBB) = 0.25.
HEADLINE_METRICS: tuple[tuple[str, float], ...] = (("IoU", 0.3), ("IoBB", 0.25))


def ground_truth_boxes(box_table: pd.DataFrame) -> pd.DataFrame:
    """Box rows in original pixels (the data layer's ``x_original...`` columns) plus the original size."""
    columns = {"x_original": "x", "y_original": "y", "w_original": "w", "h_original": "h"}
    missing = [c for c in ["image_id", "class_name", "box_row", *columns, "original_width", "original_height"]
               if c not in box_table.columns]
    if missing:
        raise DataError(f"box table lacks columns {missing}")
    gt = box_table[["image_id", "class_name", "box_row", *columns, "original_width", "original_height"]]
    return gt.rename(columns=columns).reset_index(drop=True)



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
    class_names: Sequence[str] | None = None,
) -> LocalizationTables:
    """Boxes, per-row scores and the accuracy table of a method and of the random-box and centre-box
    baselines, from heatmaps (no network).

    ``ground_truth`` needs ``original_width`` / ``original_height`` per row. The accuracy table holds,
    per ``source`` (``method``, :data:`RANDOM_BOX`, :data:`CENTRE_BOX`), IoU and IoBB accuracy with false
    positives per image (the method per heatmap threshold and pooled; the random box as mean and standard
    deviation over ``draws`` seeded draws) and the pointing game (the method's heatmap maximum in original
    pixels, through ``registration`` as the boxes; the baselines' box centres). Everything in it can be
    recomputed from the three tables returned beside it. ``registration`` places the heatmap cells in the
    image (:class:`thoracic.geometry.Registration`; ``None``: :func:`~thoracic.heatmaps.boxes.default_cell_centres`,
    the geometric registration of a ResNet at 256 px). ``class_names``: the rows of the accuracy tables, the
    run's box classes (default: those of the ground truth).
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
    tables = [pd.concat([localization_accuracy(ground_truth, boxes, class_names),
                         pointing_accuracy(ground_truth, hits, class_names)], ignore_index=True).assign(source=method),
              baseline_accuracy(ground_truth, random, class_names).assign(source=RANDOM_BOX),
              baseline_accuracy(ground_truth, centre, class_names).assign(source=CENTRE_BOX)]
    accuracy = pd.concat(tables, ignore_index=True)[["source", *ACCURACY_COLUMNS]]
    baseline_boxes = pd.concat([random.assign(source=RANDOM_BOX), centre.assign(source=CENTRE_BOX)],
                               ignore_index=True)[BASELINE_BOX_COLUMNS]
    return LocalizationTables(boxes, scores[SCORE_COLUMNS], accuracy, baseline_boxes)


def headline(accuracy: pd.DataFrame, method: str, threshold: str = HEADLINE_THRESHOLD) -> dict[str, float]:
    """The localization headline of one ``localization_<method>.csv`` table (means over the box classes
    with boxes); ``threshold``: the heatmap threshold of the headline (``""`` for the human row, whose boxes
    need none).

    Keys: ``classes`` (how many box classes the means are over), ``box_classes`` (how many box classes the
    table has: the run's), ``boxes`` (box rows), then for
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

    names = table.loc[(table["source"] == method) & (table["class_name"] != MEAN), "class_name"]
    row: dict[str, float] = {"classes": most("n_classes"), "box_classes": float(names.nunique()),
                             "boxes": most("n_boxes")}
    for metric, t in HEADLINE_METRICS:
        name = f"{metric}>{t:g}"
        row[name] = pick(method, threshold, metric, t)
        row[f"{name} FP"] = pick(method, threshold, metric, t, "false_positives_per_image")
        row[f"{name} T60"] = pick(method, "60", metric, t)
        row[f"{name} pooled"] = pick(method, POOLED, metric, t)
        row[f"{name} random"] = pick(RANDOM_BOX, "", metric, t)
        row[f"{name} random sd"] = pick(RANDOM_BOX, "", metric, t, "accuracy_sd")
        row[f"{name} centre"] = pick(CENTRE_BOX, "", metric, t)
    row["pointing"] = pick(method, "", POINTING, None)
    row["pointing random"] = pick(RANDOM_BOX, "", POINTING, None)
    row["pointing centre"] = pick(CENTRE_BOX, "", POINTING, None)
    return row


def headline_text(row: dict[str, float], method: str, n_box_classes: int | None = None) -> str:
    """:func:`headline` as a few plain lines (what ``thoracic localize`` prints); ``n_box_classes``: the box
    classes the means could cover (default: the row's ``box_classes``, the classes of its table: the run's)."""
    def number(value: float) -> str:
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"

    def count(value: float) -> str:
        return "n/a" if not np.isfinite(value) else str(int(value))

    box_classes = n_box_classes if n_box_classes is not None else count(row.get("box_classes", float("nan")))
    lines = [f"{method}: heatmap threshold {HEADLINE_THRESHOLD} (the paper's); means over {count(row['classes'])} "
             f"of {box_classes} box classes ({count(row['boxes'])} box rows)"]
    for metric, t in HEADLINE_METRICS:
        name = f"{metric}>{t:g}"
        lines.append(f"  {name:<10} {number(row[name])} (false positives / image {number(row[name + ' FP'])}); "
                     f"threshold 60 {number(row[name + ' T60'])}, pooled {number(row[name + ' pooled'])}; "
                     f"random box {number(row[name + ' random'])} ± {number(row[name + ' random sd'])}, "
                     f"centre box {number(row[name + ' centre'])}")
    lines.append(f"  pointing game {number(row['pointing'])}; random box centre {number(row['pointing random'])}, "
                 f"image centre {number(row['pointing centre'])}")
    return "\n".join(lines)


def human_text(accuracy: pd.DataFrame, reason: str = "", n_pairs: int = 0) -> str:
    """The human row (:func:`thoracic.evaluation.readers.human_agreement`) as ``thoracic localize`` prints it
    beside the model's headline."""
    if reason:
        return f"human readers: not defined ({reason})"
    row = headline(accuracy, HUMAN_SOURCE, "")

    def number(value: float) -> str:
        return "n/a" if not np.isfinite(value) else f"{value:.3f}"

    cells = "; ".join(f"{metric}>{t:g} {number(row[f'{metric}>{t:g}'])} (false positives / image "
                      f"{number(row[f'{metric}>{t:g} FP'])})" for metric, t in HEADLINE_METRICS)
    classes = "n/a" if not np.isfinite(row["classes"]) else str(int(row["classes"]))
    return (f"human readers (each reader's boxes against the other readers', {n_pairs} image-reader pairs; means "
            f"over {classes} classes): {cells}; pointing game {number(row['pointing'])}")


def write_localization(out: Path, method: str, tables: LocalizationTables, info: dict[str, Any]) -> dict[str, Path]:
    """Write ``boxes_``, ``scores_``, ``baselines_``, ``localization_<method>.csv`` and
    ``localization_<method>.json`` (``info`` plus the protocol and the table) into ``out``.

    Boxes, scores and baseline boxes are written at full precision (shortest round-trip decimals), so
    every number of the accuracy table recomputes exactly from them; the accuracy table has 6 decimals.
    """
    files = {"boxes": out / f"boxes_{method}.csv", "scores": out / f"scores_{method}.csv",
             "baselines": out / f"baselines_{method}.csv", "localization_csv": out / f"localization_{method}.csv",
             "localization_json": out / f"localization_{method}.json"}
    write_csv_atomic(files["boxes"], tables.boxes, index=False)
    write_csv_atomic(files["scores"], tables.scores, index=False)
    write_csv_atomic(files["baselines"], tables.baseline_boxes, index=False)
    write_csv_atomic(files["localization_csv"], tables.accuracy, index=False, float_format="%.6f")
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
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The same heatmaps boxed under each registration: mean accuracy over the box classes (``class_names``,
    default those of the ground truth) and false positives per image at T(IoU)=0.3 and T(IoBB)=0.25, per
    heatmap threshold (and pooled).

    Columns: ``registration, threshold, metric, t, accuracy, false_positives_per_image``.
    """
    sizes = _original_sizes(ground_truth)
    frames = []
    for registration in registrations:
        boxes = extract_boxes(heatmaps, sizes, thresholds, largest_only=largest_only, registration=registration)
        table = localization_accuracy(ground_truth, boxes, class_names)
        keep = pd.Series(False, index=table.index)
        for metric, t in REGISTRATION_CRITERIA:
            keep |= table["class_name"].eq(MEAN) & table["metric"].eq(metric) & np.isclose(table["t"], t)
        part = table.loc[keep, ["threshold", "metric", "t", "accuracy", "false_positives_per_image"]]
        frames.append(part.assign(registration=registration.name))
    result = pd.concat(frames, ignore_index=True)
    return result[["registration", "threshold", "metric", "t", "accuracy", "false_positives_per_image"]]


def load_registration(evaluation: Path, method: str) -> Registration:
    """The registration ``localize`` used for ``method`` in an evaluation folder (``legacy`` when its
    ``localization_<method>.json`` predates registrations or is missing: what was used then)."""
    path = Path(evaluation) / f"localization_{method}.json"
    if not path.is_file():
        return Registration("legacy")
    data = read_json(path, "a localization file", DataError)  # damaged: named, never read as "legacy"
    info = data.get("registration") if isinstance(data, dict) else None
    try:
        return Registration.from_description(info) if info else Registration("legacy")
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: its 'registration' is not one thoracic localize writes ({exc}); rerun "
                        "`thoracic localize`") from None


__all__ = [
    "BASELINE_BOX_COLUMNS", "CENTRE_BOX", "HEADLINE_METRICS", "RANDOM_BOX", "RANDOM_DRAWS", "REGISTRATION_CRITERIA",
    "SCORE_COLUMNS", "LocalizationTables", "ground_truth_boxes", "headline", "headline_text", "human_text",
    "load_registration",
    "localize_boxes", "registration_table", "write_localization",
]

"""The report's localization tables as DataFrames (Tables 2-7 style, the headline, per heatmap threshold,
false positives, the pointing game), read from each run's ``localization_<method>.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from thoracic.constants import METHOD_LABELS
from thoracic.evaluation.formatting import fmt, mean_std
from thoracic.evaluation.localization import (
    HEADLINE_THRESHOLD,
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    MEAN,
    POINTING,
    POOLED,
)
from thoracic.evaluation.references import LOCALIZATION_REFERENCE_LABEL, load_localization_reference
from thoracic.evaluation.table1 import REFERENCE_DATASET
from thoracic.reporting.runs import RunGroup


BASELINE_SOURCES = ("random box", "centre box")


def _localization_values(group: RunGroup, method: str, source: str, threshold: str, metric: str, t: float | None,
                         column: str = "accuracy") -> dict[str, list[float]]:
    """``class_name -> [value of each run]`` of one (source, heatmap threshold, metric, t); ``t`` None: the
    pointing game (no metric threshold). Tables written before ``column`` existed give nothing."""
    values: dict[str, list[float]] = {}
    for run in group.runs:
        table = run.localization.get(method)
        if table is None or column not in table.columns:
            continue
        rows = table[(table["source"] == source) & (table["threshold"] == threshold) & (table["metric"] == metric)]
        rows = rows[rows["t"].isna()] if t is None else rows[np.isclose(rows["t"], t)]
        for name, value in zip(rows["class_name"], rows[column]):
            values.setdefault(name, []).append(float(value))
    return values


def run_methods(groups: Sequence[RunGroup]) -> list[tuple[RunGroup, str]]:
    return [(g, m) for g in groups for m in sorted({m for r in g.runs for m in r.localization})]


def box_rows_per_class(group: RunGroup, method: str) -> dict[str, int]:
    """Box rows scored per box class (the first run of ``group``, heatmap method ``method``)."""
    table = group.runs[0].localization[method]
    rows = table[(table["source"] == method) & (table["class_name"] != MEAN)]
    rows = rows.drop_duplicates("class_name")
    return {name: int(n) for name, n in zip(rows["class_name"], rows["n_boxes"])}


def mean_label(counts: dict[str, int]) -> str:
    """``Mean over k of 8 classes``: the classes with at least one box row, of the run's box classes (the
    keys of ``counts``, :func:`box_rows_per_class`)."""
    k = sum(1 for n in counts.values() if n > 0)
    return f"Mean over {k} of {len(counts)} classes"


def on_reference_data(groups: Sequence[RunGroup]) -> bool:
    """Whether the published localization column (Wang et al. 2017, ChestX-ray14's boxes) belongs beside
    these runs: every one was trained on ChestX-ray14."""
    return all(run.dataset == REFERENCE_DATASET for group in groups for run in group.runs)


def _heatmap_thresholds(group: RunGroup, method: str) -> list[str]:
    """The method's heatmap thresholds in the run's table: the headline one (180, the paper's) first, then
    the others, pooled last. Without 180 (other ``--heatmap-thresholds``) the highest one leads."""
    table = group.runs[0].localization[method]
    found = [t for t in dict.fromkeys(table.loc[table["source"] == method, "threshold"]) if t not in ("", POOLED)]

    def number(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            return -1.0

    highest = sorted(found, key=number, reverse=True)
    lead = HEADLINE_THRESHOLD if HEADLINE_THRESHOLD in found else (highest[0] if highest else POOLED)
    pooled = [POOLED] if (table["threshold"] == POOLED).any() and lead != POOLED else []
    return [lead, *[t for t in found if t != lead], *pooled]


def _cell(group: RunGroup, method: str, source: str, threshold: str, metric: str, t: float | None, name: str,
          digits: int = 4, false_positives: bool = True) -> str:
    """One table cell: accuracy (mean ± std over a group's seeds; for the random box, mean ± sd over its
    draws) and, in parentheses, the false positives per image."""
    accuracy = _localization_values(group, method, source, threshold, metric, t).get(name, [])
    text = mean_std(accuracy, digits)
    spread = _localization_values(group, method, source, threshold, metric, t, "accuracy_sd").get(name, [])
    if len(accuracy) == 1 and spread and np.isfinite(spread[0]):
        text += f" ± {spread[0]:.{digits}f}"
    if false_positives:
        fps = _localization_values(group, method, source, threshold, metric, t, "false_positives_per_image")
        if any(np.isfinite(v) for v in fps.get(name, [])):
            text += f" ({mean_std(fps[name], 2)})"
    return text


def _threshold_label(threshold: str) -> str:
    return "60 and 180 pooled" if threshold == POOLED else threshold


#: What the cells of the localization tables mean.
LOCALIZATION_LEGEND = (
    "A cell reads accuracy (false positives per image); a group of seeds shows mean ± standard deviation "
    "over its runs. The random box is the mean ± standard deviation over its seeded draws; the centre box "
    "is one box of the class's mean size centred in the image.")


#: Under the headline table.
HEADLINE_NOTE = (
    "Accuracy at heatmap threshold 180 with false positives per image in parentheses; threshold 60 and both "
    "thresholds pooled beside it (pooling doubles the boxes, and with them the false positives); the random "
    "box as mean ± sd over its seeded draws; the pointing game of the heatmap maximum, of the random boxes' "
    "centres and of the image centre.")


def localization_tables(groups: Sequence[RunGroup]) -> dict[str, pd.DataFrame]:
    """Tables 2-7 style at heatmap threshold 180: ``"IoU > 0.3"`` -> rows = the runs' box classes (ChestX-ray14:
    its 8) + the mean over the classes with box rows; columns: the box rows per class, Wang 2017 (its mean
    over the same classes; runs trained on ChestX-ray14 only, :func:`on_reference_data`), every group x method
    and the random-box and centre-box baselines, each cell ``accuracy (false positives per image)``
    (:data:`LOCALIZATION_LEGEND`)."""
    reference = load_localization_reference()
    pairs = run_methods(groups)
    if not pairs:
        return {}
    counts = box_rows_per_class(*pairs[0])
    box_classes = list(counts)
    with_boxes = [name for name in box_classes if counts[name] > 0]
    mean_row = mean_label(counts)
    names = [*box_classes, MEAN]
    published = on_reference_data(groups)
    tables = {}
    for metric, thresholds in (("IoU", IOU_THRESHOLDS), ("IoBB", IOBB_THRESHOLDS)):
        for t in thresholds:
            table = pd.DataFrame(index=[*box_classes, mean_row])
            table.index.name = "class"
            table["box rows"] = [str(counts[c]) for c in box_classes] + [str(sum(counts.values()))]
            if published:
                ref = reference[(reference["metric"] == metric) & np.isclose(reference["threshold"], t)]
                ref_values = dict(zip(ref["class_name"], ref["accuracy"]))
                # the published mean over the same classes as ours, so the Mean row compares like with like
                ref_values[MEAN] = float(np.mean([ref_values[c] for c in with_boxes if c in ref_values])) \
                    if with_boxes else None
                table[LOCALIZATION_REFERENCE_LABEL] = [fmt(ref_values.get(c)) for c in names]
            for group, method in pairs:
                threshold = _heatmap_thresholds(group, method)[0]
                label = _column_label(group, method)
                if threshold != HEADLINE_THRESHOLD:
                    label += f" (threshold {_threshold_label(threshold)})"
                table[label] = [_cell(group, method, method, threshold, metric, t, c) for c in names]
            group, method = pairs[0]
            first = RunGroup(group.label, group.runs[:1])  # baselines depend only on the boxes and the seed
            for source in BASELINE_SOURCES:
                table[source] = [_cell(first, method, source, "", metric, t, c) for c in names]
            tables[f"{metric} > {t:g}"] = table
    return tables


def _column_label(group: RunGroup, method: str) -> str:
    return f"{group.label}, {METHOD_LABELS.get(method, method)}"


def localization_headline_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """One row per group x method: accuracy at T(IoU) = 0.3 and T(IoBB) = 0.25 at heatmap threshold 180
    with false positives per image, at 60 and pooled beside it, the random-box (mean ± sd over its draws)
    and centre-box baselines, and the pointing game; means over the classes with box rows."""
    records = []
    for group, method in run_methods(groups):
        threshold, *others = _heatmap_thresholds(group, method)
        first = RunGroup(group.label, group.runs[:1])
        row = {"run": group.label, "heatmap": METHOD_LABELS.get(method, method),
               "classes": mean_label(box_rows_per_class(group, method)).removeprefix("Mean over ")}
        for metric, t in (("IoU", 0.3), ("IoBB", 0.25)):
            name = f"{metric} > {t:g}"
            row[f"{name}, threshold {threshold} (FP)"] = _cell(group, method, method, threshold, metric, t, MEAN, 3)
            for other in others:
                label = _threshold_label(other) if other == POOLED else f"threshold {other}"
                row[f"{name}, {label}"] = _cell(group, method, method, other, metric, t, MEAN, 3, False)
            for source in BASELINE_SOURCES:
                row[f"{name}, {source}"] = _cell(first, method, source, "", metric, t, MEAN, 3, False)
        row["pointing game"] = _cell(group, method, method, "", POINTING, None, MEAN, 3, False)
        row["pointing: random box centres"] = _cell(first, method, BASELINE_SOURCES[0], "", POINTING, None, MEAN,
                                                    3, False)
        row["pointing: image centre"] = _cell(first, method, BASELINE_SOURCES[1], "", POINTING, None, MEAN, 3,
                                              False)
        records.append(row)
    return pd.DataFrame.from_records(records)


def per_threshold_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Mean accuracy over the box classes (false positives per image in parentheses) per heatmap threshold
    (180, the paper's, first; then 60 and pooled) and metric threshold."""
    records = []
    for group, method in run_methods(groups):
        for threshold in _heatmap_thresholds(group, method):
            row = {"run": group.label, "heatmap": METHOD_LABELS.get(method, method),
                   "heatmap threshold": _threshold_label(threshold)}
            for metric, thresholds in (("IoU", IOU_THRESHOLDS), ("IoBB", IOBB_THRESHOLDS)):
                for t in thresholds:
                    row[f"{metric}>{t:g}"] = _cell(group, method, method, threshold, metric, t, MEAN, 3)
            records.append(row)
    return pd.DataFrame.from_records(records)


def false_positive_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Average false positives per image (mean over the box classes with box rows) at each T(IoU) and
    T(IoBB), heatmap threshold 180, beside the baselines'."""
    pairs = run_methods(groups)
    if not pairs:
        return pd.DataFrame()
    criteria = [("IoU", t) for t in IOU_THRESHOLDS] + [("IoBB", t) for t in IOBB_THRESHOLDS]
    table = pd.DataFrame(index=[f"{m} > {t:g}" for m, t in criteria])
    table.index.name = "criterion"
    for group, method in pairs:
        threshold = _heatmap_thresholds(group, method)[0]
        label = _column_label(group, method)
        if threshold != HEADLINE_THRESHOLD:
            label += f" (threshold {_threshold_label(threshold)})"
        table[label] = [mean_std(_localization_values(group, method, method, threshold, m, t,
                                                       "false_positives_per_image").get(MEAN, []), 2)
                        for m, t in criteria]
    group, method = pairs[0]
    first = RunGroup(group.label, group.runs[:1])
    for source in BASELINE_SOURCES:
        table[source] = [mean_std(_localization_values(first, method, source, "", m, t,
                                                        "false_positives_per_image").get(MEAN, []), 2)
                         for m, t in criteria]
    return table


def pointing_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """The pointing game per class: the share of box rows whose heatmap maximum (in original pixels) lies
    inside a ground-truth box of that class on that image; beside it the random boxes' centres (mean ± sd
    over the draws) and the image centre. Rows: the runs' box classes + the mean over the classes with box
    rows (empty when the runs' tables have no pointing game)."""
    pairs = run_methods(groups)
    if not pairs or not any(_localization_values(g, m, m, "", POINTING, None) for g, m in pairs):
        return pd.DataFrame()
    counts = box_rows_per_class(*pairs[0])
    names = [*counts, MEAN]
    table = pd.DataFrame(index=[*counts, mean_label(counts)])
    table.index.name = "class"
    table["box rows"] = [str(counts[c]) for c in counts] + [str(sum(counts.values()))]
    for group, method in pairs:
        table[_column_label(group, method)] = [_cell(group, method, method, "", POINTING, None, c, 4, False)
                                               for c in names]
    group, method = pairs[0]
    first = RunGroup(group.label, group.runs[:1])
    for source, label in zip(BASELINE_SOURCES, ("random box centres", "image centre")):
        table[label] = [_cell(first, method, source, "", POINTING, None, c, 4, False) for c in names]
    return table


__all__ = ["BASELINE_SOURCES", "HEADLINE_NOTE", "LOCALIZATION_LEGEND", "box_rows_per_class", "false_positive_table",
           "localization_headline_table", "localization_tables", "mean_label", "on_reference_data",
           "per_threshold_table", "pointing_table", "run_methods"]

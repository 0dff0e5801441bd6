"""The report's tables as DataFrames (no rendering): classification (Table 1), localization, setup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES, METHOD_LABELS, MODEL_LABELS
from thoracic.evaluation.localization import (
    HEADLINE_THRESHOLD,
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    MEAN,
    POINTING,
    POOLED,
)
from thoracic.evaluation.references import (
    CLASSIFICATION_REFERENCE_LABELS,
    LOCALIZATION_REFERENCE_LABEL,
    load_classification_reference,
    load_localization_reference,
)
from thoracic.provenance import SHORT_HASH
from thoracic.data.synth import folder_kind
from thoracic.training.checkpoints import checkpoint_info
from thoracic.reporting.document import ReportContext
from thoracic.reporting.render import markdown_table
from thoracic.reporting.runs import RunGroup, RunSummary


#: model name -> column of the seed paper's Table 1.
PAPER_COLUMN = {"baseline": "paper_baseline_resnet34", "space_attention": "paper_space_attention",
                "attention_gated": "paper_attention_gated"}


BASELINE_SOURCES = ("random box", "centre box")


def fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _mean_std(values: Sequence[float | None], digits: int = 4) -> str:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return "n/a"
    if len(values) == 1:
        return fmt(finite[0], digits)
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1) if len(finite) > 1 else 0.0:.{digits}f}"


def _class_auc(run: RunSummary, name: str) -> tuple[float | None, float | None, float | None]:
    if not run.auc:
        return None, None, None
    if name == "Mean":
        ci = run.auc.get("mean_ci") or [None, None]
        return run.auc.get("mean_auc"), ci[0], ci[1]
    entry = run.auc["per_class"].get(name, {})
    return entry.get("auc"), entry.get("ci_low"), entry.get("ci_high")


def classification_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Table 1: rows = 14 classes + Mean; Wang 2017, then each group beside the paper's column for its model."""
    reference = load_classification_reference()
    reference.loc["Mean"] = reference.mean(axis=0)
    table = pd.DataFrame(index=[*CLASS_NAMES, "Mean"])
    table.index.name = "class"
    table[CLASSIFICATION_REFERENCE_LABELS["wang2017_resnet50"]] = [fmt(v) for v in reference["wang2017_resnet50"]]
    shown_papers = set()
    for group in groups:
        cells = []
        for name in table.index:
            values = [_class_auc(run, name) for run in group.runs]
            if len(group.runs) == 1:
                auc, low, high = values[0]
                cell = fmt(auc)
                if low is not None and high is not None and auc is not None:
                    cell += f" [{fmt(low, 3)}, {fmt(high, 3)}]"
            else:
                cell = _mean_std([v[0] for v in values])
            cells.append(cell)
        table[group.label] = cells
        column = PAPER_COLUMN.get(group.model)
        if column:
            label = CLASSIFICATION_REFERENCE_LABELS[column]
            table[label if label not in table.columns else f"{label} "] = [fmt(v) for v in reference[column]]
            shown_papers.add(column)
    for column, label in CLASSIFICATION_REFERENCE_LABELS.items():
        if column != "wang2017_resnet50" and column not in shown_papers:
            table[label] = [fmt(v) for v in reference[column]]
    return table


#: What the cells of :func:`classification_table` mean (written under every Table 1).
TABLE1_LEGEND = ("A single run shows its bootstrap 95% confidence interval in brackets; a group of seeds shows "
                 "mean ± standard deviation. Each run stands beside the seed paper's column for the same model; "
                 "Wang et al. 2017 is ResNet-50.")


def write_run_table1(auc: dict[str, Any], config: dict[str, Any], out_dir: str | Path,
                     split: str = "test") -> tuple[Path, Path]:
    """Table 1 of one evaluated run: ``table1_<split>.md`` and ``.csv`` in ``out_dir``.

    Args:
        auc: what ``thoracic evaluate`` stores in ``auc_<split>.json`` (``AUCResult.to_dict()`` and the
            run's details).
        config: the run's config as a plain dict (``to_dict``); its model picks the paper's column.
    Returns:
        ``(markdown path, csv path)``.
    """
    out_dir = Path(out_dir)
    summary = RunSummary(out_dir.parent, config, auc)
    table = classification_table([RunGroup(summary.model, [summary])])
    csv_path = out_dir / f"table1_{split}.csv"
    markdown_path = out_dir / f"table1_{split}.md"
    table.to_csv(csv_path)
    caveat = "" if split == "test" else f" The published numbers are test-split AUCs, not {split}-split ones."
    markdown_path.write_text(f"# Table 1: per-class ROC AUC, {summary.model} on the {split} split\n\n"
                             f"{TABLE1_LEGEND}{caveat}\n\n{markdown_table(table)}\n")
    return markdown_path, csv_path


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
    """``Mean over k of 8 classes``: the classes with at least one box row."""
    k = sum(1 for name in BOX_CLASS_NAMES if counts.get(name, 0) > 0)
    return f"Mean over {k} of {len(BOX_CLASS_NAMES)} classes"


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
    text = _mean_std(accuracy, digits)
    spread = _localization_values(group, method, source, threshold, metric, t, "accuracy_sd").get(name, [])
    if len(accuracy) == 1 and spread and np.isfinite(spread[0]):
        text += f" ± {spread[0]:.{digits}f}"
    if false_positives:
        fps = _localization_values(group, method, source, threshold, metric, t, "false_positives_per_image")
        if any(np.isfinite(v) for v in fps.get(name, [])):
            text += f" ({_mean_std(fps[name], 2)})"
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
    """Tables 2-7 style at heatmap threshold 180: ``"IoU > 0.3"`` -> rows = the 8 box classes + the mean
    over the classes with box rows; columns: the box rows per class, Wang 2017 (its mean over the same
    classes), every group x method and the random-box and centre-box baselines, each cell ``accuracy
    (false positives per image)`` (:data:`LOCALIZATION_LEGEND`)."""
    reference = load_localization_reference()
    pairs = run_methods(groups)
    if not pairs:
        return {}
    counts = box_rows_per_class(*pairs[0])
    with_boxes = [name for name in BOX_CLASS_NAMES if counts.get(name, 0) > 0]
    mean_row = mean_label(counts)
    names = [*BOX_CLASS_NAMES, MEAN]
    tables = {}
    for metric, thresholds in (("IoU", IOU_THRESHOLDS), ("IoBB", IOBB_THRESHOLDS)):
        for t in thresholds:
            table = pd.DataFrame(index=[*BOX_CLASS_NAMES, mean_row])
            table.index.name = "class"
            table["box rows"] = [str(counts.get(c, 0)) for c in BOX_CLASS_NAMES] + [str(sum(counts.values()))]
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
        table[label] = [_mean_std(_localization_values(group, method, method, threshold, m, t,
                                                       "false_positives_per_image").get(MEAN, []), 2)
                        for m, t in criteria]
    group, method = pairs[0]
    first = RunGroup(group.label, group.runs[:1])
    for source in BASELINE_SOURCES:
        table[source] = [_mean_std(_localization_values(first, method, source, "", m, t,
                                                        "false_positives_per_image").get(MEAN, []), 2)
                         for m, t in criteria]
    return table


def pointing_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """The pointing game per class: the share of box rows whose heatmap maximum (in original pixels) lies
    inside a ground-truth box of that class on that image; beside it the random boxes' centres (mean ± sd
    over the draws) and the image centre. Rows: the 8 box classes + the mean over the classes with box
    rows (empty when the runs' tables have no pointing game)."""
    pairs = run_methods(groups)
    if not pairs or not any(_localization_values(g, m, m, "", POINTING, None) for g, m in pairs):
        return pd.DataFrame()
    counts = box_rows_per_class(*pairs[0])
    names = [*BOX_CLASS_NAMES, MEAN]
    table = pd.DataFrame(index=[*BOX_CLASS_NAMES, mean_label(counts)])
    table.index.name = "class"
    table["box rows"] = [str(counts.get(c, 0)) for c in BOX_CLASS_NAMES] + [str(sum(counts.values()))]
    for group, method in pairs:
        table[_column_label(group, method)] = [_cell(group, method, method, "", POINTING, None, c, 4, False)
                                               for c in names]
    group, method = pairs[0]
    first = RunGroup(group.label, group.runs[:1])
    for source, label in zip(BASELINE_SOURCES, ("random box centres", "image centre")):
        table[label] = [_cell(first, method, source, "", POINTING, None, c, 4, False) for c in names]
    return table


def operating_point_table_of(group: RunGroup) -> pd.DataFrame | None:
    """Per class: AUC, threshold, sensitivity and specificity (mean ± std over the seeds of a group)."""
    tables = [r.operating_points for r in group.runs if r.operating_points is not None]
    if not tables:
        return None
    table = pd.DataFrame(index=list(CLASS_NAMES))
    table.index.name = "class"
    for column, digits in (("auc", 4), ("threshold", 3), ("sensitivity", 3), ("specificity", 3)):
        values = [t.set_index("class_name")[column].reindex(CLASS_NAMES).to_numpy(float) for t in tables]
        table[column.replace("auc", "AUC")] = [_mean_std([v[i] for v in values], digits) for i in range(len(CLASS_NAMES))]
    return table


def ci_cell(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "undefined"
    cell = f"{value:.{digits}f}"
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        cell += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return cell


def _weights(model: dict[str, Any]) -> str:
    if model.get("weights"):
        return f"file {Path(str(model['weights'])).name}"
    return "ImageNet (torchvision)" if model.get("pretrained") else "none (trained from scratch)"


def _checkpoint_hash(run: RunSummary) -> str:
    """Short SHA-256 of the run's best checkpoint (the one evaluate and localize use by default)."""
    path = run.path / "checkpoints" / "best.ckpt"
    if not path.is_file():
        return "n/a (no checkpoints/best.ckpt)"
    try:
        return f"best.ckpt, sha256 {checkpoint_info(path)['sha256'][:SHORT_HASH]}"
    except Exception:  # noqa: BLE001 - an unreadable checkpoint must not stop the report
        return "best.ckpt (unreadable)"


def data_kind(run: RunSummary) -> str:
    """``phantom``, ``real`` or ``unknown``: what the evaluated checkpoint records, else what training
    recorded in run_info.json, else what the data folder is now."""
    return (run.data_kind or run.run_info.get("data_kind")
            or folder_kind(run.config.get("data", {}).get("root")))


def _data_folder(run: RunSummary) -> str:
    words = {"phantom": "phantom (synthetic)", "real": "real ChestX-ray14", "unknown": "unknown (folder not found)"}
    kind = data_kind(run)
    return f"{words.get(kind, kind)}: {run.config.get('data', {}).get('root')}"


def _image_counts(run: RunSummary, split: str) -> str:
    counts = dict(run.run_info.get("images") or {})
    if run.auc:
        counts.setdefault(split, run.auc.get("n_images"))
        if run.auc.get("n_val_images") is not None:
            counts.setdefault("val", run.auc["n_val_images"])
    return " / ".join(str(counts.get(k, "n/a")) for k in ("train", "val", "test"))


def _box_rows(run: RunSummary) -> str:
    counts = run.run_info.get("box_rows")
    if not counts and run.localization:
        method = sorted(run.localization)[0]
        counts = box_rows_per_class(RunGroup("", [run]), method)
    if not counts:
        return "n/a"
    k = sum(1 for name in BOX_CLASS_NAMES if counts.get(name, 0) > 0)
    return f"{sum(counts.values())} in {k} of {len(BOX_CLASS_NAMES)} classes"


def setup_table(context: ReportContext) -> pd.DataFrame:
    """One column per run: what was trained, on what, for how long, and which checkpoint was evaluated."""
    rows = ["model", "backbone", "input size", "weights", "backbone frozen", "epochs run", "best epoch", "seed",
            "images train / val / test", "box rows (test)", "data folder", "checkpoint"]
    table = pd.DataFrame(index=rows)
    table.index.name = "setting"
    for run in context.runs:
        model, data = run.config.get("model", {}), run.config.get("data", {})
        training = run.training
        best = training.get("best_epoch")
        table[context.run_label(run)] = [
            MODEL_LABELS.get(run.model, run.model), run.backbone or "n/a",
            f"{run.image_size or 'n/a'} px", _weights(model),
            "yes" if model.get("freeze_backbone") else "no",
            str(training.get("epochs_completed", "n/a")),
            "n/a" if best is None else str(best), str(run.seed),
            _image_counts(run, context.split), _box_rows(run), _data_folder(run), _checkpoint_hash(run)]
    return table


def box_rows_table(context: ReportContext) -> pd.DataFrame | None:
    """Box rows per class on the test images of each distinct data folder."""
    columns: dict[str, dict[str, int]] = {}
    for run in context.runs:
        counts = run.run_info.get("box_rows")
        if not counts and run.localization:
            counts = box_rows_per_class(RunGroup("", [run]), sorted(run.localization)[0])
        if counts:
            columns.setdefault(str(run.config.get("data", {}).get("root", run.path)), counts)
    if not columns:
        return None
    table = pd.DataFrame({root: [int(c.get(n, 0)) for n in BOX_CLASS_NAMES] + [int(sum(c.values()))]
                          for root, c in columns.items()}, index=[*BOX_CLASS_NAMES, "total"])
    table.index.name = "class"
    return table


__all__ = ["ci_cell", "data_kind", "fmt", "run_methods", "BASELINE_SOURCES", "HEADLINE_NOTE", "LOCALIZATION_LEGEND", "PAPER_COLUMN", "TABLE1_LEGEND", "box_rows_per_class", "box_rows_table", "classification_table", "false_positive_table", "localization_headline_table", "localization_tables", "mean_label", "operating_point_table_of", "per_threshold_table", "pointing_table", "setup_table", "write_run_table1"]

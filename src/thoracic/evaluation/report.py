"""Markdown and self-contained HTML reports of one or more evaluated runs beside the published numbers.

Input: run folders on which ``thoracic evaluate`` (and optionally ``thoracic localize``) ran, or
experiment folders (``seed*/`` run folders of one config). Runs whose configs differ only in ``seed``
(and ``run_name`` / ``output_dir``) form one group, reported as mean +- std over the runs; a single run
shows its bootstrap 95% CI instead.

Tables:
- Table 1 style: classes as rows; Wang et al. 2017 ResNet-50, then each group beside the seed paper's
  column for the same model.
- Localization headline: per group and heatmap method, accuracy at T(IoU) = 0.3 and T(IoBB) = 0.25 at
  heatmap threshold 180 (the paper's) with false positives per image, threshold 60 and pooled beside it,
  the baselines and the pointing game.
- Tables 2-7 style: for every T(IoU) and T(IoBB), classes as rows (box counts, and the mean over the k of
  8 classes with boxes); Wang et al. 2017, each group and heatmap method at threshold 180, and the
  random-box (mean ± sd over its draws) and centre-box baselines; every cell with its false positives per
  image. Then the accuracy per heatmap threshold, the average false positives and the pointing game.
The HTML embeds every figure as base64, so the one file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
from thoracic.errors import RunError
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

#: model name -> column of the seed paper's Table 1.
PAPER_COLUMN = {"baseline": "paper_baseline_resnet34", "space_attention": "paper_space_attention",
                "attention_gated": "paper_attention_gated"}
BASELINE_SOURCES = ("random box", "centre box")
_IGNORED_KEYS = ("seed", "run_name", "output_dir")


@dataclass
class RunSummary:
    """What a report needs from one evaluated run folder."""

    path: Path
    config: dict[str, Any]
    auc: dict[str, Any] | None
    localization: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)

    @property
    def model(self) -> str:
        return str(self.config.get("model", {}).get("name", "?"))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def group_key(self) -> str:
        reduced = {k: v for k, v in self.config.items() if k not in _IGNORED_KEYS}
        return json.dumps(reduced, sort_keys=True, default=str)


@dataclass
class RunGroup:
    """Runs of one config (seeds of one experiment) under a label."""

    label: str
    runs: list[RunSummary]

    @property
    def model(self) -> str:
        return self.runs[0].model


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "config.yaml").is_file() or (path / "evaluation").is_dir())


def _natural_key(path: Path) -> tuple:
    """``seed2`` before ``seed10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


def expand_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders: the run folders inside each experiment folder, or each path itself.

    An experiment folder (``thoracic experiment``: its own ``config.yaml`` beside ``seed*/`` runs) is
    recognised first, by the run folders it holds (a folder with ``config.yaml`` or ``evaluation/``);
    a run folder holds none (its ``checkpoints/``, ``logs/`` and ``evaluation/`` are not runs).
    """
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise RunError(f"run {path} is not a folder (expected a run or experiment folder)")
        children = sorted((p for p in path.iterdir() if _is_run(p)), key=_natural_key)
        if children:
            runs.extend(children)
        elif _is_run(path):
            runs.append(path)
        else:
            raise RunError(f"{path} holds neither a run (config.yaml) nor run folders (an experiment)")
    return runs


def _read_config(run: Path) -> dict[str, Any]:
    import yaml

    path = run / "config.yaml"
    if path.is_file():
        return yaml.safe_load(path.read_text()) or {}
    for json_path in sorted((run / "evaluation").glob("auc_*.json")):
        info = json.loads(json_path.read_text())
        return {"model": {"name": info.get("model", "?")}, "seed": info.get("seed")}
    return {}


def load_run_summary(run: str | Path, split: str = "test") -> RunSummary:
    """Read ``config.yaml`` and ``evaluation/`` (``auc_<split>.json``, ``localization_*.csv``, figures)."""
    run = Path(run)
    evaluation = run / "evaluation"
    if not evaluation.is_dir():
        raise RunError(f"run {run} has no evaluation/ folder: run `thoracic evaluate {run}` first "
                       "(`thoracic experiment` does it for every seed unless --no-test)")
    auc_path = evaluation / f"auc_{split}.json"
    auc = json.loads(auc_path.read_text()) if auc_path.is_file() else None
    localization = {p.stem.split("_", 1)[1]: pd.read_csv(p, dtype={"threshold": str, "source": str})
                    for p in sorted(evaluation.glob("localization_*.csv"))}
    for table in localization.values():
        table["threshold"] = table["threshold"].fillna("").astype(str)  # baselines have no heatmap threshold
    figures = sorted(evaluation.glob(f"roc_{split}.png")) + sorted(evaluation.glob("overlays_*.png"))
    if auc is None and not localization:
        raise RunError(f"run {run}: evaluation/ holds neither auc_{split}.json nor localization_*.csv")
    return RunSummary(run, _read_config(run), auc, localization, figures)


def group_runs(summaries: Sequence[RunSummary]) -> list[RunGroup]:
    """Runs with the same config apart from the seed form one group (in first-seen order)."""
    groups: dict[str, list[RunSummary]] = {}
    for summary in summaries:
        groups.setdefault(summary.group_key(), []).append(summary)
    labels: dict[str, int] = {}
    result = []
    for runs in groups.values():
        base = runs[0].model
        labels[base] = labels.get(base, 0) + 1
        label = base if labels[base] == 1 else f"{base} ({labels[base]})"
        if len(runs) > 1:
            label += f" x{len(runs)} seeds"
        elif runs[0].path.name != base:
            label += f" [{runs[0].path.name}]"
        result.append(RunGroup(label, runs))
    return result


# --------------------------------------------------------------------------------------------------
# Number formatting
# --------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _mean_std(values: Sequence[float | None], digits: int = 4) -> str:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return "n/a"
    if len(values) == 1:
        return _fmt(finite[0], digits)
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1) if len(finite) > 1 else 0.0:.{digits}f}"


def _class_auc(run: RunSummary, name: str) -> tuple[float | None, float | None, float | None]:
    if not run.auc:
        return None, None, None
    if name == "Mean":
        ci = run.auc.get("mean_ci") or [None, None]
        return run.auc.get("mean_auc"), ci[0], ci[1]
    entry = run.auc["per_class"].get(name, {})
    return entry.get("auc"), entry.get("ci_low"), entry.get("ci_high")


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def classification_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Table 1: rows = 14 classes + Mean; Wang 2017, then each group beside the paper's column for its model."""
    reference = load_classification_reference()
    reference.loc["Mean"] = reference.mean(axis=0)
    table = pd.DataFrame(index=[*CLASS_NAMES, "Mean"])
    table.index.name = "class"
    table[CLASSIFICATION_REFERENCE_LABELS["wang2017_resnet50"]] = [_fmt(v) for v in reference["wang2017_resnet50"]]
    shown_papers = set()
    for group in groups:
        cells = []
        for name in table.index:
            values = [_class_auc(run, name) for run in group.runs]
            if len(group.runs) == 1:
                auc, low, high = values[0]
                cell = _fmt(auc)
                if low is not None and high is not None and auc is not None:
                    cell += f" [{_fmt(low, 3)}, {_fmt(high, 3)}]"
            else:
                cell = _mean_std([v[0] for v in values])
            cells.append(cell)
        table[group.label] = cells
        column = PAPER_COLUMN.get(group.model)
        if column:
            label = CLASSIFICATION_REFERENCE_LABELS[column]
            table[label if label not in table.columns else f"{label} "] = [_fmt(v) for v in reference[column]]
            shown_papers.add(column)
    for column, label in CLASSIFICATION_REFERENCE_LABELS.items():
        if column != "wang2017_resnet50" and column not in shown_papers:
            table[label] = [_fmt(v) for v in reference[column]]
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
    pointing game (no metric threshold)."""
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


def _methods(groups: Sequence[RunGroup]) -> list[tuple[RunGroup, str]]:
    return [(g, m) for g in groups for m in sorted({m for r in g.runs for m in r.localization})]


def _heatmap_thresholds(group: RunGroup, method: str) -> list[str]:
    """The method's heatmap thresholds in the run's table: the headline one (180, the paper's) first, then
    the others, pooled last. Without 180 (other ``--thresholds``) the highest one leads."""
    table = group.runs[0].localization[method]
    found = [t for t in dict.fromkeys(table.loc[table["source"] == method, "threshold"]) if t not in ("", POOLED)]
    numeric = sorted(found, key=lambda v: float(v) if v.replace(".", "", 1).isdigit() else -1.0, reverse=True)
    lead = HEADLINE_THRESHOLD if HEADLINE_THRESHOLD in found else (numeric[0] if numeric else POOLED)
    rest = [t for t in found if t != lead]
    has_pooled = (table["threshold"] == POOLED).any()
    return [lead, *rest, *([POOLED] if has_pooled and lead != POOLED else [])]


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


def _class_index(group: RunGroup, method: str, metric: str = "IoU") -> tuple[list[str], list[str]]:
    """(row labels, class names) of a per-class table: the box classes, then ``Mean (k of 8 classes)``
    with k the number of classes that have boxes (those the mean is over)."""
    counts = _localization_values(group, method, method, _heatmap_thresholds(group, method)[0], metric,
                                  IOU_THRESHOLDS[0] if metric == "IoU" else None, "n_classes").get(MEAN, [])
    k = int(counts[0]) if counts and np.isfinite(counts[0]) else 0
    return [*BOX_CLASS_NAMES, f"Mean ({k} of {len(BOX_CLASS_NAMES)} classes)"], [*BOX_CLASS_NAMES, MEAN]


def _box_counts(group: RunGroup, method: str) -> list[str]:
    counts = _localization_values(group, method, method, _heatmap_thresholds(group, method)[0], "IoU",
                                  IOU_THRESHOLDS[0], "n_boxes")
    return [str(int(counts[name][0])) if counts.get(name) else "0" for name in [*BOX_CLASS_NAMES, MEAN]]


#: What the cells of the localization tables mean (written beside them).
LOCALIZATION_LEGEND = (
    "Heatmap threshold 180 (the paper's; threshold 60 and both thresholds pooled are in the per-threshold "
    "table). A cell reads accuracy (false positives per image); a group of seeds shows mean ± standard "
    "deviation over its runs. The random box is the mean ± standard deviation over its seeded draws, the "
    "centre box one box of the class's mean size centred in the image. Means are over the box classes that "
    "have boxes (k of 8), each class weighing the same; `boxes` counts the box rows per class.")


def localization_tables(groups: Sequence[RunGroup]) -> dict[str, pd.DataFrame]:
    """Tables 2-7 style at heatmap threshold 180: ``"IoU > 0.3"`` -> rows = 8 box classes + the mean over
    the classes with boxes; columns: box rows per class, Wang 2017, every group x method and the
    random-box and centre-box baselines, each cell ``accuracy (false positives per image)``
    (:data:`LOCALIZATION_LEGEND`)."""
    reference = load_localization_reference()
    pairs = _methods(groups)
    if not pairs:
        return {}
    first_group, first_method = pairs[0]
    labels, names = _class_index(first_group, first_method)
    tables = {}
    for metric, thresholds in (("IoU", IOU_THRESHOLDS), ("IoBB", IOBB_THRESHOLDS)):
        for t in thresholds:
            table = pd.DataFrame(index=labels)
            table.index.name = "class"
            table["boxes"] = _box_counts(first_group, first_method)
            ref = reference[(reference["metric"] == metric) & np.isclose(reference["threshold"], t)]
            ref_values = dict(zip(ref["class_name"], ref["accuracy"]))
            ref_values[MEAN] = float(np.mean(list(ref_values.values()))) if ref_values else None
            table[LOCALIZATION_REFERENCE_LABEL] = [_fmt(ref_values.get(c)) for c in names]
            for group, method in pairs:
                threshold = _heatmap_thresholds(group, method)[0]
                column = f"{group.label} {method}" + ("" if threshold == HEADLINE_THRESHOLD else f" (T={threshold})")
                table[column] = [_cell(group, method, method, threshold, metric, t, c) for c in names]
            first = RunGroup(first_group.label, first_group.runs[:1])  # baselines depend only on the boxes and the seed
            for source in BASELINE_SOURCES:
                table[source] = [_cell(first, first_method, source, "", metric, t, c) for c in names]
            tables[f"{metric} > {t:g}"] = table
    return tables


def localization_headline_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """One row per group x method: accuracy at T(IoU) = 0.3 and T(IoBB) = 0.25 at heatmap threshold 180
    with false positives per image, at 60 and pooled beside it, the random-box and centre-box baselines,
    and the pointing game; means over the classes with boxes (``classes``: k of 8)."""
    records = []
    pairs = _methods(groups)
    for group, method in pairs:
        threshold, *others = _heatmap_thresholds(group, method)
        first = RunGroup(group.label, group.runs[:1])
        counts = _localization_values(group, method, method, threshold, "IoU", 0.3, "n_classes").get(MEAN, [])
        boxes = _localization_values(group, method, method, threshold, "IoU", 0.3, "n_boxes").get(MEAN, [])
        row = {"run": group.label, "method": method,
               "classes": f"{int(counts[0])} of {len(BOX_CLASS_NAMES)}" if counts else "n/a",
               "boxes": str(int(boxes[0])) if boxes else "n/a"}
        for metric, t in (("IoU", 0.3), ("IoBB", 0.25)):
            name = f"{metric}>{t:g}"
            row[f"{name} T={threshold} (FP)"] = _cell(group, method, method, threshold, metric, t, MEAN, 3)
            for other in others:
                label = "pooled" if other == POOLED else f"T={other}"
                row[f"{name} {label}"] = _cell(group, method, method, other, metric, t, MEAN, 3, False)
            for source in BASELINE_SOURCES:
                row[f"{name} {source}"] = _cell(first, method, source, "", metric, t, MEAN, 3, False)
        row["pointing game"] = _cell(group, method, method, "", POINTING, None, MEAN, 3, False)
        row["pointing: random box centre"] = _cell(first, method, BASELINE_SOURCES[0], "", POINTING, None, MEAN, 3,
                                                   False)
        row["pointing: image centre"] = _cell(first, method, BASELINE_SOURCES[1], "", POINTING, None, MEAN, 3,
                                              False)
        records.append(row)
    return pd.DataFrame.from_records(records)


def per_threshold_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Mean accuracy over the box classes (false positives per image in parentheses) per heatmap threshold
    (180 first, then 60 and pooled) and metric threshold."""
    records = []
    for group, method in _methods(groups):
        for threshold in _heatmap_thresholds(group, method):
            counts = _localization_values(group, method, method, threshold, "IoU", IOU_THRESHOLDS[0],
                                          "n_classes").get(MEAN, [])
            row = {"run": group.label, "method": method, "heatmap threshold": threshold,
                   "classes": f"{int(counts[0])} of {len(BOX_CLASS_NAMES)}" if counts else "n/a"}
            for metric, thresholds in (("IoU", IOU_THRESHOLDS), ("IoBB", IOBB_THRESHOLDS)):
                for t in thresholds:
                    row[f"{metric}>{t:g}"] = _cell(group, method, method, threshold, metric, t, MEAN, 3)
            records.append(row)
    return pd.DataFrame.from_records(records)


def false_positive_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Average false positives per image (mean over the box classes with boxes) at each T(IoU) and T(IoBB),
    heatmap threshold 180, beside the baselines' (one box per image and class)."""
    pairs = _methods(groups)
    if not pairs:
        return pd.DataFrame()
    metrics = [("IoU", t) for t in IOU_THRESHOLDS] + [("IoBB", t) for t in IOBB_THRESHOLDS]
    table = pd.DataFrame(index=[f"{m} > {t:g}" for m, t in metrics])
    table.index.name = "T"
    for group, method in pairs:
        threshold = _heatmap_thresholds(group, method)[0]
        column = f"{group.label} {method}" + ("" if threshold == HEADLINE_THRESHOLD else f" (T={threshold})")
        table[column] = [_mean_std(_localization_values(group, method, method, threshold, m, t,
                                                        "false_positives_per_image").get(MEAN, []), 2)
                         for m, t in metrics]
    group, method = pairs[0]
    first = RunGroup(group.label, group.runs[:1])
    for source in BASELINE_SOURCES:
        table[source] = [_mean_std(_localization_values(first, method, source, "", m, t,
                                                        "false_positives_per_image").get(MEAN, []), 2)
                         for m, t in metrics]
    return table


def pointing_table(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """The pointing game per class: the share of box rows whose heatmap maximum (in original pixels) lies
    inside a ground-truth box of that class on that image; beside it the random boxes' centres (mean ± sd
    over the draws) and the image centre. Rows: 8 box classes + the mean over the classes with boxes."""
    pairs = _methods(groups)
    if not pairs:
        return pd.DataFrame()
    first_group, first_method = pairs[0]
    labels, names = _class_index(first_group, first_method)
    table = pd.DataFrame(index=labels)
    table.index.name = "class"
    table["boxes"] = _box_counts(first_group, first_method)
    for group, method in pairs:
        table[f"{group.label} {method}"] = [_cell(group, method, method, "", POINTING, None, c, 4, False)
                                            for c in names]
    first = RunGroup(first_group.label, first_group.runs[:1])
    for source, label in zip(BASELINE_SOURCES, ("random box centre", "image centre")):
        table[label] = [_cell(first, first_method, source, "", POINTING, None, c, 4, False) for c in names]
    return table


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (index as the first column when it is named)."""
    frame = table.reset_index() if table.index.name else table
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


def build_sections(groups: Sequence[RunGroup], out_dir: Path, split: str = "test") -> list[Section]:
    runs = [r for g in groups for r in g.runs]
    sections = [Section("Runs", "\n".join(
        f"- **{g.label}**: model `{g.model}`, " + ", ".join(f"`{r.path}` (seed {r.seed})" for r in g.runs)
        for g in groups))]
    if any(r.auc for r in runs):
        notes = sorted({f"{r.path.name}: {e['note']}" for r in runs if r.auc
                        for e in r.auc["per_class"].values() if e.get("note")})
        text = (f"Per-class ROC AUC on the {split} split (Table 1 style). {TABLE1_LEGEND}"
                + ("" if split == "test" else f" The published numbers are test-split AUCs, not {split}-split ones."))
        if notes:
            text += "\n\nUndefined AUCs:\n" + "\n".join(f"- {n}" for n in notes)
        sections.append(Section("Classification (Table 1)", text, [("AUC", classification_table(groups))]))
    tables = localization_tables(groups)
    if tables:
        sections.append(Section(
            "Localization headline",
            "Accuracy at T(IoU) = 0.3 and T(IoBB) = 0.25 at heatmap threshold 180 (the paper's), false positives "
            "per image in parentheses; threshold 60 and both thresholds pooled beside it; the random-box "
            "(mean ± sd over its seeded draws) and centre-box baselines; and the pointing game (share of box rows "
            "whose heatmap maximum lies inside a ground-truth box of that class on that image). Means over the "
            "box classes with boxes (`classes`: k of 8).",
            [("headline", localization_headline_table(groups))]))
        text = ("Weakly supervised localization accuracy (Tables 2-7 style) under the protocol of Wang et al. "
                "2017: heatmap upsampled to the original image, normalised to [0, 255], thresholded, one box per "
                "connected region; a box row is localized when some predicted box of its class exceeds T. IoBB = "
                "intersection / area of the predicted box. Every one of the box rows counts (several per image "
                "included). " + LOCALIZATION_LEGEND + " The seed paper's own Tables 2-7 divided by the "
                "ground-truth box and scored 104 rows against the wrong box, so they are not comparable and not "
                "shown. The random-box and centre-box baselines are what any method must beat.")
        sections.append(Section("Localization (Tables 2-7)", text, list(tables.items())))
        sections.append(Section("Localization per heatmap threshold",
                                "Mean accuracy over the box classes with boxes (`classes`: k of 8) for each "
                                "heatmap threshold (180, the paper's, first), false positives per image in "
                                "parentheses.",
                                [("per threshold", per_threshold_table(groups))]))
        sections.append(Section("Average false positives per image",
                                "Predicted boxes (heatmap threshold 180) localizing no ground-truth box of their "
                                "class and image, per image with a box of that class, mean over the classes "
                                "with boxes.",
                                [("AFP", false_positive_table(groups))]))
        sections.append(Section("Pointing game",
                                "Share of the box rows whose heatmap maximum (in original pixels, through the "
                                "same cell positions as the boxes) lies inside a ground-truth box of that class "
                                "on that image: no heatmap threshold and no box, so it does not depend on how "
                                "coarse the heatmap is. Beside it the centres of the random boxes (mean ± sd over "
                                "the draws) and the image centre.",
                                [("pointing", pointing_table(groups))]))
    figures = [(f"{r.path.name}: {p.stem}", p) for r in runs for p in r.figures]
    extra = sorted(out_dir.glob("compare_*.png"))
    figures += [(p.stem, p) for p in extra]
    if figures:
        sections.append(Section("Figures", "ROC curves (Figs. 3-5) and heatmap overlays (Figs. 6-8): ground "
                                "truth in blue, predicted boxes in green.", figures=figures))
    return sections


def render_markdown(sections: Sequence[Section], title: str, out_dir: Path) -> str:
    parts = [f"# {title}", "", f"Generated {datetime.now().isoformat(timespec='seconds')} by `thoracic report`.", ""]
    for section in sections:
        parts += [f"## {section.title}", ""]
        if section.text:
            parts += [section.text, ""]
        for name, table in section.tables:
            if len(section.tables) > 1:
                parts += [f"### {name}", ""]
            parts += [markdown_table(table), ""]
        for caption, path in section.figures:
            try:
                relative = path.resolve().relative_to(out_dir.resolve())
            except ValueError:
                relative = Path(_relative(path, out_dir))
            parts += [f"![{caption}]({relative.as_posix()})", ""]
    return "\n".join(parts)


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


def render_html(sections: Sequence[Section], title: str) -> str:
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse;font-size:13px;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{max-width:100%}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            for paragraph in section.text.split("\n\n"):
                parts.append(f"<p>{html.escape(paragraph).replace(chr(10), '<br>')}</p>")
        for name, table in section.tables:
            if len(section.tables) > 1:
                parts.append(f"<h3>{html.escape(name)}</h3>")
            parts.append(table.to_html(escape=True, border=0))
        for caption, path in section.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def build_report(runs: Sequence[str | Path], out_dir: str | Path | None = None, split: str = "test",
                 title: str = "thoracic evaluation report") -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (figures embedded) for the given runs / experiments.

    ``out_dir`` defaults to the folder given when there is one (a run or an experiment folder), or
    ``./report`` for several.
    """
    if split not in ("test", "val"):
        raise RunError(f"split must be 'test' or 'val', got {split!r}")
    paths = expand_runs(runs)
    summaries = [load_run_summary(p, split) for p in paths]
    groups = group_runs(summaries)
    if out_dir is None:
        out_dir = Path(runs[0]) if len(runs) == 1 else Path("report")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison_figure(summaries, out_dir)
    sections = build_sections(groups, out_dir, split)
    markdown_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    markdown_path.write_text(render_markdown(sections, title, out_dir))
    html_path.write_text(render_html(sections, title))
    return markdown_path, html_path


def comparison_figure(summaries: Sequence[RunSummary], out_dir: Path, n_examples: int = 4) -> Path | None:
    """Models and heatmap methods side by side on the same box images (paper Figs. 6-8).

    Uses each run's ``heatmaps_<method>.npz``, ``boxes_<method>.csv`` and ``scores_<method>.csv``; the
    image is read from the run's data folder when present (otherwise a grey canvas of its size).
    """
    from thoracic.evaluation.figures import OverlayPanel, OverlayRow, overlay_figure, save_figure
    from thoracic.evaluation.pipeline import example_rows, load_registration
    from thoracic.evaluation.predictions import load_heatmaps

    sources = []
    for summary in summaries:
        for method in sorted(summary.localization):
            evaluation = summary.path / "evaluation"
            paths = [evaluation / f"{kind}_{method}.{ext}" for kind, ext in
                     (("heatmaps", "npz"), ("boxes", "csv"), ("scores", "csv"))]
            if all(p.is_file() for p in paths):
                run = summary.model if summary.path.name == summary.model else f"{summary.path.name} ({summary.model})"
                sources.append((f"{run} {method}", summary, *paths, load_registration(evaluation, method)))
    if len(sources) < 2:
        return None
    scores = pd.read_csv(sources[0][4])
    if not {"x", "y", "w", "h", "original_width", "original_height"} <= set(scores.columns):
        return None
    truth = scores.drop_duplicates("box_row")
    loaded = [(name, load_heatmaps(h), pd.read_csv(b), reg) for name, _, h, b, _, reg in sources]
    images = _image_paths(sources[0][1])
    rows = []
    for example in example_rows(truth, n_examples).itertuples(index=False):
        key = (example.image_id, example.class_name)
        image = _read_or_blank(images.get(example.image_id), int(example.original_height), int(example.original_width))
        gt = truth[(truth["image_id"] == key[0]) & (truth["class_name"] == key[1])][["x", "y", "w", "h"]]
        panels = []
        for name, heatmaps, boxes, registration in loaded:
            mine = boxes[(boxes["image_id"] == key[0]) & (boxes["class_name"] == key[1])]
            if len(mine):
                mine = mine[mine["threshold"] == mine["threshold"].max()]
            panels.append(OverlayPanel(name, heatmaps.get(key), mine[["x", "y", "w", "h"]].to_numpy(float),
                                       registration))
        rows.append(OverlayRow(image, f"{key[0]}\n{key[1]}", gt.to_numpy(float), panels))
    if not rows:
        return None
    return save_figure(overlay_figure(rows), out_dir / "compare_overlays.png")


def _image_paths(summary: RunSummary) -> dict[str, str]:
    root = summary.config.get("data", {}).get("root")
    if not root or not Path(root).is_dir():
        return {}
    try:
        from thoracic.data.metadata import find_image_files

        return find_image_files(root)
    except Exception:  # noqa: BLE001 - a figure must never fail the report
        return {}


def _read_or_blank(path: str | None, height: int, width: int) -> np.ndarray:
    if path:
        try:
            from thoracic.data.images import read_image

            return read_image(path)
        except Exception:  # noqa: BLE001 - fall back to a blank canvas
            pass
    return np.full((height, width), 128, dtype=np.uint8)

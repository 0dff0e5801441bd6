"""Markdown and self-contained HTML reports of one or more evaluated runs beside the published numbers.

Input: run folders on which ``thoracic evaluate`` (and optionally ``thoracic localize``) ran, or
experiment folders (``seed*/`` run folders of one config). Runs whose configs differ only in ``seed``
(and ``run_name`` / ``output_dir``) form one group, reported as mean +- std over the runs; a single run
shows its bootstrap 95% CI instead.

A report is a list of :class:`Section` s (title, anchor, figures, headline tables, folded secondary
tables, notes), each built by one function of :data:`SECTION_BUILDERS` from a :class:`ReportContext`;
adding a section is adding one function. Both outputs are rendered from the same sections by the
Jinja2 templates in ``thoracic/evaluation/templates/`` (no Markdown is converted to HTML):

- Setup: one column per run: model, backbone, input size, weights, frozen backbone, epochs run and best
  epoch, seed, image counts per split, box rows, data folder (phantom or real), checkpoint hash.
- Classification: ROC curves, Table 1 (classes as rows; Wang et al. 2017 ResNet-50, then each group
  beside the seed paper's column for the same model), and (folded) the per-class operating points.
- Localization: overlays; a headline table (per run and heatmap method: accuracy at T(IoU) = 0.3 and
  T(IoBB) = 0.25 at heatmap threshold 180, the paper's, with false positives per image, threshold 60 and
  pooled beside it, the random-box (mean ± sd over its seeded draws) and centre-box baselines, the
  pointing game); the per-class tables at those two criteria (heatmap threshold 180, every cell
  ``accuracy (false positives per image)``, the box rows of each class and the mean over the classes
  that have boxes); the pointing game per class; then (folded) the other thresholds, the accuracy per
  heatmap threshold and the average false positives.

The HTML embeds every figure (re-encoded as WebP, or JPEG where Pillow lacks WebP, to keep the file
small), so the one file can be mailed or archived.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES, METHOD_LABELS, MODEL_LABELS
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
    """What a report needs from one evaluated run folder.

    ``checkpoints`` maps each evaluation file (``auc_test.json``, ``localization_native.json`` ...) to the
    :func:`~thoracic.training.checkpoints.checkpoint_info` it records; ``warnings`` says, per run, what a
    reader must know: an evaluation of another checkpoint than the run's current ``best.ckpt`` (``stale``),
    or a checkpoint of another model than the run folder's ``config.yaml`` names.
    """

    path: Path
    config: dict[str, Any]
    auc: dict[str, Any] | None
    localization: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    operating_points: pd.DataFrame | None = None
    """``operating_points_<split>.csv``: per class AUC, threshold, sensitivity, specificity."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """``run_info.json`` (versions, data kind, image counts per split, box rows)."""
    training: dict[str, Any] = field(default_factory=dict)
    """``summary.json`` (epochs run, best epoch)."""
    operating_point_method: str | None = None
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        """The model the evaluated checkpoint holds (its stored config), else the run's config.yaml."""
        for info in self.checkpoints.values():
            if info.get("model_name"):
                return str(info["model_name"])
        return str(self.config.get("model", {}).get("name", "?"))

    def _evaluated(self, key: str) -> Any:
        """A field of the evaluated checkpoint's record (None when no evaluation file records one)."""
        return next((info[key] for info in self.checkpoints.values() if info.get(key) is not None), None)

    @property
    def backbone(self) -> str | None:
        """The backbone of the evaluated checkpoint, else of the run's config.yaml."""
        return self._evaluated("backbone") or self.config.get("model", {}).get("backbone")

    @property
    def image_size(self) -> int | None:
        """The input side (pixels) of the evaluated checkpoint, else of the run's config.yaml."""
        return self._evaluated("image_size") or self.config.get("data", {}).get("image_size")

    @property
    def data_kind(self) -> str | None:
        """``phantom`` / ``real`` as the evaluated checkpoint records it."""
        for info in self.checkpoints.values():
            if info.get("data_kind"):
                return str(info["data_kind"])
        return None

    @property
    def roc_figure(self) -> Path | None:
        return next((p for p in self.figures if p.name.startswith("roc_")), None)

    def overlay_figures(self) -> dict[str, Path]:
        """heatmap method -> ``overlays_<method>.png``."""
        return {p.stem.split("_", 1)[1]: p for p in self.figures if p.name.startswith("overlays_")}

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def group_key(self) -> str:
        reduced = {k: v for k, v in self.config.items() if k not in _IGNORED_KEYS}
        reduced["evaluated_model"] = self.model
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
        info = _read_evaluation_json(json_path)
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
    auc = _read_evaluation_json(auc_path) if auc_path.is_file() else None
    if auc is not None and not isinstance(auc.get("per_class"), dict):
        raise RunError(f"{auc_path}: no 'per_class' table; expected the auc_{split}.json that thoracic evaluate "
                       "writes (rerun it)")
    localization = {p.stem.split("_", 1)[1]: _read_localization_csv(p)
                    for p in sorted(evaluation.glob("localization_*.csv"))}
    for table in localization.values():
        table["threshold"] = table["threshold"].fillna("").astype(str)  # baselines have no heatmap threshold
    figures = sorted(evaluation.glob(f"roc_{split}.png")) + sorted(evaluation.glob("overlays_*.png"))
    if auc is None and not localization:
        raise RunError(f"run {run}: evaluation/ holds neither auc_{split}.json nor localization_*.csv")
    points_path = evaluation / f"operating_points_{split}.csv"
    points = pd.read_csv(points_path, keep_default_na=False, na_values=[""]) if points_path.is_file() else None
    method = None
    if (evaluation / "operating_points.json").is_file():
        method = json.loads((evaluation / "operating_points.json").read_text()).get("method")
    summary = RunSummary(run, _read_config(run), auc, localization, figures, points,
                         _read_json(run / "run_info.json"), _read_json(run / "summary.json"), method)
    check_provenance(summary, split)
    return summary



def check_provenance(summary: RunSummary, split: str = "test") -> None:
    """Fill ``summary.checkpoints``, ``stale`` and ``warnings`` from the evaluation files' records.

    Stale: an evaluation's checkpoint hash differs from the run's current ``checkpoints/best.ckpt`` (the
    run was trained further after it was evaluated). Model: the evaluated checkpoint holds another model
    than the run's ``config.yaml`` names (a checkpoint copied between runs).
    """
    from thoracic.provenance import SHORT_HASH, file_sha256

    evaluation = summary.path / "evaluation"
    names = [f"auc_{split}.json"] + sorted(p.name for p in evaluation.glob("localization_*.json"))
    for name in names:
        path = evaluation / name
        if not path.is_file():
            continue
        info = _read_evaluation_json(path).get("checkpoint")
        if isinstance(info, dict):
            summary.checkpoints[name] = info
        else:
            summary.warnings.append(f"{name} does not record which checkpoint it evaluated (written by an older "
                                    f"thoracic): rerun `thoracic evaluate` / `thoracic localize` to be sure")
    best = summary.path / "checkpoints" / "best.ckpt"
    current = file_sha256(best) if best.is_file() else None
    for name, info in summary.checkpoints.items():
        if current is not None and info.get("sha256") and info["sha256"] != current:
            summary.stale = True
            summary.warnings.append(
                f"STALE: {name} evaluated a checkpoint (epoch {info.get('epoch')}, sha256 {info['sha256'][:SHORT_HASH]}) that "
                f"is no longer the run's best.ckpt (sha256 {current[:SHORT_HASH]}): rerun the evaluation")
    configured = summary.config.get("model", {}).get("name")
    evaluated = sorted({str(i["model_name"]) for i in summary.checkpoints.values() if i.get("model_name")})
    if configured and evaluated and evaluated != [configured]:
        summary.warnings.append(f"the run's config.yaml names model {configured}, but the evaluated checkpoint holds "
                                f"{', '.join(evaluated)}: reported as {', '.join(evaluated)}")


def _read_localization_csv(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype={"threshold": str, "source": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunError(f"{path}: unreadable ({exc}); rerun `thoracic localize` for this run") from None
    missing = [c for c in ("source", "threshold", "metric", "t", "class_name", "accuracy") if c not in table]
    if missing:
        raise RunError(f"{path}: columns {missing} missing; expected the table thoracic localize writes (rerun it)")
    return table


def _read_evaluation_json(path: Path) -> dict[str, Any]:
    """An evaluation file (``auc_*.json``, ``localization_*.json``): damage is a named error."""
    from thoracic.safety import read_json

    data = read_json(path, "an evaluation file", RunError)
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object (an evaluation file), got {type(data).__name__}")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged side file must not stop the report
        return {}


def group_runs(summaries: Sequence[RunSummary]) -> list[RunGroup]:
    """Runs with the same config apart from the seed form one group (in first-seen order)."""
    groups: dict[str, list[RunSummary]] = {}
    for summary in summaries:
        groups.setdefault(summary.group_key(), []).append(summary)
    labels: dict[str, int] = {}
    result = []
    for runs in groups.values():
        size = runs[0].image_size
        # what was trained, at a glance: "baseline (resnet10, 160 px)" beside "Paper BL ResNet-34"; from
        # the evaluated checkpoint when it is recorded (a checkpoint copied between runs keeps its model)
        details = ", ".join(str(v) for v in (runs[0].backbone, f"{size} px" if size else None) if v)
        base = f"{runs[0].model} ({details})" if details else runs[0].model
        labels[base] = labels.get(base, 0) + 1
        label = base if labels[base] == 1 else f"{base} #{labels[base]}"
        if len(runs) > 1:
            label += f" x{len(runs)} seeds"
        elif runs[0].path.name != runs[0].model:
            label += f" [{runs[0].path.name}]"
        if any(r.stale for r in runs):
            label += " (STALE)"
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


def _methods(groups: Sequence[RunGroup]) -> list[tuple[RunGroup, str]]:
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
    the others, pooled last. Without 180 (other ``--thresholds``) the highest one leads."""
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
    pairs = _methods(groups)
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
            table[LOCALIZATION_REFERENCE_LABEL] = [_fmt(ref_values.get(c)) for c in names]
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
    for group, method in _methods(groups):
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
    for group, method in _methods(groups):
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
    pairs = _methods(groups)
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
    pairs = _methods(groups)
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


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------


@dataclass
class ReportFigure:
    """A figure file and its caption (words, not a file name)."""

    caption: str
    path: Path
    wide: bool = False
    """Shown across the whole page width (otherwise figures sit side by side in a grid)."""


@dataclass
class ReportTable:
    """A table with its caption; the index is its first column when it is named, dropped otherwise."""

    caption: str
    frame: pd.DataFrame
    note: str = ""
    numeric: bool = True
    """Right-align the cells (numbers); text tables are left-aligned."""


@dataclass
class Section:
    """One section of the report: figures first, then the headline tables, then secondary tables
    (folded in the HTML), then notes. ``intro`` is plain text (paragraphs separated by blank lines)."""

    title: str
    anchor: str
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    folded_tables: list[ReportTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    intro: str = ""


@dataclass
class ReportContext:
    """What every section builder gets."""

    groups: list[RunGroup]
    out_dir: Path
    split: str = "test"
    comparison: Path | None = None
    """``compare_overlays.png`` written for this report (None when fewer than two runs / methods)."""

    @property
    def runs(self) -> list[RunSummary]:
        return [r for g in self.groups for r in g.runs]

    def run_label(self, run: RunSummary) -> str:
        """The group label, plus the run folder's name inside a group of seeds."""
        group = next(g for g in self.groups if any(r is run for r in g.runs))
        return group.label if len(group.runs) == 1 else f"{group.label}: {run.path.name}"


def _weights(model: dict[str, Any]) -> str:
    if model.get("weights"):
        return f"file {Path(str(model['weights'])).name}"
    return "ImageNet (torchvision)" if model.get("pretrained") else "none (trained from scratch)"


def _checkpoint_hash(run: RunSummary) -> str:
    """Short SHA-256 of the run's best checkpoint (the one evaluate and localize use by default)."""
    from thoracic.provenance import SHORT_HASH, checkpoint_provenance

    path = run.path / "checkpoints" / "best.ckpt"
    if not path.is_file():
        return "n/a (no checkpoints/best.ckpt)"
    try:
        return f"best.ckpt, sha256 {checkpoint_provenance(path)['sha256'][:SHORT_HASH]}"
    except Exception:  # noqa: BLE001 - an unreadable checkpoint must not stop the report
        return "best.ckpt (unreadable)"


def _data_kind(run: RunSummary) -> str:
    """``phantom``, ``real`` or ``unknown``: what the evaluated checkpoint records, else what training
    recorded in run_info.json, else what the data folder is now."""
    from thoracic.data.synth import folder_kind

    return (run.data_kind or run.run_info.get("data_kind")
            or folder_kind(run.config.get("data", {}).get("root")))


def _data_folder(run: RunSummary) -> str:
    words = {"phantom": "phantom (synthetic)", "real": "real ChestX-ray14", "unknown": "unknown (folder not found)"}
    kind = _data_kind(run)
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


def setup_section(context: ReportContext) -> Section:
    section = Section("Setup", "setup", intro=(
        "What each run is: the model and how it was trained, the data it saw and the checkpoint that was "
        "evaluated. Epochs count from 0; the best epoch is the one with the lowest validation loss, whose "
        "checkpoint (best.ckpt) all numbers below come from."))
    section.tables.append(ReportTable("Runs", setup_table(context), numeric=False))
    boxes = box_rows_table(context)
    if boxes is not None:
        section.folded_tables.append(ReportTable("Box rows per class on the test images, per data folder", boxes))
    if any(_data_kind(r) == "phantom" for r in context.runs):
        section.notes.append("Phantom (synthetic) data: these numbers show that the code learns and localizes; "
                             "they say nothing clinical.")
    # provenance: stale evaluations, checkpoints of another model than the run folder names
    section.notes.extend(f"Warning ({context.run_label(run)}): {warning}"
                         for run in context.runs for warning in run.warnings)
    return section


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


def classification_section(context: ReportContext) -> Section | None:
    runs = context.runs
    if not any(r.auc for r in runs):
        return None
    split = context.split
    caveat = "" if split == "test" else f" The published numbers are test-split AUCs, not {split}-split ones."
    section = Section("Classification (Table 1)", "classification", intro=(
        f"Per-class ROC AUC on the {split} split (Table 1 style). {TABLE1_LEGEND}{caveat}"))
    for run in runs:
        if run.roc_figure is not None and run.auc:
            section.figures.append(ReportFigure(
                f"ROC curves of {context.run_label(run)} on the {split} split ({run.auc.get('n_images', '?')} "
                f"images); the legend gives each class's AUC.", run.roc_figure))
    section.tables.append(ReportTable(f"Per-class ROC AUC on the {split} split", classification_table(context.groups)))
    for group in context.groups:
        table = operating_point_table_of(group)
        if table is not None:
            method = group.runs[0].operating_point_method or "youden"
            criterion = "Youden's J" if method == "youden" else "F1"
            section.folded_tables.append(ReportTable(
                f"Operating points of {group.label}: sensitivity and specificity on the {split} split",
                table, note=f"One threshold per class, chosen on the validation split by {criterion} "
                "(evaluation/operating_points.json, used by thoracic predict); an image is called positive "
                "when its probability is at or above it."))
    section.notes.extend(f"{context.run_label(r)}: {e['note']}" for r in runs if r.auc
                         for e in r.auc["per_class"].values() if e.get("note"))
    return section


#: Localization tables shown unfolded (the others are folded).
HEADLINE_LOCALIZATION = ("IoU > 0.3", "IoBB > 0.25")

LOCALIZATION_PROTOCOL = (
    "Weakly supervised localization accuracy (Tables 2-7 style) under the protocol of Wang et al. 2017: "
    "the heatmap of each box row's class is upsampled to the original image, normalised to [0, 255] and "
    "thresholded; one box is drawn around every connected region. The headline is heatmap threshold 180, "
    "the paper's (threshold 60 and both thresholds pooled are beside it). A box row is localized when some "
    "predicted box of its class on its image has IoU (or IoBB = intersection / area of the predicted box) "
    "above T. Every box row counts, several per image included. The random-box and centre-box baselines "
    "are what any method must beat; the pointing game (is the heatmap's maximum inside a ground-truth box "
    "of its class?) needs neither threshold nor box. " + LOCALIZATION_LEGEND)


def localization_section(context: ReportContext) -> Section | None:
    tables = localization_tables(context.groups)
    if not tables:
        return None
    section = Section("Localization (Tables 2-7)", "localization", intro=LOCALIZATION_PROTOCOL)
    if context.comparison is not None:
        section.figures.append(ReportFigure(
            "Every run and heatmap method side by side on the same test images (ground truth in blue, "
            "predicted boxes of heatmap threshold 180 in green).", context.comparison, wide=True))
    for run in context.runs:
        for method, path in sorted(run.overlay_figures().items()):
            section.figures.append(ReportFigure(
                f"{context.run_label(run)}, {METHOD_LABELS.get(method, method)}: heatmap overlays on test images "
                "with boxes (ground truth in blue, predicted boxes of heatmap threshold 180 in green).", path))
    counts = box_rows_per_class(*_methods(context.groups)[0])
    k = sum(1 for name in BOX_CLASS_NAMES if counts.get(name, 0) > 0)
    mean_note = (f"The mean is over the {k} of {len(BOX_CLASS_NAMES)} box classes that have box rows here "
                 f"({sum(counts.values())} rows); the Wang et al. 2017 mean is recomputed over the same classes.")
    section.tables.append(ReportTable(
        f"Localization headline: heatmap threshold {HEADLINE_THRESHOLD}, mean over the {k} classes with box rows",
        localization_headline_table(context.groups), note=HEADLINE_NOTE, numeric=False))
    for name, table in tables.items():
        target = section.tables if name in HEADLINE_LOCALIZATION else section.folded_tables
        target.append(ReportTable(f"Localization accuracy at {name}, heatmap threshold {HEADLINE_THRESHOLD} "
                                  "(false positives per image)", table, note=mean_note))
    section.tables.append(ReportTable(
        "Pointing game: the heatmap maximum inside a ground-truth box of its class", pointing_table(context.groups),
        note="Share of each class's box rows whose heatmap maximum (in original pixels, through the same cell "
             "positions as the boxes) lies inside a ground-truth box of that class on that image. Beside it the "
             f"centres of the random boxes (mean ± sd over the draws) and the image centre. The mean is over the {k} "
             f"of {len(BOX_CLASS_NAMES)} box classes that have box rows here."))
    section.folded_tables.append(ReportTable(
        f"Mean localization accuracy (over the {k} classes with box rows) per heatmap threshold "
        "(false positives per image)", per_threshold_table(context.groups)))
    section.folded_tables.append(ReportTable(
        f"Average false positives per image (boxes of heatmap threshold {HEADLINE_THRESHOLD})",
        false_positive_table(context.groups),
        note="Predicted boxes localizing no ground-truth box of their class and image, per image with a box of "
             "that class, mean over the classes with box rows; the baselines draw one box per image and class."))
    section.notes.append("The seed paper's own Tables 2-7 divided by the ground-truth box and scored 104 rows "
                         "against the wrong box, so they are not comparable and not shown.")
    return section


# Subgroups, calibration and exports (one builder per section; each reads its runs' files only)


def _ci_cell(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "undefined"
    cell = f"{value:.{digits}f}"
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        cell += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return cell


def subgroup_section(context: ReportContext) -> Section | None:
    """Mean AUC and TPR per sex / age band / view / follow-up group, the gaps to each attribute's reference
    group (``subgroups_<split>.json`` of every run that has one), and the per-class figure."""
    runs, split = context.runs, context.split
    loaded = [(run, json.loads(p.read_text())) for run in runs
              if (p := run.path / "evaluation" / f"subgroups_{split}.json").is_file()]
    if not loaded:
        return None
    means = pd.DataFrame()
    gaps = pd.DataFrame()
    undefined: dict[str, list[str]] = {}  # message -> runs (the same split gives the same messages)
    for run, info in loaded:
        label = context.run_label(run)
        groups = pd.DataFrame(info["groups"])
        rows = groups[groups["class_name"] == "Mean"].set_index(["attribute", "group"])
        means[f"{label}: n"] = rows["n_images"].astype(int).astype(str)
        means[f"{label}: mean AUC"] = [_ci_cell(*v) for v in rows[["auc", "auc_ci_low", "auc_ci_high"]].itertuples(index=False)]
        means[f"{label}: mean TPR"] = [_ci_cell(*v) for v in rows[["tpr", "tpr_ci_low", "tpr_ci_high"]].itertuples(index=False)]
        per_class = groups[groups["class_name"] != "Mean"]
        missing = per_class[~np.isfinite(per_class["auc"].astype(float))]
        for (attribute, group), part in missing.groupby(["attribute", "group"], sort=False):
            reason = part["note"].iloc[0] if len(part) == len(info["class_names"]) and not part["n_images"].iloc[0] else ""
            message = f"{attribute} = {group}: " + (reason or f"AUC undefined for {len(part)} of "
                                                    f"{len(info['class_names'])} classes ({', '.join(part['class_name'])})")
            undefined.setdefault(message, []).append(label)
        gap = pd.DataFrame(info["gaps"])
        if len(gap):
            gap = gap[gap["class_name"] == "Mean"]
            gap = gap.assign(comparison=gap["group"] + " - " + gap["reference"]).set_index(["attribute", "comparison", "metric"])
            gaps[label] = [_ci_cell(*v) for v in gap[["gap", "ci_low", "ci_high"]].itertuples(index=False)]
            gaps.index = gap.index
    means.index.names = ["attribute", "group"]
    means = means.reset_index()
    means.index.name = None
    settings = loaded[0][1]
    boot = settings.get("bootstrap", {})
    text = (f"Per-class ROC AUC and true-positive rate on the {split} split, per group of the data-entry table: "
            f"sex, age band ({', '.join(settings.get('age_band_labels', []))}; ages outside 0-{settings.get('max_plausible_age')} "
            "are unknown), view position and follow-up (first image of a patient or a later one). The tables "
            "show the mean over the classes with a defined value, with a percentile bootstrap "
            f"{int(100 * boot.get('confidence', 0.95))}% CI ({boot.get('n_resamples')} resamples of each group's "
            f"images). TPR at: {settings.get('threshold_source')}. Gaps are group minus reference (the largest group "
            "of the attribute), mean over the classes defined in both, with the CI of the difference from "
            "independent resamples of the two groups. Per-class values: subgroups_<split>.csv, "
            "subgroup_gaps_<split>.csv.")
    section = Section("Subgroups", "subgroups", intro=text)
    section.tables.append(ReportTable("Mean AUC and TPR by group [95% CI]", means, numeric=False))
    if len(gaps):
        gaps = gaps.reset_index()
        gaps.index.name = None
        section.tables.append(ReportTable("Gaps to the reference group (mean over classes) [95% CI]", gaps,
                                          numeric=False))
    section.figures.extend(
        ReportFigure(f"{context.run_label(run)}: subgroup AUC per class on the {split} split",
                     run.path / "evaluation" / f"subgroups_{split}.png")
        for run, _ in loaded if (run.path / "evaluation" / f"subgroups_{split}.png").is_file())
    # undefined values are shown in the tables, never dropped; the notes say why
    section.notes.extend(f"Undefined: {message}" + ("" if len(labels) == len(loaded) else f" ({', '.join(labels)})")
                         for message, labels in undefined.items())
    return section


def calibration_section(context: ReportContext) -> Section | None:
    """ECE per class before (and after) temperature scaling and the reliability diagrams of every run with
    ``calibration_<split>.json``."""
    runs, split = context.runs, context.split
    loaded = [(run, json.loads(p.read_text())) for run in runs
              if (p := run.path / "evaluation" / f"calibration_{split}.json").is_file()]
    if not loaded:
        return None
    table = pd.DataFrame()
    sources = []
    for run, info in loaded:
        label = context.run_label(run)
        rows = pd.DataFrame(info["per_class"]).set_index("class_name")
        table[f"{label}: ECE"] = [_fmt(v, 4) for v in rows["ece"].astype(float)]
        if np.isfinite(rows["ece_calibrated"].astype(float)).any():
            table[f"{label}: ECE after T"] = [_fmt(v, 4) for v in rows["ece_calibrated"].astype(float)]
            table[f"{label}: T"] = [_fmt(v, 3) for v in rows["temperature"].astype(float)]
        table.index = rows.index
        sources.append(f"{label}: {info.get('temperature_source', '')}")
    table.index.name = "class"
    n_bins = loaded[0][1].get("n_bins")
    section = Section("Calibration", "calibration", intro=(
        f"Expected calibration error of each class's probability on the {split} split ({n_bins} equal-width "
        "bins; 0 is perfect). Temperature scaling (probability = sigmoid(logit / T)) is fitted on the "
        "validation split by thoracic evaluate --calibrate and applied by thoracic predict; it changes "
        "no AUC."))
    section.figures.extend(
        ReportFigure(f"{context.run_label(run)}: reliability diagrams on the {split} split",
                     run.path / "evaluation" / f"reliability_{split}.png")
        for run, _ in loaded if (run.path / "evaluation" / f"reliability_{split}.png").is_file())
    section.tables.append(ReportTable(f"Expected calibration error per class ({split} split)", table))
    section.notes.extend(f"Temperature of {source}" for source in sources)
    return section


def export_section(context: ReportContext) -> Section | None:
    """The models exported by ``thoracic export`` (``export/*.json`` of each run) and how closely each file
    reproduced the PyTorch model when it was written."""
    runs = context.runs
    records = []
    for run in runs:
        for path in sorted((run.path / "export").glob("*.json")):
            try:
                info = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            check = info.get("verification") or {}
            diffs = check.get("max_abs_diff") or {}
            geometry = info.get("heatmap_geometry") or {}
            records.append({
                "run": context.run_label(run), "file": path.name[:-len(".json")], "format": info.get("format"),
                "input": " x ".join(str(v) for v in (info.get("input") or {}).get("shape", [])),
                "class maps": " x ".join(str(v) for v in geometry.get("map_size", [])),
                "stride / cell-centre offset (px)": f"{geometry.get('stride', ['?'])[0]:g} / "
                                                    f"{geometry.get('cell_centre_offset', ['?'])[0]:g}"
                                                    if geometry else "",
                "checked with": check.get("runtime", ""),
                "max abs diff logits": f"{diffs['logits']:.1e}" if "logits" in diffs else "",
                "max abs diff maps": f"{diffs['class_maps']:.1e}" if "class_maps" in diffs else "",
                "calibration inside": "yes" if info.get("calibration") else "no",
                "operating points inside": "yes" if info.get("operating_points") else "no",
            })
    if not records:
        return None
    section = Section("Exported models", "exports", intro=(
        "Models exported by thoracic export (normalised image batch in; logits and raw native class maps "
        "out; dynamic batch size). Each file was run in its runtime on a batch of random images when it "
        "was written; the largest absolute differences from the PyTorch model are shown."))
    section.tables.append(ReportTable("Exported files", pd.DataFrame.from_records(records), numeric=False))
    return section


#: The report's sections, in order; each builder returns a Section or None (nothing to show).
SECTION_BUILDERS: list[Callable[[ReportContext], Section | None]] = [
    setup_section, classification_section, subgroup_section, calibration_section, localization_section,
    export_section,
]


def build_sections(groups: Sequence[RunGroup], out_dir: Path, split: str = "test",
                   comparison: Path | None = None) -> list[Section]:
    """Every section of :data:SECTION_BUILDERS that has something to show."""
    context = ReportContext(list(groups), Path(out_dir), split, comparison)
    sections = [s for s in (builder(context) for builder in SECTION_BUILDERS) if s is not None]
    for section in sections:  # an empty table would render as a header over nothing
        section.tables = [t for t in section.tables if not t.frame.empty]
        section.folded_tables = [t for t in section.folded_tables if not t.frame.empty]
    return sections


# --------------------------------------------------------------------------------------------------
# Rendering (Jinja2 templates in thoracic/evaluation/templates)
# --------------------------------------------------------------------------------------------------


def table_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table as strings: a named index becomes the first column, an unnamed
    (0, 1, 2 ...) index is dropped."""
    frame = table.reset_index() if table.index.name else table
    header = [str(c) for c in frame.columns]
    rows = [["" if v is None or (isinstance(v, float) and not np.isfinite(v)) else str(v) for v in row]
            for row in frame.itertuples(index=False)]
    return header, rows


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (see :func:`table_cells`)."""
    header, rows = table_cells(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def _environment(autoescape: bool) -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("thoracic.evaluation", "templates"),
                             autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["cells"] = table_cells
    env.filters["markdown_table"] = markdown_table
    env.filters["paragraphs"] = lambda text: [p.strip() for p in str(text).split("\n\n") if p.strip()]
    return env


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()


def render_markdown(sections: Sequence[Section], title: str, out_dir: Path) -> str:
    """``report.md``: figures linked by their path relative to ``out_dir``."""
    return _environment(autoescape=False).get_template("report.md.j2").render(
        title=title, sections=sections, generated=datetime.now().isoformat(timespec="seconds"),
        link=lambda path: _relative(path, Path(out_dir)))


#: Longest side of a figure embedded in the HTML (pixels); larger figures are downscaled.
EMBED_MAX_SIDE = 2000
#: WebP quality of embedded figures (sharp lines and text at a fraction of the PNG's size).
EMBED_QUALITY = 85


def embed_image(path: str | Path, max_side: int = EMBED_MAX_SIDE, quality: int = EMBED_QUALITY) -> str:
    """A ``data:`` URI of the figure, re-encoded as WebP (JPEG where Pillow has no WebP support)."""
    from PIL import Image, features

    with Image.open(path) as image:
        image = image.convert("RGB")  # matplotlib figures are opaque
        scale = max_side / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        buffer = io.BytesIO()
        if features.check("webp"):
            image.save(buffer, format="WEBP", quality=quality, method=4)
            mime = "image/webp"
        else:
            image.save(buffer, format="JPEG", quality=quality, optimize=True)
            mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def render_html(sections: Sequence[Section], title: str) -> str:
    """``report.html``: one self-contained file (figures embedded, no script, no external resource)."""
    return _environment(autoescape=True).get_template("report.html.j2").render(
        title=title, sections=sections, generated=datetime.now().isoformat(timespec="seconds"), embed=embed_image)


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
    from thoracic.safety import ensure_output_dir

    out_dir = ensure_output_dir(out_dir, "--out")
    comparison = comparison_figure(summaries, out_dir, groups=groups)
    sections = build_sections(groups, out_dir, split, comparison)
    markdown_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    markdown_path.write_text(render_markdown(sections, title, out_dir))
    html_path.write_text(render_html(sections, title))
    return markdown_path, html_path


def comparison_figure(summaries: Sequence[RunSummary], out_dir: Path, n_examples: int = 4,
                      groups: Sequence[RunGroup] | None = None) -> Path | None:
    """Models and heatmap methods side by side on the same box images (paper Figs. 6-8).

    Uses each run's ``heatmaps_<method>.npz``, ``boxes_<method>.csv`` and ``scores_<method>.csv``; the
    image is read from the run's data folder when present (otherwise a grey canvas of its size). Boxes
    shown are those of the highest heatmap threshold. Returns None (and writes nothing) with fewer than
    two runs x methods.
    """
    from thoracic.evaluation.figures import (
        OverlayPanel,
        OverlayRow,
        box_legend_handles,
        overlay_figure,
        save_figure,
    )
    from thoracic.evaluation.pipeline import example_rows, load_registration
    from thoracic.evaluation.predictions import load_heatmaps

    labels = {id(r): (g.label if len(g.runs) == 1 else f"{g.label}: {r.path.name}")
              for g in (groups or group_runs(summaries)) for r in g.runs}
    sources = []
    for summary in summaries:
        for method in sorted(summary.localization):
            evaluation = summary.path / "evaluation"
            paths = [evaluation / f"{kind}_{method}.{ext}" for kind, ext in
                     (("heatmaps", "npz"), ("boxes", "csv"), ("scores", "csv"))]
            if all(p.is_file() for p in paths):
                name = f"{labels.get(id(summary), summary.model)}\n{METHOD_LABELS.get(method, method)}"
                sources.append((name, summary, *paths, load_registration(evaluation, method)))
    if len(sources) < 2:
        return None
    scores = pd.read_csv(sources[0][4])
    if not {"x", "y", "w", "h", "original_width", "original_height"} <= set(scores.columns):
        return None
    truth = scores.drop_duplicates("box_row")
    loaded = [(name, load_heatmaps(h), pd.read_csv(b), reg) for name, _, h, b, _, reg in sources]
    top = max((float(b["threshold"].max()) for _, _, b, _ in loaded if len(b)), default=None)
    images = _image_paths(sources[0][1])
    rows = []
    for example in example_rows(truth, n_examples).itertuples(index=False):
        key = (example.image_id, example.class_name)
        image = _read_or_blank(images.get(example.image_id), int(example.original_height), int(example.original_width))
        gt = truth[(truth["image_id"] == key[0]) & (truth["class_name"] == key[1])][["x", "y", "w", "h"]]
        panels = []
        for name, heatmaps, boxes, registration in loaded:
            mine = boxes[(boxes["image_id"] == key[0]) & (boxes["class_name"] == key[1])]
            mine = mine[np.isclose(mine["threshold"], top)] if top is not None else mine
            panels.append(OverlayPanel(name, heatmaps.get(key), mine[["x", "y", "w", "h"]].to_numpy(float),
                                       registration=registration))
        rows.append(OverlayRow(image, f"{key[0]}\n{key[1]}", gt.to_numpy(float), panels))
    if not rows:
        return None
    legend = box_legend_handles(solid_label=f"predicted box (heatmap > {top:g})" if top is not None else "predicted box")
    figure = overlay_figure(rows, legend=legend, title="The same test images under every run and heatmap method")
    return save_figure(figure, out_dir / "compare_overlays.png")


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

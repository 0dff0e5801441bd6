"""The report's sections, one builder each (:data:`SECTION_BUILDERS`): adding a section is adding one function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.constants import METHOD_LABELS
from thoracic.errors import RunError
from thoracic.evaluation.formatting import ci_cell, count_cell, fmt
from thoracic.evaluation.calibration import temperature_at_bound
from thoracic.evaluation.localization import HEADLINE_THRESHOLD
from thoracic.evaluation.sample_size import (
    MIN_SUBGROUP_IMAGES,
    fitted_on_few_warnings,
    positives_warnings,
    small_subgroups,
    subgroup_warnings,
    temperature_warnings,
)
from thoracic.evaluation.table1 import table1_legend, with_reference
from thoracic.geometry import FeatureGrid, GeometryError
from thoracic.reporting.classification_tables import operating_point_table_of, report_table1
from thoracic.reporting.crossdata import cross_auc_tables, other_box_set_table, test_set_warnings
from thoracic.reporting.document import ReportContext, ReportFigure, ReportLink, ReportTable, Section
from thoracic.reporting.localization_tables import (
    HEADLINE_NOTE,
    LOCALIZATION_LEGEND,
    box_rows_per_class,
    false_positive_table,
    localization_headline_table,
    localization_tables,
    on_reference_data,
    per_threshold_table,
    pointing_table,
    run_methods,
)
from thoracic.reporting.runs import RunGroup, RunSummary
from thoracic.reporting.setup_tables import box_rows_table, coverage_warnings, data_kind, setup_table
from thoracic.reporting.trust import trust_section
from thoracic.safety import OUTPUT_MANIFEST, read_json


def _warned(context: ReportContext, warnings: dict[str, list[str]]) -> list[str]:
    """``run label: warning`` for each run's warnings; a warning every run of the report shares (one run,
    or runs on the same data) once, without labels."""
    lines: dict[str, list[str]] = {}
    for label, messages in warnings.items():
        for message in messages:
            lines.setdefault(message, []).append(label)
    return [message if len(labels) == len(context.runs) else f"{', '.join(labels)}: {message}"
            for message, labels in lines.items()]


def setup_section(context: ReportContext) -> Section:
    section = Section("Setup", "setup", intro=(
        "What each run is: the model and how it was trained, the data it saw and the checkpoint that was "
        "evaluated. Epochs count from 0; the best epoch is the one with the lowest validation loss, whose "
        "checkpoint (best.ckpt) all numbers below come from."))
    section.tables.append(ReportTable("Runs", setup_table(context), numeric=False))
    boxes = box_rows_table(context)
    if boxes is not None:
        section.folded_tables.append(ReportTable("Box rows per class on the test images, per data folder", boxes))
    if any(data_kind(r) == "phantom" for r in context.runs):
        section.notes.append("Phantom (synthetic) data: these numbers show that the code learns and localizes; "
                             "they say nothing clinical.")
    # provenance (stale evaluations, checkpoints of another model than the run folder names) and how much
    # of the full dataset each run saw
    section.warnings.extend(_warned(context, {context.run_label(run): [*run.warnings,
                                                                        *coverage_warnings(run, context.split),
                                                                        *test_set_warnings(run)]
                                              for run in context.runs}))
    return section


def cross_dataset_section(context: ReportContext) -> Section | None:
    """Cross-dataset validation: the mean AUC of every run on its own test split and on each other dataset
    it was scored on (train dataset x test dataset), and the AUC per finding."""
    tables = cross_auc_tables(context.runs, context.run_label)
    if tables is None:
        return None
    means, per_label = tables
    section = Section("Cross-dataset validation", "cross-dataset", intro=(
        "Each run scored on the test split of other datasets (thoracic evaluate RUN --data FOLDER --dataset KIND) "
        "over the labels both datasets share: a run's output counts for a dataset's label only when the "
        "harmonisation table (docs/data.md) says they name the same finding; nothing broader or narrower is "
        "merged. AUCs with percentile bootstrap 95% CIs; operating points and calibration come from the run's "
        "own validation split. Beside each mean, the run's own test split over the same labels."))
    section.warnings.extend(_warned(context, {context.run_label(run): test_set_warnings(run) for run in context.runs}))
    section.tables.append(ReportTable("Mean AUC [95% CI]: train dataset (rows) x test dataset (columns)", means,
                                      numeric=False))
    section.tables.append(ReportTable("AUC [95% CI] per finding, every run and test dataset", per_label,
                                      numeric=False, note="Findings by their harmonised name; empty where a test "
                                      "dataset does not label the finding."))
    notes = [f"{context.run_label(run)} on {t.name}: {e['note']}" for run in context.runs for t in run.test_sets
             if t.auc for e in t.auc["per_class"].values() if e.get("note")]
    section.notes.extend(notes)
    return section


def classification_section(context: ReportContext) -> Section | None:
    runs = context.runs
    if not any(r.auc for r in runs):
        return None
    split = context.split
    published = with_reference([r.auc for r in runs if r.auc])
    caveat = "" if split == "test" or not published else \
        f" The published numbers are test-split AUCs, not {split}-split ones."
    section = Section("Classification (Table 1)", "classification", intro=(
        f"Per-class ROC AUC on the {split} split (Table 1 style). {table1_legend(published)}{caveat}"))
    section.warnings.extend(_warned(context, {context.run_label(r): _classification_warnings(r, split)
                                              for r in runs if r.auc}))
    for run in runs:
        if run.roc_figure is not None and run.auc:
            curves = sum(1 for e in run.auc["per_class"].values() if e.get("auc") is not None)
            left_out = len(run.auc["per_class"]) - curves
            section.figures.append(ReportFigure(
                f"ROC curves of {context.run_label(run)} on the {split} split ({run.auc.get('n_images', '?')} "
                "images); the legend gives each class's AUC and positive images"
                + (f"; {left_out} of {len(run.auc['per_class'])} classes left out (no AUC: one label value)"
                   if left_out else "") + ".", run.roc_figure))
    section.tables.append(ReportTable(f"Per-class ROC AUC on the {split} split", report_table1(context.groups)))
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


def _classification_warnings(run: RunSummary, split: str) -> list[str]:
    """Classes with few positives on the reported split, and thresholds chosen on few validation positives."""
    per_class = run.auc["per_class"]
    warnings = positives_warnings(list(per_class), {k: v.get("n_positive") for k, v in per_class.items()},
                                  split, run.auc.get("n_images"))
    if split != "val" and isinstance(run.auc.get("n_val_positive"), dict):
        warnings += fitted_on_few_warnings(list(per_class), run.auc["n_val_positive"], "operating-point thresholds")
    return warnings


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


OTHER_BOX_SETS_NOTE = (
    "The same protocol on other box sets (thoracic localize RUN --data FOLDER --dataset KIND), for the box "
    "classes the run has (matched by harmonised name), means over those classes at heatmap threshold "
    f"{HEADLINE_THRESHOLD}, false positives per image in brackets. Ground truth: each (every reader's box is a "
    "row), any (the findings at least one reader boxed) or consensus (those a majority of the image's readers "
    "boxed). The human row scores each reader's boxes against the other readers' with the same metrics "
    "(false positives per image and reader).")


def localization_section(context: ReportContext) -> Section | None:
    tables = localization_tables(context.groups)
    others = other_box_set_table(context.runs, context.run_label)
    if not tables:
        if others is None:
            return None
        section = Section("Localization (Tables 2-7)", "localization", intro=LOCALIZATION_PROTOCOL)
        section.tables.append(ReportTable("Localization on other box sets, beside the human readers", others,
                                          note=OTHER_BOX_SETS_NOTE, numeric=False))
        return section
    section = Section("Localization (Tables 2-7)", "localization", intro=LOCALIZATION_PROTOCOL)
    if context.explorer is not None:
        section.links.append(ReportLink(
            "Explorer: every scored box row", context.relative(context.explorer),
            "(every run and heatmap method: overlays with ground-truth and predicted boxes, probability, IoU / "
            "IoBB, hit or miss; filters, sorting and a side-by-side view of one box)."))
    if context.comparison is not None:
        section.figures.append(ReportFigure(
            "Every run and heatmap method side by side on the same test images (ground truth in blue, "
            "predicted boxes of heatmap threshold 180 in green).", context.comparison, wide=True))
    for run in context.runs:
        for method, path in sorted(run.overlay_figures().items()):
            section.figures.append(ReportFigure(
                f"{context.run_label(run)}, {METHOD_LABELS.get(method, method)}: heatmap overlays on test images "
                "with boxes (ground truth in blue, predicted boxes of heatmap threshold 180 in green).", path))
    counts = box_rows_per_class(*run_methods(context.groups)[0])
    k = sum(1 for n in counts.values() if n > 0)
    mean_note = (f"The mean is over the {k} of {len(counts)} box classes that have box rows here "
                 f"({sum(counts.values())} rows)" + ("; the Wang et al. 2017 mean is recomputed over the same classes."
                                                     if on_reference_data(context.groups) else "."))
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
             f"of {len(counts)} box classes that have box rows here."))
    section.folded_tables.append(ReportTable(
        f"Mean localization accuracy (over the {k} classes with box rows) per heatmap threshold "
        "(false positives per image)", per_threshold_table(context.groups)))
    section.folded_tables.append(ReportTable(
        f"Average false positives per image (boxes of heatmap threshold {HEADLINE_THRESHOLD})",
        false_positive_table(context.groups),
        note="Predicted boxes localizing no ground-truth box of their class and image, per image with a box of "
             "that class, mean over the classes with box rows; the baselines draw one box per image and class."))
    if others is not None:
        section.tables.append(ReportTable("Localization on other box sets, beside the human readers", others,
                                          note=OTHER_BOX_SETS_NOTE, numeric=False))
    section.notes.append("The seed paper's own Tables 2-7 divided by the ground-truth box and scored 104 rows "
                         "against the wrong box, so they are not comparable and not shown.")
    return section


def subgroup_section(context: ReportContext) -> Section | None:
    """Mean AUC and TPR per sex / age band / view / follow-up group, the gaps to each attribute's reference
    group (``subgroups_<split>.json`` of every run that has one), and the per-class figure."""
    runs, split = context.runs, context.split
    loaded = [(run, read_json(p, "a subgroup evaluation file", RunError)) for run in runs
              if (p := run.path / "evaluation" / f"subgroups_{split}.json").is_file()]
    if not loaded:
        return None
    means = pd.DataFrame()
    gaps = pd.DataFrame()
    undefined: dict[str, list[str]] = {}  # message -> runs (the same split gives the same messages)
    warnings: dict[str, list[str]] = {}
    for run, info in loaded:
        label = context.run_label(run)
        groups = pd.DataFrame(info["groups"])
        warnings[label] = subgroup_warnings(groups)
        small = {(a, g): int(n) for a, g, n in small_subgroups(groups).itertuples(index=False)}
        rows = groups[groups["class_name"] == "Mean"].set_index(["attribute", "group"])
        means[f"{label}: n"] = rows["n_images"].astype(int).map(
            lambda n: count_cell(n, MIN_SUBGROUP_IMAGES, "images") if n else "0")
        means[f"{label}: mean AUC"] = [ci_cell(*v) for v in rows[["auc", "auc_ci_low", "auc_ci_high"]].itertuples(index=False)]
        means[f"{label}: mean TPR"] = [ci_cell(*v) for v in rows[["tpr", "tpr_ci_low", "tpr_ci_high"]].itertuples(index=False)]
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
            # a gap to or from a small group is marked with that group's size
            marks = [", ".join(f"{g}: {small[(a, g)]} images" for g in (group, reference) if (a, g) in small)
                     for a, group, reference in gap[["attribute", "group", "reference"]].itertuples(index=False)]
            comparison = gap["group"] + " - " + gap["reference"]
            comparison = [f"{c} ({m})" if m else c for c, m in zip(comparison, marks)]
            gap = gap.assign(comparison=comparison).set_index(["attribute", "comparison", "metric"])
            gaps[label] = [ci_cell(*v) for v in gap[["gap", "ci_low", "ci_high"]].itertuples(index=False)]
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
    section = Section("Subgroups", "subgroups", intro=text, warnings=_warned(context, warnings))
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
    loaded = [(run, read_json(p, "a calibration evaluation file", RunError)) for run in runs
              if (p := run.path / "evaluation" / f"calibration_{split}.json").is_file()]
    if not loaded:
        return None
    table = pd.DataFrame()
    sources = []
    warnings: dict[str, list[str]] = {}
    for run, info in loaded:
        label = context.run_label(run)
        rows = pd.DataFrame(info["per_class"]).set_index("class_name")
        table[f"{label}: ECE"] = [fmt(v, 4) for v in rows["ece"].astype(float)]
        if np.isfinite(rows["ece_calibrated"].astype(float)).any():
            table[f"{label}: ECE after T"] = [fmt(v, 4) for v in rows["ece_calibrated"].astype(float)]
            temperature = rows["temperature"].astype(float)
            bound = temperature_at_bound(temperature.to_numpy())
            table[f"{label}: T"] = [fmt(v, 3) + (" (at bound)" if hit else "") for v, hit in zip(temperature, bound)]
            classes = [c for c in temperature.index if c != "Mean"]
            warnings[label] = temperature_warnings(classes, temperature.loc[classes].to_numpy())
        table.index = rows.index
        sources.append(f"{label}: {info.get('temperature_source', '')}")
    table.index.name = "class"
    n_bins = loaded[0][1].get("n_bins")
    section = Section("Calibration", "calibration", intro=(
        f"Expected calibration error of each class's probability on the {split} split ({n_bins} equal-width "
        "bins; 0 is perfect). Temperature scaling (probability = sigmoid(logit / T)) is fitted on the "
        "validation split by thoracic evaluate --calibrate and applied by thoracic predict; it changes "
        "no AUC."), warnings=_warned(context, warnings))
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
            if path.name == OUTPUT_MANIFEST:  # the folder's file list, not an export's metadata
                continue
            try:
                info = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            check = info.get("verification") or {}
            diffs = check.get("max_abs_diff") or {}
            try:
                grid = FeatureGrid.from_dict(info.get("heatmap_geometry") or {})
            except GeometryError:
                grid = None
            records.append({
                "run": context.run_label(run), "file": path.name[:-len(".json")], "format": info.get("format"),
                "input": " x ".join(str(v) for v in (info.get("input") or {}).get("shape", [])),
                "class maps": " x ".join(str(v) for v in grid.shape) if grid else "",
                "stride / cell-centre offset (px)": f"{grid.stride[0]:g} / {grid.offset[0]:g}" if grid else "",
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
    setup_section, classification_section, cross_dataset_section, subgroup_section, calibration_section,
    localization_section, trust_section, export_section,
]


def build_sections(groups: Sequence[RunGroup], out_dir: Path, split: str = "test",
                   comparison: Path | None = None, explorer: Path | None = None) -> list[Section]:
    """Every section of :data:SECTION_BUILDERS that has something to show."""
    context = ReportContext(list(groups), Path(out_dir), split, comparison, explorer)
    sections = [s for s in (builder(context) for builder in SECTION_BUILDERS) if s is not None]
    for section in sections:  # an empty table would render as a header over nothing
        section.tables = [t for t in section.tables if not t.frame.empty]
        section.folded_tables = [t for t in section.folded_tables if not t.frame.empty]
    return sections


__all__ = ["HEADLINE_LOCALIZATION", "LOCALIZATION_PROTOCOL", "SECTION_BUILDERS", "build_sections", "calibration_section",
           "classification_section", "cross_dataset_section", "export_section", "localization_section", "setup_section",
           "subgroup_section"]

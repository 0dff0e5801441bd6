"""The report's "Can these heatmaps be trusted?" section: the results of ``thoracic explain``, one line per
method and check (read from each run's ``evaluation/explain.json`` and an experiment's
``evaluation/repeatability.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.constants import METHOD_LABELS
from thoracic.errors import RunError
from thoracic.provenance import SHORT_HASH, file_sha256
from thoracic.reporting.document import ReportContext, ReportFigure, ReportTable, Section
from thoracic.safety import read_json

TRUST_INTRO = (
    "Sanity checks of the heatmaps (thoracic explain), on the box rows of a seeded draw of the test images. "
    "Model randomization (Adebayo et al. 2018): the network is re-initialised stage by stage from the "
    "classifier down to the stem and each method's maps are compared with the trained model's (Spearman rank "
    "correlation and SSIM at the model input's resolution); a method whose maps stay similar explains the image, "
    "not the model, and is flagged. Faithfulness: deletion and insertion curves (Petsiuk et al. 2018), the "
    "probability of the class as the most salient pixels are removed or revealed, against a random order of the "
    "pixels, and ROAD (Rong et al. 2022: removed pixels imputed from their neighbours). Mask metrics "
    "(CheXlocalize, Saporta et al. 2022): mIoU of the thresholded map with the box region and hit rate (the "
    "map's maximum inside the region), at the fixed heatmap threshold, at Otsu's threshold and, apart, at "
    "per-class thresholds tuned on the other half of the patients. Repeatability (experiments): the maps of the "
    "seeds compared image by image. Criteria and every number: docs/evaluation.md and the CSV files beside "
    "explain.json.")

CHECK_COLUMNS = {"randomization": "model randomization", "faithfulness": "faithfulness", "masks": "mask metrics"}


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path, "a thoracic explain file", RunError)
    except RunError:
        return None
    return data if isinstance(data, dict) else None


def trust_section(context: ReportContext) -> Section | None:
    """One row per run and method with each check's one-line result, the repeatability of every group of
    seeds that has it, and the checks' figures."""
    records, repeat, notes, figures = [], [], [], []
    for run in context.runs:
        evaluation = run.path / "evaluation"
        document = _read(evaluation / "explain.json")
        if document is None:
            continue
        label = context.run_label(run)
        for method, checks in document.get("verdicts", {}).items():
            record = {"run": label, "method": METHOD_LABELS.get(method, method)}
            record.update({title: (checks.get(check) or {}).get("text", "not run")
                           for check, title in CHECK_COLUMNS.items()})
            records.append(record)
        info = document.get("checkpoint") or {}
        best = run.path / "checkpoints" / "best.ckpt"
        if info.get("sha256") and best.is_file() and file_sha256(best) != info["sha256"]:
            notes.append(f"STALE ({label}): explain.json checked a checkpoint (sha256 {info['sha256'][:SHORT_HASH]}) "
                         "that is no longer the run's best.ckpt: rerun thoracic explain")
        notes.append(f"{label}: {document.get('n_pairs')} (image, class) pairs on {document.get('n_images')} of "
                     f"{document.get('n_box_images')} test images with boxes (seed {document.get('settings', {}).get('seed')}).")
        for name, caption in (("randomization.png", "similarity to the trained maps against randomized depth"),
                              ("randomization_examples.png", "example maps as the network is randomized"),
                              ("faithfulness.png", "deletion and insertion curves")):
            if (evaluation / name).is_file():
                figures.append(ReportFigure(f"{label}: {caption}", evaluation / name))
    for group in context.groups:
        experiments = {r.path.parent for r in group.runs}
        for experiment in sorted(experiments):
            document = _read(experiment / "evaluation" / "repeatability.json")
            if document is None or not set(document.get("runs", [])) <= {r.path.name for r in group.runs}:
                continue
            for method, verdict in document.get("verdicts", {}).items():
                repeat.append({"runs": f"{group.label} ({', '.join(document['runs'])})",
                               "method": METHOD_LABELS.get(method, method), "repeatability": verdict.get("text", "")})
    if not records and not repeat:
        return None
    section = Section("Can these heatmaps be trusted?", "trust", intro=TRUST_INTRO, figures=figures)
    if records:
        section.tables.append(ReportTable("Each check's result, one line per method", pd.DataFrame.from_records(records),
                                          numeric=False))
    if repeat:
        section.tables.append(ReportTable("Repeatability across training seeds", pd.DataFrame.from_records(repeat),
                                          numeric=False))
    section.notes.extend(notes)
    return section


__all__ = ["TRUST_INTRO", "trust_section"]

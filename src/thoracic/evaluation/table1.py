"""Table 1: per-class ROC AUC beside the published columns, with the positives behind every AUC.

Rows: the 14 classes and ``Mean``. Columns: the positive images per class (marked when fewer than
:data:`~thoracic.evaluation.sample_size.MIN_POSITIVES`), Wang et al. 2017 (ResNet-50), then each column of
this project's AUCs (a run, or a group of seeds as mean ± sd) beside the seed paper's column for the same
model, then the paper's other columns. ``thoracic evaluate`` writes the table of one run
(:func:`write_table1`: ``table1_<split>.md`` / ``.csv``); the report builds it for several runs from the
same function (:func:`classification_table`), given each run's ``auc_<split>.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.constants import CLASS_NAMES
from thoracic.evaluation.formatting import count_cell, fmt, markdown_table, mean_std
from thoracic.evaluation.references import CLASSIFICATION_REFERENCE_LABELS, load_classification_reference
from thoracic.evaluation.sample_size import MIN_POSITIVES
from thoracic.io import write_csv_atomic, write_text_atomic

#: model name -> column of the seed paper's Table 1.
PAPER_COLUMN = {"baseline": "paper_baseline_resnet34", "space_attention": "paper_space_attention",
                "attention_gated": "paper_attention_gated"}

#: What the cells of :func:`classification_table` mean (written under every Table 1).
TABLE1_LEGEND = ("A single run shows its bootstrap 95% confidence interval in brackets; a group of seeds shows "
                 "mean ± standard deviation. Each run stands beside the seed paper's column for the same model; "
                 "Wang et al. 2017 is ResNet-50. The positives column counts the images of each class on the "
                 f"split (the Mean row: all images); fewer than {MIN_POSITIVES} are marked: such an AUC and its "
                 "interval say little.")


@dataclass(frozen=True)
class Table1Column:
    """One column of AUCs: a label, the model (which picks the paper's column beside it) and the
    ``auc_<split>.json`` content (``AUCResult.to_dict()``) of each run it holds (several: seeds; None for a
    run without one, shown as n/a)."""

    label: str
    model: str
    aucs: Sequence[Mapping[str, Any] | None]


def _class_auc(auc: Mapping[str, Any] | None, name: str) -> tuple[float | None, float | None, float | None]:
    if not auc:
        return None, None, None
    if name == "Mean":
        ci = auc.get("mean_ci") or [None, None]
        return auc.get("mean_auc"), ci[0], ci[1]
    entry = auc["per_class"].get(name, {})
    return entry.get("auc"), entry.get("ci_low"), entry.get("ci_high")


def positives_column(auc: Mapping[str, Any]) -> list[str]:
    """Positive images per class (marked below :data:`~thoracic.evaluation.sample_size.MIN_POSITIVES`) and,
    for the Mean row, the number of images of one ``auc_<split>.json``."""
    per_class = auc.get("per_class") or {}
    cells = []
    for name in CLASS_NAMES:
        entry = per_class.get(name) or {}
        n = entry.get("n_positive")
        cells.append("n/a" if n is None else count_cell(int(n), MIN_POSITIVES, "positives"))
    n_images = auc.get("n_images")
    if n_images is None and per_class:
        first = next(iter(per_class.values()))
        n_images = int(first.get("n_positive", 0)) + int(first.get("n_negative", 0))
    cells.append(f"{n_images} images" if n_images is not None else "n/a")
    return cells


def classification_table(columns: Sequence[Table1Column]) -> pd.DataFrame:
    """Table 1: rows = 14 classes + Mean; positives, Wang 2017, then each column beside the paper's column
    for its model, then the paper's columns not shown yet.

    The positives come from each column's first run; columns whose runs saw different positives (other
    data) get a positives column each, named after them.
    """
    reference = load_classification_reference()
    reference.loc["Mean"] = reference.mean(axis=0)
    table = pd.DataFrame(index=[*CLASS_NAMES, "Mean"])
    table.index.name = "class"
    firsts = [(column.label, next((auc for auc in column.aucs if auc), None)) for column in columns]
    counted = [(label, positives_column(auc)) for label, auc in firsts if auc]
    if counted and all(cells == counted[0][1] for _, cells in counted):
        table["positives"] = counted[0][1]
    else:
        for label, cells in counted:
            table[f"positives: {label}"] = cells
    table[CLASSIFICATION_REFERENCE_LABELS["wang2017_resnet50"]] = [fmt(v) for v in reference["wang2017_resnet50"]]
    shown_papers = set()
    for column in columns:
        cells = []
        for name in table.index:
            values = [_class_auc(auc, name) for auc in column.aucs]
            if len(column.aucs) == 1:
                auc, low, high = values[0]
                cell = fmt(auc)
                if low is not None and high is not None and auc is not None:
                    cell += f" [{fmt(low, 3)}, {fmt(high, 3)}]"
            else:
                cell = mean_std([v[0] for v in values])
            cells.append(cell)
        table[column.label] = cells
        paper = PAPER_COLUMN.get(column.model)
        if paper:
            label = CLASSIFICATION_REFERENCE_LABELS[paper]
            table[label if label not in table.columns else f"{label} "] = [fmt(v) for v in reference[paper]]
            shown_papers.add(paper)
    for paper, label in CLASSIFICATION_REFERENCE_LABELS.items():
        if paper != "wang2017_resnet50" and paper not in shown_papers:
            table[label] = [fmt(v) for v in reference[paper]]
    return table


def write_table1(auc: Mapping[str, Any], model: str, out_dir: str | Path, split: str = "test",
                 label: str | None = None) -> tuple[Path, Path]:
    """Table 1 of one evaluated run: ``table1_<split>.md`` and ``.csv`` in ``out_dir``.

    Args:
        auc: what ``thoracic evaluate`` stores in ``auc_<split>.json`` (``AUCResult.to_dict()`` and the
            run's details).
        model: the run's model name; picks the paper's column beside the run's.
        label: the run's column heading (default: ``model``).
    Returns:
        ``(markdown path, csv path)``; the Markdown names the checkpoint (``auc["checkpoint"]``) and its SHA-256.
    """
    out_dir = Path(out_dir)
    table = classification_table([Table1Column(label or model, model, [auc])])
    csv_path = out_dir / f"table1_{split}.csv"
    markdown_path = out_dir / f"table1_{split}.md"
    write_csv_atomic(csv_path, table)
    caveat = "" if split == "test" else f" The published numbers are test-split AUCs, not {split}-split ones."
    checkpoint = auc.get("checkpoint") if isinstance(auc.get("checkpoint"), Mapping) else {}
    source = (f"\n\nCheckpoint {checkpoint.get('path')} (epoch {checkpoint.get('epoch')}, sha256 "
              f"{checkpoint.get('sha256')})." if checkpoint.get("sha256") else "")
    write_text_atomic(markdown_path, f"# Table 1: per-class ROC AUC, {model} on the {split} split\n\n"
                                     f"{TABLE1_LEGEND}{caveat}{source}\n\n{markdown_table(table)}\n")
    return markdown_path, csv_path


__all__ = ["PAPER_COLUMN", "TABLE1_LEGEND", "Table1Column", "classification_table", "positives_column",
           "write_table1"]

"""Table 1: per-class ROC AUC beside the published columns, with the positives behind every AUC.

Rows: the run's classes (the ``class_names`` of its ``auc_<split>.json``: the labels it was trained on; several
runs of different label spaces: every class, in order of appearance) and ``Mean``. Columns: the positive
images per class (marked when fewer than :data:`~thoracic.evaluation.sample_size.MIN_POSITIVES`), Wang et
al. 2017 (ResNet-50), then each column of this project's AUCs (a run, or a group of seeds as mean ± sd)
beside the seed paper's column for the same model, then the paper's other columns. The published columns
are ChestX-ray14 test AUCs: they are shown only when every run was evaluated on ChestX-ray14, with a value
for the classes that have one (their Mean: over those classes). ``thoracic evaluate`` writes the table of one run
(:func:`write_table1`: ``table1_<split>.md`` / ``.csv``); the report builds it for several runs from the
same function (:func:`classification_table`), given each run's ``auc_<split>.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.evaluation.formatting import count_cell, fmt, markdown_table, mean_std
from thoracic.evaluation.references import CLASSIFICATION_REFERENCE_LABELS, load_classification_reference
from thoracic.evaluation.sample_size import MIN_POSITIVES
from thoracic.io import write_csv_atomic, write_text_atomic

#: model name -> column of the seed paper's Table 1.
PAPER_COLUMN = {"baseline": "paper_baseline_resnet34", "space_attention": "paper_space_attention",
                "attention_gated": "paper_attention_gated"}

#: Said under a Table 1 of runs evaluated on another dataset than ChestX-ray14.
NO_REFERENCE_NOTE = ("The published columns (Wang et al. 2017, the seed paper) are ChestX-ray14 test AUCs: they are "
                     "not shown for runs evaluated on other data.")
_CELLS = ("A single run shows its bootstrap 95% confidence interval in brackets; a group of seeds shows "
          "mean ± standard deviation.")
_POSITIVES = ("The positives column counts the images of each class on the split (the Mean row: all images); "
              f"fewer than {MIN_POSITIVES} are marked: such an AUC and its interval say little.")
#: What the cells of :func:`classification_table` mean (written under every Table 1 beside the published
#: columns; :func:`table1_legend` for either kind).
TABLE1_LEGEND = (f"{_CELLS} Each run stands beside the seed paper's column for the same model; Wang et al. 2017 is "
                 f"ResNet-50. {_POSITIVES}")


def table1_legend(published: bool = True) -> str:
    """The legend of a Table 1 with the published columns (:data:`TABLE1_LEGEND`) or without them."""
    return TABLE1_LEGEND if published else f"{_CELLS} {_POSITIVES} {NO_REFERENCE_NOTE}"


#: The dataset the published columns were measured on.
REFERENCE_DATASET = "chestxray14"


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


def table_classes(aucs: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """The rows of a Table 1: every class of the ``auc_<split>.json`` contents given, in order of appearance
    (``class_names``, else the order of ``per_class``)."""
    names: list[str] = []
    for auc in aucs:
        if auc:
            for name in auc.get("class_names") or list(auc.get("per_class") or {}):
                if name not in names:
                    names.append(str(name))
    return names


def with_reference(aucs: Sequence[Mapping[str, Any] | None]) -> bool:
    """Whether the published columns belong beside these runs: every one was evaluated on ChestX-ray14
    (its ``dataset``; a file written before the dataset was recorded: ChestX-ray14, the only one then)."""
    return all((auc.get("dataset") or REFERENCE_DATASET) == REFERENCE_DATASET for auc in aucs if auc)


def positives_column(auc: Mapping[str, Any], class_names: Sequence[str] | None = None) -> list[str]:
    """Positive images per class (marked below :data:`~thoracic.evaluation.sample_size.MIN_POSITIVES`) and,
    for the Mean row, the number of images of one ``auc_<split>.json`` (rows: ``class_names``, default the
    file's classes)."""
    per_class = auc.get("per_class") or {}
    cells = []
    for name in class_names if class_names is not None else table_classes([auc]):
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
    """Table 1: rows = the runs' classes (:func:`table_classes`) + Mean; positives, Wang 2017, then each
    column beside the paper's column for its model, then the paper's columns not shown yet.

    The positives come from each column's first run; columns whose runs saw different positives (other
    data) get a positives column each, named after them. The published columns only when every run was
    evaluated on ChestX-ray14 (:func:`with_reference`), empty for a class without a published value.
    """
    aucs = [auc for column in columns for auc in column.aucs]
    names = table_classes(aucs)
    table = pd.DataFrame(index=[*names, "Mean"])
    table.index.name = "class"
    firsts = [(column.label, next((auc for auc in column.aucs if auc), None)) for column in columns]
    counted = [(label, positives_column(auc, names)) for label, auc in firsts if auc]
    if counted and all(cells == counted[0][1] for _, cells in counted):
        table["positives"] = counted[0][1]
    else:
        for label, cells in counted:
            table[f"positives: {label}"] = cells
    if not with_reference(aucs):
        for column in columns:
            table[column.label] = _auc_cells(column, table.index)
        return table
    published = load_classification_reference()
    reference = published.reindex(names)
    reference.loc["Mean"] = reference.mean(axis=0)  # over the classes shown that have a published value

    def cells_of(paper: str) -> list[str]:
        return [fmt(v) if pd.notna(v) else "" for v in reference[paper]]

    table[CLASSIFICATION_REFERENCE_LABELS["wang2017_resnet50"]] = cells_of("wang2017_resnet50")
    shown_papers = set()
    for column in columns:
        table[column.label] = _auc_cells(column, table.index)
        paper = PAPER_COLUMN.get(column.model)
        if paper:
            label = CLASSIFICATION_REFERENCE_LABELS[paper]
            table[label if label not in table.columns else f"{label} "] = cells_of(paper)
            shown_papers.add(paper)
    for paper, label in CLASSIFICATION_REFERENCE_LABELS.items():
        if paper != "wang2017_resnet50" and paper not in shown_papers:
            table[label] = cells_of(paper)
    return table


def _auc_cells(column: Table1Column, rows: Sequence[str]) -> list[str]:
    """One column's AUC per row: a run's with its CI, a group's mean ± sd."""
    cells = []
    for name in rows:
        values = [_class_auc(auc, name) for auc in column.aucs]
        if len(column.aucs) == 1:
            auc, low, high = values[0]
            cell = fmt(auc)
            if low is not None and high is not None and auc is not None:
                cell += f" [{fmt(low, 3)}, {fmt(high, 3)}]"
        else:
            cell = mean_std([v[0] for v in values])
        cells.append(cell)
    return cells


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
    published = with_reference([auc])
    caveat = "" if split == "test" or not published else \
        f" The published numbers are test-split AUCs, not {split}-split ones."
    checkpoint = auc.get("checkpoint") if isinstance(auc.get("checkpoint"), Mapping) else {}
    source = (f"\n\nCheckpoint {checkpoint.get('path')} (epoch {checkpoint.get('epoch')}, sha256 "
              f"{checkpoint.get('sha256')})." if checkpoint.get("sha256") else "")
    write_text_atomic(markdown_path, f"# Table 1: per-class ROC AUC, {model} on the {split} split\n\n"
                                     f"{table1_legend(published)}{caveat}{source}\n\n{markdown_table(table)}\n")
    return markdown_path, csv_path


__all__ = ["NO_REFERENCE_NOTE", "PAPER_COLUMN", "REFERENCE_DATASET", "TABLE1_LEGEND", "Table1Column",
           "classification_table", "positives_column", "table1_legend", "table_classes", "with_reference",
           "write_table1"]

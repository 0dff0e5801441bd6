"""The report's classification tables: Table 1 of the run groups (built by
:func:`thoracic.evaluation.table1.classification_table`, the one ``thoracic evaluate`` writes) and the
per-class operating points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from thoracic.evaluation.formatting import DECISION_DIGITS, count_cell, mean_std
from thoracic.evaluation.sample_size import MIN_POSITIVES
from thoracic.evaluation.table1 import Table1Column, classification_table
from thoracic.reporting.runs import RunGroup


def table1_columns(groups: Sequence[RunGroup]) -> list[Table1Column]:
    """One Table 1 column per group: its label, its model and the ``auc_<split>.json`` of each run."""
    return [Table1Column(group.label, group.model, [run.auc for run in group.runs]) for group in groups]


def report_table1(groups: Sequence[RunGroup]) -> pd.DataFrame:
    """Table 1 of the report: every group beside the published columns, positives per class."""
    return classification_table(table1_columns(groups))


def operating_point_table_of(group: RunGroup) -> pd.DataFrame | None:
    """Per class: positives, AUC, threshold, sensitivity and specificity (mean ± std over the seeds of a
    group); thresholds with :data:`~thoracic.evaluation.formatting.DECISION_DIGITS` digits, like the
    probabilities ``thoracic predict`` writes beside them."""
    tables = [r.operating_points for r in group.runs if r.operating_points is not None]
    if not tables:
        return None
    names = list(dict.fromkeys(name for t in tables for name in t["class_name"]))  # the runs' classes, in order
    table = pd.DataFrame(index=names)
    table.index.name = "class"
    first = tables[0].set_index("class_name")
    if "n_positive" in first.columns:
        positives = first["n_positive"].reindex(names)
        table["positives"] = ["n/a" if not np.isfinite(n) else count_cell(int(n), MIN_POSITIVES, "positives")
                              for n in positives.to_numpy(float)]
    for column, digits in (("auc", 4), ("threshold", DECISION_DIGITS), ("sensitivity", 3), ("specificity", 3)):
        values = [t.set_index("class_name")[column].reindex(names).to_numpy(float) for t in tables]
        table[column.replace("auc", "AUC")] = [mean_std([v[i] for v in values], digits) for i in range(len(names))]
    return table


__all__ = ["operating_point_table_of", "report_table1", "table1_columns"]

"""How numbers are written in tables, figures and messages, and plain-text (Markdown) tables.

One place for the cells every table shares (``fmt``, ``mean_std``, ``ci_cell``, ``count_cell``), for a
probability written beside its threshold (:func:`format_decision`: enough digits to show on which side
it lies) and for the GitHub-flavoured Markdown table that the evaluation files (``table1_<split>.md``) and
the reports write. Markdown tables are written here rather than with ``DataFrame.to_markdown`` because
that needs ``tabulate``, whose column padding would also change every table's text; the format is six
lines of code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Digits of a probability or threshold written beside each other (more when needed to tell them apart).
DECISION_DIGITS = 4
#: Most digits :func:`decision_digits` uses: values closer than this are shown as written to it.
MAX_DECISION_DIGITS = 12


def fmt(value: float | None, digits: int = 4) -> str:
    """``0.1235`` for 0.12345 at 4 digits; ``n/a`` for None / NaN."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def mean_std(values: Sequence[float | None], digits: int = 4) -> str:
    """``mean ± sd`` of the finite values (sd with ddof 1); one value alone as itself; ``n/a`` without any."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return "n/a"
    if len(values) == 1:
        return fmt(finite[0], digits)
    return f"{np.mean(finite):.{digits}f} ± {np.std(finite, ddof=1) if len(finite) > 1 else 0.0:.{digits}f}"


def ci_cell(value: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``0.712 [0.650, 0.770]``; the value alone without an interval; ``undefined`` without a value."""
    if value is None or not np.isfinite(value):
        return "undefined"
    cell = f"{value:.{digits}f}"
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        cell += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return cell


def count_cell(count: int, minimum: int, unit: str) -> str:
    """``42``; ``3 (fewer than 10)`` when ``count`` is below ``minimum`` (a small sample, marked).

    ``unit`` names what is counted in the mark: ``count_cell(3, 10, "positives")`` is
    ``3 (fewer than 10 positives)``.
    """
    return f"{count}" if count >= minimum else f"{count} (fewer than {minimum} {unit})"


def decision_digits(probability: float, threshold: float, digits: int = DECISION_DIGITS) -> int:
    """The fewest digits (at least ``digits``) at which ``probability`` and ``threshold`` are written
    differently, so that the written values show on which side of the threshold the probability lies;
    equal values (and values closer than :data:`MAX_DECISION_DIGITS` digits) get that many."""
    if probability == threshold or not (np.isfinite(probability) and np.isfinite(threshold)):
        return digits
    for d in range(digits, MAX_DECISION_DIGITS + 1):
        if f"{probability:.{d}f}" != f"{threshold:.{d}f}":
            return d
    return MAX_DECISION_DIGITS


def format_decision(probability: float, threshold: float, digits: int = DECISION_DIGITS) -> str:
    """A probability beside its threshold, with the side it is on: ``p=0.4996 < 0.5000``,
    ``p=0.5000 ≥ 0.5000``, ``p=0.49999 < 0.50000`` (an image is positive at or above the threshold).

    >>> format_decision(0.4996, 0.5)
    'p=0.4996 < 0.5000'
    >>> format_decision(0.499996, 0.5)
    'p=0.499996 < 0.500000'
    >>> format_decision(0.5, 0.5)
    'p=0.5000 ≥ 0.5000'
    """
    if not np.isfinite(threshold):
        return f"p={probability:.{digits}f}"
    d = decision_digits(probability, threshold, digits)
    side = "≥" if probability >= threshold else "<"
    return f"p={probability:.{d}f} {side} {threshold:.{d}f}"


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


__all__ = ["DECISION_DIGITS", "MAX_DECISION_DIGITS", "ci_cell", "count_cell", "decision_digits", "fmt",
           "format_decision", "markdown_table", "mean_std", "table_cells"]

"""A report as data: sections of figures, tables and notes (rendered by :mod:`thoracic.reporting.render`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from thoracic.reporting.runs import RunGroup, RunSummary


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
class ReportLink:
    """A link to a page written beside the report (e.g. the explorer), relative to the report's folder."""

    text: str
    href: str
    note: str = ""


@dataclass
class Section:
    """One section of the report: warnings first, then figures, the headline tables, secondary tables
    (folded in the HTML), then notes. ``intro`` is plain text (paragraphs separated by blank lines)."""

    title: str
    anchor: str
    figures: list[ReportFigure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    folded_tables: list[ReportTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    intro: str = ""
    warnings: list[str] = field(default_factory=list)
    """What a reader must know before trusting the section's numbers (small samples, stale evaluations),
    shown above its figures and tables."""
    links: list[ReportLink] = field(default_factory=list)
    """Pages written beside the report (the explorer), shown after the intro and the warnings."""


@dataclass
class ReportContext:
    """What every section builder gets."""

    groups: list[RunGroup]
    out_dir: Path
    split: str = "test"
    comparison: Path | None = None
    """``compare_overlays.png`` written for this report (None when fewer than two runs / methods)."""
    explorer: Path | None = None
    """The explorer page written for this report (``explorer/index.html``; None when not written)."""

    @property
    def runs(self) -> list[RunSummary]:
        return [r for g in self.groups for r in g.runs]

    def relative(self, path: Path) -> str:
        """``path`` as a link from the report's folder (POSIX separators)."""
        return Path(os.path.relpath(Path(path).resolve(), self.out_dir.resolve())).as_posix()

    def run_label(self, run: RunSummary) -> str:
        """The run's folder with the model beside it (:meth:`RunGroup.run_label`)."""
        return next(g for g in self.groups if any(r is run for r in g.runs)).run_label(run)


__all__ = ["ReportContext", "ReportFigure", "ReportLink", "ReportTable", "Section"]

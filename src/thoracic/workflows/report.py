"""``thoracic report``: Markdown and HTML reports of evaluated runs (the command only parses arguments)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


from thoracic.errors import RunError
from thoracic.io import write_text_atomic
from thoracic.safety import OutputSource, output_folder
from thoracic.reporting.runs import expand_runs, group_runs, load_run_summary
from thoracic.reporting.sections import build_sections
from thoracic.reporting.render import render_html, render_markdown
from thoracic.reporting.comparison import comparison_figure
from thoracic.reporting.explorer import EXPLORER_FOLDER, build_explorer, discover_methods


#: What ``thoracic report`` writes into its output folder.
REPORT_FILES: tuple[str, ...] = ("report.md", "report.html", "compare_overlays.png")
REPORT_SOURCE = OutputSource("report", "thoracic report")


def build_report(runs: Sequence[str | Path], out_dir: str | Path | None = None, split: str = "test",
                 title: str = "thoracic evaluation report", explorer: bool = True,
                 progress: bool = False) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (figures embedded) for the given runs / experiments.

    ``out_dir`` defaults to the folder given when there is one (a run or an experiment folder), or
    ``./report`` for several. ``explorer``: also write the explorer page of every scored box row
    (``out_dir/explorer/index.html``, :mod:`thoracic.reporting.explorer`) when some run is localized, and
    link it from the Localization section; ``progress``: its progress bar (stderr). A file there that
    thoracic did not write (not in its ``thoracic_outputs.json``) is never replaced: the report is refused,
    naming it.
    """
    if split not in ("test", "val"):
        raise RunError(f"split must be 'test' or 'val', got {split!r}")
    paths = expand_runs(runs)
    summaries = [load_run_summary(p, split) for p in paths]
    groups = group_runs(summaries)
    if out_dir is None:
        out_dir = Path(runs[0]) if len(runs) == 1 else Path("report")
    out_dir = Path(out_dir)
    # a run or experiment folder (thoracic's config.yaml) holds the report's files by name: reports written
    # there before output folders kept a list are replaced
    legacy = REPORT_FILES if (out_dir / "config.yaml").is_file() else ()
    with output_folder(out_dir, "report", REPORT_SOURCE, legacy=legacy) as outputs:
        markdown_path = out_dir / "report.md"
        html_path = out_dir / "report.html"
        outputs.claim(markdown_path.name, html_path.name)
        comparison = comparison_figure(summaries, out_dir, groups=groups)
        page = None
        if explorer and any(discover_methods(s.path / "evaluation") for s in summaries):
            labels = {id(r): g.run_label(r) for g in groups for r in g.runs}
            page = build_explorer(summaries, out_dir / EXPLORER_FOLDER, labels, f"{title}: every scored box row",
                                  progress=progress)
        sections = build_sections(groups, out_dir, split, comparison, page)
        write_text_atomic(markdown_path, render_markdown(sections, title, out_dir))
        write_text_atomic(html_path, render_html(sections, title))
        outputs.remove_previous()  # e.g. a comparison figure of an earlier report this one no longer has
    return markdown_path, html_path


__all__ = ["REPORT_FILES", "build_report"]

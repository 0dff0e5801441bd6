"""Markdown + self-contained HTML report of one or more evaluated runs beside the published numbers.

Each RUN is a run folder (after `thoracic evaluate` and optionally `thoracic localize`) or an
experiment folder (`thoracic experiment` evaluates every seed; they are aggregated as mean +- std). Runs
whose configs differ only in the seed are aggregated too. The AUC tables are of --split (test or val).

When a run is localized, the report also writes the explorer page OUT/explorer/index.html (every scored box
row of every run and heatmap method: overlays, probability, IoU / IoBB, hit or miss, filters, sorting,
a side-by-side view), linked from its Localization section; --no-explorer skips it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run or experiment folders")
    parser.add_argument("--out", default=None, metavar="FOLDER",
                        help="output folder (default: the run or experiment folder given, ./report for several)")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="AUC split to report (default test)")
    parser.add_argument("--title", default="thoracic evaluation report")
    parser.add_argument("--no-explorer", dest="explorer", action="store_false",
                        help="do not write the explorer page (OUT/explorer/index.html) of every scored box row")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.report import build_report

    markdown, html = build_report(args.runs, args.out, split=args.split, title=args.title, explorer=args.explorer,
                                  progress=args.progress)
    explorer = html.parent / "explorer" / "index.html"
    linked = args.explorer and "(explorer/index.html)" in markdown.read_text()  # written now: the report links it
    print(f"wrote {markdown} and {html}" + (f"; explorer page: {explorer}" if linked else ""))
    return 0

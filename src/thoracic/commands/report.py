"""Markdown + self-contained HTML report of one or more evaluated runs beside the published numbers.

Each RUN is a run folder (after `thoracic evaluate` and optionally `thoracic localize`) or an
experiment folder (`thoracic experiment` evaluates every seed; they are aggregated as mean +- std). Runs
whose configs differ only in the seed are aggregated too. The AUC tables are of --split (test or val).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run or experiment folders")
    parser.add_argument("--out", default=None, metavar="FOLDER",
                        help="output folder (default: the run or experiment folder given, ./report for several)")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="AUC split to report (default test)")
    parser.add_argument("--title", default="thoracic evaluation report")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.report import build_report

    markdown, html = build_report(args.runs, args.out, split=args.split, title=args.title)
    print(f"wrote {markdown} and {html}")
    return 0

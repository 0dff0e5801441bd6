"""Copy the demo's subgroup, calibration and export numbers into docs/evaluation.md (between markers).

Usage: python scripts/evaluation_example.py [DEMO_OUTPUT]   (default demo_output, what `make demo` writes)

The block between ``<!-- demo-example:start -->`` and ``<!-- demo-example:end -->`` is replaced by tables
read from the demo's run folders (``evaluation/subgroups_test.csv``, ``subgroup_gaps_test.csv``,
``calibration_test.csv``, ``export/*.onnx.json``), so the numbers in the documentation are the files'.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluation.md"
START, END = "<!-- demo-example:start -->", "<!-- demo-example:end -->"
MODELS = ("baseline", "space_attention", "attention_gated")


def cell(value: float, low: float, high: float) -> str:
    return "undefined" if value != value else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def block(demo: Path) -> str:
    runs = {name: demo / "runs" / name for name in MODELS if (demo / "runs" / name / "evaluation").is_dir()}
    if not runs:
        raise SystemExit(f"{demo}: no demo runs (runs/<model>/evaluation) found")
    lines = [f"Numbers from `{demo.name}/runs/*/evaluation/` and `export/` (phantom test split; synthetic data, "
             "nothing clinical), copied by `scripts/evaluation_example.py`.", ""]
    # subgroup means of every model side by side
    header = ["attribute", "group", "n"] + [f"{m} mean AUC [95% CI]" for m in runs]
    rows: dict[tuple[str, str], list[str]] = {}
    for name, run in runs.items():
        groups = pd.read_csv(run / "evaluation" / "subgroups_test.csv", keep_default_na=False, na_values=[""])
        means = groups[groups["class_name"] == "Mean"]
        for r in means.itertuples(index=False):
            rows.setdefault((r.attribute, r.group), [str(r.n_images)]).append(cell(r.auc, r.auc_ci_low, r.auc_ci_high))
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {a} | {g} | " + " | ".join(v) + " |" for (a, g), v in rows.items()]
    lines += ["", "Gaps in mean AUC to each attribute's reference group (group minus reference, classes defined in "
              "both):", ""]
    header = ["attribute", "group - reference"] + list(runs)
    gap_rows: dict[tuple[str, str], list[str]] = {}
    for name, run in runs.items():
        gaps = pd.read_csv(run / "evaluation" / "subgroup_gaps_test.csv")
        gaps = gaps[(gaps["class_name"] == "Mean") & (gaps["metric"] == "auc")]
        for r in gaps.itertuples(index=False):
            gap_rows.setdefault((r.attribute, f"{r.group} - {r.reference}"), []).append(cell(r.gap, r.ci_low, r.ci_high))
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {a} | {g} | " + " | ".join(v) + " |" for (a, g), v in gap_rows.items()]
    lines += ["", "Calibration (mean ECE over the 14 classes, 15 bins) and the ONNX export of each run:", "",
              "| model | mean ECE | after temperature scaling | temperatures (min - max) | ONNX max abs diff logits | class maps |",
              "|---|---|---|---|---|---|"]
    for name, run in runs.items():
        table = pd.read_csv(run / "evaluation" / "calibration_test.csv").set_index("class_name")
        temperatures = table.drop(index="Mean")["temperature"]
        export = run / "export" / f"{name}.onnx.json"
        diffs = json.loads(export.read_text())["verification"]["max_abs_diff"] if export.is_file() else {}
        lines.append(f"| {name} | {table.loc['Mean', 'ece']:.4f} | {table.loc['Mean', 'ece_calibrated']:.4f} | "
                     f"{temperatures.min():.2f} - {temperatures.max():.2f} | "
                     f"{diffs.get('logits', float('nan')):.1e} | {diffs.get('class_maps', float('nan')):.1e} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    demo = Path(argv[0] if argv else "demo_output")
    text = DOC.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: markers {START} / {END} not found")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    DOC.write_text(f"{before}{START}\n{block(demo)}\n{END}{after}")
    print(f"updated {DOC} from {demo}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

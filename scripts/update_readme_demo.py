"""Copy the demo's measured numbers from its output files into README.md (never typed by hand).

    python scripts/update_readme_demo.py demo_t1/demo_results.json demo_t2/demo_results.json [--readme README.md]
        [--figure demo_t2/report/compare_overlays.png]

Each ``demo_results.json`` is what ``thoracic demo`` writes at the end of a run (headline table, heatmap
checks, shortfalls, wall time and time per step, torch threads, CPU, library versions). The rendered section replaces the text
between ``<!-- demo-results:start -->`` and ``<!-- demo-results:end -->`` in the README: one table per
file, with the conditions it was measured under. ``--figure`` also copies the demo report's comparison
figure (every model and heatmap method on the same test images), downscaled, to ``docs/figures/demo_overlays.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

START = "<!-- demo-results:start -->"
END = "<!-- demo-results:end -->"
METRICS = ("IoU>0.3", "IoBB>0.25")


def _number(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _random(row: dict[str, Any], metric: str) -> str:
    sd = row.get(f"{metric} random sd")
    text = _number(row[f"{metric} random"])
    return f"{text} ± {_number(sd)}" if sd is not None else text


def render_record(record: dict[str, Any]) -> str:
    """The Markdown of one demo run: its conditions, then its headline table."""
    threads = record["torch_threads"]
    verdict = ("Every model and heatmap method above the random expectation and the centre box on both "
               "criteria" + (", and no checked heatmap method is flagged by the model randomization test or found "
                             "no more faithful than a random order" if record.get("checks") else "")
               if not record["problems"] else
               "**targets not reached**: " + "; ".join(record["problems"]))
    lines = [
        f"**torch threads {threads}**: {record['minutes']:.1f} min wall time ({record['cpu_minutes']:.1f} min of CPU "
        f"time; load average at the end {record['load_average_1_5_15']}) on {record['cpu']} "
        f"({record['logical_cores']} logical cores), Python {record['python']}, torch {record['torch']}, torchvision {record['torchvision']}; "
        f"models at {record['image_size']} px, output stride {record['output_stride']}. {verdict}.",
        "",
        "| model | heatmap | mean test AUC | IoU > 0.3: model | FP / image | random box | centre box | "
        "IoBB > 0.25: model | FP / image | random box | centre box |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["headline"]:
        cells = [row["model"].replace("_", " "), row["method"], _number(row["mean AUC"])]
        for metric in METRICS:
            model = row[f"{metric} model"]
            above = model is not None and model > max(row[f"{metric} random"], row[f"{metric} centre"])
            cells += [f"**{_number(model)}**" if above else _number(model), _number(row.get(f"{metric} FP")),
                      _random(row, metric), _number(row[f"{metric} centre"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += render_checks(record)
    steps = record.get("steps_seconds") or {}
    if steps:
        lines += ["", "Time per step (s): " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in steps.items()) + "."]
    return "\n".join(lines)


def _signed(value: Any) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:+.3f}"


def render_checks(record: dict[str, Any]) -> list[str]:
    """The heatmap checks (``thoracic explain``) of one demo run: a table of the recorded verdicts."""
    checks = record.get("checks") or []
    if not checks:
        return []
    lines = ["", f"Heatmap checks (`thoracic explain` on {record.get('explain_images')} test images with boxes): "
             "model randomization (rho: median Spearman correlation with the trained maps once every stage is "
             "randomized; flagged at >= 0.5), faithfulness (deletion and insertion gains over a random order), "
             "mask mIoU at heatmap threshold 180 / Otsu's threshold / thresholds tuned on the other half, hit rate:",
             "",
             "| model | heatmap | randomization | rho | faithfulness | deletion gain | insertion gain | "
             "mIoU T180 | mIoU Otsu | mIoU tuned | hit rate |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in checks:
        flagged = row.get("randomization_flagged")
        cells = [row["model"].replace("_", " "), row["method"],
                 "not run" if flagged is None else ("**FLAGGED**" if flagged else "passes"),
                 _number(row.get("randomization_spearman")), str(row.get("faithfulness") or "not run"),
                 _signed(row.get("deletion_gain")), _signed(row.get("insertion_gain")), _number(row.get("miou")),
                 _number(row.get("miou_otsu")), _number(row.get("miou_tuned")), _number(row.get("hit_rate"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def spread(records: list[dict[str, Any]]) -> str:
    """How far the runs' numbers lie apart: per headline column, the largest difference between two runs
    over the models and heatmap methods they share (empty for fewer than two runs)."""
    if len(records) < 2:
        return ""
    columns = [("mean AUC", "mean test AUC"), *((f"{m} model", f"{m} (heatmap threshold 180)") for m in METRICS),
               ("pointing model", "pointing game")]
    parts = []
    for column, label in columns:
        worst, where = 0.0, ""
        keys = set.intersection(*({(r["model"], r["method"]) for r in rec["headline"]} for rec in records))
        for key in sorted(keys):
            values = [next(r.get(column) for r in rec["headline"] if (r["model"], r["method"]) == key)
                      for rec in records]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if len(values) >= 2 and max(values) - min(values) > worst:
                worst, where = max(values) - min(values), f"{key[0].replace('_', ' ')} {key[1]}"
        parts.append(f"{label} {worst:.3f} ({where})" if where else f"{label} 0.000")
    return ("Largest difference between these runs, over the models and heatmap methods: "
            + "; ".join(parts) + ".")


def render(records: list[dict[str, Any]]) -> str:
    tables = [render_record(r) for r in sorted(records, key=lambda r: r["torch_threads"])]
    text = spread(records)
    return "\n\n".join(tables + ([text] if text else []))


#: Longest side of the README's copy of the demo's comparison figure (pixels).
FIGURE_MAX_SIDE = 1600


def copy_figure(source: Path, target: Path, max_side: int = FIGURE_MAX_SIDE) -> Path:
    """``source`` (a report figure) downscaled to ``max_side`` and written as an optimised PNG at ``target``."""
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        scale = max_side / max(image.size)
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="demo_results.json files written by thoracic demo")
    parser.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    parser.add_argument("--figure", type=Path, default=None,
                        help="the demo report's compare_overlays.png, copied to docs/figures/demo_overlays.png")
    args = parser.parse_args(argv)
    records = []
    for path in args.records:
        if not path.is_file():
            print(f"error: {path} does not exist (run thoracic demo first)", file=sys.stderr)
            return 2
        records.append(json.loads(path.read_text()))
    text = args.readme.read_text()
    if START not in text or END not in text:
        print(f"error: {args.readme} lacks the markers {START} and {END}", file=sys.stderr)
        return 2
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{render(records)}\n{END}{tail}")
    print(f"updated {args.readme} from {', '.join(map(str, args.records))}")
    if args.figure is not None:
        if not args.figure.is_file():
            print(f"error: {args.figure} does not exist (the demo report writes compare_overlays.png)", file=sys.stderr)
            return 2
        target = copy_figure(args.figure, args.readme.parent / "docs" / "figures" / "demo_overlays.png")
        print(f"updated {target} from {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the full-scale checklist of ``docs/training.md`` from measured results (never typed by hand).

    python benchmarks/checklist.py                          # re-render the docs block from results/*.json
    python benchmarks/checklist.py --sample DIR/images      # first measure the mean size of some NIH PNGs

Inputs: ``benchmarks/results/prepare.json`` (``bench_prepare.py``: cache-building rate with 1 and 2
worker processes) and ``benchmarks/results/dataset_size.json`` (written here by ``--sample``: the mean
file size of a sample of ChestX-ray14 PNGs). The block between the ``checklist`` markers in
``docs/training.md`` is replaced; ``--check`` only compares (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "training.md"
START, END = "<!-- checklist:start (benchmarks/checklist.py) -->", "<!-- checklist:end -->"

#: Images in ChestX-ray14 (NIH, Data_Entry_2017).
NIH_IMAGES = 112_120
#: Cache sides worth planning for (the paper: 256).
SIZES = (224, 256, 320, 512)


def measure_sample(folder: Path) -> dict:
    """Mean file size of the PNGs in ``folder`` (symlinks followed)."""
    files = sorted(folder.glob("*.png"))
    if not files:
        raise SystemExit(f"no PNG in {folder}")
    total = sum(f.stat().st_size for f in files)
    return {"sample_images": len(files), "sample_bytes": total, "mean_png_bytes": total / len(files),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _rate(prepare: dict, prefix: str) -> float:
    return next(c["candidate"]["rate"] for c in prepare["comparisons"] if c["name"].startswith(prefix))


def render(prepare: dict, dataset: dict | None) -> str:
    """The Markdown block (between the markers) from the two result documents."""
    machine = prepare["machine"]
    one = _rate(prepare, "prepare_cache, 1 worker")
    two = _rate(prepare, "prepare_cache, 2 workers vs 2 x")
    speedup = next(c["ratio"] for c in prepare["comparisons"] if c["name"].startswith("prepare_cache, 2 workers vs 1"))
    lines = [START, "",
             "| item | figure | where it comes from |", "|---|---|---|"]
    if dataset:
        png_gb = dataset["mean_png_bytes"] * NIH_IMAGES / 1e9
        lines.append(f"| disk: the PNGs as distributed | about {png_gb:.0f} GB | {NIH_IMAGES:,} x the mean size "
                     f"of {dataset['sample_images']} ChestX-ray14 PNGs ({dataset['mean_png_bytes'] / 1e3:.0f} kB) |")
    for size in SIZES:
        gb = NIH_IMAGES * size * size / 1e9
        lines.append(f"| disk: the image cache at {size} px | {gb:.1f} GB | {NIH_IMAGES:,} x {size} x {size} "
                     "bytes (uint8), plus a small index and manifest |")
    lines.append(f"| RAM: page cache | the cache's size ({NIH_IMAGES * 256 * 256 / 1e9:.1f} GB at 256 px) | "
                 "the cache is memory-mapped and shared "
                 "by all loader workers: with that much free RAM, epochs after the first read nothing from disk; "
                 "with less, images are re-read from disk |")
    lines.append("| RAM: the training process | not measured at full scale yet | |")
    lines.append(f"| time: `thoracic prepare`, per core | {NIH_IMAGES / one / 60:.0f} core-minutes "
                 f"({one:.0f} images/s on one core) | `bench_prepare.py`, 1024 x 1024 PNGs to 256 px, "
                 f"{machine['cpu_model']}, {prepare['date'][:10]} |")
    lines.append(f"| time: `thoracic prepare`, {prepare['settings']['workers']} workers | "
                 f"{NIH_IMAGES / two / 60:.0f} minutes ({two:.0f} images/s; {speedup:.2f}x one worker) | "
                 "the same benchmark; more cores divide the time further as long as the disk keeps up |")
    lines.append("| time: one training epoch per GPU | not measured yet | no GPU run of the full dataset has "
                 "been timed; `BENCHMARKS.md` has per-step ratios only |")
    lines += ["", END]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} has no checklist markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=Path, help="folder of ChestX-ray14 PNGs to measure the mean file size of")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/training.md is out of date")
    args = parser.parse_args(argv)
    dataset_path = RESULTS / "dataset_size.json"
    if args.sample:
        dataset_path.write_text(json.dumps(measure_sample(args.sample), indent=2) + "\n")
    prepare = json.loads((RESULTS / "prepare.json").read_text())
    dataset = json.loads(dataset_path.read_text()) if dataset_path.is_file() else None
    text = DOC.read_text()
    updated = replace_block(text, render(prepare, dataset))
    if args.check:
        if updated != text:
            print(f"{DOC} is out of date: run python benchmarks/checklist.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(updated)
    print(f"wrote the checklist into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

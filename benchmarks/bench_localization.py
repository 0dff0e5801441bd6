"""Benchmark: weakly supervised localization of 984 box rows at both heatmap thresholds.

Times the exact box extraction (what upsampling to 1024 x 1024, normalising, thresholding at 60 and 180
and labelling 8-connected regions gives, bit for bit) and the scoring (IoU / IoBB accuracy tables, false
positives) for synthetic smooth heatmaps shaped like the models' (8 x 8 CAMs at output stride 32,
16 x 16 at stride 16, 32 x 32 attention-gated maps), without any network forward. Target: < 2 s on one
CPU core. Each size is timed ``--repeats`` times; the line gives the fastest (the least disturbed by
other jobs on a shared machine) and the median. Prints one line per heatmap size; exits 1 if a run
misses the target.

    python benchmarks/bench_localization.py [--rows 984] [--target 2.0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says (set before numpy loads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from thoracic.constants import BOX_CLASS_NAMES, NIH_IMAGE_SIZE  # noqa: E402
from thoracic.evaluation.localization import extract_boxes, localization_accuracy  # noqa: E402


def synthetic_rows(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """984 box rows on ~880 images, ~10% of the images with a second box, like BBox_List_2017."""
    images = [f"{i:08d}_000.png" for i in range(int(rows * 880 / 984))]
    image_ids = list(images) + list(rng.choice(images, size=rows - len(images), replace=False))
    x, y = rng.uniform(0, 700, rows), rng.uniform(0, 700, rows)
    return pd.DataFrame({"image_id": image_ids, "class_name": rng.choice(BOX_CLASS_NAMES, size=rows),
                         "x": x, "y": y, "w": rng.uniform(20, 320, rows), "h": rng.uniform(20, 320, rows),
                         "box_row": np.arange(rows)})


def run(rows: int, heatmap_size: int, seed: int = 0) -> float:
    """Seconds (wall clock) of extraction + scoring for ``rows`` box rows with maps of one size."""
    rng = np.random.default_rng(seed)
    gt = synthetic_rows(rows, rng)
    pairs = gt.drop_duplicates(["image_id", "class_name"])
    # smooth random maps with a few peaks, like CAMs
    heatmaps = {(i, c): ndimage.gaussian_filter(rng.random((heatmap_size, heatmap_size)), heatmap_size / 8)
                for i, c in zip(pairs["image_id"], pairs["class_name"])}
    start = time.perf_counter()
    boxes = extract_boxes(heatmaps, NIH_IMAGE_SIZE, thresholds=(60, 180))
    table = localization_accuracy(gt, boxes)
    elapsed = time.perf_counter() - start
    assert len(table) and len(boxes)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=984)
    parser.add_argument("--target", type=float, default=2.0, help="seconds")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ok = True
    for size in (8, 16, 32):
        times = [run(args.rows, size, seed) for seed in range(max(1, args.repeats))]
        elapsed = min(times)
        ok &= elapsed < args.target
        print(f"localization {args.rows} rows x thresholds (60, 180), {size}x{size} heatmaps -> "
              f"{NIH_IMAGE_SIZE}px: {elapsed:.2f} s (target < {args.target:.1f} s; fastest of {len(times)}, "
              f"median {float(np.median(times)):.2f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: weakly supervised localization of 984 box rows at both heatmap thresholds (issue 5, point 6).

Times box extraction (upsample to 1024 x 1024, normalise, threshold at 60 and 180, regions -> boxes) and
scoring (IoU / IoBB accuracy tables, false positives) for synthetic smooth heatmaps shaped like the
models' (8 x 8 CAMs and 32 x 32 attention-gated maps), without any network forward. Target: < 2 s on
one CPU core. Prints one line per heatmap size; exits 1 if a run misses the target.

    python benchmarks/bench_localization.py [--rows 984] [--target 2.0]
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
    args = parser.parse_args(argv)
    ok = True
    for size in (8, 32):
        elapsed = run(args.rows, size)
        ok &= elapsed < args.target
        print(f"localization {args.rows} rows x thresholds (60, 180), {size}x{size} heatmaps -> "
              f"{NIH_IMAGE_SIZE}px: {elapsed:.2f} s (target < {args.target:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

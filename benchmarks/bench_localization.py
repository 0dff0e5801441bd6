"""Benchmark: weakly supervised localization of 984 box rows at both heatmap thresholds.

Times everything ``thoracic localize`` does after the network (``pipeline.localize_boxes``): the exact box
extraction (what upsampling to 1024 x 1024, normalising, thresholding at 60 and 180 and labelling
8-connected regions gives, bit for bit), the heatmap maxima (pointing game), the scoring (IoU / IoBB
accuracy tables with false positives, per threshold and pooled) and both baselines (the random box over
100 seeded draws), for synthetic smooth heatmaps shaped like the models' (8 x 8 CAMs at output stride
32, 16 x 16 at stride 16, 32 x 32 attention-gated maps). Target: < 2 s on one CPU core. The time is
the process's CPU time (one thread: on a dedicated core, its wall time; on a machine shared with other
jobs the wall time also counts the waits for a core, which the line gives too). Each size is timed
``--repeats`` times; the line gives the fastest and the median. Prints one line per heatmap size; exits
1 if a run misses the target.

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
from thoracic.evaluation.protocol import localize_boxes  # noqa: E402
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS  # noqa: E402


def synthetic_rows(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """984 box rows on ~880 images, ~10% of the images with a second box, like BBox_List_2017."""
    images = [f"{i:08d}_000.png" for i in range(int(rows * 880 / 984))]
    image_ids = list(images) + list(rng.choice(images, size=rows - len(images), replace=False))
    x, y = rng.uniform(0, 700, rows), rng.uniform(0, 700, rows)
    return pd.DataFrame({"image_id": image_ids, "class_name": rng.choice(BOX_CLASS_NAMES, size=rows),
                         "x": x, "y": y, "w": rng.uniform(20, 320, rows), "h": rng.uniform(20, 320, rows),
                         "box_row": np.arange(rows)})


def run(rows: int, heatmap_size: int, seed: int = 0) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``localize_boxes`` for ``rows`` box rows with maps of one size."""
    rng = np.random.default_rng(seed)
    gt = synthetic_rows(rows, rng).assign(original_width=NIH_IMAGE_SIZE, original_height=NIH_IMAGE_SIZE)
    pairs = gt.drop_duplicates(["image_id", "class_name"])
    # smooth random maps with a few peaks, like CAMs
    heatmaps = {(i, c): ndimage.gaussian_filter(rng.random((heatmap_size, heatmap_size)), heatmap_size / 8)
                for i, c in zip(pairs["image_id"], pairs["class_name"])}
    start, wall = time.process_time(), time.perf_counter()
    tables = localize_boxes(gt, heatmaps, "bench", thresholds=HEATMAP_THRESHOLDS)
    elapsed, wall = time.process_time() - start, time.perf_counter() - wall
    assert len(tables.accuracy) and len(tables.boxes) and tables.scores["box_row"].nunique() == rows
    return elapsed, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=984)
    parser.add_argument("--target", type=float, default=2.0, help="seconds")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    ok = True
    for size in (8, 16, 32):
        times = [run(args.rows, size, seed) for seed in range(max(1, args.repeats))]
        cpu = [t[0] for t in times]
        elapsed = min(cpu)
        ok &= elapsed < args.target
        print(f"localization {args.rows} rows x thresholds {HEATMAP_THRESHOLDS}, {size}x{size} heatmaps -> "
              f"{NIH_IMAGE_SIZE}px: {elapsed:.2f} s (target < {args.target:.1f} s; CPU time, fastest of "
              f"{len(times)}, median {float(np.median(cpu)):.2f} s; wall {min(t[1] for t in times):.2f} s)",
              flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

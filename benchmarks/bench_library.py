"""Benchmark 7: library tasks without a network: bootstrap AUC CIs, phantom generation.

Two CPU tasks whose speed the docs promise, each timed in alternation with a plain baseline that does
the same work the obvious way (medians of repeats, see common.py); metadata reading is benchmark 9
(bench_datasets.py):

- **bootstrap**: ``compute_auc`` with 1,000 bootstrap resamples of 25,596 images x 14 classes (the size
  of the official test split, ``thoracic evaluate``'s default resamples; vectorised: one sort per class,
  a weighted Mann-Whitney statistic per resample) vs. a loop calling scikit-learn's ``roc_auc_score``
  per class and resample (rate: resamples/s). Target: >= 10x.
- **phantoms**: ``generate_phantom_dataset`` at 512 px on one process (drawing + PNG writing) vs. only
  writing the same number of 512 px phantom PNGs (rate: images/s; informational: the share of the time
  that is PNG encoding).

The absolute times (seconds on this machine, one core) are in the notes of the result.

    python benchmarks/bench_library.py [--quick] [--out results/library.json]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "library"
BOOTSTRAP_TARGET = 10.0


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"auc_images": 500, "auc_classes": 14, "resamples": 20, "loop_resamples": 2,
                "phantom_size": 64, "phantoms_per_call": 2, "repeats": 2}
    # the official test split (25,596 images) with `thoracic evaluate`'s default 1,000 resamples
    return {"auc_images": 25_596, "auc_classes": 14, "resamples": 1_000, "loop_resamples": 4,
            "phantom_size": 512, "phantoms_per_call": 6, "repeats": 5}


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------


def bootstrap_comparison(settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from thoracic.evaluation.classification import compute_auc

    n, c = settings["auc_images"], settings["auc_classes"]
    rng = np.random.default_rng(0)
    labels = (rng.random((n, c)) < 0.3).astype(int)
    scores = labels * 0.5 + rng.random((n, c))  # AUC about 0.85, no ties: like a trained model's
    names = tuple(f"class{j}" for j in range(c))
    resamples, loop_resamples = settings["resamples"], settings["loop_resamples"]

    def vectorised() -> None:
        compute_auc(labels, scores, class_names=names, bootstrap=resamples, seed=0)

    def sklearn_loop() -> None:
        draws = np.random.default_rng(0).integers(0, n, size=(loop_resamples, n))
        for index in draws:
            for j in range(c):
                roc_auc_score(labels[index, j], scores[index, j])

    times = common.interleaved({"vectorised": vectorised, "loop": sklearn_loop}, repeats=settings["repeats"])
    item = common.comparison(
        f"bootstrap CIs: compute_auc vs a scikit-learn loop ({n:,} images x {c} classes)",
        common.measurement(resamples, times["vectorised"], "resamples/s"),
        common.measurement(loop_resamples, times["loop"], "resamples/s"), BOOTSTRAP_TARGET,
        f"compute_auc(bootstrap={resamples}) vs roc_auc_score per class on each of {loop_resamples} "
        "resamples of the images; rate = resamples per second",
    )
    note = (f"bootstrap: {resamples} resamples of {n:,} images x {c} classes in "
            f"{common.median(times['vectorised']):.2f} s (the scikit-learn loop: "
            f"{common.median(times['loop']) / loop_resamples * resamples:.1f} s for as many)")
    return item, note


# --------------------------------------------------------------------------------------------------
# Phantoms
# --------------------------------------------------------------------------------------------------


def phantom_comparison(settings: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], str]:
    from thoracic.data.synth import generate_phantom_dataset, render_phantom, save_png

    size, count = settings["phantom_size"], settings["phantoms_per_call"]
    pixels = [render_phantom(size, 0, k, k).pixels for k in range(count)]

    def generate() -> None:
        generate_phantom_dataset(workdir / "phantoms", count, size, seed=0, num_workers=1, overwrite=True,
                                 progress=False)

    def write_only() -> None:
        folder = workdir / "pngs"
        folder.mkdir(exist_ok=True)
        for k, image in enumerate(pixels):
            save_png(image, folder / f"{k}.png")

    times = common.interleaved({"generate": generate, "write": write_only}, repeats=settings["repeats"])
    item = common.comparison(
        f"phantoms: generate_phantom_dataset vs writing as many PNGs ({size} px, one process)",
        common.measurement(count, times["generate"], "images/s"), common.measurement(count, times["write"], "images/s"),
        None, "drawing the anatomy and findings, PNG writing, CSVs and lists vs only writing the PNGs "
              "(the ratio is the PNG share of the generator's time)",
    )
    seconds = common.median(times["generate"]) / count
    note = (f"phantoms: {seconds * 1000:.0f} ms per {size} px image on one process, PNG writing included "
            f"({2000 * seconds / 60:.1f} min for 2,000 images)")
    return item, note


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Time the two tasks against their baselines; return the result document."""
    settings = settings_for(quick)
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="bench_library_")) if own else Path(workdir)
    try:
        results = [bootstrap_comparison(settings), phantom_comparison(settings, folder)]
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    import torch

    settings = {**settings, "torch_threads": torch.get_num_threads()}
    document = common.result_document(NAME, quick, settings, [item for item, _ in results],
                                      [note for _, note in results])
    return common.add_load_note(document)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

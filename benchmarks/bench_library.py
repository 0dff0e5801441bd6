"""Benchmark 7: library tasks without a network: bootstrap AUC CIs, metadata loading, phantom generation.

Three CPU tasks whose speed the docs promise, each timed in alternation with a plain baseline that does
the same work the obvious way (medians of repeats, see common.py):

- **bootstrap**: ``compute_auc`` with 1,000 bootstrap resamples of 25,596 images x 14 classes (the size
  of the official test split, ``thoracic evaluate``'s default resamples; vectorised: one sort per class,
  a weighted Mann-Whitney statistic per resample) vs. a loop calling scikit-learn's ``roc_auc_score``
  per class and resample (rate: resamples/s). Target: >= 10x.
- **metadata**: ``load_chestxray14`` (parsing, checks, label matrix, split, box rows) on the real
  112,120-row metadata (the complete NIH metadata folder; when absent, a synthetic folder of the same size
  and layout) vs. the bare ``pandas.read_csv`` of the same files (rate: rows/s; informational).
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
#: Rows of the real Data_Entry_2017_v2020.csv (the synthetic stand-in has as many).
NIH_ROWS = 112_120
NIH_BOXES = 984


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"auc_images": 500, "auc_classes": 14, "resamples": 20, "loop_resamples": 2,
                "metadata_rows": 2_000, "phantom_size": 64, "phantoms_per_call": 2, "repeats": 2}
    # the official test split (25,596 images) with `thoracic evaluate`'s default 1,000 resamples
    return {"auc_images": 25_596, "auc_classes": 14, "resamples": 1_000, "loop_resamples": 4,
            "metadata_rows": NIH_ROWS, "phantom_size": 512, "phantoms_per_call": 6, "repeats": 5}


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
# Metadata
# --------------------------------------------------------------------------------------------------


def synthetic_metadata(folder: Path, rows: int, seed: int = 0) -> Path:
    """A metadata-only ChestX-ray14 folder with ``rows`` data-entry rows and up to 984 box rows.

    Same headers and column formats as the NIH files (labels drawn with the phantom generator's
    NIH-like prevalence, 2-3 images per patient, 22% of the patients in the test list); no images.
    """
    import numpy as np

    from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
    from thoracic.data.metadata import BBOX_HEADER, DATA_ENTRY_HEADER
    from thoracic.data.synth import PREVALENCE

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    patients = np.sort(rng.integers(1, rows // 2, size=rows))
    follow_up = np.zeros(rows, dtype=int)
    for k in range(1, rows):
        follow_up[k] = follow_up[k - 1] + 1 if patients[k] == patients[k - 1] else 0
    ids = [f"{p:08d}_{f:03d}.png" for p, f in zip(patients, follow_up)]
    positive = rng.random((rows, len(CLASS_NAMES))) < np.array([PREVALENCE[n] for n in CLASS_NAMES])
    test = rng.random(rows // 2 + 1) < 0.22
    in_test = test[patients]
    test_rows = np.flatnonzero(in_test)
    box_rows = rng.choice(test_rows, size=min(NIH_BOXES, len(test_rows)), replace=True)
    box_classes = [str(rng.choice(BOX_CLASS_NAMES)) for _ in box_rows]
    for row, name in zip(box_rows, box_classes):  # as in NIH's file, a box's class is among its image's labels
        positive[row, CLASS_NAMES.index(name)] = True
    findings = ["|".join(n for n, p in zip(CLASS_NAMES, row) if p) or "No Finding" for row in positive]
    ages, sexes = rng.integers(1, 95, size=rows), rng.choice(["M", "F"], size=rows)
    views = rng.choice(["PA", "AP"], size=rows, p=[0.6, 0.4])
    lines = [DATA_ENTRY_HEADER] + [
        f"{i},{f},{u},{p},{a},{s},{v},2500,2048,0.143,0.143"
        for i, f, u, p, a, s, v in zip(ids, findings, follow_up, patients, ages, sexes, views)]
    (folder / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (folder / "train_val_list.txt").write_text("\n".join(i for i, t in zip(ids, in_test) if not t) + "\n")
    (folder / "test_list.txt").write_text("\n".join(i for i, t in zip(ids, in_test) if t) + "\n")
    boxes = [f"{ids[row]},{name},{rng.uniform(0, 700):.3f},{rng.uniform(0, 700):.3f},"
             f"{rng.uniform(20, 300):.3f},{rng.uniform(20, 300):.3f}" for row, name in zip(box_rows, box_classes)]
    (folder / "BBox_List_2017.csv").write_text("\n".join([BBOX_HEADER, *boxes]) + "\n")
    return folder


def metadata_comparison(settings: dict[str, Any], workdir: Path, quick: bool) -> tuple[dict[str, Any], str]:
    import pandas as pd

    from thoracic.data.metadata import find_metadata_files, load_chestxray14

    real = common.SHARED_NIH / "metadata"
    if not quick and (real / "Data_Entry_2017_v2020.csv").is_file():
        root, what = real, "the real ChestX-ray14 metadata (the complete NIH metadata folder)"
    else:
        root = synthetic_metadata(workdir / "metadata", settings["metadata_rows"])
        what = f"a synthetic metadata folder of {settings['metadata_rows']:,} rows (real metadata not used)"
    files = find_metadata_files(root)
    rows = len(load_chestxray14(root, check_box_images=False))

    def load() -> None:
        load_chestxray14(root, check_box_images=False)  # no images here: nothing to check boxes against

    def read_csv() -> None:
        pd.read_csv(files.data_entry, dtype=str, keep_default_na=False)
        pd.read_csv(files.bbox, dtype=str, keep_default_na=False)
        files.train_val.read_text().split()
        files.test.read_text().split()

    times = common.interleaved({"load": load, "read_csv": read_csv}, repeats=settings["repeats"])
    item = common.comparison(
        f"metadata: load_chestxray14 vs pandas.read_csv of the same files ({rows:,} rows)",
        common.measurement(rows, times["load"], "rows/s"), common.measurement(rows, times["read_csv"], "rows/s"),
        None, f"parsing, checks, the N x 14 label matrix, split and box rows vs the bare CSV reads; {what}",
    )
    note = f"metadata: {rows:,} rows loaded in {common.median(times['load']):.2f} s; {what}"
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
    """Time the three tasks against their baselines; return the result document."""
    settings = settings_for(quick)
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="bench_library_")) if own else Path(workdir)
    try:
        results = [bootstrap_comparison(settings), metadata_comparison(settings, folder, quick),
                   phantom_comparison(settings, folder)]
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    import torch

    settings = {**settings, "torch_threads": torch.get_num_threads()}
    document = common.result_document(NAME, quick, settings, [item for item, _ in results],
                                      [note for _, note in results])
    load = document["machine"].get("load_average_1_5_15")
    document["notes"].append(
        f"absolute times depend on the machine's load (load average {load} on {document['machine']['logical_cores']} "
        "cores when the benchmark started); the ratios do not, their two sides ran in alternation")
    return document


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

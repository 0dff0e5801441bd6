"""Benchmark 9: reading datasets: JPEG decoding at a reduced size, metadata reading against pandas.

Three figures, each timed in alternation with its baseline (medians of repeats, see common.py):

- **JPEG**: ``load_resized(path, 256)`` (what ``thoracic prepare`` stores: a JPEG decoded at a reduced
  size in the DCT domain, ``Image.draft``, then the antialiased resize) vs the full decode + the same
  resize (``load_resized(..., draft=False)``), on phantom JPEGs of CheXpert's size (2,500 x 2,048 px,
  quality 95), one process (rate: images/s). Target: >= 1.5x.
- **ChestX-ray14 metadata**: ``load_chestxray14`` (parsing, checks, label matrix, split, box rows) on the
  real 112,120-row metadata (the complete NIH metadata folder; when absent, a synthetic folder of the same
  size and layout) vs ``pandas.read_csv`` of the same files, every column as text (rate: rows/s). Every
  command pays this read. Target: >= 0.5x (within 2x of pandas).
- **MIMIC-CXR-JPG metadata**: ``load_dataset(root, "mimic")`` on a phantom metadata folder of 377,110
  images (the size of MIMIC-CXR-JPG: the three gzipped CSVs, random values in the real formats, no
  images) vs ``pandas.read_csv`` of the three files. Target: >= 0.5x.

    python benchmarks/bench_datasets.py [--quick] [--out results/datasets.json]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "datasets"
JPEG_TARGET = 1.5
METADATA_TARGET = 0.5
#: Rows of the real Data_Entry_2017_v2020.csv (the synthetic stand-in has as many) and box rows.
NIH_ROWS = 112_120
NIH_BOXES = 984
#: Images of MIMIC-CXR-JPG (PhysioNet page) and its studies, about 1.66 images per study.
MIMIC_IMAGES = 377_110
MIMIC_STUDIES = 227_827


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"jpeg_images": 2, "jpeg_size": (500, 400), "cache_size": 64, "metadata_rows": 2_000,
                "mimic_images": 3_000, "repeats": 2}
    return {"jpeg_images": 6, "jpeg_size": (2500, 2048), "cache_size": 256, "metadata_rows": NIH_ROWS,
            "mimic_images": MIMIC_IMAGES, "repeats": 5}


# --------------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------------


def jpeg_comparison(settings: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], str]:
    from PIL import Image

    from thoracic.data.images import load_resized
    from thoracic.data.synth import render_phantom

    count, size, target = settings["jpeg_images"], settings["jpeg_size"], settings["cache_size"]
    paths = []
    for k in range(count):
        path = workdir / f"phantom_{k}.jpg"
        Image.fromarray(render_phantom(512, 0, k, k).pixels).resize(size, Image.Resampling.BICUBIC).save(
            path, quality=95)
        paths.append(path)

    def reduced() -> None:
        for path in paths:
            load_resized(path, target)

    def full() -> None:
        for path in paths:
            load_resized(path, target, draft=False)

    times = common.interleaved({"draft": reduced, "full": full}, repeats=settings["repeats"])
    item = common.comparison(
        f"JPEG {size[0]} x {size[1]} to {target} px: reduced-size decode + resize vs full decode + resize",
        common.measurement(count, times["draft"], "images/s"), common.measurement(count, times["full"], "images/s"),
        JPEG_TARGET, "load_resized (Image.draft: DCT-domain scaling keeping >= 2x the target, then the antialiased "
                     "resize) vs the same resize after a full decode; one process")
    note = (f"JPEG: {1000 * common.median(times['draft']) / count:.0f} ms per image with the reduced-size decode, "
            f"{1000 * common.median(times['full']) / count:.0f} ms with the full decode")
    return item, note


# --------------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------------


def synthetic_nih_metadata(folder: Path, rows: int, seed: int = 0) -> Path:
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


def synthetic_mimic_metadata(folder: Path, images: int, seed: int = 0) -> Path:
    """A metadata-only MIMIC-CXR-JPG folder: the three gzipped CSVs for ``images`` images (1.66 per study,
    2-4 studies per subject) with the real headers and value formats (CheXpert cells 1.0 / 0.0 / -1.0 /
    blank); no images."""
    import numpy as np
    import pandas as pd

    from thoracic.data.datasets.mimic import LABEL_COLUMNS

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    studies = max(1, round(images * MIMIC_STUDIES / MIMIC_IMAGES))
    study_of_image = np.sort(rng.integers(0, studies, size=images))
    study_ids = 50_000_000 + np.arange(studies) * 17 % 9_000_000
    subject_of_study = np.sort(rng.integers(0, max(1, studies // 3), size=studies))
    subject_ids = 10_000_000 + np.arange(studies) * 7919 % 9_000_000
    hexes = rng.integers(0, 16 ** 8, size=(images, 5))
    dicom = ["-".join(f"{v:08x}" for v in row) for row in hexes]
    view = rng.choice(["PA", "AP", "LATERAL", "LL", ""], size=images, p=[0.3, 0.4, 0.25, 0.04, 0.01])
    meta = pd.DataFrame({
        "dicom_id": dicom, "subject_id": subject_ids[subject_of_study[study_of_image]],
        "study_id": study_ids[study_of_image], "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "ViewPosition": view, "Rows": 3056, "Columns": 2544, "StudyDate": 21800506, "StudyTime": 213014.531,
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)", "ViewCodeSequence_CodeMeaning": "postero-anterior",
        "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
    cells = rng.choice(["1.0", "0.0", "-1.0", ""], size=(studies, len(LABEL_COLUMNS)), p=[0.08, 0.12, 0.04, 0.76])
    labels = pd.DataFrame(cells, columns=list(LABEL_COLUMNS))
    labels.insert(0, "study_id", study_ids)
    labels.insert(0, "subject_id", subject_ids[subject_of_study])
    split = rng.choice(["train", "validate", "test"], size=studies, p=[0.97, 0.01, 0.02])[study_of_image]
    splits = pd.DataFrame({"dicom_id": dicom, "study_id": meta["study_id"], "subject_id": meta["subject_id"],
                           "split": split})
    for frame, name in ((meta, "metadata"), (labels, "chexpert"), (splits, "split")):
        frame.to_csv(folder / f"mimic-cxr-2.0.0-{name}.csv.gz", index=False,
                     compression={"method": "gzip", "compresslevel": 1, "mtime": 0})
    return folder


def metadata_comparisons(settings: dict[str, Any], workdir: Path, quick: bool) -> tuple[list[dict[str, Any]], list[str]]:
    import pandas as pd

    from thoracic.data.datasets import load_dataset
    from thoracic.data.metadata import find_metadata_files, load_chestxray14

    real = common.SHARED_NIH / "metadata"
    if not quick and (real / "Data_Entry_2017_v2020.csv").is_file():
        nih, what = real, "the real ChestX-ray14 metadata (the complete NIH metadata folder)"
    else:
        nih = synthetic_nih_metadata(workdir / "nih", settings["metadata_rows"])
        what = f"a synthetic metadata folder of {settings['metadata_rows']:,} rows (real metadata not used)"
    files = find_metadata_files(nih)
    nih_rows = len(load_chestxray14(nih, check_box_images=False))
    mimic = synthetic_mimic_metadata(workdir / "mimic", settings["mimic_images"])
    mimic_files = sorted(mimic.glob("mimic-cxr-2.0.0-*.csv.gz"))
    mimic_rows = len(load_dataset(mimic, "mimic", views=()))

    def load_nih() -> None:
        load_chestxray14(nih, check_box_images=False)  # no images here: nothing to check boxes against

    def read_nih() -> None:
        pd.read_csv(files.data_entry, dtype=str, keep_default_na=False)
        pd.read_csv(files.bbox, dtype=str, keep_default_na=False)
        files.train_val.read_text().split()
        files.test.read_text().split()

    def load_mimic() -> None:
        load_dataset(mimic, "mimic", views=())

    def read_mimic() -> None:
        for path in mimic_files:
            pd.read_csv(path, dtype=str, keep_default_na=False)

    times = common.interleaved({"load_nih": load_nih, "read_nih": read_nih, "load_mimic": load_mimic,
                                "read_mimic": read_mimic}, repeats=settings["repeats"])
    items = [
        common.comparison(
            f"ChestX-ray14 metadata: load_chestxray14 vs pandas.read_csv of the same files ({nih_rows:,} rows)",
            common.measurement(nih_rows, times["load_nih"], "rows/s"),
            common.measurement(nih_rows, times["read_nih"], "rows/s"), METADATA_TARGET,
            f"parsing, checks, the N x 14 label matrix, split and box rows vs the bare CSV reads (text); {what}"),
        common.comparison(
            f"MIMIC-CXR-JPG metadata: load_dataset vs pandas.read_csv of the same files ({mimic_rows:,} images)",
            common.measurement(mimic_rows, times["load_mimic"], "rows/s"),
            common.measurement(mimic_rows, times["read_mimic"], "rows/s"), METADATA_TARGET,
            "the three gzipped CSVs joined, checked, the N x 14 float label matrix (policy, No Finding rule), the "
            "official split vs the bare CSV reads (text); a phantom metadata folder of MIMIC-CXR-JPG's size"),
    ]
    notes = [f"ChestX-ray14 metadata: {nih_rows:,} rows loaded in {common.median(times['load_nih']):.2f} s "
             f"(pandas: {common.median(times['read_nih']):.2f} s); {what}",
             f"MIMIC-CXR-JPG metadata: {mimic_rows:,} images loaded in {common.median(times['load_mimic']):.2f} s "
             f"(pandas: {common.median(times['read_mimic']):.2f} s)"]
    return items, notes


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Time the three figures against their baselines; return the result document."""
    settings = settings_for(quick)
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="bench_datasets_")) if own else Path(workdir)
    try:
        jpeg, jpeg_note = jpeg_comparison(settings, folder)
        metadata, metadata_notes = metadata_comparisons(settings, folder, quick)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    document = common.result_document(NAME, quick, {**settings, "jpeg_size": "x".join(map(str, settings["jpeg_size"]))},
                                      [jpeg, *metadata], [jpeg_note, *metadata_notes])
    return common.add_load_note(document)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

"""RSNA Pneumonia Detection Challenge (Shih et al. 2019) as Kaggle distributes it (stage 2)::

    ROOT/
      stage_2_train_labels.csv            patientId, x, y, width, height, Target: one row per box, or one
                                          row without coordinates for an image without box
      stage_2_detailed_class_info.csv     patientId, class: Lung Opacity / No Lung Opacity / Not Normal / Normal
      stage_2_train_images/<patientId>.dcm

Each ``patientId`` is one image (the Kaggle data page). Label: ``Pneumonia`` = ``Target`` (evidence of
pneumonia: the lung opacities the radiologists boxed). Boxes: x, y, width, height in the pixels of the
1024 x 1024 DICOM files, one row per CSV row with ``Target`` = 1 (the adjudicated boxes: no reader ids).
The detailed class is the table's ``detailed_class`` column. Split: the stage-2 test images carry no
labels, so a seeded patient-wise split of the training images
(:func:`thoracic.data.datasets.base.seeded_patient_split`). Sex, age and view are in the DICOM headers
only: empty, NaN and ``FRONTAL`` (every image is frontal, PA or AP). The images are ChestX-ray14 images
(Shih et al. 2019): do not test on RSNA a model trained on ChestX-ray14, or the reverse, without
removing them (docs/data.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.data.collection import BOX_COLUMNS, ChestXrayCollection, preview
from thoracic.data.datasets.base import (
    TEST_FRACTION,
    DatasetReader,
    label_matrix,
    list_images,
    paths_on_disk,
    seeded_patient_split,
)
from thoracic.data.metadata import check_boxes_inside
from thoracic.data.tables import clean_text, find_file, read_csv
from thoracic.errors import DataError

LABELS_NAME = "stage_2_train_labels.csv"
CLASSES_NAME = "stage_2_detailed_class_info.csv"
IMAGE_FOLDER = "stage_2_train_images"
LABEL_COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
CLASS_NAMES: tuple[str, ...] = ("Pneumonia",)
#: The size of every RSNA image (the boxes are checked against it when the files are not read).
IMAGE_SIZE = 1024


class RsnaReader(DatasetReader):
    """RSNA Pneumonia: ``stage_2_train_labels.csv`` (boxes and Target), the detailed classes, DICOM images."""

    kind = "rsna"
    title = "RSNA Pneumonia"
    signature = LABELS_NAME
    documentation = ("https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/data and Shih et al. 2019, "
                     "Radiology: Artificial Intelligence 1(1):e180041")
    image_format = "DICOM"

    def matches(self, root: Path) -> bool:
        return find_file(root, [LABELS_NAME]) is not None

    def metadata_files(self, root: Path) -> list[Path]:
        labels = find_file(root, [LABELS_NAME])
        if labels is None:
            raise DataError(f"{root}: {LABELS_NAME} not found; expected the RSNA Pneumonia layout ({LABELS_NAME}, "
                            f"{CLASSES_NAME} and {IMAGE_FOLDER}/)")
        classes = find_file(root, [CLASSES_NAME])
        return [labels] + ([classes] if classes is not None else [])

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXrayCollection:
        files = self.metadata_files(root)
        path = files[0]
        frame = read_csv(path, LABEL_COLUMNS, numbers=("x", "y", "width", "height", "Target"),
                         what="the RSNA Pneumonia train labels CSV")
        if len(frame) == 0:
            raise DataError(f"{path}: no data rows (empty dataset)")
        frame["patientId"] = clean_text(frame["patientId"])
        target = label_matrix(frame, ["Target"], path, allowed=(0.0, 1.0))[:, 0]
        line = np.arange(len(frame), dtype=np.int64) + 2
        if np.isnan(target).any():
            row = int(np.flatnonzero(np.isnan(target))[0])
            raise DataError(f"{path}: Target of data row {row + 1} (CSV line {line[row]}) is empty; expected 0 or 1")
        codes, patients = pd.factorize(frame["patientId"], sort=False)
        first = np.full(len(patients), -1, dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes))[::-1]
        per_image = target[first]
        differs = target != per_image[codes]
        coords = frame[["x", "y", "width", "height"]].to_numpy(dtype=np.float64)
        boxed = ~np.isnan(coords).all(axis=1)
        problems = [
            (differs, "a Target that differs from the image's other rows"),
            (boxed & (target == 0), "coordinates with Target 0"),
            (~boxed & (target == 1), "Target 1 without coordinates"),
            (boxed & np.isnan(coords).any(axis=1), "some coordinates missing"),
        ]
        with np.errstate(invalid="ignore"):
            problems.append((boxed & ~((coords[:, 2] > 0) & (coords[:, 3] > 0) & (coords[:, 0] >= 0)
                                       & (coords[:, 1] >= 0)), "a box with width or height <= 0 or a negative corner"))
        for bad, what in problems:
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataError(f"{path}: line {line[row]} (patientId {frame['patientId'].iat[row]}) has {what}; "
                                f"expected {', '.join(LABEL_COLUMNS)} with a box per row of Target 1")

        image_ids = np.asarray(patients, dtype=object)
        on_disk = list_images([root / IMAGE_FOLDER], (".dcm",))
        stems = {Path(name).stem: p for name, p in on_disk.items()}
        table = pd.DataFrame({
            "image_id": image_ids,
            "path": paths_on_disk(image_ids, stems),
            "patient_id": image_ids,
            "sex": "",
            "age": np.nan,
            "view": "FRONTAL",
            "split": seeded_patient_split(image_ids),
            "detailed_class": self._detailed_classes(files, image_ids),
        })
        boxes = pd.DataFrame({
            "image_id": frame["patientId"].to_numpy(dtype=object)[boxed],
            "class_name": CLASS_NAMES[0],
            "class_index": np.zeros(int(boxed.sum()), dtype=np.int64),
            "x": coords[boxed, 0], "y": coords[boxed, 1], "w": coords[boxed, 2], "h": coords[boxed, 3],
            "box_row": np.flatnonzero(boxed).astype(np.int64),
            "reader_id": "",
            "source": str(path),
            "csv_line": line[boxed],
        }, columns=list(BOX_COLUMNS))
        if check_box_images:  # every RSNA image is 1024 x 1024 (the Kaggle data page)
            check_boxes_inside(boxes, {i: (IMAGE_SIZE, IMAGE_SIZE) for i in boxes["image_id"]})
        return ChestXrayCollection(root=root, kind=self.kind, table=table, labels=per_image[:, None].astype(np.float32),
                                   class_names=CLASS_NAMES, boxes=boxes, sources=tuple(files),
                                   split_rule=f"seeded patient-wise, {TEST_FRACTION:.0%} of the patients in test")

    def _detailed_classes(self, files: list[Path], image_ids: np.ndarray) -> np.ndarray:
        if len(files) < 2:
            return np.full(len(image_ids), "", dtype=object)
        path = files[1]
        frame = read_csv(path, ("patientId", "class"), what="the RSNA Pneumonia detailed class CSV")
        frame = frame.drop_duplicates("patientId")
        rows = pd.Index(clean_text(frame["patientId"])).get_indexer(image_ids)
        if (rows < 0).any():
            absent = [i for i, r in zip(image_ids, rows) if r < 0]
            raise DataError(f"{path}: no row for {len(absent)} image(s) of {LABELS_NAME}: {preview(absent)}")
        return frame["class"].str.strip().to_numpy(dtype=object)[rows]

    def image_location(self, root: Path) -> str:
        return f"{root / IMAGE_FOLDER} (<patientId>.dcm)"

"""PadChest (Bustos et al. 2020) as BIMCV distributes it::

    ROOT/
      PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]   one row per image
      0/ 1/ ... 54/                                              ImageDir: the unpacked zip files
        216840111366964012283393834152009033102258826_00-059-087.png ...   16-bit grayscale PNG

Columns read (the BIMCV file's header; the PadChest authors' README lists them): ``ImageID``, ``ImageDir``,
``StudyDate_DICOM``, ``StudyID``, ``PatientID``, ``PatientBirth``, ``PatientSex_DICOM``, ``Projection``,
``Labels`` and, when present, ``MethodLabel`` (``Physician``: labels read by a physician, 27% of the
reports; ``RNN_model``: by the authors' text model) and ``Pediatric``.

Labels: ``Labels`` is a list of report terms (``['pleural effusion', 'cardiomegaly']``, ``['normal']``).
The label names are every term the file holds, in alphabetical order (``normal`` and ``exclude``
included, as the file writes them; choose the ones to train on with ``data.classes``); an image is
positive for the terms of its list and negative for the others. A row whose list is empty or missing
is not labelled (NaN row). PadChest has no uncertain labels. An image's file is ``<ImageDir>/<ImageID>``
(also found directly in ``ROOT`` or ``ROOT/images``). Views: ``Projection`` (``PA``, ``L``, ``AP``,
``AP_horizontal``: supine AP, counted frontal, ``COSTAL``, ...). Split: none is distributed, so a seeded
patient-wise one (:func:`thoracic.data.datasets.base.seeded_patient_split`: 20% of the patients in test).
Age: the study year minus ``PatientBirth``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.data.collection import ChestXrayCollection, empty_boxes, preview
from thoracic.data.datasets.base import (
    TEST_FRACTION,
    DatasetReader,
    list_images,
    normalise_sex,
    paths_on_disk,
    seeded_patient_split,
)
from thoracic.data.tables import read_csv
from thoracic.errors import DataError

FILE_PATTERN = "PADCHEST_chest_x_ray_images_labels*.csv*"
FILE_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
COLUMNS: tuple[str, ...] = ("ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
                            "PatientSex_DICOM", "Projection", "Labels")
_TERM = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def parse_label_lists(labels: pd.Series) -> tuple[list[frozenset[str]], np.ndarray]:
    """The set of terms of each distinct ``Labels`` value and the row -> value codes.

    ``"['pleural effusion', ' cardiomegaly']"`` -> ``{"pleural effusion", "cardiomegaly"}`` (terms stripped;
    empty terms dropped); a missing or empty value -> the empty set.
    """
    codes, values = pd.factorize(labels.fillna(""), sort=False)
    terms = [frozenset(t.strip() for pair in _TERM.findall(str(v)) for t in pair if t.strip())
             for v in np.asarray(values, dtype=object)]
    return terms, codes


class PadChestReader(DatasetReader):
    """PadChest: the 160K labels CSV (label lists, Projection), 16-bit PNGs in the ImageDir folders."""

    kind = "padchest"
    title = "PadChest"
    signature = f"{FILE_NAME}[.gz]"
    documentation = ("https://bimcv.cipf.es/bimcv-projects/padchest/ and the PadChest authors' README "
                     "(github.com/auriml/Rx-thorax-automatic-captioning); Bustos et al. 2020, Medical Image Analysis")
    image_format = "PNG (16-bit)"

    def _file(self, root: Path) -> Path | None:
        found = sorted(p for p in root.glob(FILE_PATTERN) if p.is_file() and p.name.endswith((".csv", ".csv.gz")))
        return found[0] if found else None

    def matches(self, root: Path) -> bool:
        return self._file(root) is not None

    def metadata_files(self, root: Path) -> list[Path]:
        path = self._file(root)
        if path is None:
            raise DataError(f"{root}: no {FILE_NAME}[.gz] (or another {FILE_PATTERN}) found; expected the PadChest "
                            "layout (the labels CSV beside the ImageDir folders 0/ ... 54/)")
        return [path]

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXrayCollection:
        (path,) = self.metadata_files(root)
        frame = read_csv(path, COLUMNS, what="the PadChest labels CSV")
        if len(frame) == 0:
            raise DataError(f"{path}: no data rows (empty dataset)")
        image_id = frame["ImageID"].str.strip()
        duplicated = image_id.duplicated()
        if duplicated.any():
            raise DataError(f"{path}: ImageID(s) listed twice: {preview(image_id[duplicated].tolist())}")
        terms, codes = parse_label_lists(frame["Labels"])
        class_names = tuple(sorted(set().union(*terms)))
        if not class_names:
            raise DataError(f"{path}: no label in the Labels column; expected lists like ['pleural effusion']")
        column = {name: i for i, name in enumerate(class_names)}
        per_value = np.zeros((len(terms), len(class_names)), dtype=np.float32)
        for row, names in enumerate(terms):
            if names:
                per_value[row, [column[n] for n in names]] = 1.0
            else:
                per_value[row] = np.nan  # no list: not labelled
        labels = per_value[codes]

        folders = [root / d for d in sorted(set(frame["ImageDir"].str.strip())) if d] + [root, root / "images"]
        on_disk = list_images(folders, (".png",))
        study_year = pd.to_numeric(frame["StudyDate_DICOM"].str.strip().str[:4], errors="coerce")
        birth = pd.to_numeric(frame["PatientBirth"].str.strip(), errors="coerce")
        patient = frame["PatientID"].str.strip()
        table = pd.DataFrame({
            "image_id": image_id.to_numpy(dtype=object),
            "path": paths_on_disk(image_id.to_numpy(dtype=object), on_disk),
            "patient_id": patient.to_numpy(dtype=object),
            "study_id": frame["StudyID"].str.strip().to_numpy(dtype=object),
            "sex": normalise_sex(frame["PatientSex_DICOM"]),
            "age": (study_year - birth).to_numpy(dtype=np.float64),
            "view": frame["Projection"].str.strip().str.upper().to_numpy(dtype=object),
            "split": seeded_patient_split(patient.to_numpy(dtype=object)),
            "image_dir": frame["ImageDir"].str.strip().to_numpy(dtype=object),
        })
        for name, column_name in (("MethodLabel", "method_label"), ("Pediatric", "pediatric")):
            if name in frame:
                table[column_name] = frame[name].to_numpy(dtype=object)
        return ChestXrayCollection(root=root, kind=self.kind, table=table, labels=labels, class_names=class_names,
                                   boxes=empty_boxes(), sources=(path,),
                                   split_rule=f"seeded patient-wise, {TEST_FRACTION:.0%} of the patients in test")

    def image_location(self, root: Path) -> str:
        return f"{root}/<ImageDir>/ (the folders 0/ ... 54/)"

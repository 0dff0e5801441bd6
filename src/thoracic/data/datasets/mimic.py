"""MIMIC-CXR-JPG (Johnson et al. 2019) as PhysioNet distributes it (versions 2.0.0 and 2.1.0)::

    ROOT/
      mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, StudyDate, ...
      mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, then the 14 CheXpert observations (per study)
      mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train / validate / test)
      files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg ...

The CSVs are read gzipped or not. One row per image of ``metadata.csv`` (its order); the image id is the
``dicom_id``; its file is ``files/p<first 2 digits of subject>/p<subject>/s<study>/<dicom_id>.jpg``.

Labels: a study's row of ``chexpert.csv`` (the CheXpert labeler on the report), with the CheXpert
conventions (1.0, 0.0, -1.0 uncertain, blank; see :mod:`thoracic.data.datasets.chexpert`: the same policy
and No Finding rule). An image whose study has no label row is not labelled (NaN row). Split: the
official patient-wise ``split.csv`` (``train``, ``validate`` -> ``val``, ``test``), used as it is. Views:
``ViewPosition`` (PA, AP, LATERAL, LL, ...; blank is unknown, not frontal). Sex and age are not in
MIMIC-CXR-JPG (they are in MIMIC-IV): empty / NaN.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.data.collection import ChestXrayCollection, empty_boxes, preview
from thoracic.data.datasets.base import DatasetReader, expected_paths, label_matrix
from thoracic.data.tables import clean_text, find_file, read_csv
from thoracic.data.datasets.chexpert import LABEL_VALUES, OBSERVATIONS, apply_no_finding
from thoracic.errors import DataError

METADATA_NAME = "mimic-cxr-2.0.0-metadata.csv"
LABELS_NAME = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT_NAME = "mimic-cxr-2.0.0-split.csv"
METADATA_COLUMNS: tuple[str, ...] = ("dicom_id", "subject_id", "study_id", "ViewPosition")
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
#: The split names of split.csv -> the split column's values.
SPLIT_NAMES: dict[str, str] = {"train": "train", "validate": "val", "test": "test"}
#: The observations in the column order of mimic-cxr-2.0.0-chexpert.csv (alphabetical).
LABEL_COLUMNS: tuple[str, ...] = tuple(sorted(OBSERVATIONS))


class MimicReader(DatasetReader):
    """MIMIC-CXR-JPG: the metadata, chexpert and split CSVs (``.csv`` or ``.csv.gz``), JPEGs under ``files/``."""

    kind = "mimic"
    title = "MIMIC-CXR-JPG"
    signature = f"{METADATA_NAME}[.gz]"
    documentation = "https://physionet.org/content/mimic-cxr-jpg/ (2.0.0, 2.1.0: Files and Data Description)"
    image_format = "JPEG"
    has_uncertain = True
    checks_files = False

    def matches(self, root: Path) -> bool:
        return find_file(root, [METADATA_NAME]) is not None

    def metadata_files(self, root: Path) -> list[Path]:
        found = [find_file(root, [name]) for name in (METADATA_NAME, LABELS_NAME, SPLIT_NAME)]
        missing = [name for name, path in zip((METADATA_NAME, LABELS_NAME, SPLIT_NAME), found) if path is None]
        if missing:
            raise DataError(f"{root}: {', '.join(f'{m}[.gz]' for m in missing)} not found; expected the MIMIC-CXR-JPG "
                            f"layout ({METADATA_NAME}, {LABELS_NAME} and {SPLIT_NAME}, gzipped or not, and files/)")
        return [p for p in found if p is not None]

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXrayCollection:
        metadata_path, labels_path, split_path = self.metadata_files(root)
        meta = read_csv(metadata_path, METADATA_COLUMNS, integers=("subject_id", "study_id"),
                        what="the MIMIC-CXR-JPG metadata CSV")
        if len(meta) == 0:
            raise DataError(f"{metadata_path}: no data rows (empty dataset)")
        studies = read_csv(labels_path, ("subject_id", "study_id", *LABEL_COLUMNS), numbers=LABEL_COLUMNS,
                           integers=("subject_id", "study_id"), what="the MIMIC-CXR-JPG CheXpert label CSV")
        splits = read_csv(split_path, SPLIT_COLUMNS, integers=("subject_id", "study_id"),
                          what="the MIMIC-CXR-JPG split CSV")

        dicom = clean_text(meta["dicom_id"])
        duplicated = dicom.duplicated()
        if duplicated.any():
            raise DataError(f"{metadata_path}: dicom_id(s) listed twice: {preview(dicom[duplicated].tolist())}")
        subject = meta["subject_id"].to_numpy(dtype=np.int64)
        study = meta["study_id"].to_numpy(dtype=np.int64)

        # labels: the row of the image's study (NaN where the study has none)
        label_rows = pd.Index(studies["study_id"].to_numpy(dtype=np.int64)).get_indexer(study)
        study_labels = label_matrix(studies, OBSERVATIONS, labels_path, allowed=LABEL_VALUES, uncertain=uncertain)
        labels = np.full((len(meta), len(OBSERVATIONS)), np.nan, dtype=np.float32)
        labelled = label_rows >= 0
        labels[labelled] = study_labels[label_rows[labelled]]
        apply_no_finding(labels, OBSERVATIONS)

        # split: the official one, by dicom_id
        split_rows = pd.Index(clean_text(splits["dicom_id"])).get_indexer(dicom)
        if (split_rows < 0).any():
            absent = dicom[split_rows < 0].tolist()
            raise DataError(f"{split_path}: {len(absent)} image(s) of {metadata_path.name} have no split row: "
                            f"{preview(absent)}; expected every dicom_id in the split CSV")
        codes, values = pd.factorize(splits["split"].to_numpy(dtype=object)[split_rows])
        named = [SPLIT_NAMES.get(str(v).strip()) for v in values]
        if None in named:
            unknown = sorted(str(v) for v, n in zip(values, named) if n is None)
            raise DataError(f"{split_path}: split value(s) {', '.join(repr(u) for u in unknown)}; expected "
                            f"{', '.join(SPLIT_NAMES)}")

        def relative() -> list[str]:
            return [f"files{os.sep}p{str(s)[:2]}{os.sep}p{s}{os.sep}s{t}{os.sep}{d}.jpg"
                    for s, t, d in zip(subject, study, dicom.to_numpy(dtype=object))]

        table = pd.DataFrame({
            "image_id": dicom.to_numpy(dtype=object),
            "path": expected_paths(root, relative, root / "files", len(meta)),
            "patient_id": subject,
            "study_id": study,
            "sex": "",
            "age": np.nan,
            "view": clean_text(meta["ViewPosition"], upper=True).to_numpy(dtype=object),
            "split": np.array(named, dtype=object)[codes],
        })
        for column, name in (("StudyDate", "study_date"), ("Rows", "rows"), ("Columns", "columns")):
            if column in meta:
                table[name] = meta[column].to_numpy(dtype=object)
        return ChestXrayCollection(root=root, kind=self.kind, table=table, labels=labels, class_names=OBSERVATIONS,
                                   boxes=empty_boxes(), uncertain=uncertain,
                                   sources=(metadata_path, labels_path, split_path))

    def image_location(self, root: Path) -> str:
        return f"{root / 'files'} (files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg)"

"""CheXpert (Irvin et al. 2019) as Stanford distributes it (CheXpert-v1.0 and CheXpert-v1.0-small)::

    ROOT/                                   the folder holding train.csv (CheXpert-v1.0-small/ or CheXpert-v1.0/)
      train.csv, valid.csv                  Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14 observations
      train/patient00001/study1/view1_frontal.jpg ...
      valid/patient64541/study1/view1_frontal.jpg ...

``Path`` starts with the distribution's folder name (``CheXpert-v1.0-small/train/...``); the image id is
the path below it (``train/patient00001/study1/view1_frontal.jpg``), unique over both files.

Labels: each observation cell is ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank
(not mentioned in the report). Blank is NaN (not labelled); uncertain follows the policy (``ignore``:
NaN, ``zeros``: 0, ``ones``: 1; Irvin et al. 2019's U-Ignore / U-Zeros / U-Ones). A row with
``No Finding`` = 1 is negative for every other observation left blank but ``Support Devices``: the CheXpert
labeler sets No Finding only when no pathology is positive or uncertain (Irvin et al. 2019, section 2.2;
torchxrayvision reads it so too). Split: ``train.csv`` is the pool (``train_val``) the validation split
is drawn from; ``valid.csv``, the 234 radiologist-labelled images (the hidden test set is not
distributed), is the test split. Views: ``Frontal/Lateral``, and ``AP/PA`` for frontal images (``PA``,
``AP``; other values as written; ``FRONTAL`` when blank); laterals are ``LATERAL``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.data.collection import ChestXrayCollection, empty_boxes, preview
from thoracic.data.datasets.base import DatasetReader, expected_paths, label_matrix, normalise_sex
from thoracic.data.tables import csv_header, read_csv
from thoracic.errors import DataError

#: The metadata columns, then the 14 observations, in the order of the distributed files.
METADATA_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
OBSERVATIONS: tuple[str, ...] = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
#: The observation a ``No Finding`` = 1 row does not make negative (a device is not a pathology).
NOT_A_PATHOLOGY = "Support Devices"
#: csv file -> split.
FILES: dict[str, str] = {"train.csv": "train_val", "valid.csv": "test"}
LABEL_VALUES = (1.0, 0.0, -1.0)


def apply_no_finding(labels: np.ndarray, class_names: tuple[str, ...]) -> np.ndarray:
    """Blank observations of a ``No Finding`` = 1 row become 0, except ``Support Devices`` (in place)."""
    if "No Finding" not in class_names:
        return labels
    healthy = labels[:, class_names.index("No Finding")] == 1
    for column, name in enumerate(class_names):
        if name not in ("No Finding", NOT_A_PATHOLOGY):
            blank = healthy & np.isnan(labels[:, column])
            labels[blank, column] = 0.0
    return labels


class CheXpertReader(DatasetReader):
    """CheXpert: ``train.csv`` / ``valid.csv`` with 14 observations (1, 0, -1, blank), JPEG images."""

    kind = "chexpert"
    title = "CheXpert"
    signature = "train.csv / valid.csv with the columns Path, Sex, Age, Frontal/Lateral, AP/PA"
    documentation = ("https://stanfordmlgroup.github.io/competitions/chexpert/ and Irvin et al. 2019 "
                     "(arXiv:1901.07031); torchxrayvision's CheX_Dataset")
    image_format = "JPEG"
    has_uncertain = True
    checks_files = False

    def _files(self, root: Path) -> list[Path]:
        return [root / name for name in FILES if (root / name).is_file()]

    def matches(self, root: Path) -> bool:
        for path in self._files(root):
            try:
                if csv_header(path)[:len(METADATA_COLUMNS)] == list(METADATA_COLUMNS):
                    return True
            except DataError:
                continue
        return False

    def metadata_files(self, root: Path) -> list[Path]:
        files = self._files(root)
        if not files:
            raise DataError(f"{root}: neither train.csv nor valid.csv found; expected the CheXpert layout (train.csv / "
                            f"valid.csv with the columns {', '.join(METADATA_COLUMNS)} and the 14 observations)")
        return files

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXrayCollection:
        tables, matrices = [], []
        files = self.metadata_files(root)
        what = "the CheXpert train.csv / valid.csv"
        for path in files:
            frame = read_csv(path, [*METADATA_COLUMNS, *OBSERVATIONS], numbers=OBSERVATIONS, what=what)
            if len(frame) == 0:
                continue
            matrices.append(apply_no_finding(
                label_matrix(frame, OBSERVATIONS, path, allowed=LABEL_VALUES, uncertain=uncertain), OBSERVATIONS))
            # drop the distribution's folder name: the rest is <split>/<patient>/<study>/<view>.jpg
            image_id = frame["Path"].str.strip().str.replace(r"^(?!train/|valid/)[^/]+/", "", regex=True)
            wrong = ~image_id.str.fullmatch(r"(train|valid)/[^/]+/[^/]+/[^/]+").to_numpy(dtype=bool)
            if wrong.any():
                row = int(np.flatnonzero(wrong)[0])
                raise DataError(f"{path}: Path {frame['Path'].iat[row]!r} of data row {row + 1} (CSV line {row + 2}) "
                                "is not [CheXpert-v1.0-small/]train|valid/<patient>/<study>/<view>.jpg; expected "
                                "the paths as distributed")
            patient = image_id.str.split("/", expand=True)
            lateral = frame["Frontal/Lateral"].str.strip().str.lower() == "lateral"
            ap_pa = frame["AP/PA"].str.strip().str.upper()
            view = np.where(lateral, "LATERAL", np.where(ap_pa == "", "FRONTAL", ap_pa))
            age = pd.to_numeric(frame["Age"], errors="coerce")
            tables.append(pd.DataFrame({
                "image_id": image_id.to_numpy(dtype=object),
                "patient_id": patient[1].to_numpy(dtype=object),
                "study_id": (patient[1] + "/" + patient[2]).to_numpy(dtype=object),
                "sex": normalise_sex(frame["Sex"]),
                "age": age.to_numpy(dtype=np.float64),
                "view": view.astype(object),
                "frontal_lateral": frame["Frontal/Lateral"].to_numpy(dtype=object),
                "ap_pa": frame["AP/PA"].to_numpy(dtype=object),
                "split": FILES[path.name],
                "source": path.name,
            }))
        if not tables:
            raise DataError(f"{', '.join(str(p) for p in files)}: no data rows (empty dataset)")
        table = pd.concat(tables, ignore_index=True)
        duplicated = table["image_id"].duplicated()
        if duplicated.any():
            names = table["image_id"][duplicated].tolist()
            raise DataError(f"{root}: image(s) listed twice in train.csv / valid.csv: {preview(names)}")
        shared = set(table.loc[table["split"] == "test", "patient_id"]) & set(
            table.loc[table["split"] != "test", "patient_id"])
        if shared:
            raise DataError(f"{root}: patient(s) {preview(sorted(shared))} in both train.csv and valid.csv; "
                            "expected a patient-wise split")
        folder = root / "train" if (root / "train").is_dir() else root / "valid"
        ids = table["image_id"].to_numpy(dtype=object)
        table.insert(1, "path", expected_paths(root, lambda: [i.replace("/", os.sep) for i in ids], folder, len(ids)))
        return ChestXrayCollection(root=root, kind=self.kind, table=table, labels=np.concatenate(matrices),
                                   class_names=OBSERVATIONS, boxes=empty_boxes(), uncertain=uncertain,
                                   sources=tuple(files))

    def image_location(self, root: Path) -> str:
        return f"{root / 'train'} or {root / 'valid'} (the paths of the Path column)"

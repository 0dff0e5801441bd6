"""The reader interface, and what the readers share.

A reader (:class:`DatasetReader`) knows one layout as distributed: which file identifies it
(:meth:`~DatasetReader.matches`), which metadata files a cache or a run fingerprints
(:meth:`~DatasetReader.metadata_files`) and how to read the folder into a
:class:`~thoracic.data.collection.ChestXrayCollection` (:meth:`~DatasetReader.read`: every image of every
view, the uncertain-label policy applied). The shared helpers: locating a CSV distributed plain or
gzipped (:func:`find_file`), reading it with errors that name the file, row and column
(:func:`read_csv`), label cells to a float matrix under a policy (:func:`label_matrix`), the seeded
patient-wise split of datasets without an official one (:func:`seeded_patient_split`), listing image
folders (:func:`list_images`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from thoracic.constants import UNCERTAIN_POLICIES
from thoracic.data.collection import ChestXrayCollection
from thoracic.data.tables import csv_header, find_file, read_csv
from thoracic.errors import DataError

__all__ = ["DatasetReader", "SPLIT_SEED", "TEST_FRACTION", "check_policy", "csv_header", "expected_paths", "find_file",
           "label_matrix", "list_images", "normalise_sex", "paths_on_disk", "read_csv", "seeded_patient_split",
           "verify_paths"]

#: The seeded patient-wise split of datasets without an official test split: the seed and the fraction
#: of patients in the test split (:func:`seeded_patient_split`).
SPLIT_SEED = 0
TEST_FRACTION = 0.2


class DatasetReader:
    """One layout as distributed. Subclasses set the class attributes and implement the three methods."""

    kind: ClassVar[str]
    """The ``--dataset`` name."""
    title: ClassVar[str]
    """The dataset's name in messages."""
    signature: ClassVar[str]
    """The file (or files) that identify the layout, as messages name them."""
    documentation: ClassVar[str]
    """Where the layout is documented (named in docs/data.md)."""
    image_format: ClassVar[str]
    """PNG, JPEG or DICOM, as distributed."""
    has_uncertain: ClassVar[bool] = False
    """Whether the dataset has uncertain labels (the uncertain-label policy matters)."""
    box_classes: ClassVar[tuple[str, ...] | None] = None
    """The labels the dataset's box files may name, whether or not a given folder has rows of them (None:
    the labels its box rows name; :func:`thoracic.data.datasets.box_class_names`)."""
    checks_files: ClassVar[bool] = True
    """Whether :meth:`read` gives ``path`` None for every image not on disk (it lists the image folders);
    False for nested layouts whose paths are where the files should be (:func:`expected_paths`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # a reader's methods mean what the interface's mean: they share its docstrings
        super().__init_subclass__(**kwargs)
        for name, member in vars(cls).items():
            interface = getattr(DatasetReader, name, None)
            if callable(member) and interface is not None and not member.__doc__:
                member.__doc__ = interface.__doc__

    def matches(self, root: Path) -> bool:
        """Whether ``root`` holds this layout's identifying file (cheap: no CSV is parsed)."""
        raise NotImplementedError

    def metadata_files(self, root: Path) -> list[Path]:
        """The metadata files whose content defines the dataset (a cache and a run fingerprint them).

        Raises:
            DataError: a required file is missing (naming it and the layout).
        """
        raise NotImplementedError

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXrayCollection:
        """Every image of the folder (all views), labels under the policy ``uncertain``."""
        raise NotImplementedError

    def image_location(self, root: Path) -> str:
        """Where the images are expected, as error messages say it."""
        raise NotImplementedError


def check_policy(uncertain: str) -> str:
    """``uncertain`` itself when it is one of :data:`~thoracic.constants.UNCERTAIN_POLICIES`."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise DataError(f"uncertain-label policy {uncertain!r} unknown; expected one of {', '.join(UNCERTAIN_POLICIES)} "
                        "(data.uncertain / --uncertain)")
    return uncertain


def label_matrix(frame: pd.DataFrame, columns: Sequence[str], path: Path, *, allowed: Iterable[float],
                 uncertain: str | None = None) -> np.ndarray:
    """The N x C float32 label matrix of some numeric columns: NaN stays NaN (not labelled), ``-1`` is
    uncertain and becomes NaN, 0 or 1 under the policy ``uncertain`` (``ignore``, ``zeros``, ``ones``).

    Raises:
        DataError: a value outside ``allowed`` (naming the column, data row and CSV line).
    """
    matrix = frame[list(columns)].to_numpy(dtype=np.float32, copy=True)
    allowed_values = np.array(sorted(allowed), dtype=np.float32)
    bad = ~np.isnan(matrix) & ~np.isin(matrix, allowed_values)
    if bad.any():
        row, column = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{path}: column {columns[column]!r} of data row {row + 1} (CSV line {row + 2}) is "
                        f"{matrix[row, column]:g}; expected one of {', '.join(f'{v:g}' for v in allowed_values)} "
                        "or an empty field")
    if uncertain is not None:
        matrix[matrix == -1] = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}[check_policy(uncertain)]
    return matrix


def seeded_patient_split(patient_ids: Sequence[Any] | np.ndarray, seed: int = SPLIT_SEED,
                         test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """``"test"`` or ``"train_val"`` per row, by patient: a patient is in the test split when the first 8
    bytes of SHA-256(``"<seed>:<patient id>"``), as a fraction of 2**64, are below ``test_fraction``.

    A pure function of each patient id: the same patient falls on the same side in a subset of the
    folder, on any machine, whatever the row order (a random permutation of the patients would not).
    """
    ids = np.asarray(patient_ids, dtype=object)
    codes, uniques = pd.factorize(pd.Series(ids).astype(str), sort=False)
    draws = np.array([int.from_bytes(hashlib.sha256(f"{seed}:{u}".encode()).digest()[:8], "big") / 2.0**64
                      for u in uniques], dtype=np.float64)
    return np.where(draws[codes] < test_fraction, "test", "train_val").astype(object)


def normalise_sex(values: pd.Series) -> np.ndarray:
    """``M`` / ``F`` from the spellings the datasets use (``Male``, ``Female``, ``M``, ``F``), else ``""``."""
    mapping = {"m": "M", "male": "M", "f": "F", "female": "F"}
    codes, uniques = pd.factorize(values.fillna("").astype(str), sort=False)
    mapped = np.array([mapping.get(str(u).strip().lower(), "") for u in uniques] or [""], dtype=object)
    return mapped[codes]


def list_images(folders: Iterable[Path], suffixes: Sequence[str]) -> dict[str, str]:
    """Map file name -> path for the files of ``folders`` (not recursive) with one of ``suffixes``."""
    found: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.lower().endswith(tuple(suffixes)):
                    continue
                if entry.name in found:
                    raise DataError(f"image {entry.name} is present twice: {found[entry.name]} and {entry.path}")
                found[entry.name] = entry.path
    return found


def paths_on_disk(names: Sequence[str] | np.ndarray, on_disk: dict[str, str]) -> pd.Series:
    """The path of each name in ``on_disk`` (a :func:`list_images` map), None where absent."""
    return pd.Series([on_disk.get(name) for name in names], dtype=object)


def expected_paths(root: Path, relative: Callable[[], Iterable[str]], folder: Path, count: int) -> pd.Series:
    """``root / <relative path>`` per row when the image folder ``folder`` exists, else None per row.

    For layouts of hundreds of thousands of files in nested folders (CheXpert, MIMIC-CXR-JPG), where a
    check of every file would cost seconds on every command: the files themselves are checked by
    ``thoracic prepare``, and by ``require_images`` / ``only_present`` (:func:`verify_paths`).
    ``relative`` is called only when the folder exists.
    """
    if not folder.is_dir():
        return pd.Series([None] * count, dtype=object)
    prefix = str(root) + os.sep
    return pd.Series([prefix + r for r in relative()], dtype=object)


def verify_paths(dataset: ChestXrayCollection) -> ChestXrayCollection:
    """``dataset`` with ``path`` None for every file not on disk (one check per file)."""
    paths = dataset.table["path"].to_numpy(dtype=object)
    present = np.array([p is not None and os.path.isfile(p) for p in paths], dtype=bool)
    if present.all():
        return dataset
    table = dataset.table.copy()
    table["path"] = pd.Series(np.where(present, paths, None), dtype=object)
    return dataclasses.replace(dataset, table=table, _positions=dataset._positions)

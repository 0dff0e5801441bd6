"""Train / validation / test split: the dataset's test split, an official or seeded patient-disjoint validation.

The seed paper (section 4.1) kept the official patient-wise test list (25,596 images) and split the
train_val list into train and validation; its code took the last 12.5% of the sorted list. Here the
validation set is a seeded random fraction of the train_val *patients*, so every image of a patient is
in exactly one split and the same seed gives the same split on every machine (numpy's PCG64). A dataset
with an official validation split (MIMIC-CXR-JPG's ``validate``: rows ``val`` of the table) uses it as it
is, with the rows ``train`` for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thoracic.data.collection import ChestXrayCollection
from thoracic.errors import DataError


@dataclass(frozen=True, eq=False)
class Splits:
    """Sorted row indices into the dataset's table for each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int = 0
    val_fraction: float = 0.1

    def sizes(self) -> dict[str, int]:
        """Number of images per split: ``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)


def make_splits(dataset: ChestXrayCollection, val_fraction: float = 0.1, seed: int = 0) -> Splits:
    """Split ``dataset`` into train / val / test row indices.

    Test is the rows of ``split == "test"`` (ChestX-ray14: the official ``test_list.txt``). When the
    dataset has official validation rows (``split == "val"``), they are the validation split and
    ``val_fraction`` / ``seed`` are not used. Otherwise validation holds ``round(val_fraction * P)`` of the
    P other patients (at least one when ``val_fraction > 0`` and P > 1), drawn by
    ``np.random.default_rng(seed).permutation`` of the sorted patient ids: identical for the same seed.

    Raises:
        DataError: a patient appears in two splits of the dataset (the split would leak), or bad fraction.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    table = dataset.table
    patients = table["patient_id"].to_numpy()
    is_test = (table["split"] == "test").to_numpy()
    official_val = (table["split"] == "val").to_numpy()
    shared = np.intersect1d(patients[is_test], patients[~is_test])
    if len(shared):
        raise DataError(
            f"{len(shared)} patient(s) have images in both train_val and test lists (e.g. patient "
            f"{shared[0]}); expected a patient-wise split"
        )
    if official_val.any():
        shared = np.intersect1d(patients[official_val], patients[~official_val & ~is_test])
        if len(shared):
            raise DataError(f"{len(shared)} patient(s) have images in both the official train and validation "
                            f"splits (e.g. patient {shared[0]}); expected a patient-wise split")
        return Splits(train=np.flatnonzero(~is_test & ~official_val), val=np.flatnonzero(official_val),
                      test=np.flatnonzero(is_test), seed=seed, val_fraction=val_fraction)
    train_val_patients = np.unique(patients[~is_test])
    n_val = int(round(val_fraction * len(train_val_patients)))
    if val_fraction > 0 and n_val == 0 and len(train_val_patients) > 1:
        n_val = 1
    order = np.random.default_rng(seed).permutation(len(train_val_patients))
    val_patients = train_val_patients[np.sort(order[:n_val])]
    is_val = np.isin(patients, val_patients) & ~is_test
    return Splits(
        train=np.flatnonzero(~is_test & ~is_val),
        val=np.flatnonzero(is_val),
        test=np.flatnonzero(is_test),
        seed=seed,
        val_fraction=val_fraction,
    )

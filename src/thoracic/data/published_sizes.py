"""The sizes of the full public datasets, so that a report can say how much of one a run saw.

One row per dataset, keyed as ``data.dataset`` names it (ChestX-ray14 when a config names none); a
dataset without a row here gets no comparison. Add a dataset by adding a row, with its source.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSize:
    """What the full release of a dataset holds (None where the dataset has no such thing)."""

    name: str
    """How reports name the dataset."""
    images: int
    """Images in the release."""
    test_images: int | None
    """Images of the official test split."""
    box_rows: int | None
    """Rows of the official bounding-box file (one per box)."""
    box_images: int | None
    """Images those boxes are on."""
    source: str
    """Where the numbers come from."""


#: ``data.dataset`` -> the full dataset's sizes.
PUBLISHED_SIZES: dict[str, DatasetSize] = {
    "chestxray14": DatasetSize(
        name="ChestX-ray14", images=112_120, test_images=25_596, box_rows=984, box_images=880,
        source="the NIH Clinical Center release: Data_Entry_2017 (112,120 rows), test_list.txt (25,596 names), "
               "BBox_List_2017.csv (984 rows on 880 images); Wang et al. 2017 (ChestX-ray8)"),
}

#: The dataset a config without ``data.dataset`` reads (and one with ``auto`` whose run did not record the
#: layout it detected: runs from before the other layouts were read).
DEFAULT_DATASET = "chestxray14"


def published_size(dataset: str | None) -> DatasetSize | None:
    """The full dataset's sizes (:data:`PUBLISHED_SIZES`), ``None`` for a dataset without a row."""
    if dataset in (None, "", "auto"):
        dataset = DEFAULT_DATASET
    return PUBLISHED_SIZES.get(dataset.lower().replace("-", "").replace("_", ""))


__all__ = ["DEFAULT_DATASET", "DatasetSize", "PUBLISHED_SIZES", "published_size"]

"""The one container every dataset reader returns: :class:`ChestXrayCollection`.

A dataset is data: whatever the layout on disk (ChestX-ray14, CheXpert, MIMIC-CXR-JPG, PadChest, VinDr-CXR,
RSNA Pneumonia; :mod:`thoracic.data.datasets` reads them), a reader returns

- ``table``: one row per image, at least the columns :data:`TABLE_CORE_COLUMNS` (``image_id``, ``path``:
  the image file or None when it is not on disk, ``patient_id``, ``sex``: ``M`` / ``F`` / empty when
  unknown, ``age`` in years, ``view``: the view position in upper case, ``split``: one of :data:`SPLITS`),
  plus the dataset's own useful columns;
- ``class_names``: the dataset's label names, the column order of ``labels``;
- ``labels``: N x C, row i = ``table.iloc[i]``. ChestX-ray14 keeps its uint8 0 / 1 matrix (its labels are
  never missing); the other readers give float32 with **NaN where an image is not labelled** for a class
  (a blank CheXpert cell, a study without a label row) **or uncertain** under the ``ignore`` policy;
- ``boxes``: one row per box of the distributed box files: ``image_id, class_name, class_index`` (into
  ``class_names``), ``x, y, w, h`` in the pixels of the image file as distributed, ``box_row`` (0-based
  data row of its file), and where known ``reader_id`` (the radiologist, when a dataset has several
  readers per image), ``source`` (the file) and ``csv_line`` (1-based line in it);
- the split: ``split`` is the dataset's official split where it has one, else a seeded patient-wise split
  (:mod:`thoracic.data.datasets`; docs/data.md says which per dataset).

:class:`thoracic.data.metadata.ChestXray14`, the result of the ChestX-ray14 reader, is this container
with the official split lists and the metadata files it was read from.

Views: :data:`FRONTAL_VIEWS` are the view positions counted as frontal; ``"frontal"`` in a views
filter (:func:`select_rows`) stands for all of them, the default of :func:`thoracic.data.datasets.load_dataset`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.data.harmonisation import label_suggestions
from thoracic.errors import DataError

logger = logging.getLogger(__name__)

#: Values of the ``split`` column: ``train_val`` (the pool the seeded validation split is drawn from),
#: ``train`` and ``val`` (an official training / validation split, used as it is), ``test``.
SPLITS: tuple[str, ...] = ("train_val", "train", "val", "test")
#: Columns every reader's table has (in any order; readers add their own).
TABLE_CORE_COLUMNS: tuple[str, ...] = ("image_id", "path", "patient_id", "sex", "age", "view", "split")
#: Columns every box table has; readers add ``reader_id``, ``source`` and ``csv_line`` where known.
BOX_CORE_COLUMNS: tuple[str, ...] = ("image_id", "class_name", "class_index", "x", "y", "w", "h", "box_row")
#: The box columns of the readers other than ChestX-ray14 (whose table keeps its historical columns).
BOX_COLUMNS: tuple[str, ...] = (*BOX_CORE_COLUMNS, "reader_id", "source", "csv_line")
#: The views filter keyword for every frontal view position.
FRONTAL = "frontal"
#: View positions counted as frontal: posteroanterior, anteroposterior (PadChest's supine
#: ``AP_horizontal`` included), and ``FRONTAL`` (frontal, projection not recorded).
FRONTAL_VIEWS: frozenset[str] = frozenset({"PA", "AP", "AP_HORIZONTAL", "FRONTAL"})

_SHOW = 5  # how many offending names an error message lists


def preview(names: Iterable[Any]) -> str:
    """The first few names, comma-joined, with the count when there are more (for error messages)."""
    names = list(names)
    shown = ", ".join(str(n) for n in names[:_SHOW])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOW else "")


def empty_boxes(columns: Sequence[str] = BOX_COLUMNS) -> pd.DataFrame:
    """A box table without rows, with the columns' dtypes."""
    dtypes = {"image_id": object, "class_name": object, "reader_id": object, "source": object,
              "x": float, "y": float, "w": float, "h": float}
    return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, np.int64)) for c in columns})


def expand_views(views: Sequence[str]) -> set[str]:
    """View positions a views filter keeps: ``frontal`` expands to :data:`FRONTAL_VIEWS`, other names are
    upper-cased positions (``pa`` -> ``PA``)."""
    wanted: set[str] = set()
    for view in views:
        name = str(view).strip()
        wanted |= FRONTAL_VIEWS if name.lower() == FRONTAL else {name.upper()}
    return wanted


@dataclass(frozen=True, eq=False, kw_only=True)
class ChestXrayCollection:
    """A dataset's images: table, aligned N x C label matrix, box rows, split (see the module docs).

    Attributes:
        root: the dataset folder. kind: the reader (:data:`thoracic.data.datasets.DATASET_KINDS`).
        table, labels, class_names, boxes: see the module docstring.
        uncertain: the uncertain-label policy applied (``ignore``, ``zeros``, ``ones``), None for a
            dataset without uncertain labels.
        views: the views filter applied (empty: all views).
        sources: the metadata files read (what :func:`thoracic.data.datasets.metadata_fingerprint` hashes).
        split_rule: ``official`` or how the split was drawn.
        missing_ids: images dropped because they are not on disk (``only_present=True``).
    """

    root: Path
    kind: str
    table: pd.DataFrame
    labels: np.ndarray
    class_names: tuple[str, ...]
    boxes: pd.DataFrame
    uncertain: str | None = None
    views: tuple[str, ...] = ()
    sources: tuple[Path, ...] = ()
    split_rule: str = "official"
    missing_ids: tuple[str, ...] = ()
    _positions: pd.Index = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.labels.shape != (len(self.table), len(self.class_names)):
            raise ValueError(f"labels shape {self.labels.shape} does not match {len(self.table)} rows")
        if self._positions is None:
            object.__setattr__(self, "_positions", pd.Index(self.table["image_id"].to_numpy()))

    def __len__(self) -> int:
        return len(self.table)

    @property
    def image_ids(self) -> np.ndarray:
        """``(N,)`` image ids in table order."""
        return self.table["image_id"].to_numpy()

    def index_of(self, image_ids: str | Iterable[str]) -> int | np.ndarray:
        """Row position(s) in :attr:`table` of one image id or a sequence of them (DataError if absent)."""
        single = isinstance(image_ids, str)
        ids = [image_ids] if single else list(image_ids)
        positions = self._positions.get_indexer(ids)
        if (positions < 0).any():
            absent = [i for i, p in zip(ids, positions) if p < 0]
            raise DataError(f"image id(s) not in the dataset table: {preview(absent)}")
        return int(positions[0]) if single else positions

    def boxes_of(self, image_id: str) -> pd.DataFrame:
        """Every box row of one image (possibly several, possibly none)."""
        return self.boxes[self.boxes["image_id"] == image_id]

    @property
    def box_image_ids(self) -> tuple[str, ...]:
        """Images carrying at least one box, in table order."""
        with_boxes = set(self.boxes["image_id"])
        return tuple(i for i in self.table["image_id"] if i in with_boxes)

    @property
    def reader_ids(self) -> tuple[str, ...]:
        """The distinct readers of the box rows (empty when the boxes name none), sorted."""
        if "reader_id" not in self.boxes or len(self.boxes) == 0:
            return ()
        return tuple(sorted(r for r in self.boxes["reader_id"].unique() if isinstance(r, str) and r))

    def split_indices(self, split: str) -> np.ndarray:
        """Row positions of one value of the ``split`` column (:data:`SPLITS`)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return np.flatnonzero(self.table["split"].to_numpy() == split)

    def _subset_fields(self, keep: set[str]) -> dict[str, Any]:
        """Fields besides table, labels and boxes that depend on the rows kept (subclasses add theirs)."""
        return {}

    def subset(self, rows: np.ndarray | Sequence[int] | Sequence[bool]) -> ChestXrayCollection:
        """The same dataset restricted to some rows (a boolean mask or positions, kept in table order)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ValueError(f"mask of length {rows.shape} for {len(self)} rows")
            rows = np.flatnonzero(rows)
        rows = np.sort(rows.astype(np.int64))
        table = self.table.iloc[rows].reset_index(drop=True)
        keep = set(table["image_id"])
        boxes = self.boxes[self.boxes["image_id"].isin(keep)].reset_index(drop=True)
        return dataclasses.replace(self, table=table, labels=self.labels[rows], boxes=boxes, _positions=None,
                                   **self._subset_fields(keep))

    def select_classes(self, names: Sequence[str]) -> ChestXrayCollection:
        """The same dataset with only the label columns ``names``, in that order (empty: unchanged).

        Box rows of other classes are dropped and ``class_index`` follows the new order.

        Raises:
            DataError: a name that is not one of :attr:`class_names` (the message lists them, and the
                dataset's name for the same finding when the harmonisation table knows one), or twice.
        """
        names = tuple(str(n) for n in names)
        if not names or names == self.class_names:
            return self
        unknown = [n for n in names if n not in self.class_names]
        if unknown:
            hints = [f"{n!r} -> {label_suggestions(self.kind, n, self.class_names)!r}" for n in unknown
                     if label_suggestions(self.kind, n, self.class_names)]
            raise DataError(
                f"{self.root}: class name(s) {', '.join(repr(n) for n in unknown)} not among the {self.kind} labels "
                f"({', '.join(self.class_names)})" + (f"; did you mean {'; '.join(hints)}" if hints else "")
                + "; expected names of data.classes among the dataset's labels")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataError(f"class name(s) {', '.join(repeated)} given twice in data.classes")
        columns = [self.class_names.index(n) for n in names]
        boxes = self.boxes[self.boxes["class_name"].isin(names)].reset_index(drop=True)
        boxes["class_index"] = boxes["class_name"].map({n: i for i, n in enumerate(names)}).astype(np.int64)
        return dataclasses.replace(self, labels=self.labels[:, columns], class_names=names, boxes=boxes,
                                   _positions=self._positions)


def select_rows(
    dataset: ChestXrayCollection,
    *,
    views: Sequence[str] = (),
    require_images: bool = False,
    only_present: bool = False,
    listing: str | Path,
    image_location: str,
) -> ChestXrayCollection:
    """Keep the rows of some view positions and, if asked, the images on disk.

    Args:
        views: positions to keep (``frontal``: :data:`FRONTAL_VIEWS`); empty keeps all.
        require_images: raise a DataError naming the images not on disk (among the rows kept).
        only_present: drop the images not on disk; how many is logged (never silent) and their ids go
            to :attr:`ChestXrayCollection.missing_ids`.
        listing: the file that lists the images (named in the errors); image_location: where the images
            are expected (named in the errors).

    Raises:
        DataError: no row of the views; missing images with ``require_images``; nothing left.
    """
    table = dataset.table
    keep = np.ones(len(table), dtype=bool)
    if views:
        wanted = expand_views(views)
        keep &= table["view"].isin(wanted).to_numpy()
        if not keep.any():
            present = sorted(table["view"].unique())
            raise DataError(f"{listing}: no image has view position in {sorted(wanted)} "
                            f"(views present: {', '.join(present)}); the dataset would be empty")
    missing = table["path"].isna().to_numpy() & keep
    missing_ids: tuple[str, ...] = ()
    listed = Path(listing).name
    if missing.any():
        names = list(table["image_id"].to_numpy()[missing])
        if require_images:
            raise DataError(f"{dataset.root}: {len(names)} of {int(keep.sum())} image(s) listed in {listed} are not "
                            f"under {image_location}: {preview(names)}")
        if only_present:
            logger.warning("%s: %d of %d images are not on disk; using the %d present",
                           dataset.root, len(names), int(keep.sum()), int(keep.sum()) - len(names))
            keep &= ~missing
            missing_ids = tuple(names)
            if not keep.any():
                raise DataError(f"{dataset.root}: none of the images of {listed} is on disk (empty dataset)")
    if not keep.all():
        dataset = dataset.subset(keep)
    if missing_ids:
        object.__setattr__(dataset, "missing_ids", missing_ids)
    return dataset

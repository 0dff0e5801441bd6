"""Images two datasets share: reading a mapping between their image ids, and flagging a test set's images
that a run was trained on.

Some datasets are relabelled subsets of others: RSNA Pneumonia's 30,000 images are ChestX-ray14 images
(Shih et al. 2019), so are Google's expert relabels of ChestX-ray14 (Majkowska et al. 2020). Their files do
not say so (RSNA's ``patientId`` s are new identifiers), so a model trained on one and tested on the other may
be tested on images it was trained on. A **mapping file** says which image of one dataset is which image of
the other; :func:`read_image_mapping` reads the forms it comes in:

- RSNA's own mapping, ``pneumonia-challenge-dataset-mappings_2018.json``, linked from the RSNA Pneumonia
  Detection Challenge page (rsna.org, AI image challenge 2018): a JSON list with one object per RSNA image,
  whose ``subset_img_id`` is the RSNA ``patientId`` and ``img_id`` the ChestX-ray14 file name
  (``00000003_000.png``); it also holds the DICOM UIDs, ``subset_group``, ``subset_init_label`` and the
  ChestX-ray14 labels ``orig_labels``, which are not read;
- the same two fields as a CSV (``subset_img_id,img_id``: how the NIH Clinical Center's own scripts use it,
  as ``pneumonia_dataset_mapping.csv``);
- any CSV whose header names two dataset kinds (``rsna,chestxray14``; :data:`~thoracic.constants.DATASET_KINDS`),
  one row per shared image, for other pairs of datasets.

:func:`shared_test_images` then lists, for every test image that the mapping links to an image of the run's
own dataset, which split of the run that image was in (``train``, ``val``, ``test``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.constants import DATASET_KINDS
from thoracic.errors import DataError

#: The two fields of RSNA's mapping file: the RSNA ``patientId`` and the ChestX-ray14 image name.
RSNA_MAPPING_FIELDS: dict[str, str] = {"subset_img_id": "rsna", "img_id": "chestxray14"}
#: Columns of :func:`shared_test_images` (``shared_images.csv``).
SHARED_COLUMNS: tuple[str, ...] = ("test_image_id", "run_image_id", "run_split")
#: Pairs of dataset kinds known to share images (docs/data.md): a cross-dataset evaluation between them
#: without a mapping file is warned about.
KNOWN_OVERLAPS: tuple[frozenset[str], ...] = (frozenset({"rsna", "chestxray14"}),)
_EXPECTED = ("RSNA's pneumonia-challenge-dataset-mappings_2018.json (a list of objects with subset_img_id and "
             "img_id), a CSV with the columns subset_img_id,img_id, or a CSV whose header names two dataset "
             f"kinds ({', '.join(DATASET_KINDS)})")


def _normalise(kind: str, ids: pd.Series) -> pd.Series:
    """Image ids as the readers give them (ChestX-ray14: the PNG file name, ``.png`` added when missing)."""
    ids = ids.astype(str).str.strip()
    if kind == "chestxray14":
        ids = ids.where(ids.str.lower().str.endswith(".png"), ids + ".png")
    return ids


def _rsna_records(path: Path) -> pd.DataFrame:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not readable as JSON ({exc}); expected {_EXPECTED}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list of objects; expected {_EXPECTED}")
    for number, record in enumerate(data, 1):
        missing = [f for f in RSNA_MAPPING_FIELDS if not record.get(f)]
        if missing:
            raise DataError(f"{path}: object {number} lacks {', '.join(missing)}; expected {_EXPECTED}")
    return pd.DataFrame({kind: [str(r[name]) for r in data] for name, kind in RSNA_MAPPING_FIELDS.items()})


def read_image_mapping(path: str | Path, kind_a: str, kind_b: str) -> pd.DataFrame:
    """The image pairs a mapping file gives between the datasets ``kind_a`` and ``kind_b`` (module docs):
    a table with the columns ``kind_a`` and ``kind_b`` (image ids as the readers give them), one row per pair.

    Raises:
        DataError: the file is missing, unreadable, of none of the accepted forms, maps other datasets, or
            has an empty id (naming the file, the row and what was expected).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image mapping {path} does not exist; expected {_EXPECTED}")
    if path.suffix.lower() == ".json":
        table = _rsna_records(path)
    else:
        try:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: not readable as CSV ({str(exc).splitlines()[0]}); expected {_EXPECTED}") from None
        columns = [c.strip() for c in table.columns]
        table.columns = columns
        if set(RSNA_MAPPING_FIELDS) <= set(columns):
            table = table[list(RSNA_MAPPING_FIELDS)].rename(columns=RSNA_MAPPING_FIELDS)
        else:
            kinds = [c for c in columns if c in DATASET_KINDS]
            if len(kinds) != 2:
                raise DataError(f"{path}: columns {columns}; expected {_EXPECTED}")
            table = table[kinds]
        for column in table.columns:
            empty = np.flatnonzero(table[column].astype(str).str.strip() == "")
            if len(empty):
                raise DataError(f"{path}: CSV line {int(empty[0]) + 2} has an empty {column} image id; expected "
                                "one image id of each dataset per row")
    if set(table.columns) != {kind_a, kind_b}:
        raise DataError(f"{path} maps {' and '.join(table.columns)} images, not {kind_a} and {kind_b} ones; "
                        f"expected a mapping between the run's dataset ({kind_a}) and the test dataset ({kind_b})")
    return pd.DataFrame({kind: _normalise(kind, table[kind]) for kind in (kind_a, kind_b)}).drop_duplicates(
        ignore_index=True)


def shared_test_images(mapping: pd.DataFrame, test_kind: str, test_ids: Sequence[str], run_kind: str,
                       run_splits: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The test images the mapping links to an image of the run's dataset, with that image's split.

    Args:
        mapping: :func:`read_image_mapping` (columns ``test_kind`` and ``run_kind``).
        test_ids: the test images scored.
        run_splits: ``train`` / ``val`` / ``test`` -> the image ids of the run's own dataset in that split.

    Returns:
        :data:`SHARED_COLUMNS`: ``test_image_id``, ``run_image_id``, ``run_split`` (``train``, ``val``,
        ``test``, or ``not in the run's folder`` for an image the run's data folder does not hold), one row
        per pair, in test order.
    """
    split_of = {str(i): name for name, ids in run_splits.items() for i in ids}
    tests = pd.DataFrame({"test_image_id": [str(i) for i in test_ids]})
    pairs = tests.merge(mapping.rename(columns={test_kind: "test_image_id", run_kind: "run_image_id"}),
                        on="test_image_id", how="inner")
    pairs["run_split"] = [split_of.get(i, "not in the run's folder") for i in pairs["run_image_id"]]
    return pairs[list(SHARED_COLUMNS)].reset_index(drop=True)


def shared_summary(shared: pd.DataFrame, n_test: int) -> dict[str, int]:
    """Counts of :func:`shared_test_images`: test images mapped at all, and those whose image is in the
    run's ``train``, ``val`` and ``test`` split (an image counts once per split it maps into)."""
    counts = {"n_test_images": int(n_test), "n_mapped": int(shared["test_image_id"].nunique())}
    for split in ("train", "val", "test"):
        counts[f"n_{split}"] = int(shared.loc[shared["run_split"] == split, "test_image_id"].nunique())
    return counts


def shared_warning(counts: Mapping[str, int], test_name: str, mapping: str) -> str | None:
    """The warning for test images the run was trained (or its checkpoint chosen) on, None when none."""
    seen = counts.get("n_train", 0), counts.get("n_val", 0)
    if not any(seen):
        return None
    return (f"{seen[0]} of the {counts['n_test_images']} {test_name} test images were in the run's training split"
            + (f" and {seen[1]} in its validation split" if seen[1] else "")
            + f" (mapping {mapping}; listed in shared_images.csv): the scores on them are not an external validation")


def overlap_note(run_kind: str, test_kind: str) -> str | None:
    """A caution for two datasets known to share images (:data:`KNOWN_OVERLAPS`) when no mapping was given."""
    if frozenset({run_kind, test_kind}) not in KNOWN_OVERLAPS:
        return None
    return (f"{run_kind} and {test_kind} share images (RSNA Pneumonia's images are ChestX-ray14 images): the test "
            "images may include images the run was trained on; pass the mapping (--shared-images, e.g. RSNA's "
            "pneumonia-challenge-dataset-mappings_2018.json) to find them")


__all__ = ["KNOWN_OVERLAPS", "RSNA_MAPPING_FIELDS", "SHARED_COLUMNS", "overlap_note", "read_image_mapping",
           "shared_summary", "shared_test_images", "shared_warning"]

"""Reading a ChestX-ray14 folder exactly as the NIH distributes it.

Layout (Wang et al. 2017; the seed paper, section 4.1)::

    ROOT/
      Data_Entry_2017_v2020.csv  or  Data_Entry_2017.csv   one row per image
      BBox_List_2017.csv                                    one row per radiologist box (984 rows)
      train_val_list.txt, test_list.txt                     the official patient-wise split
      images/*.png  or  images_001/images/*.png ... images_012/images/*.png

The metadata files may also live in ``ROOT/metadata/``. Both header variants of the data-entry CSV are
read (the 2017 one ends every row with an empty column), the box CSV's ``Bbox [x,y,w,h]`` header that
spans four columns (plus empty trailing ones) too, and the split lists with or without a trailing newline.

Everything is kept aligned with one table: row ``i`` of :attr:`ChestXray14.table` is row ``i`` of
:attr:`ChestXray14.labels` (an N x 14 matrix in :data:`thoracic.constants.CLASS_NAMES` order). Boxes are
kept one per CSV row (an image with several boxes keeps every row with its own class) and stay in the
pixels of the distributed image file (1024 x 1024 for NIH) until :func:`thoracic.data.boxes.scale_boxes`
maps them to another size.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import CLASS_INDEX, CLASS_NAMES, LABEL_ALIASES, NO_FINDING, NUM_CLASSES
from thoracic.data.collection import ChestXrayCollection, preview, select_rows
from thoracic.data.tables import clean_text, plain
from thoracic.errors import DataError
from thoracic.io import atomic_write, write_text_atomic
from thoracic.provenance import file_sha256

logger = logging.getLogger(__name__)

DATA_ENTRY_NAMES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
BBOX_NAME = "BBox_List_2017.csv"
TRAIN_VAL_NAME = "train_val_list.txt"
TEST_NAME = "test_list.txt"

#: The data-entry header (2020 variant). ``OriginalImage[Width,Height]`` spans two CSV columns.
DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
#: The box CSV header: ``Bbox [x,y,w,h]`` spans four columns, followed by empty ones.
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"

# CSV column (as pandas splits the header) -> table column. The pixel spacing is not needed.
_REQUIRED_COLUMNS: dict[str, str] = {
    "Image Index": "image_id",
    "Finding Labels": "finding_labels",
    "Follow-up #": "follow_up",
    "Patient ID": "patient_id",
    "Patient Age": "age",
    "Patient Gender": "sex",
    "View Position": "view",
    "OriginalImage[Width": "original_width",
    "Height]": "original_height",
}

#: Data-entry columns read as text; the others of :data:`_REQUIRED_COLUMNS` are integers.
_TEXT_COLUMNS: tuple[str, ...] = ("Image Index", "Finding Labels", "Patient Gender", "View Position")
_INTEGER_COLUMNS = frozenset(_REQUIRED_COLUMNS) - frozenset(_TEXT_COLUMNS)

TABLE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_id",
    "follow_up",
    "age",
    "sex",
    "view",
    "original_width",
    "original_height",
    "split",
    "path",
)
#: ``box_row``: 0-based data-row number in ``BBox_List_2017.csv`` (blank lines not counted);
#: ``csv_line``: the 1-based line of the file it was read from (what error messages name).
BOX_COLUMNS: tuple[str, ...] = ("image_id", "class_name", "class_index", "x", "y", "w", "h", "box_row", "csv_line")

def _is_text(column: pd.Series) -> bool:
    """Whether pandas read a column as text (``str`` dtype, or ``object`` in older pandas)."""
    return pd.api.types.is_string_dtype(column.dtype)


@dataclass(frozen=True)
class MetadataFiles:
    """Where the metadata files of a folder were found."""

    data_entry: Path
    bbox: Path | None
    train_val: Path
    test: Path


@dataclass(frozen=True, eq=False, kw_only=True)
class ChestXray14(ChestXrayCollection):
    """A ChestX-ray14 folder: metadata table, aligned N x 14 label matrix, box rows, official split.

    The ChestX-ray14 reader's :class:`~thoracic.data.collection.ChestXrayCollection`. ``table`` has one row
    per image (columns :data:`TABLE_COLUMNS`; ``split`` is ``"train_val"`` or ``"test"``, ``path`` the image
    file or None when it is not on disk). ``labels[i]`` are the labels of ``table.iloc[i]`` (uint8) in
    :data:`~thoracic.constants.CLASS_NAMES` order. ``boxes`` has one row per ``BBox_List_2017.csv`` row
    (:data:`BOX_COLUMNS`; ``box_row`` is its 0-based data-row number in that file, ``csv_line`` its
    1-based line number, blank lines included) with x, y, w, h in the pixels of the image file as
    distributed.
    """

    kind: str = "chestxray14"
    class_names: tuple[str, ...] = CLASS_NAMES
    train_val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    files: MetadataFiles | None = None

    def split_indices(self, split: str) -> np.ndarray:
        """Row positions of the official ``"train_val"`` or ``"test"`` split."""
        if split not in ("train_val", "test"):
            raise ValueError(f"split must be 'train_val' or 'test', got {split!r}")
        return np.flatnonzero(self.table["split"].to_numpy() == split)

    def _subset_fields(self, keep: set[str]) -> dict[str, Any]:
        return {"train_val_ids": tuple(i for i in self.train_val_ids if i in keep),
                "test_ids": tuple(i for i in self.test_ids if i in keep)}


# --------------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------------


def find_metadata_files(root: str | Path) -> MetadataFiles:
    """Locate the data-entry CSV, box CSV and split lists in ``root`` or ``root/metadata``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    candidates = [root, root / "metadata"]

    def find(names: Sequence[str], required: bool) -> Path | None:
        for folder in candidates:
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        if required:
            raise DataError(
                f"{root}: none of {', '.join(names)} found in {root} or {root / 'metadata'} "
                "(expected the ChestX-ray14 layout as NIH distributes it)"
            )
        return None

    return MetadataFiles(
        data_entry=find(DATA_ENTRY_NAMES, True),  # type: ignore[arg-type]
        bbox=find((BBOX_NAME,), False),
        train_val=find((TRAIN_VAL_NAME,), True),  # type: ignore[arg-type]
        test=find((TEST_NAME,), True),  # type: ignore[arg-type]
    )


def image_folders(root: str | Path) -> list[Path]:
    """The image folders of ``root``: ``images/`` and the tarballs' ``images_0XX/images/``."""
    root = Path(root)
    folders = [root / "images"] if (root / "images").is_dir() else []
    folders += sorted(p / "images" for p in root.glob("images_*") if (p / "images").is_dir())
    return folders


def find_image_files(root: str | Path) -> dict[str, str]:
    """Map file name -> path for every file in the image folders of ``root``."""
    found: dict[str, str] = {}
    for folder in image_folders(root):
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.name in found:
                    raise DataError(f"image {entry.name} is present twice: {found[entry.name]} and {entry.path}")
                found[entry.name] = entry.path
    return found


def file_fingerprint(path: str | Path) -> str:
    """Deprecated name of :func:`thoracic.provenance.file_sha256` (the one file hash)."""
    warnings.warn("thoracic.data.metadata.file_fingerprint is deprecated: use thoracic.provenance.file_sha256",
                  DeprecationWarning, stacklevel=2)
    return file_sha256(path)


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def parse_label_strings(
    labels: pd.Series, image_ids: Sequence[str] | None = None, source: str = "Finding Labels"
) -> np.ndarray:
    """``"A|B"`` strings -> N x 14 uint8 matrix (CLASS_NAMES order); ``No Finding`` is the all-zero row.

    Each distinct string is parsed once (ChestX-ray14 has 836 of them for 112,120 rows) and the rows take
    their string's parsed row (``pandas.factorize``). ``Infiltrate`` maps to ``Infiltration``; an unknown
    or empty name raises a DataError naming the CSV line and image of its first row.
    """
    text = labels.fillna("").astype(str).reset_index(drop=True)

    def where(row: int) -> str:
        image = f", image {image_ids[row]}" if image_ids is not None else ""
        return f"data row {row + 1} (CSV line {row + 2}{image})"

    def first_row(combo_mask: np.ndarray) -> int:
        return int(np.flatnonzero(combo_mask[codes])[0])

    codes, combos = pd.factorize(text, sort=False)
    combos = [str(c) for c in combos]
    empty = np.array([c.strip() == "" for c in combos], dtype=bool)
    if empty.any():
        row = first_row(empty)
        raise DataError(f"{source}: empty 'Finding Labels' in {where(row)}; expected class names or '{NO_FINDING}'")
    tokens = [{t for t in c.split("|") if t} for c in combos]
    combo_matrix = np.zeros((len(combos), NUM_CLASSES), dtype=np.uint8)
    combo_no_finding = np.zeros(len(combos), dtype=bool)
    # tokens in sorted order, as ``str.get_dummies`` orders its columns: the first unknown one is reported
    for token in sorted(set().union(*tokens)):
        holders = np.array([token in t for t in tokens], dtype=bool)
        name = LABEL_ALIASES.get(token.strip(), token.strip())
        if name == NO_FINDING:
            combo_no_finding |= holders
            continue
        if name not in CLASS_INDEX:
            row = first_row(holders)
            raise DataError(
                f"{source}: unknown label {token!r} in {where(row)}; expected '|'-joined names among "
                f"{', '.join(CLASS_NAMES)} or '{NO_FINDING}'"
            )
        combo_matrix[holders, CLASS_INDEX[name]] = 1
    both = combo_no_finding & (combo_matrix.sum(axis=1) > 0)
    if both.any():
        row = first_row(both)
        raise DataError(
            f"{source}: 'Finding Labels' {text[row]!r} in {where(row)} combines '{NO_FINDING}' with findings; "
            f"expected '|'-joined findings or '{NO_FINDING}' alone"
        )
    return combo_matrix[codes]


def read_data_entry(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read ``Data_Entry_2017[_v2020].csv`` into (table without split/path, N x 14 labels)."""
    table, labels, _ = _read_data_entry(Path(path))
    return table, labels


def _read_data_entry(path: Path) -> tuple[pd.DataFrame, np.ndarray, pd.Index]:
    """:func:`read_data_entry` and the index of the image ids (its hash table, built to check that the ids
    are distinct, serves every later lookup)."""

    def read(dtype: Any) -> pd.DataFrame:
        try:
            frame = pd.read_csv(path, dtype=dtype, keep_default_na=False, skipinitialspace=True)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot parse as CSV ({exc}); expected header {DATA_ENTRY_HEADER!r}") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame

    # Fast path: pandas' C parser reads the integer columns itself (6x faster than converting strings
    # afterwards). A file where one of them is not plain integers (ages written "058Y", an empty field) or
    # where a text column is not read as text is read again entirely as text and checked field by field
    # below, so the result and the errors are those of the checked path.
    raw = read({name: str for name in _TEXT_COLUMNS})
    if not all(c in raw.columns and (raw[c].dtype.kind in "iu" if c in _INTEGER_COLUMNS else _is_text(raw[c]))
               for c in _REQUIRED_COLUMNS):
        raw = read(str)
    missing = [c for c in _REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(
            f"{path}: missing required column(s) {', '.join(repr(m) for m in missing)}; "
            f"expected the header {DATA_ENTRY_HEADER!r} (an empty trailing column is allowed)"
        )
    if len(raw) == 0:
        raise DataError(f"{path}: no data rows (empty dataset)")
    # the table is assembled once from its columns (assigning columns one by one into a frame copies it)
    source = {name: raw[column] for column, name in _REQUIRED_COLUMNS.items()}
    image_ids = clean_text(source["image_id"])
    if not all(image_ids.to_numpy(dtype=object)):  # an empty string is falsy: one pass in C
        row = int(np.flatnonzero((image_ids == "").to_numpy())[0])
        raise DataError(f"{path}: empty 'Image Index' in data row {row + 1} (CSV line {row + 2})")
    index = pd.Index(image_ids)
    if not index.is_unique:
        row = int(np.flatnonzero(image_ids.duplicated().to_numpy())[0])
        raise DataError(f"{path}: image {image_ids.iat[row]} appears twice (CSV line {row + 2})")

    def numeric(column: str, csv_name: str, strip_suffix: bool = False) -> np.ndarray:
        if source[column].dtype.kind in "iu":  # read as integers by the parser (the fast path above)
            return source[column].to_numpy(dtype=np.int64)
        text = source[column].str.strip()
        if strip_suffix:  # early copies write ages as "058Y" (years); months/days are rare and kept as-is
            text = text.str.extract(r"^(\d+)", expand=False).fillna(text)
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{path}: column {csv_name!r} of data row {row + 1} (CSV line {row + 2}, image "
                f"{image_ids.iat[row]}) is {source[column].iat[row]!r}; expected a number"
            )
        return values.astype(np.int64).to_numpy()

    columns = {
        "image_id": image_ids,
        "follow_up": numeric("follow_up", "Follow-up #"),
        "patient_id": numeric("patient_id", "Patient ID"),
        "age": numeric("age", "Patient Age", strip_suffix=True),
        "sex": clean_text(source["sex"]),
        "view": clean_text(source["view"], upper=True),
        "original_width": numeric("original_width", "OriginalImage[Width"),
        "original_height": numeric("original_height", "Height]"),
    }
    labels = parse_label_strings(source["finding_labels"], image_ids.to_numpy(), source=str(path))
    return pd.DataFrame(columns), labels, index


def read_split_list(path: str | Path) -> tuple[str, ...]:
    """Image names of a split list, one per line (trailing newline and blank lines are fine)."""
    names = _split_list_names(Path(path))
    _check_listed_once(names, path)
    return names


def _split_list_names(path: Path) -> tuple[str, ...]:
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first name
    if plain(text, allow="\n"):  # one name per line and no other whitespace: split() is the same, faster
        return tuple(text.split())
    return tuple(filter(None, [line.strip() for line in text.splitlines()]))


def _check_listed_once(names: Sequence[str], path: str | Path, positions: np.ndarray | None = None) -> None:
    """A DataError naming the first name listed a second time; ``positions`` (the names' rows in the
    table, every one found) find it without a set of the names."""
    if positions is not None:
        if np.bincount(positions).max(initial=0) <= 1:
            return
        names = [names[int(np.flatnonzero(pd.Series(positions).duplicated().to_numpy())[0])]]
        raise DataError(f"{path}: image {names[0]} is listed twice")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dup = next(n for n in names if n in seen or seen.add(n))  # type: ignore[func-returns-value]
        raise DataError(f"{path}: image {dup} is listed twice")


def read_bbox_list(path: str | Path) -> pd.DataFrame:
    """Read ``BBox_List_2017.csv``: one row per box, canonical class names, x/y/w/h floats.

    The header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,``; NIH copies may end rows with empty
    columns. ``Infiltrate`` is the class ``Infiltration``.
    """
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not the header
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file; expected the header {BBOX_HEADER!r}")
        header = [h.strip() for h in header]
        if len(header) < 6 or header[0] != "Image Index" or header[1] != "Finding Label" or not header[2].startswith("Bbox"):
            raise DataError(
                f"{path}: header {','.join(header)!r} lacks the required columns; expected {BBOX_HEADER!r}"
            )
        for fields in reader:
            # the reader's own line count: the true line in the file (blank lines and quoted line breaks
            # included), whereas box_row counts data rows only
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) < 6 or any(f.strip() for f in fields[6:]):
                raise DataError(f"{path}: line {line} has {len(fields)} fields {fields!r}; expected "
                                "image, label, x, y, w, h (then only empty fields)")
            image_id, label = fields[0].strip(), fields[1].strip()
            name = LABEL_ALIASES.get(label, label)
            if name not in CLASS_INDEX:
                raise DataError(f"{path}: line {line} (image {image_id}) has unknown label {label!r}; "
                                f"expected one of {', '.join(CLASS_NAMES)} (or 'Infiltrate')")
            try:
                x, y, w, h = (float(f) for f in fields[2:6])
            except ValueError:
                raise DataError(f"{path}: line {line} (image {image_id}): box {fields[2:6]!r} is not four numbers")
            if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0 or x < -0.5 or y < -0.5:
                raise DataError(
                    f"{path}: line {line} (image {image_id}, {label}): box x={x}, y={y}, w={w}, h={h} "
                    "lies outside the image; expected x, y >= 0 and w, h > 0"
                )
            rows.append((image_id, name, CLASS_INDEX[name], x, y, w, h, len(rows), line))
    boxes = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    return boxes.astype({"class_index": np.int64, "box_row": np.int64, "csv_line": np.int64,
                         "x": float, "y": float, "w": float, "h": float})


def image_size_from_header(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its header only (cheap); None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # unreadable files are reported by prepare, not here
        return None


def check_boxes_inside(boxes: pd.DataFrame, sizes: dict[str, tuple[int, int]], bbox_path: str | Path | None = None
                       ) -> None:
    """Raise DataError for the first box row that extends beyond its image (1 px tolerance).

    The error names the row's ``source`` file when the table has that column, else ``bbox_path``."""
    if len(boxes) == 0 or not sizes:
        return
    known = boxes["image_id"].isin(list(sizes))
    if not known.any():
        return
    sub = boxes[known]
    width = sub["image_id"].map(lambda i: sizes[i][0]).to_numpy(dtype=float)
    height = sub["image_id"].map(lambda i: sizes[i][1]).to_numpy(dtype=float)
    outside = (sub["x"].to_numpy() + sub["w"].to_numpy() > width + 1) | (
        sub["y"].to_numpy() + sub["h"].to_numpy() > height + 1
    )
    if outside.any():
        row = sub.iloc[int(np.flatnonzero(outside)[0])]
        w, h = sizes[row["image_id"]]
        # tables built by hand may lack csv_line: then the line of a file without blank lines
        line = int(row["csv_line"]) if "csv_line" in row.index else int(row["box_row"]) + 2
        source = row["source"] if "source" in row.index and isinstance(row["source"], str) else bbox_path
        raise DataError(
            f"{source}: line {line} (image {row['image_id']}, {row['class_name']}): box "
            f"x={row['x']:.1f}, y={row['y']:.1f}, w={row['w']:.1f}, h={row['h']:.1f} lies outside the "
            f"{w} x {h} image; expected x + w <= {w} and y + h <= {h}"
        )


def check_box_labels(boxes: pd.DataFrame, table: pd.DataFrame, labels: np.ndarray, bbox_path: str | Path,
                     entry_path: str | Path, index: pd.Index | None = None) -> None:
    """Raise DataError for the first box row whose class is not among its image's labels (every one of
    NIH's 984 boxes has its class among the image's 'Finding Labels'; a box without one would be scored
    for a class the image is not labelled with)."""
    if len(boxes) == 0:
        return
    rows = (index if index is not None else pd.Index(table["image_id"])).get_indexer(boxes["image_id"])
    known = rows >= 0
    if not known.any():
        return
    positive = labels[rows[known], boxes["class_index"].to_numpy()[known]] > 0
    if positive.all():
        return
    box = boxes[known].iloc[int(np.flatnonzero(~positive)[0])]
    row = rows[known][int(np.flatnonzero(~positive)[0])]
    names = [CLASS_NAMES[c] for c in np.flatnonzero(labels[row])] or [NO_FINDING]
    line = int(box["csv_line"]) if "csv_line" in box.index else int(box["box_row"]) + 2
    raise DataError(
        f"{bbox_path}: line {line} (image {box['image_id']}) has a box of {box['class_name']}, but that image's "
        f"'Finding Labels' in {Path(entry_path).name} (CSV line {row + 2}) are {'|'.join(names)}; expected the "
        "box's class among its image's labels"
    )


# --------------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------------


def load_chestxray14(
    root: str | Path,
    *,
    views: Sequence[str] = (),
    require_images: bool = False,
    only_present: bool = False,
    check_box_images: bool = True,
) -> ChestXray14:
    """Read a ChestX-ray14 folder (see the module docstring for the layout).

    Args:
        root: the folder; metadata files in it or in ``root/metadata``.
        views: keep only these view positions (e.g. ``("PA",)``); empty keeps all.
        require_images: raise a DataError naming the missing files when an image is not on disk.
        only_present: keep only the images on disk; the number dropped is logged (never silent) and
            their ids are kept in :attr:`ChestXray14.missing_ids`.
        check_box_images: for box images on disk, read their size from the file header and reject
            boxes that extend beyond the image.

    Returns:
        :class:`ChestXray14`: ``table`` (N rows), ``labels`` (N x 14 uint8 in ``CLASS_NAMES`` order),
        ``boxes`` (one row per box file row; x, y, w, h in the pixels of the distributed image, 1024 x
        1024 for NIH), ``train_val_ids`` / ``test_ids`` (the official lists).

    Raises:
        DataError: missing files or columns, unknown labels, malformed or outside boxes, split lists
            naming images absent from the CSV, an image in both or neither list, an empty result.
    """
    root = Path(root)
    files = find_metadata_files(root)
    table, labels, known = _read_data_entry(files.data_entry)
    train_val_ids = _split_list_names(files.train_val)
    test_ids = _split_list_names(files.test)

    listed = known.get_indexer(np.array(train_val_ids + test_ids, dtype=object))  # one look-up for both lists
    positions = {files.train_val: listed[:len(train_val_ids)], files.test: listed[len(train_val_ids):]}
    lists = ((files.train_val, train_val_ids), (files.test, test_ids))
    for list_path, ids in lists:  # a name listed twice first, as read_split_list reports it while reading
        found = positions[list_path]
        _check_listed_once(ids, list_path, found if (found >= 0).all() else None)
    for list_path, ids in lists:
        found = positions[list_path]
        if (found < 0).any():
            absent = [i for i, p in zip(ids, found) if p < 0]
            raise DataError(
                f"{list_path} names {len(absent)} image(s) absent from {files.data_entry.name}: "
                f"{preview(absent)}; expected every listed image to have a data-entry row"
            )
    # each list names distinct images of the table (checked above), so an image in both is a shared row
    in_train_val = np.zeros(len(table), dtype=bool)
    in_train_val[positions[files.train_val]] = True
    shared = np.unique(positions[files.test][in_train_val[positions[files.test]]])
    if len(shared):
        both = sorted(table["image_id"].to_numpy()[shared])
        raise DataError(f"{files.train_val.name} and {files.test.name} both list {preview(both)}")
    split = np.full(len(table), "", dtype=object)
    split[positions[files.train_val]] = "train_val"
    split[positions[files.test]] = "test"
    unlisted = np.flatnonzero(split == "")
    if len(unlisted):
        names = table["image_id"].to_numpy()[unlisted]
        raise DataError(
            f"{files.data_entry}: {len(unlisted)} image(s) in neither {files.train_val.name} nor "
            f"{files.test.name}: {preview(list(names))}"
        )
    table["split"] = split

    on_disk = find_image_files(root)
    if on_disk:
        table["path"] = table["image_id"].map(on_disk)
        table["path"] = table["path"].astype(object).where(table["path"].notna(), None)
    else:  # a metadata-only folder
        table["path"] = pd.Series([None] * len(table), index=table.index, dtype=object)

    if files.bbox is not None:
        boxes = read_bbox_list(files.bbox)
        unknown = known.get_indexer(boxes["image_id"]) < 0
        absent = sorted(set(boxes["image_id"].to_numpy()[unknown]))
        if absent:
            raise DataError(f"{files.bbox} has boxes for image(s) absent from {files.data_entry.name}: "
                            f"{preview(absent)}")
        check_box_labels(boxes, table, labels, files.bbox, files.data_entry, index=known)
        if check_box_images:
            sizes = {}
            for image_id in boxes["image_id"].unique():
                if image_id in on_disk:
                    size = image_size_from_header(on_disk[image_id])
                    if size is not None:
                        sizes[image_id] = size
            check_boxes_inside(boxes, sizes, files.bbox)
    else:
        dtypes = {"image_id": object, "class_name": object, "x": float, "y": float, "w": float, "h": float}
        boxes = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, np.int64)) for c in BOX_COLUMNS})

    dataset = ChestXray14(
        root=root,
        table=table[list(TABLE_COLUMNS)],
        labels=labels,
        boxes=boxes,
        train_val_ids=train_val_ids,
        test_ids=test_ids,
        files=files,
        sources=(files.data_entry,),
        _positions=known,
    )
    return select_rows(dataset, views=views, require_images=require_images, only_present=only_present,
                       listing=files.data_entry, image_location=f"{root / 'images'} or {root / 'images_0XX' / 'images'}")


def write_subset_folder(
    source: str | Path,
    out_dir: str | Path,
    images_dir: str | Path,
    *,
    image_ids: Iterable[str] | None = None,
    symlink: bool = True,
) -> Path:
    """Build a small ChestX-ray14 folder from full metadata and a folder holding some of its images.

    The CSV rows and list lines of the kept images are copied verbatim (headers and format unchanged);
    images are symlinked (or copied) into ``out_dir/images``. Used to turn a sample folder (complete
    metadata + 40 sample PNGs) into a folder every command runs on.
    """
    files = find_metadata_files(source)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    available = {p.name: p for p in Path(images_dir).iterdir() if p.is_file()}
    wanted = set(available) if image_ids is None else set(image_ids)
    missing = sorted(wanted - set(available))
    if missing:
        raise DataError(f"{images_dir}: image(s) not found: {preview(missing)}")
    if not wanted:
        raise DataError(f"{images_dir}: no images (empty dataset)")

    def copy_rows(path: Path | None, keep_header: bool) -> None:
        if path is None:
            return
        lines = path.read_text().splitlines()
        body = lines[1:] if keep_header else lines
        kept = [line for line in body if line.split(",", 1)[0].strip() in wanted]
        text = "\n".join(([lines[0]] if keep_header else []) + kept)
        write_text_atomic(out / path.name, text + ("\n" if keep_header else ""))

    copy_rows(files.data_entry, True)
    copy_rows(files.bbox, True)
    copy_rows(files.train_val, False)
    copy_rows(files.test, False)
    for name in sorted(wanted):
        target = out / "images" / name
        if target.exists() or target.is_symlink():
            target.unlink()
        if symlink:
            target.symlink_to(available[name].resolve())
        else:
            with open(available[name], "rb") as source, atomic_write(target, "wb") as copy:
                shutil.copyfileobj(source, copy)
    return out

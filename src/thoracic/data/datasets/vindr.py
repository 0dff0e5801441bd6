"""VinDr-CXR (Nguyen et al. 2022) as PhysioNet distributes it (version 1.0.0)::

    ROOT/
      annotations/
        image_labels_train.csv   image_id, rad_id, then the 28 labels (0 / 1): one row per image and reader
        image_labels_test.csv    image_id, then the 28 labels: the consensus of 5 radiologists, one row per image
        annotations_train.csv    image_id, rad_id, class_name, x_min, y_min, x_max, y_max: one row per box and reader
        annotations_test.csv     image_id, class_name, x_min, y_min, x_max, y_max: the consensus boxes
      train/<image_id>.dicom     15,000 images, each read by 3 of 17 radiologists
      test/<image_id>.dicom      3,000 images

The CSVs may also sit in ``ROOT`` itself. Labels: the 22 local labels (findings, boxed) and 6 global
ones (diagnoses), in the file's column order (``Other disease`` of the test file is the training file's
``Other diseases``). A training image is positive for a label when more than half of its readers marked
it (2 of 3), a test image when the consensus did. No uncertain labels. Boxes: one row per reader's box
(``reader_id`` = ``rad_id``, ``R1`` ... ``R17``) on the training images, the consensus boxes
(``reader_id`` = ``consensus``) on the test images; the table's ``readers`` counts the readers of each
image and ``reader_ids`` names them (``R1 R5 R9``; ``consensus`` on the test images), boxes or not;
``No finding`` rows (no coordinates) are not boxes; x, y, w, h = x_min, y_min, x_max - x_min, y_max - y_min in the pixels of the DICOM file. Split: the
official train / test. Views: all PA (the dataset's description: posteroanterior scans). VinDr-CXR has no
patient ids: each image is its own patient; sex and age are in the DICOM headers only (empty / NaN).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thoracic.data.collection import BOX_COLUMNS, ChestXrayCollection, empty_boxes, preview
from thoracic.data.datasets.base import DatasetReader, label_matrix, list_images, paths_on_disk
from thoracic.data.metadata import check_boxes_inside, image_size_from_header
from thoracic.data.tables import clean_text, csv_header, find_file, read_csv
from thoracic.errors import DataError

FOLDERS = ("annotations", "")
LABEL_FILES: dict[str, str] = {"image_labels_train.csv": "train_val", "image_labels_test.csv": "test"}
BOX_FILES: dict[str, str] = {"annotations_train.csv": "train_val", "annotations_test.csv": "test"}
BOX_COLUMNS_CSV: tuple[str, ...] = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
#: Column spellings of the test file -> the training file's.
RENAMED: dict[str, str] = {"Other disease": "Other diseases"}
NO_FINDING = "No finding"
CONSENSUS = "consensus"


def majority(labels: np.ndarray, image_codes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image (``image_codes`` of each reader row, ``count`` images): 1 where more than half of its
    readers marked the label, else 0; and the number of readers of each image."""
    readers = np.bincount(image_codes, minlength=count)
    votes = np.zeros((count, labels.shape[1]), dtype=np.float64)
    np.add.at(votes, image_codes, labels)
    return (votes * 2 > readers[:, None]).astype(np.float32), readers


def reader_lists(rad_ids: pd.Series, image_codes: np.ndarray, count: int) -> np.ndarray:
    """Per image (``image_codes`` of each reader row, ``count`` images): its readers' ids, sorted and
    space-separated (``R1 R5 R9``): every reader of the image, also one who drew no box."""
    frame = pd.DataFrame({"image": image_codes, "reader": rad_ids.to_numpy(dtype=object)}).drop_duplicates()
    joined = frame.sort_values("reader").groupby("image")["reader"].agg(" ".join)
    return joined.reindex(range(count), fill_value="").to_numpy(dtype=object)


class VinDrReader(DatasetReader):
    """VinDr-CXR: image-label and box CSVs (several readers per training image, consensus on test), DICOM."""

    kind = "vindr"
    title = "VinDr-CXR"
    signature = "annotations/image_labels_train.csv or annotations/image_labels_test.csv"
    documentation = ("https://physionet.org/content/vindr-cxr/1.0.0/ (Files) and Nguyen et al. 2022, "
                     "Scientific Data 9:429")
    image_format = "DICOM"

    def matches(self, root: Path) -> bool:
        return find_file(root, list(LABEL_FILES), FOLDERS) is not None

    def metadata_files(self, root: Path) -> list[Path]:
        found = [p for name in (*LABEL_FILES, *BOX_FILES) if (p := find_file(root, [name], FOLDERS)) is not None]
        if not any(p.name.removesuffix(".gz") in LABEL_FILES for p in found):
            raise DataError(f"{root}: neither annotations/image_labels_train.csv nor annotations/image_labels_test.csv "
                            "found; expected the VinDr-CXR layout (annotations/ with the image-label and box CSVs, "
                            "train/ and test/ with the DICOM files)")
        return found

    def read(self, root: Path, *, uncertain: str = "ignore", check_box_images: bool = True) -> ChestXrayCollection:
        files = self.metadata_files(root)
        class_names: tuple[str, ...] | None = None
        tables, matrices = [], []
        for name, split in LABEL_FILES.items():
            path = next((p for p in files if p.name.removesuffix(".gz") == name), None)
            if path is None:
                continue
            raw = csv_header(path)
            key = ["image_id", "rad_id"] if "rad_id" in raw else ["image_id"]
            names = tuple(RENAMED.get(c, c) for c in raw if c not in key)
            if class_names is None:
                class_names = names
            elif set(names) != set(class_names):
                raise DataError(f"{path}: label columns {', '.join(sorted(set(names) ^ set(class_names)))} differ from "
                                "the other image-label file's; expected the same 28 labels")
            frame = read_csv(path, key, numbers=[c for c in raw if c not in key], what="a VinDr-CXR image-label CSV")
            frame.columns = [RENAMED.get(c, c) for c in frame.columns]
            if len(frame) == 0:
                continue
            values = label_matrix(frame, class_names, path, allowed=(0.0, 1.0))
            if np.isnan(values).any():
                row, column = (int(v) for v in np.argwhere(np.isnan(values))[0])
                raise DataError(f"{path}: column {class_names[column]!r} of data row {row + 1} (CSV line {row + 2}) is "
                                "empty; expected 0 or 1")
            ids = clean_text(frame["image_id"])
            codes, images = pd.factorize(ids, sort=False)
            if "rad_id" in key:
                matrix, readers = majority(values, codes, len(images))
                reader_ids = reader_lists(clean_text(frame["rad_id"]), codes, len(images))
            else:
                if len(images) != len(ids):
                    raise DataError(f"{path}: image(s) listed twice: {preview(ids[ids.duplicated()].tolist())}; "
                                    "expected one consensus row per image (no rad_id column)")
                matrix, readers = values, np.zeros(len(images), dtype=np.int64)
                reader_ids = np.full(len(images), CONSENSUS, dtype=object)
            matrices.append(matrix)
            tables.append(pd.DataFrame({"image_id": np.asarray(images, dtype=object), "split": split,
                                        "readers": readers, "reader_ids": reader_ids,
                                        "folder": "train" if split == "train_val" else "test"}))
        if not tables or class_names is None:
            raise DataError(f"{root}: the VinDr-CXR image-label CSVs hold no rows (empty dataset)")
        table = pd.concat(tables, ignore_index=True)
        if table["image_id"].duplicated().any():
            both = table["image_id"][table["image_id"].duplicated()].tolist()
            raise DataError(f"{root}: image(s) in both the training and the test label files: {preview(both)}")
        on_disk = list_images([root / "train", root / "test"], (".dicom", ".dcm"))
        stems = {Path(name).stem: path for name, path in on_disk.items()}
        ids = table["image_id"].to_numpy(dtype=object)
        table.insert(1, "path", paths_on_disk(ids, stems))
        table.insert(2, "patient_id", ids)
        table.insert(3, "sex", "")
        table.insert(4, "age", np.nan)
        table.insert(5, "view", "PA")
        boxes = self._boxes(files, table, class_names)
        dataset = ChestXrayCollection(root=root, kind=self.kind, table=table, labels=np.concatenate(matrices),
                                      class_names=class_names, boxes=boxes, sources=tuple(files))
        if check_box_images and len(boxes):
            sizes = {}
            for image_id in boxes["image_id"].unique():
                path = stems.get(image_id)
                size = _dicom_size(path) if path is not None else None
                if size is not None:
                    sizes[image_id] = size
            check_boxes_inside(boxes, sizes)
        return dataset

    def _boxes(self, files: list[Path], table: pd.DataFrame, class_names: tuple[str, ...]) -> pd.DataFrame:
        parts = []
        known = pd.Index(table["image_id"])
        index = {n: i for i, n in enumerate(class_names)}
        for name in BOX_FILES:
            path = next((p for p in files if p.name.removesuffix(".gz") == name), None)
            if path is None:
                continue
            frame = read_csv(path, BOX_COLUMNS_CSV, numbers=("x_min", "y_min", "x_max", "y_max"),
                             what="a VinDr-CXR annotation CSV")
            frame["class_name"] = clean_text(frame["class_name"])
            frame["image_id"] = clean_text(frame["image_id"])
            line = np.arange(len(frame), dtype=np.int64) + 2
            coords = frame[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=np.float64)
            boxed = ~np.isnan(coords).all(axis=1)
            problems = [
                (boxed & (frame["class_name"] == NO_FINDING).to_numpy(), f"a '{NO_FINDING}' row with coordinates"),
                (~boxed & (frame["class_name"] != NO_FINDING).to_numpy(), "a finding without coordinates"),
                (boxed & np.isnan(coords).any(axis=1), "some coordinates missing"),
                (boxed & ~frame["class_name"].isin(list(index)).to_numpy() & (frame["class_name"] != NO_FINDING).to_numpy(),
                 f"a class that is not a label of the image-label files ({', '.join(class_names)})"),
                (known.get_indexer(frame["image_id"]) < 0, "an image absent from the image-label files"),
            ]
            with np.errstate(invalid="ignore"):
                problems.append((boxed & ~((coords[:, 2] > coords[:, 0]) & (coords[:, 3] > coords[:, 1])
                                           & (coords[:, 0] >= 0) & (coords[:, 1] >= 0)),
                                 "a box with x_max <= x_min, y_max <= y_min or a negative corner"))
            for bad, what in problems:
                if bad.any():
                    row = int(np.flatnonzero(bad)[0])
                    raise DataError(f"{path}: line {line[row]} (image {frame['image_id'].iat[row]}, "
                                    f"{frame['class_name'].iat[row]}) has {what}; expected "
                                    f"{', '.join(BOX_COLUMNS_CSV)} with x_min < x_max and y_min < y_max")
            readers = clean_text(frame["rad_id"]) if "rad_id" in frame else pd.Series(CONSENSUS, index=frame.index)
            sub = frame[boxed]
            parts.append(pd.DataFrame({
                "image_id": sub["image_id"].to_numpy(dtype=object),
                "class_name": sub["class_name"].to_numpy(dtype=object),
                "class_index": sub["class_name"].map(index).to_numpy(dtype=np.int64),
                "x": coords[boxed, 0], "y": coords[boxed, 1],
                "w": coords[boxed, 2] - coords[boxed, 0], "h": coords[boxed, 3] - coords[boxed, 1],
                "box_row": np.flatnonzero(boxed).astype(np.int64),
                "reader_id": readers[boxed].to_numpy(dtype=object),
                "source": str(path),
                "csv_line": line[boxed],
            }, columns=list(BOX_COLUMNS)))
        return pd.concat(parts, ignore_index=True) if parts else empty_boxes()

    def image_location(self, root: Path) -> str:
        return f"{root / 'train'} or {root / 'test'} (<image_id>.dicom)"


def _dicom_size(path: str) -> tuple[int, int] | None:
    """(width, height) of a DICOM file from its header (Columns, Rows), None when unreadable."""
    try:
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(header.Columns), int(header.Rows)
    except Exception:  # unreadable files are reported by prepare, not here
        return image_size_from_header(path)

"""Every dataset read as distributed, through one interface: :func:`load_dataset`.

=============  ======================  ========================================  ==========  =====
kind           dataset                 identified by                             images      boxes
=============  ======================  ========================================  ==========  =====
chestxray14    NIH ChestX-ray14        Data_Entry_2017_v2020.csv                 PNG         yes
chexpert       CheXpert                train.csv / valid.csv (Path, Sex, ...)    JPEG        no
mimic          MIMIC-CXR-JPG           mimic-cxr-2.0.0-metadata.csv[.gz]         JPEG        no
padchest       PadChest                PADCHEST_chest_x_ray_images_labels_...    16-bit PNG  no
vindr          VinDr-CXR               annotations/image_labels_train.csv        DICOM       yes, several readers
rsna           RSNA Pneumonia          stage_2_train_labels.csv                  DICOM       yes
=============  ======================  ========================================  ==========  =====

Each reader is a :class:`~thoracic.data.datasets.base.DatasetReader` in :data:`READERS` (one module per
dataset: its docstring gives the layout, the label rules, the split and the views); all return a
:class:`~thoracic.data.collection.ChestXrayCollection`. :func:`load_dataset` reads a folder (its kind
given or detected by :func:`detect_dataset_kind`), applies the uncertain-label policy, the views filter
(frontal only by default) and a chosen subset of the label names; :func:`metadata_fingerprint` is what a
cache and a run record of the metadata. A dataset's kind is passed as ``dataset`` (``data.dataset``,
``--dataset``) everywhere; the container names it ``kind``.

>>> import tempfile
>>> from pathlib import Path
>>> from thoracic.data.synth import generate_layout
>>> folder = tempfile.TemporaryDirectory()
>>> root = generate_layout(Path(folder.name) / "chexpert", "chexpert", 12, 32, seed=0, progress=False)
>>> detect_dataset_kind(root)
'chexpert'
>>> dataset = load_dataset(root, "chexpert", uncertain="ignore", classes=["Edema", "Pleural Effusion"])
>>> dataset.kind, dataset.class_names, dataset.labels.dtype.name
('chexpert', ('Edema', 'Pleural Effusion'), 'float32')
>>> folder.cleanup()
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from thoracic.constants import DATASET_KINDS, UNCERTAIN_POLICIES
from thoracic.data.collection import FRONTAL, ChestXrayCollection, select_rows
from thoracic.data.datasets.base import DatasetReader, check_policy, verify_paths
from thoracic.data.datasets.chestxray14 import ChestXray14Reader
from thoracic.data.datasets.chexpert import CheXpertReader
from thoracic.data.datasets.mimic import MimicReader
from thoracic.data.datasets.padchest import PadChestReader
from thoracic.data.datasets.rsna import RsnaReader
from thoracic.data.datasets.vindr import VinDrReader
from thoracic.errors import DataError
from thoracic.provenance import file_sha256

__all__ = ["AUTO", "DATASET_KINDS", "READERS", "UNCERTAIN_POLICIES", "ChestXrayCollection", "DatasetReader",
           "box_class_names", "dataset_reader", "detect_dataset_kind", "load_dataset", "metadata_fingerprint",
           "resolve_dataset_kind"]

#: ``--dataset auto`` / ``data.dataset: auto``: detect the layout.
AUTO = "auto"
#: kind -> reader, in :data:`~thoracic.constants.DATASET_KINDS` order.
READERS: dict[str, DatasetReader] = {reader.kind: reader for reader in (
    ChestXray14Reader(), CheXpertReader(), MimicReader(), PadChestReader(), VinDrReader(), RsnaReader())}
assert tuple(READERS) == DATASET_KINDS


def dataset_reader(kind: str) -> DatasetReader:
    """The reader of ``kind`` (a DataError listing the kinds for an unknown one)."""
    if kind not in READERS:
        raise DataError(f"dataset {kind!r} unknown; expected one of {', '.join(DATASET_KINDS)} or {AUTO} "
                        "(--dataset / data.dataset)")
    return READERS[kind]


def _matching(root: Path) -> list[str]:
    return [kind for kind, reader in READERS.items() if reader.matches(root)]


def _layouts() -> str:
    return "; ".join(f"{reader.title} ({kind}): {reader.signature}" for kind, reader in READERS.items())


def detect_dataset_kind(root: str | Path) -> str:
    """The kind of the dataset folder ``root``, from the file that identifies each layout.

    Raises:
        DataError: ``root`` is not a folder, holds no known layout (the message lists each layout's
            identifying file) or several (the message names them: pass ``--dataset``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    found = _matching(root)
    if not found:
        raise DataError(f"{root}: no known dataset layout; expected one of: {_layouts()}")
    if len(found) > 1:
        raise DataError(f"{root} holds the files of several layouts ({', '.join(found)}); choose one with "
                        "--dataset (data.dataset)")
    return found[0]


def resolve_dataset_kind(root: str | Path, dataset: str = AUTO) -> str:
    """``dataset`` itself (a kind, checked), or the detected kind for ``auto``.

    A folder with no known layout reads as ChestX-ray14, this project's original layout, so that its
    reader's error names the files it expected (the message adds the other layouts).
    """
    if dataset != AUTO:
        return dataset_reader(dataset).kind
    root = Path(root)
    found = _matching(root) if root.is_dir() else []
    if len(found) > 1:
        raise DataError(f"{root} holds the files of several layouts ({', '.join(found)}); choose one with "
                        "--dataset (data.dataset)")
    return found[0] if found else "chestxray14"


def _guess(root: Path, kind: str) -> str:
    """The sentence an error about ``kind`` ends with when ``root`` looks like another layout."""
    others = [k for k in _matching(root) if k != kind] if root.is_dir() else []
    if others:
        reader = READERS[others[0]]
        return (f"; this folder looks like {reader.title} ({reader.signature} found): pass --dataset {others[0]} "
                f"(data.dataset={others[0]})")
    if kind == "chestxray14" and root.is_dir():
        return f"; the other layouts thoracic reads (--dataset): {_layouts()}"
    return ""


def load_dataset(
    root: str | Path,
    dataset: str = AUTO,
    *,
    uncertain: str = "ignore",
    views: Sequence[str] = (FRONTAL,),
    classes: Sequence[str] = (),
    require_images: bool = False,
    only_present: bool = False,
    check_box_images: bool = True,
) -> ChestXrayCollection:
    """Read a dataset folder as distributed.

    Args:
        root: the folder. dataset: its kind, one of :data:`~thoracic.constants.DATASET_KINDS`, or ``auto``
            (detected).
        uncertain: what an uncertain label becomes: ``ignore`` (NaN), ``zeros``, ``ones``
            (:data:`~thoracic.constants.UNCERTAIN_POLICIES`; only CheXpert and MIMIC-CXR have such labels).
        views: view positions to keep; ``frontal`` (the default) stands for every frontal position
            (:data:`~thoracic.data.collection.FRONTAL_VIEWS`); empty keeps every view.
        classes: the label names to keep, in this order (empty: all of the dataset's).
        require_images: a DataError naming the images not on disk. only_present: keep only the images on
            disk (the count dropped is logged; their ids in ``missing_ids``).
        check_box_images: check the boxes against the image sizes of the files on disk, where cheap.

    Returns:
        :class:`~thoracic.data.collection.ChestXrayCollection` (ChestX-ray14:
        :class:`~thoracic.data.metadata.ChestXray14`, unchanged).

    Raises:
        DataError: an unknown kind or policy; a folder that is not the layout ``dataset`` says (naming the
            file and column expected, and the layout it looks like if it looks like another); every
            error of the reader (missing files or columns, bad values, naming file, row and column).
    """
    root = Path(root)
    kind = resolve_dataset_kind(root, dataset)
    check_policy(uncertain)
    reader = READERS[kind]
    try:
        if root.is_dir() and not reader.matches(root):
            reader.metadata_files(root)  # raises the reader's own error naming the files it expected
        images = reader.read(root, uncertain=uncertain, check_box_images=check_box_images)
    except DataError as exc:
        raise DataError(f"{exc}{_guess(root, kind)}") from None
    if (require_images or only_present) and not reader.checks_files:
        images = verify_paths(images)
    listing = images.sources[0] if images.sources else root
    images = select_rows(images, views=views, require_images=require_images, only_present=only_present,
                         listing=listing, image_location=reader.image_location(root))
    object.__setattr__(images, "views", tuple(views))
    return images.select_classes(classes)


def box_class_names(dataset: ChestXrayCollection, class_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The labels among ``class_names`` (default: the dataset's) that carry boxes in ``dataset``'s layout, in
    ``class_names`` order: those its reader declares (:attr:`DatasetReader.box_classes`: ChestX-ray14's 8,
    present in this folder or not), else those its box rows name."""
    names = tuple(dataset.class_names if class_names is None else class_names)
    reader = READERS.get(dataset.kind)
    declared = reader.box_classes if reader is not None else None
    with_boxes = set(declared) if declared is not None else set(dataset.boxes["class_name"])
    return tuple(n for n in names if n in with_boxes)


def metadata_fingerprint(root: str | Path, dataset: str = AUTO) -> tuple[list[str], str]:
    """(file names, SHA-256) of the metadata files that define a dataset (what its cache and its runs record).

    One file: that file's SHA-256 (ChestX-ray14: its data-entry CSV, as caches have always recorded);
    several: the SHA-256 of their names and SHA-256s, one ``name<TAB>sha256`` line each.
    """
    root = Path(root)
    files = READERS[resolve_dataset_kind(root, dataset)].metadata_files(root)
    digests = [file_sha256(path) for path in files]
    if len(files) == 1:
        return [files[0].name], digests[0]
    lines = "".join(f"{path.name}\t{digest}\n" for path, digest in zip(files, digests))
    return [path.name for path in files], hashlib.sha256(lines.encode()).hexdigest()

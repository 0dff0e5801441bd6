"""The image cache, read side: its files, its manifest, and :class:`ImageCache`.

``thoracic prepare --data ROOT --image-size S`` (:func:`thoracic.data.cache_writer.prepare_cache`) writes
``ROOT/cache_S/`` (or ``--cache DIR``)::

    images.npy           N x S x S uint8 (a .npy memory map; row i = row i of the data-entry CSV)
    done.npy             N bool: rows written (the resume mask)
    checksums.npy        N uint32: CRC-32 of every written row (what a rerun verifies)
    original_sizes.npy   N x 2 int32: (width, height) of each decoded file (boxes are in these pixels)
    index.csv            image_id, original_width, original_height, available
    manifest.json        format version, size, image count, dataset kind, its label names, the
                         uncertain-label policy given to prepare (a record: the cache holds images
                         only, so a run reads the labels with its own data.uncertain), source folder,
                         metadata fingerprint (SHA-256 of the metadata files, ChestX-ray14: of its
                         data-entry CSV), resize method, the exact byte size of images.npy, status,
                         bad images

A cache holds every image of the folder, of every view: runs with other views filters or label subsets
share it. This module holds what reader and writer share (the file names, :func:`row_checksum`, the manifest and
``.npy`` header readers, which files are a cache's own) and never imports the writer.

:class:`ImageCache` refuses a cache that is unfinished, of another format, of another dataset kind,
label names, of another size than requested, built from other metadata than
the folder it is used with, or damaged (an ``images.npy`` without the size its manifest records).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import CLASS_NAMES
from thoracic.data.datasets import metadata_fingerprint
from thoracic.errors import CacheMismatchError, DataError
from thoracic.safety import folder_entries

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
IMAGES_FILE = "images.npy"
DONE_FILE = "done.npy"
SIZES_FILE = "original_sizes.npy"
CHECKSUMS_FILE = "checksums.npy"
INDEX_FILE = "index.csv"
#: Every file a cache folder holds (the only files ``overwrite`` may delete, with their temporary files).
CACHE_FILES = (IMAGES_FILE, DONE_FILE, SIZES_FILE, CHECKSUMS_FILE, INDEX_FILE, MANIFEST_FILE)
GENERATOR = "thoracic prepare"
#: What a manifest written before a key existed means by its absence (caches were ChestX-ray14 caches).
MANIFEST_DEFAULTS: dict[str, Any] = {"dataset": "chestxray14", "uncertain": None}

_OWNED = re.compile(r"\.?(" + "|".join(re.escape(n) for n in CACHE_FILES) + r")(\.tmp(\.npy|-\d+)?)?")


def default_cache_dir(root: str | Path, image_size: int) -> Path:
    """``<root>/cache_<image_size>``."""
    return Path(root) / f"cache_{int(image_size)}"


def is_cache_file(name: str) -> bool:
    """Whether a relative path names a file a cache folder holds (or a temporary file of one)."""
    return _OWNED.fullmatch(name) is not None


def is_thoracic_manifest(data: Any) -> bool:
    """Whether parsed JSON is a manifest written by ``thoracic prepare``."""
    return (isinstance(data, dict) and data.get("generator", GENERATOR) == GENERATOR
            and all(k in data for k in ("format_version", "image_size", "num_images", "image_ids_sha256")))


def owned_cache_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is a thoracic cache holding nothing but its own files (safe to delete)."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    entries = folder_entries(folder)
    if not entries or not all(is_cache_file(e) for e in entries):
        return False
    try:
        return is_thoracic_manifest(json.loads((folder / MANIFEST_FILE).read_text()))
    except (OSError, ValueError):
        return False


def row_checksum(pixels: np.ndarray) -> int:
    """CRC-32 (zlib) of one cached row's bytes: cheap (~10 us per 256 px row) and catches any damage
    short of a deliberate forgery, which is all a resume needs."""
    return zlib.crc32(np.ascontiguousarray(pixels))


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """(shape, dtype, header length) of a .npy file, or None when its header is unreadable."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(handle)
            return tuple(shape), np.dtype(dtype), handle.tell()
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(manifest, problem): the parsed manifest or None with why it cannot be used."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} is not valid JSON ({exc})"
    if not is_thoracic_manifest(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        return None, f"{path} is not a thoracic cache manifest (keys {keys}; not written by thoracic prepare)"
    return data, None


class ImageCache:
    """Read side of a prepared cache; the memory map opens lazily (so the object pickles to workers).

    Attributes:
        cache_dir: the folder. manifest: its manifest dict. image_ids: N ids (data-entry row order).
        original_sizes: N x 2 (width, height) of the decoded files. available: N bool.
    """

    def __init__(self, cache_dir: Path, manifest: dict[str, Any], index: pd.DataFrame) -> None:
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self.image_ids: np.ndarray = index["image_id"].astype(str).to_numpy()
        self.original_sizes: np.ndarray = index[["original_width", "original_height"]].to_numpy(dtype=np.int64)
        self.available: np.ndarray = index["available"].to_numpy().astype(bool)
        self._positions = pd.Index(self.image_ids)
        self._images: np.ndarray | None = None

    @classmethod
    def open(
        cls,
        cache_dir: str | Path,
        *,
        expected_root: str | Path | None = None,
        expected_size: int | None = None,
        expected_dataset: str | None = None,
        expected_class_names: Sequence[str] | None = None,
        expected_uncertain: str | None = None,
    ) -> ImageCache:
        """Open a cache, refusing one that is unfinished or does not match ``expected_*``.

        ``expected_dataset`` is the dataset kind (with ``expected_root``, the metadata of that kind are
        fingerprinted), ``expected_class_names`` its label names, ``expected_uncertain`` the
        uncertain-label policy (for a dataset that has uncertain labels; None: not checked). A cache of
        ChestX-ray14 also checks the class order when nothing is expected.

        Raises:
            DataError: no cache at ``cache_dir`` (the message says how to prepare one).
            CacheMismatchError: other format / dataset / label names / policy / size / metadata, or
                unfinished.
        """
        cache_dir = Path(cache_dir)
        manifest_path = cache_dir / MANIFEST_FILE
        hint_root = expected_root if expected_root is not None else "ROOT"
        hint_size = expected_size if expected_size is not None else "S"
        if not manifest_path.is_file():
            default = (
                expected_root is not None
                and expected_size is not None
                and cache_dir == default_cache_dir(expected_root, expected_size)
            )
            raise DataError(
                f"no image cache at {cache_dir} ({MANIFEST_FILE} missing); run "
                f"`thoracic prepare --data {hint_root} --image-size {hint_size}"
                f"{'' if default else f' --cache {cache_dir}'}` first"
            )
        manifest, problem = read_manifest(manifest_path)
        if manifest is None:
            raise CacheMismatchError(f"{problem}; rebuild the cache: `thoracic prepare --data {hint_root} "
                                     f"--image-size {hint_size} --cache {cache_dir} --overwrite`")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CacheMismatchError(
                f"{cache_dir}: cache format {manifest.get('format_version')}, this version reads "
                f"{FORMAT_VERSION}; rerun thoracic prepare into a new folder"
            )
        kind = manifest.get("dataset", MANIFEST_DEFAULTS["dataset"])
        if expected_dataset is not None and kind != expected_dataset:
            raise CacheMismatchError(
                f"{cache_dir}: cache of a {kind} dataset, {expected_dataset} requested; run `thoracic prepare --data "
                f"{hint_root} --dataset {expected_dataset} --image-size {hint_size}` with a new --cache folder")
        class_names = list(expected_class_names) if expected_class_names is not None else (
            list(CLASS_NAMES) if kind == "chestxray14" else None)
        if class_names is not None and manifest.get("class_names") != class_names:
            raise CacheMismatchError(f"{cache_dir}: cache class order {manifest.get('class_names')} differs from "
                                     f"{class_names}")
        policy = manifest.get("uncertain", MANIFEST_DEFAULTS["uncertain"])
        if expected_uncertain is not None and policy != expected_uncertain:
            raise CacheMismatchError(
                f"{cache_dir}: cache prepared with the uncertain-label policy {policy}, {expected_uncertain} requested "
                f"(data.uncertain); run `thoracic prepare --data {hint_root} --dataset {kind} --uncertain "
                f"{expected_uncertain} --image-size {hint_size}` with a new --cache folder")
        if expected_size is not None and int(manifest.get("image_size", -1)) != int(expected_size):
            raise CacheMismatchError(
                f"{cache_dir}: cache holds {manifest.get('image_size')} px images, {expected_size} px requested; "
                f"run `thoracic prepare --data {hint_root} --image-size {expected_size}`"
            )
        if expected_root is not None:
            names, digest = metadata_fingerprint(expected_root, kind)
            if digest != manifest.get("metadata_sha256"):
                raise CacheMismatchError(
                    f"{cache_dir} was built from other metadata ({manifest.get('source')}) than "
                    f"{', '.join(str(Path(expected_root) / n) for n in names)}; rerun `thoracic prepare --data "
                    f"{expected_root} --image-size {manifest.get('image_size')}` with a new --cache folder"
                )
        if manifest.get("status") != "complete":
            raise CacheMismatchError(
                f"{cache_dir}: cache is {manifest.get('status')} ({manifest.get('num_available', 'some')} of "
                f"{manifest.get('num_images')} images); rerun `thoracic prepare --data {manifest.get('source')} "
                f"--image-size {manifest.get('image_size')}` to finish it (add --skip-bad to accept unreadable images)"
            )
        repair = (f"rerun `thoracic prepare --data {manifest.get('source')} --image-size {manifest.get('image_size')}"
                  f" --cache {cache_dir}`: it checks every row and rebuilds the damaged ones")
        _check_images_file(cache_dir, manifest, repair)
        try:
            index = pd.read_csv(cache_dir / INDEX_FILE, dtype={"image_id": str}, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise CacheMismatchError(f"{cache_dir / INDEX_FILE}: unreadable ({exc}); {repair}") from None
        missing = [c for c in ("image_id", "original_width", "original_height", "available") if c not in index]
        if missing:
            raise CacheMismatchError(f"{cache_dir / INDEX_FILE}: columns {missing} missing; {repair}")
        if len(index) != manifest.get("num_images"):
            raise CacheMismatchError(f"{cache_dir}: {INDEX_FILE} has {len(index)} rows, manifest says "
                                     f"{manifest.get('num_images')}; {repair}")
        return cls(cache_dir, manifest, index)

    @property
    def image_size(self) -> int:
        """Side S of the cached images, in pixels."""
        return int(self.manifest["image_size"])

    @property
    def images(self) -> np.ndarray:
        """N x S x S uint8 read-only memory map (opened on first use in each process)."""
        if self._images is None:
            self._images = np.load(self.cache_dir / IMAGES_FILE, mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # each worker maps the file itself
        return state

    def index_of(self, image_id: str) -> int:
        """Row of one image in the cache (DataError when absent)."""
        position = int(self._positions.get_indexer([image_id])[0])
        if position < 0:
            raise DataError(f"image {image_id} is not in the cache {self.cache_dir}")
        return position

    def indices_of(self, image_ids: Sequence[str]) -> np.ndarray:
        """Rows of many images; -1 where an image is not in the cache."""
        return self._positions.get_indexer(list(image_ids))

    def image(self, image_id: str) -> np.ndarray:
        """The cached S x S uint8 image of one id (DataError when unavailable)."""
        position = self.index_of(image_id)
        if not self.available[position]:
            raise DataError(f"image {image_id} is listed as unreadable in {self.cache_dir / MANIFEST_FILE}")
        return np.asarray(self.images[position])


def _check_images_file(cache_dir: Path, manifest: dict[str, Any], repair: str) -> None:
    """Refuse an ``images.npy`` whose header or size is not what the manifest promises (e.g. truncated:
    a memory map would read its missing rows as black images)."""
    path = cache_dir / IMAGES_FILE
    count, size = int(manifest.get("num_images", -1)), int(manifest.get("image_size", -1))
    if not path.is_file():
        raise CacheMismatchError(f"{path} is missing; {repair}")
    header = read_npy_header(path)
    if header is None or header[0] != (count, size, size) or header[1] != np.uint8:
        found = "an unreadable header" if header is None else f"shape {header[0]}, dtype {header[1]}"
        raise CacheMismatchError(f"{path} has {found}, expected ({count}, {size}, {size}) uint8; {repair}")
    expected = int(manifest.get("images_bytes") or header[2] + count * size * size)
    actual = path.stat().st_size
    if actual != expected:
        raise CacheMismatchError(f"{path} is {actual:,} bytes, expected {expected:,} (truncated or damaged); "
                                 f"{repair}")

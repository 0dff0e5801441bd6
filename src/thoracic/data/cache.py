"""The image cache: every image decoded once, resized to S x S, stored in one uint8 memory map.

``thoracic prepare --data ROOT --size S`` writes ``ROOT/cache_S/`` (or ``--cache DIR``)::

    images.npy           N x S x S uint8 (a .npy memory map; row i = row i of the data-entry CSV)
    done.npy             N bool: rows written (the resume mask)
    original_sizes.npy   N x 2 int32: (width, height) of each decoded file (boxes are in these pixels)
    index.csv            image_id, original_width, original_height, available
    manifest.json        format version, size, image count, class order, source folder, metadata
                         fingerprint (SHA-256 of the data-entry CSV), resize method, status, bad images

Decoding is :func:`thoracic.data.images.load_resized` (8-bit grayscale, Pillow BILINEAR antialiased
resize), run on all cores; each worker writes its rows straight into the (shared) memory map and sends
back only their row numbers and sizes, and the parent marks them done. The done mask is saved
atomically every ``checkpoint_every`` images and when interrupted, each time after the memory map is
flushed to disk, so a rerun after Ctrl-C or a kill continues with the rows not marked done; since each
row is a pure function of its file, the result is bit-identical to an uninterrupted run.

Images that are missing or cannot be decoded are listed (in the manifest and the error); the rest is
finished. Without ``skip_bad`` prepare then raises a DataError (non-zero exit); with it the cache is
complete and those rows are marked unavailable. A rerun retries them.

:class:`ImageCache` refuses a cache that is unfinished, of another format or class order, of another
size than requested, or built from other metadata than the folder it is used with.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from thoracic.constants import CLASS_NAMES
from thoracic.data.images import RESIZE_METHOD, load_resized
from thoracic.data.metadata import file_fingerprint, find_metadata_files, load_chestxray14
from thoracic.errors import CacheMismatchError, DataError
from thoracic.io import save_npy_atomic, write_text_atomic

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
IMAGES_FILE = "images.npy"
DONE_FILE = "done.npy"
SIZES_FILE = "original_sizes.npy"
INDEX_FILE = "index.csv"

_SHOW = 20
#: Seconds between flushes of the memory map while results arrive (besides the checkpoints).
_FLUSH_SECONDS = 0.25


def default_cache_dir(root: str | Path, image_size: int) -> Path:
    """``<root>/cache_<image_size>``."""
    return Path(root) / f"cache_{int(image_size)}"


def _ids_digest(image_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")


def _decode_one(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One image as the cache stores it (module level so tests can interpose)."""
    return load_resized(path, size)


# worker-process state: the memory map opened once per worker
_WORKER: dict[str, Any] = {}


def _worker_init(images_path: str, size: int) -> None:
    _WORKER["images"] = np.load(images_path, mmap_mode="r+")
    _WORKER["size"] = size


def _worker_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, tuple[int, int] | None, str | None]]:
    """Decode a chunk into the shared memory map; only (row, size, error) travels back to the parent.

    No flush here: the map is MAP_SHARED, so a written row is in the kernel's page cache at once and
    outlives this process, killed or not. The parent msyncs the map before each save of the done mask
    (see ``checkpoint``), which is what keeps the mask from ever claiming a row not on disk. A flush
    per chunk (an msync: a wait on the disk, ~0.6 ms on an idle ext4 volume, several ms on a busy one)
    only stalled the worker.
    """
    images = _WORKER["images"]
    results = []
    for index, path in chunk:
        try:
            pixels, original = _decode_one(path, _WORKER["size"])
        except DataError as exc:
            results.append((index, None, str(exc)))
            continue
        images[index] = pixels
        results.append((index, original, None))
    return results


def _guided_chunks(todo: Sequence[tuple[int, str]], workers: int, largest: int = 32) -> list[list[tuple[int, str]]]:
    """Split the work into chunks that shrink toward the end (guided self-scheduling).

    Each chunk is 1 / (4 x workers) of what is left, at most ``largest`` images: big chunks while much
    is left keep the per-task cost of the pool (a pickle and a pipe round trip, under 1 ms) small next
    to ~10 ms of decoding per 1024 px PNG; the last chunks are single images, so the workers finish
    within about one image of each other instead of one waiting out a whole chunk of the other.
    """
    chunks = []
    start = 0
    while start < len(todo):
        size = max(1, min(largest, (len(todo) - start) // (4 * workers)))
        chunks.append(list(todo[start : start + size]))
        start += size
    return chunks


def prepare_cache(
    root: str | Path,
    image_size: int,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    *,
    overwrite: bool = False,
    checkpoint_every: int = 512,
) -> Path:
    """Decode every image of the folder ``root`` once into an S x S uint8 cache (see the module docs).

    Args:
        root: ChestX-ray14 folder (NIH layout).
        image_size: side S of the cached images.
        cache_dir: where to write (default ``<root>/cache_<S>``).
        workers: decoding processes (None: all cores; 1: in this process).
        skip_bad: finish with the missing / undecodable images marked unavailable instead of raising.
        progress: show a tqdm bar.
        overwrite: replace a cache built from other metadata or another size at ``cache_dir``.
        checkpoint_every: save the resume mask after this many images.

    Returns:
        The cache folder.

    Raises:
        DataError: bad images (after finishing all others) unless ``skip_bad``; bad metadata.
        CacheMismatchError: ``cache_dir`` holds a cache of other data or size and not ``overwrite``.
    """
    if image_size < 8:
        raise DataError(f"image size must be at least 8 pixels, got {image_size}")
    root = Path(root)
    dataset = load_chestxray14(root, check_box_images=False)
    files = find_metadata_files(root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(root, image_size)
    image_ids = [str(i) for i in dataset.table["image_id"]]
    paths = list(dataset.table["path"])
    count = len(image_ids)
    identity = {
        "format_version": FORMAT_VERSION,
        "image_size": int(image_size),
        "num_images": count,
        "class_names": list(CLASS_NAMES),
        "metadata_file": files.data_entry.name,
        "metadata_sha256": file_fingerprint(files.data_entry),
        "image_ids_sha256": _ids_digest(image_ids),
        "resize": RESIZE_METHOD,
    }
    manifest_path = cache / MANIFEST_FILE
    images_path, done_path, sizes_path = cache / IMAGES_FILE, cache / DONE_FILE, cache / SIZES_FILE
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        differing = [key for key, value in identity.items() if old.get(key) != value]
        if differing:
            if not overwrite:
                raise CacheMismatchError(
                    f"{cache} holds a cache that differs in {', '.join(differing)} from {root} at size "
                    f"{image_size}; choose another --cache folder or delete {cache} (or pass overwrite)"
                )
            shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    fresh = not (manifest_path.is_file() and images_path.is_file() and done_path.is_file() and sizes_path.is_file())
    if fresh:
        images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(count, image_size, image_size))
        images.flush()
        done = np.zeros(count, dtype=bool)
        sizes = np.zeros((count, 2), dtype=np.int32)
        save_npy_atomic(done_path, done)
        save_npy_atomic(sizes_path, sizes)
    else:
        images = np.load(images_path, mmap_mode="r+")
        done = np.load(done_path)
        sizes = np.load(sizes_path)
        if images.shape != (count, image_size, image_size) or done.shape != (count,) or sizes.shape != (count, 2):
            raise CacheMismatchError(f"{cache}: files have unexpected shapes; delete the folder and rerun prepare")
    manifest = {
        **identity,
        "source": str(root.resolve()),
        "status": "in_progress",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "bad_images": [],
    }
    _write_manifest(manifest_path, manifest)

    bad: dict[int, str] = {}
    todo: list[tuple[int, str]] = []
    for index in np.flatnonzero(~done):
        path = paths[index]
        if path is None:
            bad[int(index)] = f"{image_ids[index]}: not on disk under {root}/images or {root}/images_0XX/images"
        else:
            todo.append((int(index), str(path)))

    def checkpoint() -> None:
        images.flush()
        save_npy_atomic(sizes_path, sizes)
        save_npy_atomic(done_path, done)

    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    since_checkpoint = 0

    def record(index: int, original: tuple[int, int] | None, error: str | None) -> None:
        nonlocal since_checkpoint
        if error is not None:
            bad[index] = error
        else:
            sizes[index] = original
            done[index] = True
            since_checkpoint += 1
        bar.update()
        if since_checkpoint >= checkpoint_every:
            checkpoint()
            since_checkpoint = 0

    # The pool starts before the progress bar (whose monitor thread would make this a fork of a
    # multi-threaded process); it is closed once all work is queued but joined only at the very end,
    # so that the workers' exit (unmapping their copy of this process: tens of ms when e.g. torch is
    # loaded) overlaps the last images and the index and manifest writing instead of adding to them.
    pool = (
        multiprocessing.get_context().Pool(workers, initializer=_worker_init, initargs=(str(images_path), image_size))
        if workers > 1 and len(todo) >= 4 * workers
        else None
    )
    try:
        bar = tqdm(total=count, initial=int(done.sum()), desc=f"prepare {image_size}px", unit="img",
                   disable=not progress)
        try:
            if pool is None:
                for index, path in todo:
                    try:
                        pixels, original = _decode_one(path, image_size)
                    except DataError as exc:
                        record(index, None, str(exc))
                        continue
                    images[index] = pixels
                    record(index, original, None)
            else:
                chunks = pool.imap_unordered(_worker_chunk, _guided_chunks(todo, workers))
                pool.close()  # all queued: a worker that finds no more work exits while the others finish
                flushed = time.monotonic()
                for results in chunks:
                    for index, original, error in results:
                        record(index, original, error)
                    if time.monotonic() - flushed > _FLUSH_SECONDS:
                        # write rows back while the workers decode, so the flush before the final
                        # done mask (on the critical path) has only the last fraction of a second left
                        images.flush()
                        flushed = time.monotonic()
        finally:
            bar.close()
            checkpoint()

        bad_list = [{"image_id": image_ids[i], "row": i, "reason": bad[i]} for i in sorted(bad)]
        available = done.copy()
        pd.DataFrame(
            {
                "image_id": image_ids,
                "original_width": sizes[:, 0],
                "original_height": sizes[:, 1],
                "available": available.astype(np.uint8),
            }
        ).to_csv(cache / INDEX_FILE, index=False)
        manifest.update(
            status="complete" if (not bad or skip_bad) else "incomplete",
            bad_images=bad_list,
            num_available=int(available.sum()),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        _write_manifest(manifest_path, manifest)
    finally:
        if pool is not None:
            pool.terminate()  # all results in: reaps the exited workers; on an error: stops them
            pool.join()
    if bad and not skip_bad:
        lines = "\n  ".join(item["reason"] for item in bad_list[:_SHOW])
        more = f"\n  ... and {len(bad_list) - _SHOW} more (all listed in {manifest_path})" if len(bad_list) > _SHOW else ""
        raise DataError(
            f"{len(bad_list)} of {count} images could not be cached (the other {int(available.sum())} are):\n  "
            f"{lines}{more}\nfix or remove them and rerun the same command (it resumes), or rerun with "
            "--skip-bad to use the cache without them"
        )
    return cache


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
    ) -> ImageCache:
        """Open a cache, refusing one that is unfinished or does not match ``expected_*``.

        Raises:
            DataError: no cache at ``cache_dir`` (the message says how to prepare one).
            CacheMismatchError: other format / class order / size / metadata, or unfinished.
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
                f"`thoracic prepare --data {hint_root} --size {hint_size}"
                f"{'' if default else f' --cache {cache_dir}'}` first"
            )
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CacheMismatchError(
                f"{cache_dir}: cache format {manifest.get('format_version')}, this version reads "
                f"{FORMAT_VERSION}; rerun thoracic prepare into a new folder"
            )
        if manifest.get("class_names") != list(CLASS_NAMES):
            raise CacheMismatchError(f"{cache_dir}: cache class order {manifest.get('class_names')} differs from "
                                     f"{list(CLASS_NAMES)}")
        if expected_size is not None and int(manifest.get("image_size", -1)) != int(expected_size):
            raise CacheMismatchError(
                f"{cache_dir}: cache holds {manifest.get('image_size')} px images, {expected_size} px requested; "
                f"run `thoracic prepare --data {hint_root} --size {expected_size}`"
            )
        if expected_root is not None:
            files = find_metadata_files(expected_root)
            if file_fingerprint(files.data_entry) != manifest.get("metadata_sha256"):
                raise CacheMismatchError(
                    f"{cache_dir} was built from other metadata ({manifest.get('source')}) than {files.data_entry}; "
                    f"rerun `thoracic prepare --data {expected_root} --size {manifest.get('image_size')}` "
                    "with a new --cache folder"
                )
        if manifest.get("status") != "complete":
            raise CacheMismatchError(
                f"{cache_dir}: cache is {manifest.get('status')} ({manifest.get('num_available', 'some')} of "
                f"{manifest.get('num_images')} images); rerun `thoracic prepare --data {manifest.get('source')} "
                f"--size {manifest.get('image_size')}` to finish it (add --skip-bad to accept unreadable images)"
            )
        index = pd.read_csv(cache_dir / INDEX_FILE, dtype={"image_id": str}, keep_default_na=False)
        if len(index) != manifest.get("num_images"):
            raise CacheMismatchError(f"{cache_dir}: {INDEX_FILE} has {len(index)} rows, manifest says "
                                     f"{manifest.get('num_images')}")
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

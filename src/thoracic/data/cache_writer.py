"""The image cache, write side: :func:`prepare_cache`, every image decoded once into the memory map.

``thoracic prepare --data ROOT --image-size S`` writes ``ROOT/cache_S/`` (or ``--cache DIR``); its files and
their reader, :class:`thoracic.data.cache.ImageCache`, are in :mod:`thoracic.data.cache`. The folder may be
any layout of :mod:`thoracic.data.datasets` (``--dataset``, detected when omitted); the cache holds every
image of it, every view, in the order of the reader's table.

Decoding is :func:`thoracic.data.images.load_resized` (8-bit grayscale, Pillow BILINEAR antialiased
resize; a JPEG is decoded at a reduced scale in the DCT domain first when the size allows), run on all
cores; each worker writes its rows straight into the (shared) memory map and sends
back only their row numbers, sizes and checksums, and the parent marks them done. The done mask is
saved atomically every ``checkpoint_every`` images and when interrupted, each time after the memory map
is flushed to disk, so a rerun after Ctrl-C or a kill continues with the rows not marked done; since
each row is a pure function of its file, the result is bit-identical to an uninterrupted run.

Safety (docs/reliability.md):

- **Space first.** ``images.npy`` is allocated in full (``posix_fallocate``) before any row is written:
  on a full disk prepare stops at once with the bytes needed and free, instead of a SIGBUS in a
  memory-mapped write; what was done stays resumable.
- **Integrity.** A rerun checks the files it resumes from: a truncated ``images.npy`` is extended and
  its lost rows rebuilt, rows whose CRC-32 no longer matches are rebuilt, an unreadable ``done.npy`` is
  recovered from the checksums; :class:`~thoracic.data.cache.ImageCache` refuses a cache whose
  ``images.npy`` does not have the size its manifest records.
- **Deletion.** A cache is written only into a new or empty folder or over a thoracic cache; never into
  the data folder or a folder holding it. ``overwrite`` deletes only the cache's own files and refuses
  (deleting nothing) when the folder holds anything else.

Images that are missing or cannot be decoded are listed (in the manifest and the error); the rest is
finished. Without ``skip_bad`` prepare then raises a DataError (non-zero exit); with it the cache is
complete and those rows are marked unavailable. A rerun retries them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from thoracic.deprecation import renamed_keywords
from thoracic.data.cache import (
    MANIFEST_DEFAULTS,
    CACHE_FILES,
    CHECKSUMS_FILE,
    DONE_FILE,
    FORMAT_VERSION,
    GENERATOR,
    IMAGES_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    SIZES_FILE,
    default_cache_dir,
    is_cache_file,
    read_manifest,
    read_npy_header,
    row_checksum,
)
from thoracic.data.images import JPEG_DECODING, RESIZE_METHOD, load_resized
from thoracic.data.datasets import AUTO, READERS, load_dataset, metadata_fingerprint, resolve_dataset_kind
from thoracic.errors import CacheMismatchError, DataError, Interrupted, UnsafeDeleteError
from thoracic.io import save_npy_atomic, write_csv_atomic, write_json_atomic
from thoracic.safety import (
    DISK_FULL_ERRNOS,
    check_free_space,
    disk_full_error,
    ensure_output_dir,
    folder_entries,
    is_within,
    quiet_worker,
    remove_owned,
    reserve_file,
)

log = logging.getLogger(__name__)

_SHOW = 20
#: Seconds between flushes of the memory map while results arrive (besides the checkpoints).
_FLUSH_SECONDS = 0.25


def _ids_digest(image_ids: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(image_ids).encode()).hexdigest()


def _decode_one(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One image as the cache stores it (module level so tests can interpose)."""
    return load_resized(path, size)


# worker-process state: the memory map opened once per worker
_WORKER: dict[str, Any] = {}


def _worker_init(images_path: str, size: int, parent_pid: int) -> None:
    # Ctrl-C: the parent alone handles it (saves the resume mask and says how to continue); a worker
    # finishes its chunk and exits without a traceback. A killed parent takes its workers with it.
    quiet_worker(parent_pid)
    _WORKER["images"] = np.load(images_path, mmap_mode="r+")
    _WORKER["size"] = size


def _worker_chunk(chunk: list[tuple[int, str]]) -> list[tuple[int, tuple[int, int] | None, int | None, str | None]]:
    """Decode a chunk into the shared memory map; only (row, size, checksum, error) travels back.

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
            results.append((index, None, None, str(exc)))
            continue
        images[index] = pixels
        results.append((index, original, row_checksum(pixels), None))
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


# --------------------------------------------------------------------------------------------------
# The files of a cache: creation, checks, recovery
# --------------------------------------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], dtype: Any = np.uint8) -> bytes:
    """The exact header ``np.save`` writes for an array of ``shape`` (format 1.0)."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def images_file_bytes(count: int, image_size: int) -> int:
    """Exact size in bytes of a cache's ``images.npy`` (header + N x S x S)."""
    return len(_npy_header((count, image_size, image_size))) + count * image_size * image_size


def _small_files_bytes(count: int) -> int:
    """Room the other files of a cache need while being rewritten (temporary copy + old file): the
    resume mask, checksums and sizes (1 + 4 + 8 bytes per row), the index (about 40 bytes per row)."""
    return 2 * (count * 13 + 3 * 128) + count * 48 + 4096


def _create_images_file(path: Path, count: int, image_size: int, kept: str) -> None:
    """Write the header of ``images.npy`` and allocate every byte of its rows (zeros) on disk."""
    header = _npy_header((count, image_size, image_size))
    total = len(header) + count * image_size * image_size
    check_free_space(path.parent, total + _small_files_bytes(count), "the image cache", kept)
    try:
        with open(path, "wb") as handle:
            handle.write(header)
            handle.flush()
            reserve_file(handle, total, "the image cache", kept)
    except BaseException:
        path.unlink(missing_ok=True)  # our own half-made file: the space goes back
        raise


def _load_small(path: Path, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
    """A small array file of the expected shape and dtype, or None when missing or damaged."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.shape != shape or array.dtype != np.dtype(dtype):
        return None
    return array


def _verify_rows(images: np.ndarray, done: np.ndarray, checksums: np.ndarray, have_checksums: bool,
                 progress: bool) -> int:
    """Check every row marked done against its checksum; unmark the damaged ones. Returns their count.

    Without stored checksums (a cache from before they existed, or a damaged checksums file) the
    checksums of the done rows are computed from the rows as they are.
    """
    rows = np.flatnonzero(done)
    damaged = 0
    step = max(1, (64 << 20) // max(1, images[0].nbytes))  # read ~64 MB at a time
    with tqdm(total=len(rows), desc="verify cache", unit="img", disable=not progress or len(rows) == 0,
              leave=False) as bar:
        for start in range(0, len(rows), step):
            for index in rows[start : start + step]:
                crc = row_checksum(images[index])
                if not have_checksums:
                    checksums[index] = crc
                elif crc != checksums[index]:
                    done[index] = False
                    damaged += 1
            bar.update(min(step, len(rows) - start))
    return damaged


def _check_location(root: Path, cache: Path) -> None:
    if cache.exists() and not cache.is_dir():
        raise DataError(f"--cache {cache} is an existing file; expected a folder for the image cache")
    if is_within(root, cache):
        what = "is the data folder" if root.resolve() == cache.resolve() else "contains the data folder"
        raise DataError(f"--cache {cache} {what} {root}; the cache must be a folder of its own "
                        f"(default: {default_cache_dir(root, 0).parent}/cache_SIZE)")


def _looks_like_own_cache(cache: Path) -> bool:
    """A folder whose manifest is unreadable counts as a thoracic cache only when every file has a cache
    file's name and its ``images.npy`` has a readable uint8 N x S x S header."""
    if not all(is_cache_file(e) for e in folder_entries(cache)):
        return False
    header = read_npy_header(cache / IMAGES_FILE) if (cache / IMAGES_FILE).is_file() else None
    return header is not None and len(header[0]) == 3 and header[1] == np.uint8 and header[0][1] == header[0][2]


def _remove_stale_temporary_files(cache: Path) -> None:
    """Temporary files of atomic writes that a kill interrupted (the cache's own: ``.done.npy.tmp-123``)."""
    for path in cache.glob("*"):
        if path.is_file() and is_cache_file(path.name) and path.name not in CACHE_FILES:
            path.unlink(missing_ok=True)


def _start_fresh(cache: Path, overwrite: bool, reason: str) -> None:
    """Clear a cache folder of its own files before building a new cache there (deletion rule)."""
    if not cache.exists() or not any(cache.iterdir()):
        return
    if not overwrite:
        raise CacheMismatchError(f"{reason}; choose another --cache folder, or pass --overwrite to replace "
                                 f"the cache there (only its own files are deleted)")
    remove_owned(cache, is_cache_file, "image cache", remove_folder=False,
                 hint="Choose another --cache folder (an empty or new one).")


@renamed_keywords(workers="num_workers")
def prepare_cache(
    root: str | Path,
    image_size: int,
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    *,
    overwrite: bool = False,
    checkpoint_every: int = 512,
    dataset: str = AUTO,
    uncertain: str = "ignore",
) -> Path:
    """Decode every image of the folder ``root`` once into an S x S uint8 cache (see the module docs).

    Args:
        root: a dataset folder as distributed (ChestX-ray14: the NIH layout).
        image_size: side S of the cached images.
        cache_dir: where to write (default ``<root>/cache_<S>``): a new or empty folder, or a thoracic
            cache (resumed when it matches, else refused unless ``overwrite``); never ``root`` itself or
            a folder that holds it.
        num_workers: decoding processes (None: all cores; 1: in this process).
        skip_bad: finish with the missing / undecodable images marked unavailable instead of raising.
        progress: show a tqdm bar.
        overwrite: replace a cache built from other metadata or another size (or a damaged one) at
            ``cache_dir``; deletes only the cache's own files.
        checkpoint_every: save the resume mask after this many images.
        dataset: the layout (:data:`~thoracic.constants.DATASET_KINDS`), ``auto`` to detect it; recorded in
            the manifest with the dataset's label names.
        uncertain: the uncertain-label policy recorded for datasets that have uncertain labels (CheXpert,
            MIMIC-CXR); a record only: the cache holds no labels, runs of every policy share it.

    Returns:
        The cache folder.

    Raises:
        DataError: bad images (after finishing all others) unless ``skip_bad``; bad metadata; a cache
            location that is the data folder or holds it.
        CacheMismatchError: ``cache_dir`` holds a cache of other data or size (or a damaged manifest)
            and not ``overwrite``.
        UnsafeDeleteError: ``cache_dir`` holds files that are not the cache's own.
        DiskFullError: no room for the cache (the bytes needed and free are named); rerun after freeing
            space: finished rows are kept.
    """
    if image_size < 8:
        raise DataError(f"image size must be at least 8 pixels, got {image_size}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder (expected a dataset folder as distributed)")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(root, image_size)
    _check_location(root, cache)
    kind = resolve_dataset_kind(root, dataset)
    images_of = load_dataset(root, kind, uncertain=uncertain, views=(), check_box_images=False)
    names, digest = metadata_fingerprint(root, kind)
    image_ids = [str(i) for i in images_of.table["image_id"]]
    paths = list(images_of.table["path"])
    count = len(image_ids)
    identity = {
        "format_version": FORMAT_VERSION,
        "image_size": int(image_size),
        "num_images": count,
        "dataset": kind,
        "class_names": list(images_of.class_names),
        "uncertain": uncertain if READERS[kind].has_uncertain else None,
        "metadata_file": ", ".join(names),
        "metadata_sha256": digest,
        "image_ids_sha256": _ids_digest(image_ids),
        "resize": RESIZE_METHOD,
    }
    location = READERS[kind].image_location(root)
    manifest_path = cache / MANIFEST_FILE
    images_path, done_path, sizes_path = cache / IMAGES_FILE, cache / DONE_FILE, cache / SIZES_FILE
    checksums_path = cache / CHECKSUMS_FILE
    images_bytes = images_file_bytes(count, image_size)
    kept = ("What was cached so far is kept; free some space (or choose another --cache folder) and rerun the "
            "same command: it continues with the images not yet cached.")

    # What is at the cache location decides between a fresh cache and a resumed one.
    fresh = True
    created = time.strftime("%Y-%m-%dT%H:%M:%S")
    if manifest_path.is_file():
        old, problem = read_manifest(manifest_path)
        if old is None and not _looks_like_own_cache(cache):
            entries = folder_entries(cache)
            raise UnsafeDeleteError(f"{problem}; {cache} holds {len(entries)} file(s) ({', '.join(entries[:_SHOW])}) "
                                    "that thoracic cannot tell as its own, and it writes a cache only into a new or "
                                    "empty folder or over one of its own caches: choose another --cache folder")
        if old is None:
            _start_fresh(cache, overwrite, f"{problem}: the cache at {cache} is damaged")
        else:
            differing = [key for key, value in identity.items() if old.get(key, MANIFEST_DEFAULTS.get(key)) != value]
            if differing:
                _start_fresh(cache, overwrite, f"{cache} holds a cache that differs in {', '.join(differing)} "
                                               f"from {root} at size {image_size}")
            else:
                fresh = not images_path.is_file()
                created = str(old.get("created", created))
    elif cache.is_dir() and any(cache.iterdir()):
        foreign = [e for e in folder_entries(cache) if not is_cache_file(e)]
        if foreign:
            raise UnsafeDeleteError(
                f"--cache {cache} is not empty and holds no thoracic cache ({len(foreign)} other file(s): "
                f"{', '.join(foreign[:_SHOW])}); choose a new or empty folder for the cache")
        # only cache files without a manifest: our own start that died before writing it
        for name in folder_entries(cache):
            (cache / name).unlink()
    ensure_output_dir(cache, "--cache")
    _remove_stale_temporary_files(cache)

    manifest = {
        **identity,
        "generator": GENERATOR,
        "source": str(root.resolve()),
        "jpeg_decoding": JPEG_DECODING,
        "status": "in_progress",
        "created": created,
        "images_bytes": images_bytes,
        "bad_images": [],
    }
    try:
        if fresh:
            # the manifest first: from now on every file in the folder is known to be the cache's own
            write_json_atomic(manifest_path, manifest)
            _create_images_file(images_path, count, image_size, kept)
            done = np.zeros(count, dtype=bool)
            sizes = np.zeros((count, 2), dtype=np.int32)
            checksums = np.zeros(count, dtype=np.uint32)
            have_checksums = True
        else:
            done, sizes, checksums, have_checksums = _recover(cache, count, image_size, kept, progress)
            write_json_atomic(manifest_path, manifest)
        save_npy_atomic(checksums_path, checksums)
        save_npy_atomic(sizes_path, sizes)
        save_npy_atomic(done_path, done)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(exc, "the image cache", cache, None, kept) from None
        raise
    images = np.load(images_path, mmap_mode="r+")
    return _fill(location, cache, manifest, images, done, sizes, checksums, image_ids, paths, num_workers, skip_bad,
                 progress, checkpoint_every, kept)


def _recover(cache: Path, count: int, image_size: int, kept: str,
             progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Check the files of a cache being resumed; rows that cannot be trusted are marked to be rebuilt.

    Returns ``(done, sizes, checksums, have_checksums)``.
    """
    images_path = cache / IMAGES_FILE
    shape = (count, image_size, image_size)
    row_bytes = image_size * image_size
    header = read_npy_header(images_path)
    repaired = []
    if header is None or header[0] != shape or header[1] != np.uint8:
        found = "an unreadable header" if header is None else f"shape {header[0]}, dtype {header[1]}"
        log.warning("%s has %s, expected %s uint8: rebuilding every row", images_path, found, shape)
        _create_images_file(images_path, count, image_size, kept)
        return (np.zeros(count, dtype=bool), np.zeros((count, 2), dtype=np.int32),
                np.zeros(count, dtype=np.uint32), True)
    header_bytes = header[2]
    total = header_bytes + count * row_bytes
    size = images_path.stat().st_size
    intact_rows = count if size >= total else max(0, (size - header_bytes) // row_bytes)
    with open(images_path, "r+b") as handle:
        if size > total:
            handle.truncate(total)
        reserve_file(handle, total, "the image cache", kept)

    done = _load_small(cache / DONE_FILE, (count,), bool)
    sizes = _load_small(cache / SIZES_FILE, (count, 2), np.int32)
    checksums = _load_small(cache / CHECKSUMS_FILE, (count,), np.uint32)
    have_checksums = checksums is not None
    if checksums is None:
        if (cache / CHECKSUMS_FILE).exists():
            repaired.append(f"{CHECKSUMS_FILE} is damaged (checksums recomputed from the rows)")
        checksums = np.zeros(count, dtype=np.uint32)
    if sizes is None:
        repaired.append(f"{SIZES_FILE} is missing or damaged (every row rebuilt)")
        sizes = np.zeros((count, 2), dtype=np.int32)
        done = np.zeros(count, dtype=bool)
    if done is None:
        # the checksums say which rows were finished: a row whose bytes match its stored checksum is
        if have_checksums:
            repaired.append(f"{DONE_FILE} is missing or damaged (finished rows found by their checksums)")
            done = (checksums != 0) & (sizes > 0).all(axis=1)
        else:
            repaired.append(f"{DONE_FILE} is missing or damaged (every row rebuilt)")
            done = np.zeros(count, dtype=bool)
    done = done.copy()
    done &= (sizes > 0).all(axis=1)  # a finished row always has the size of its file
    if intact_rows < count:
        lost = int(done[intact_rows:].sum())
        done[intact_rows:] = False
        repaired.append(f"{IMAGES_FILE} was truncated to {size:,} bytes of {total:,} ({lost} finished rows lost)")
    images = np.load(images_path, mmap_mode="r")
    damaged = _verify_rows(images, done, checksums, have_checksums, progress)
    del images
    if damaged:
        repaired.append(f"{damaged} row(s) of {IMAGES_FILE} no longer match their checksums")
    for problem in repaired:
        log.warning("%s: %s; those rows are rebuilt", cache, problem)
    return done, sizes, checksums, True


def _fill(location: str, cache: Path, manifest: dict[str, Any], images: np.ndarray, done: np.ndarray,
          sizes: np.ndarray, checksums: np.ndarray, image_ids: list[str], paths: list, workers: int | None,
          skip_bad: bool, progress: bool, checkpoint_every: int, kept: str) -> Path:
    """Decode the rows not done into ``images`` and finish the index and manifest."""
    count = len(image_ids)
    image_size = images.shape[1]
    manifest_path = cache / MANIFEST_FILE
    bad: dict[int, str] = {}
    todo: list[tuple[int, str]] = []
    for index in np.flatnonzero(~done):
        path = paths[index]
        if path is None:
            bad[int(index)] = f"{image_ids[index]}: not on disk under {location}"
        else:
            todo.append((int(index), str(path)))

    def checkpoint() -> None:
        images.flush()
        save_npy_atomic(cache / CHECKSUMS_FILE, checksums)
        save_npy_atomic(cache / SIZES_FILE, sizes)
        save_npy_atomic(cache / DONE_FILE, done)

    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    since_checkpoint = 0

    def record(index: int, original: tuple[int, int] | None, checksum: int | None, error: str | None) -> None:
        nonlocal since_checkpoint
        if error is not None:
            bad[index] = error
        else:
            sizes[index] = original
            checksums[index] = checksum
            done[index] = True
            since_checkpoint += 1
        bar.update()
        if since_checkpoint >= checkpoint_every:
            checkpoint()
            since_checkpoint = 0

    # The pool starts before the progress bar (whose monitor thread would make this a fork of a
    # multi-threaded process). A ProcessPoolExecutor, not multiprocessing.Pool: when a worker dies
    # (killed, out of memory) the executor raises BrokenProcessPool where a Pool silently replaces the
    # worker and waits forever for the lost chunk.
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(), initializer=_worker_init,
                            initargs=(str(cache / IMAGES_FILE), image_size, os.getpid()))
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
                        record(index, None, None, str(exc))
                        continue
                    images[index] = pixels
                    record(index, original, row_checksum(pixels), None)
            else:
                pending = {pool.submit(_worker_chunk, chunk) for chunk in _guided_chunks(todo, workers)}
                flushed = time.monotonic()
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        for index, original, checksum, error in future.result():
                            record(index, original, checksum, error)
                    if time.monotonic() - flushed > _FLUSH_SECONDS:
                        # write rows back while the workers decode, so the flush before the final
                        # done mask (on the critical path) has only the last fraction of a second left
                        images.flush()
                        flushed = time.monotonic()
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted (Ctrl-C); {int(done.sum())} of {count} images of the cache {cache} are finished and "
                "kept: rerun the same command to continue") from None
        except BrokenProcessPool:
            raise DataError(
                f"a prepare worker process died (killed, or out of memory) while writing {cache}; the "
                f"{int(done.sum())} images finished so far are kept: rerun the same command to continue "
                "(fewer --num-workers if memory is short)") from None
        finally:
            bar.close()
            try:
                checkpoint()
            except OSError as exc:
                if exc.errno not in DISK_FULL_ERRNOS:
                    raise
                # the previous resume mask is intact (atomic writes): the rerun redoes a few more rows
                raise disk_full_error(exc, "the resume mask of the image cache", cache, None, kept) from None

        bad_list = [{"image_id": image_ids[i], "row": i, "reason": bad[i]} for i in sorted(bad)]
        available = done.copy()
        index_frame = pd.DataFrame({
            "image_id": image_ids,
            "original_width": sizes[:, 0],
            "original_height": sizes[:, 1],
            "available": available.astype(np.uint8),
        })
        try:
            write_csv_atomic(cache / INDEX_FILE, index_frame, index=False)
            manifest.update(
                status="complete" if (not bad or skip_bad) else "incomplete",
                bad_images=bad_list,
                num_available=int(available.sum()),
                finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
            write_json_atomic(manifest_path, manifest)
        except OSError as exc:
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full_error(exc, "the cache index", cache, None, kept) from None
            raise
    finally:
        if pool is not None:
            # Ctrl-C or an error: drop the queued chunks; the running ones finish (a fraction of a second)
            pool.shutdown(wait=True, cancel_futures=True)
    if bad and not skip_bad:
        lines = "\n  ".join(item["reason"] for item in bad_list[:_SHOW])
        more = f"\n  ... and {len(bad_list) - _SHOW} more (all listed in {manifest_path})" if len(bad_list) > _SHOW else ""
        raise DataError(
            f"{len(bad_list)} of {count} images could not be cached (the other {int(available.sum())} are):\n  "
            f"{lines}{more}\nfix or remove them and rerun the same command (it resumes), or rerun with "
            "--skip-bad to use the cache without them"
        )
    return cache

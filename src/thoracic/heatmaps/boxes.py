"""Heatmap -> boxes: the box extraction of Wang et al. (2017), shared by localization and prediction.

The public box API. Three modules do the work, one job each: :mod:`thoracic.heatmaps.upsampling`
(resizing and normalising a map: :func:`upsample_heatmap`, :func:`normalize_heatmap`,
:func:`interpolation_matrix`, :func:`legacy_cell_centres`, re-exported here), this module (boxes and peaks
of one map or of many, as tables) and :mod:`thoracic.heatmaps.blocks` (the exact extraction without
materialising the full-resolution map).

1. Upsample a class's heatmap linearly to the image's original size (1024 x 1024 for NIH), with every
   heatmap cell centred where the registration puts it (:data:`CellCentres`; by default the geometric
   registration the commands use, for a ResNet at the default input size: :func:`geometric_cell_centres`;
   the ``align_corners=False`` convention is :func:`legacy_cell_centres`).
2. Min-max normalise it to [0, 255], threshold it at each T_heatmap (:data:`HEATMAP_THRESHOLDS`) and draw
   one box around every 8-connected region (or only around the largest, as the seed code did).

All boxes are ``(x, y, w, h)`` in original-image pixels with ``(x, y)`` the top-left corner; a box covers
the half-open area ``[x, x + w) x [y, y + h)``, so a box drawn around pixel columns ``c0..c1`` has
``w = c1 - c0 + 1`` (like OpenCV's ``boundingRect``). :func:`heatmap_peak` finds the maximum of the
upsampled map (the pointing game's point).

The boxes equal those of the plain algorithm (materialise :func:`upsample_heatmap`, :func:`normalize_heatmap`,
threshold, ``scipy.ndimage.label`` with 8-connectivity, tight boxes) bit for bit, on every map and size,
but are computed without materialising the full-resolution map (:mod:`thoracic.heatmaps.blocks`): 984 rows at
two thresholds take well under 2 s on one core (``benchmarks/bench_localization.py``).
:mod:`thoracic.evaluation.localization` scores these boxes; :mod:`thoracic.prediction` draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thoracic.constants import HEATMAP_THRESHOLDS
from thoracic.errors import DataError
from thoracic.heatmaps.blocks import MapBatch, extract_batch
from thoracic.heatmaps.upsampling import (
    DEFAULT_INPUT_SIZE,
    CellCentres,
    default_cell_centres,
    expand_runs,
    geometric_cell_centres,
    interpolation_matrix,
    legacy_cell_centres,
    normalize_heatmap,
    upsample_heatmap,
)


@dataclass(frozen=True)
class ExtractedBoxes:
    """Boxes drawn around the regions of one thresholded heatmap.

    Attributes:
        boxes: ``(K, 4)`` ``(x, y, w, h)`` in original-image pixels; largest region first (equal areas:
            in raster order of their first pixel, as ``scipy.ndimage.label`` numbers them).
        scores: ``(K,)`` peak of the normalised heatmap in each region divided by 255, in [0, 1].
        areas: ``(K,)`` region areas: the number of original-resolution pixels in each region.
    """

    boxes: np.ndarray
    scores: np.ndarray
    areas: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> ExtractedBoxes:
        """No box: arrays of shapes ``(0, 4)``, ``(0,)``, ``(0,)``."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0))


def _image_size(original_size: tuple[int, int] | int) -> tuple[int, int]:
    if isinstance(original_size, (int, np.integer)):
        original_size = (int(original_size), int(original_size))
    height, width = (int(v) for v in original_size)
    if height < 1 or width < 1:
        raise DataError(f"original size must be positive, got {original_size}")
    return height, width


def _check_thresholds(thresholds: Iterable[float]) -> list[float]:
    values = list(dict.fromkeys(float(t) for t in thresholds))
    for value in values:
        if not 0.0 <= value <= 255.0:  # also NaN
            raise DataError(f"heatmap threshold {value} is outside the 0-255 scale")
    return values


def boxes_from_heatmaps(
    heatmap: np.ndarray,
    thresholds: Iterable[float],
    original_size: tuple[int, int] | int,
    *,
    largest_only: bool = False,
    cell_centres: CellCentres | None = None,
) -> dict[float, ExtractedBoxes]:
    """Boxes of one heatmap at several thresholds (see :func:`boxes_from_heatmap`): ``{threshold: boxes}``."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2 or heatmap.size == 0 or not np.all(np.isfinite(heatmap)):
        raise DataError(f"heatmap must be a finite, non-empty 2-D array, got shape {heatmap.shape}")
    batch = MapBatch(heatmap[None], _image_size(original_size), cell_centres)
    return _extract(batch, _check_thresholds(thresholds), largest_only)[0]


def boxes_from_heatmap(
    heatmap: np.ndarray,
    threshold_0_255: float,
    original_size: tuple[int, int] | int,
    *,
    largest_only: bool = False,
    cell_centres: CellCentres | None = None,
) -> ExtractedBoxes:
    """Boxes around the connected regions of a thresholded heatmap, in original-image pixels.

    Wang et al. (2017): the heatmap of a class is resized to the original image, min-max normalised to
    [0, 255] and thresholded (value strictly above ``threshold_0_255``); each 8-connected region gives one
    bounding box. ``largest_only`` keeps the region of largest area only, as the seed paper's code did.

    The result is exactly that of the plain algorithm, ``normalize_heatmap(upsample_heatmap(...)) > T``
    then ``scipy.ndimage.label`` with 8-connectivity and tight boxes, for every map and size (tested
    against it), but computed without materialising the full-resolution map (:mod:`thoracic.heatmaps.blocks`).

    Args:
        heatmap: ``(h, w)`` raw heatmap at the model's native resolution (any scale: it is normalised).
        threshold_0_255: threshold on the 0-255 scale (60 and 180 in Wang et al.).
        original_size: ``(height, width)`` of the original image, or one int for a square image.
        largest_only: keep only the largest region's box.
        cell_centres: where the heatmap's cells sit in the original image (:data:`CellCentres`, e.g.
            ``thoracic.geometry.make_registration(name, grid)(heatmap.shape, original_size)``); ``None``:
            :func:`default_cell_centres`, the geometric registration the commands use, for a ResNet at
            the default input size (256 px).

    Returns:
        :class:`ExtractedBoxes`: ``boxes`` ``(K, 4)`` as ``(x, y, w, h)`` in original-image pixels (largest
        region first), ``scores`` ``(K,)`` in [0, 1], ``areas`` ``(K,)`` in original pixels.

    >>> import numpy as np
    >>> heatmap = np.zeros((8, 8))
    >>> heatmap[1:3, 5:7] = 1.0  # an 8 x 8 CAM that fires in the upper right
    >>> found = boxes_from_heatmap(heatmap, 180, 1024)  # cells 5-6 x 1-2 centred at x 641.5-769.5, y 129.5-257.5
    >>> len(found), found.boxes[0].tolist(), found.scores.tolist()
    (1, [604.0, 92.0, 204.0, 204.0], [1.0])
    >>> boxes_from_heatmap(heatmap, 60, 1024).boxes[0].tolist()  # a lower threshold: a larger box
    [544.0, 32.0, 324.0, 324.0]
    """
    return boxes_from_heatmaps(heatmap, [threshold_0_255], original_size, largest_only=largest_only,
                               cell_centres=cell_centres)[float(threshold_0_255)]


def _extract(batch: MapBatch, thresholds: list[float], largest_only: bool) -> list[dict[float, ExtractedBoxes]]:
    """:func:`~thoracic.heatmaps.blocks.extract_batch` as one ``{threshold: ExtractedBoxes}`` per map."""
    return [{t: ExtractedBoxes(*found[t]) if t in found else ExtractedBoxes.empty() for t in thresholds}
            for found in extract_batch(batch, thresholds, largest_only)]


def _map_batches(items: list[tuple[tuple[str, str], np.ndarray]],
                 original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
                 registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None,
                 batch_size: int, progress: str | None) -> Iterable[tuple[list[int], MapBatch]]:
    """The maps grouped by shape and image size, ``batch_size`` at a time: (their indices, the batch)."""
    batches: dict[tuple, list[int]] = {}
    arrays: list[np.ndarray] = []
    for index, ((image_id, class_name), heatmap) in enumerate(items):
        if isinstance(original_sizes, Mapping):
            if image_id not in original_sizes:
                raise DataError(f"no original size known for image {image_id}")
            size = _image_size(original_sizes[image_id])
        else:
            size = _image_size(original_sizes)
        array = np.asarray(heatmap, dtype=np.float64)
        if array.ndim != 2 or array.size == 0 or not np.all(np.isfinite(array)):
            raise DataError(f"heatmap of ({image_id}, {class_name}): expected a finite, non-empty 2-D array, "
                            f"got shape {array.shape}")
        arrays.append(array)
        batches.setdefault((array.shape, size), []).append(index)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=progress, unit="map", leave=False)
    step = max(1, int(batch_size))
    for (shape, size), indices in batches.items():
        centres = registration(shape, size) if registration is not None else None
        for chunk in range(0, len(indices), step):
            members = indices[chunk:chunk + step]
            yield members, MapBatch(np.stack([arrays[k] for k in members]), size, centres)
            if bar is not None:
                bar.update(len(members))
    if bar is not None:
        bar.close()


def _items(heatmaps: Mapping[tuple[str, str], np.ndarray] | Iterable[tuple[str, str, np.ndarray]]
           ) -> list[tuple[tuple[str, str], np.ndarray]]:
    return list(heatmaps.items() if isinstance(heatmaps, Mapping) else (((i, c), h) for i, c, h in heatmaps))


def _boxes_and_peaks(items: list[tuple[tuple[str, str], np.ndarray]],
                     original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
                     thresholds: list[float] | None, largest_only: bool, progress: bool,
                     registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None,
                     batch_size: int) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """The box table (None without ``thresholds``) and the peak table of the maps, in one pass."""
    parts: list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]] = []  # (map, threshold, boxes, ...)
    peak_x = np.zeros(len(items), dtype=np.int64)
    peak_y = np.zeros(len(items), dtype=np.int64)
    for members, batch in _map_batches(items, original_sizes, registration, batch_size,
                                       "boxes" if progress else None):
        peak_y[members], peak_x[members] = batch.peaks()
        if thresholds is None:
            continue
        for k, result in zip(members, _extract(batch, thresholds, largest_only)):
            for t, threshold in enumerate(thresholds):
                found = result[threshold]
                if len(found):
                    parts.append((np.full(len(found), k), t, found.boxes, found.scores, found.areas))
    peaks = pd.DataFrame({"image_id": [key[0] for key, _ in items], "class_name": [key[1] for key, _ in items],
                          "peak_x": peak_x, "peak_y": peak_y})
    if thresholds is None:
        return None, peaks
    # in input order, per map the thresholds in the given order, largest region first
    parts.sort(key=lambda part: (int(part[0][0]), part[1]))
    index = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    threshold_of = np.concatenate([np.full(len(p[0]), p[1]) for p in parts]) if parts else np.zeros(0, np.int64)
    boxes = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, 4))
    table = pd.DataFrame({
        "image_id": peaks["image_id"].to_numpy()[index], "class_name": peaks["class_name"].to_numpy()[index],
        "threshold": np.asarray([int(round(t)) for t in thresholds], dtype=np.int64)[threshold_of],
        "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2], "h": boxes[:, 3],
        "score": np.concatenate([p[3] for p in parts]) if parts else np.zeros(0),
        "area": np.concatenate([p[4] for p in parts]) if parts else np.zeros(0),
    })
    return table, peaks


def extract_boxes(
    heatmaps: Mapping[tuple[str, str], np.ndarray] | Iterable[tuple[str, str, np.ndarray]],
    original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
    progress: bool = False,
    registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Predicted boxes of many ``(image_id, class_name) -> heatmap`` pairs as a table.

    Returns one row per box with ``image_id, class_name, threshold, x, y, w, h, score`` (the predicted
    boxes :mod:`thoracic.evaluation.localization` scores; ``threshold`` as an int on the 0-255 scale;
    x, y, w, h in original pixels; ``score`` = the region's peak normalised heat in [0, 1]) and ``area``
    (the region's pixel count), in input order, per map the thresholds in the given order and
    the largest region first: the boxes of :func:`boxes_from_heatmaps`, map by map.
    ``registration(heatmap_shape, original_size) -> CellCentres`` places each heatmap's cells in its
    image (``None``: :func:`default_cell_centres`); it is called once per distinct
    (shape, size). Maps of one shape and size are extracted ``batch_size`` at a time.
    """
    return extract_boxes_and_peaks(heatmaps, original_sizes, thresholds, largest_only, progress, registration,
                                   batch_size)[0]


def extract_boxes_and_peaks(
    heatmaps: Mapping[tuple[str, str], np.ndarray] | Iterable[tuple[str, str, np.ndarray]],
    original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
    progress: bool = False,
    registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None = None,
    batch_size: int = 16,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`extract_boxes` and :func:`heatmap_peaks` of the same maps in one pass (what both need of a
    map, its interpolated rows and exact extremes, is computed once)."""
    boxes, peaks = _boxes_and_peaks(_items(heatmaps), original_sizes, _check_thresholds(thresholds), largest_only,
                                    progress, registration, batch_size)
    return boxes, peaks


def heatmap_peak(heatmap: np.ndarray, original_size: tuple[int, int] | int,
                 cell_centres: CellCentres | None = None) -> tuple[int, int]:
    """``(x, y)``: column and row, in original pixels, of the maximum of the upsampled heatmap.

    Exactly ``numpy.argmax`` of ``upsample_heatmap(heatmap, original_size, cell_centres)`` (the first
    pixel in raster order where the maximum is reached several times), without materialising it.
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2 or heatmap.size == 0 or not np.all(np.isfinite(heatmap)):
        raise DataError(f"heatmap must be a finite, non-empty 2-D array, got shape {heatmap.shape}")
    row, column = MapBatch(heatmap[None], _image_size(original_size), cell_centres).peaks()
    return int(column[0]), int(row[0])


def heatmap_peaks(
    heatmaps: Mapping[tuple[str, str], np.ndarray] | Iterable[tuple[str, str, np.ndarray]],
    original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
    registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """:func:`heatmap_peak` of many maps: ``image_id, class_name, peak_x, peak_y`` (original pixels), in
    input order; ``registration`` as in :func:`extract_boxes`."""
    return _boxes_and_peaks(_items(heatmaps), original_sizes, None, False, False, registration, batch_size)[1]


__all__ = [
    "HEATMAP_THRESHOLDS", "CellCentres", "ExtractedBoxes", "boxes_from_heatmap", "boxes_from_heatmaps",
    "DEFAULT_INPUT_SIZE", "default_cell_centres", "expand_runs", "extract_boxes", "extract_boxes_and_peaks",
    "geometric_cell_centres", "heatmap_peak", "heatmap_peaks", "interpolation_matrix", "legacy_cell_centres",
    "normalize_heatmap", "upsample_heatmap",
]

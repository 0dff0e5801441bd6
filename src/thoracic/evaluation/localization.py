"""Weakly supervised localization, scored as Wang et al. (2017) defined it (paper Section 5.2, Tables 2-7).

Protocol (``docs/evaluation.md``):

1. For every ground-truth box row, take the heatmap of *that row's* class on its image (an image with
   several boxes contributes every row; nothing is keyed by image id alone).
2. Upsample the heatmap bilinearly to the image's original size (1024 x 1024 for NIH), min-max normalise
   it to [0, 255], threshold it at each T_heatmap (60 and 180), and draw one box around every
   8-connected region (or only around the largest, as the seed code did).
3. IoU = intersection / union; IoBB = intersection / area of the *predicted* box (Wang et al. 2017).
   A ground-truth box is localized at T when some predicted box of its class on its image has a value
   strictly greater than T. A predicted box that localizes no ground-truth box of its class and image is
   a false positive; the average number of false positives per image is reported beside the accuracy.

All boxes are ``(x, y, w, h)`` in original-image pixels with ``(x, y)`` the top-left corner; a box covers
the half-open area ``[x, x + w) x [y, y + h)``, so a box drawn around pixel columns ``c0..c1`` has
``w = c1 - c0 + 1`` (like OpenCV's ``boundingRect``), and two boxes that share an edge do not intersect.

Speed: materialising and labelling a 1024 x 1024 map costs ~5 ms, too slow for 984 rows x 2 thresholds
in 2 s. Bilinear upsampling is separable (``U = A_rows @ H @ A_cols.T``) and piecewise linear, so
:func:`boxes_from_heatmap` evaluates ``U`` only where it is needed: its exact minimum and maximum at the
few pixels beside the low-resolution sample positions, its regions on a grid of every ``step``-th pixel,
and each region's exact edges in thin strips of full-resolution rows and columns around the grid box.
With ``step=1`` it is the plain full-resolution algorithm (tests check both agree).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage

from thoracic.constants import BOX_CLASS_NAMES
from thoracic.errors import DataError

#: Thresholds of the paper and of Wang et al. 2017.
IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Heatmap thresholds on the 0-255 scale (Wang et al. 2017).
HEATMAP_THRESHOLDS: tuple[int, ...] = (60, 180)
#: Label of the pooled boxes of all heatmap thresholds in the tables.
POOLED = "all"
#: 8-connectivity, as OpenCV's contours (used by Wang et al. and the seed code) see regions.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

BOX_COLUMNS = ["x", "y", "w", "h"]
PREDICTED_BOX_COLUMNS = ["image_id", "class_name", "threshold", "x", "y", "w", "h", "score"]


# --------------------------------------------------------------------------------------------------
# Box geometry
# --------------------------------------------------------------------------------------------------


def _as_boxes(boxes: np.ndarray | Sequence[float]) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.shape[-1] != 4:
        raise DataError(f"boxes must have 4 values (x, y, w, h) in their last axis, got shape {array.shape}")
    if np.any(array[..., 2:] < 0):
        raise DataError("box widths and heights must be non-negative")
    return array


def box_area(boxes: np.ndarray | Sequence[float]) -> np.ndarray:
    """``w * h`` of ``(..., 4)`` boxes."""
    boxes = _as_boxes(boxes)
    return boxes[..., 2] * boxes[..., 3]


def intersection_area(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> np.ndarray:
    """Area of ``a & b`` for broadcastable ``(..., 4)`` boxes; 0 for disjoint or edge-touching boxes."""
    a, b = _as_boxes(a), _as_boxes(b)
    width = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def iou(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> np.ndarray:
    """Intersection over union (paper Eq. 3) of broadcastable ``(..., 4)`` boxes; 0 when both are empty.

    Boxes are ``(x, y, w, h)`` in the same pixels; the result is unitless, in [0, 1], of the broadcast
    shape without the last axis.

    >>> float(iou((0, 0, 10, 10), (5, 0, 10, 10)))  # 50 px^2 shared, 150 px^2 covered
    0.3333333333333333
    >>> iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [10, 0, 10, 10]]).tolist()  # identical; sharing an edge
    [1.0, 0.0]
    """
    inter = intersection_area(a, b)
    return _safe_divide(inter, box_area(a) + box_area(b) - inter)


def iobb(ground_truth: np.ndarray | Sequence[float], predicted: np.ndarray | Sequence[float]) -> np.ndarray:
    """Intersection over the *predicted* box's area (Wang et al. 2017; paper Eq. 4); 0 for an empty box.

    Not symmetric. The seed paper's code divided by the ground-truth box instead (and mixed the widths
    and heights of both boxes), which rewards huge boxes: at 256 px a 251 x 251 box around a 20 x 20
    nodule has IoBB 400 / 63001 = 0.0063 here, but scored 1.10 there.

    Boxes are ``(x, y, w, h)`` in the same pixels, broadcastable ``(..., 4)``; the result is in [0, 1].

    >>> float(iobb((0, 0, 100, 100), (10, 10, 20, 20)))  # a small box inside the lesion
    1.0
    >>> round(float(iobb((100, 100, 20, 20), (2, 2, 251, 251))), 4)  # a huge box around it
    0.0063
    """
    return _safe_divide(intersection_area(ground_truth, predicted), box_area(predicted))


# --------------------------------------------------------------------------------------------------
# Heatmap -> boxes
# --------------------------------------------------------------------------------------------------


#: ``(row_centres, col_centres)``: the coordinate, in original-image pixels (pixel ``i``'s centre is ``i``),
#: of the centre of every heatmap cell along the rows and along the columns (increasing 1-D arrays).
CellCentres = tuple[np.ndarray, np.ndarray]


def legacy_cell_centres(size_in: int, size_out: int) -> np.ndarray:
    """Cell centres of the ``align_corners=False`` convention: cell ``k`` of ``size_in`` at
    ``(k + 0.5) * size_out / size_in - 0.5`` of ``size_out`` pixels (each cell centred on its tile)."""
    return (np.arange(size_in) + 0.5) * (size_out / size_in) - 0.5


@lru_cache(maxsize=64)
def _legacy_interpolation_matrix(size_in: int, size_out: int) -> np.ndarray:
    scale = size_in / size_out
    source = np.clip((np.arange(size_out) + 0.5) * scale - 0.5, 0, None)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    weight_high = source - low
    matrix = np.zeros((size_out, size_in), dtype=np.float64)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1.0 - weight_high)
    np.add.at(matrix, (rows, high), weight_high)
    matrix.setflags(write=False)
    return matrix


@lru_cache(maxsize=256)
def _positioned_interpolation_matrix(size_out: int, centres: tuple[float, ...]) -> np.ndarray:
    positions = np.asarray(centres, dtype=np.float64)
    pixels = np.arange(size_out, dtype=np.float64)
    # segment k: pixels in [positions[k], positions[k + 1]); constant beyond the first and last centre
    upper = np.clip(np.searchsorted(positions, pixels, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    span = positions[upper] - positions[lower]
    weight_high = np.clip((pixels - positions[lower]) / span, 0.0, 1.0)
    matrix = np.zeros((size_out, len(positions)), dtype=np.float64)
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, lower), 1.0 - weight_high)
    np.add.at(matrix, (rows, upper), weight_high)
    matrix.setflags(write=False)
    return matrix


def interpolation_matrix(size_in: int, size_out: int, centres: np.ndarray | None = None) -> np.ndarray:
    """``(size_out, size_in)`` matrix of 1-D linear resizing. Read-only; cached (pure function of its inputs).

    Without ``centres``: identical to ``torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False)`` (no antialiasing), i.e. cell centres at :func:`legacy_cell_centres`.
    With ``centres`` (``size_in`` increasing coordinates in output pixels): linear interpolation between
    the cell centres, constant beyond the first and the last one.
    """
    if size_in < 1 or size_out < 1:
        raise DataError(f"cannot resize {size_in} to {size_out} pixels")
    if centres is None:
        return _legacy_interpolation_matrix(size_in, size_out)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1)
    if len(centres) != size_in or not np.all(np.isfinite(centres)):
        raise DataError(f"cell centres: expected {size_in} finite coordinates, got shape {centres.shape}")
    if size_in == 1:
        return np.ones((size_out, 1))
    if np.any(np.diff(centres) <= 0):
        raise DataError("cell centres must be strictly increasing")
    return _positioned_interpolation_matrix(size_out, tuple(centres.tolist()))


def _extreme_candidates(size_in: int, size_out: int, centres: np.ndarray | None = None) -> np.ndarray:
    """Output indices where a 1-D linear resize can reach its extremes: the ends of every run of
    outputs interpolating between the same two inputs (inside a run the value is monotone)."""
    if centres is None:
        centres = legacy_cell_centres(size_in, size_out)
    segment = np.searchsorted(np.asarray(centres, dtype=np.float64), np.arange(size_out), side="right")
    change = np.flatnonzero(segment[1:] != segment[:-1])
    return np.unique(np.r_[0, change, change + 1, size_out - 1])


def upsample_heatmap(heatmap: np.ndarray, original_size: tuple[int, int],
                     cell_centres: CellCentres | None = None) -> np.ndarray:
    """Linear resize of an ``(h, w)`` heatmap to ``original_size = (height, width)`` (float64).

    ``cell_centres``: where each cell's centre lies in the original image (see :data:`CellCentres`);
    ``None`` is the ``align_corners=False`` convention.
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    height, width = original_size
    rows, cols = cell_centres if cell_centres is not None else (None, None)
    return interpolation_matrix(heatmap.shape[0], height, rows) @ heatmap \
        @ interpolation_matrix(heatmap.shape[1], width, cols).T


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 255] (Wang et al. 2017); a constant map becomes all zeros."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    low, high = heatmap.min(), heatmap.max()
    if not high > low:
        return np.zeros_like(heatmap)
    return (heatmap - low) * (255.0 / (high - low))


@dataclass(frozen=True)
class ExtractedBoxes:
    """Boxes drawn around the regions of one thresholded heatmap.

    Attributes:
        boxes: ``(K, 4)`` ``(x, y, w, h)`` in original-image pixels, largest region first.
        scores: ``(K,)`` peak of the normalised heatmap in each region, in [0, 1].
        areas: ``(K,)`` region areas in original pixels (counted on the ``step`` grid, times step**2).
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


def _grid(size: int, step: int) -> np.ndarray:
    grid = np.arange(0, size, step)
    return grid if grid[-1] == size - 1 else np.r_[grid, size - 1]


def boxes_from_heatmaps(
    heatmap: np.ndarray,
    thresholds: Iterable[float],
    original_size: tuple[int, int] | int,
    largest_only: bool = False,
    step: int = 8,
    cell_centres: CellCentres | None = None,
) -> dict[float, ExtractedBoxes]:
    """Boxes of one heatmap at several thresholds, sharing the upsampling (see :func:`boxes_from_heatmap`)."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2 or not np.all(np.isfinite(heatmap)):
        raise DataError(f"heatmap must be a finite 2-D array, got shape {heatmap.shape}")
    if isinstance(original_size, (int, np.integer)):
        original_size = (int(original_size), int(original_size))
    height, width = (int(v) for v in original_size)
    row_centres, col_centres = cell_centres if cell_centres is not None else (None, None)
    rows_matrix = interpolation_matrix(heatmap.shape[0], height, row_centres)
    cols_matrix = interpolation_matrix(heatmap.shape[1], width, col_centres)
    thresholds = [float(t) for t in thresholds]

    # exact min/max of the full-resolution map from the few pixels where it can be extreme
    candidates = rows_matrix[_extreme_candidates(heatmap.shape[0], height, row_centres)] @ heatmap \
        @ cols_matrix[_extreme_candidates(heatmap.shape[1], width, col_centres)].T
    low, high = candidates.min(), candidates.max()
    if not high > low:  # a constant map has no regions
        return {t: ExtractedBoxes.empty() for t in thresholds}
    scale = 255.0 / (high - low)

    step = max(1, int(step))
    grid_rows, grid_cols = _grid(height, step), _grid(width, step)
    coarse = rows_matrix[grid_rows] @ heatmap @ cols_matrix[grid_cols].T
    results = {}
    for threshold in thresholds:
        raw = low + threshold / scale  # normalised > threshold  <=>  raw map > this
        mask = coarse > raw
        labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        if count == 0:
            results[threshold] = ExtractedBoxes.empty()
            continue
        slices = ndimage.find_objects(labels)
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:] * float(step * step)
        peaks = np.array([coarse[sl][labels[sl] == k + 1].max() for k, sl in enumerate(slices)])
        peaks = (peaks - low) * scale / 255.0
        order = np.argsort(-areas, kind="stable")
        if largest_only:
            order = order[:1]
        grid_boxes = np.array([[grid_rows[r.start], grid_rows[r.stop - 1], grid_cols[c.start], grid_cols[c.stop - 1]]
                               for r, c in slices])
        boxes = np.empty((len(order), 4))
        for k, label_index in enumerate(order):
            # with another region near, its pixels could fall into this one's refinement strips: then
            # only pixels connected (inside the strip) to this region's grid pixels count
            near = step > 1 and _has_neighbour(grid_boxes, label_index, 4 * step)
            boxes[k] = _refine_box(heatmap, rows_matrix, cols_matrix, grid_rows, grid_cols,
                                   slices[label_index], labels if near else None, label_index + 1, raw, step)
        results[threshold] = ExtractedBoxes(boxes, np.clip(peaks[order], 0.0, 1.0), areas[order])
    return results


def _has_neighbour(grid_boxes: np.ndarray, index: int, margin: int) -> bool:
    """Whether another region's grid box comes within ``margin`` pixels of region ``index``'s."""
    top, bottom, left, right = grid_boxes[index]
    others = np.delete(grid_boxes, index, axis=0)
    near = ((others[:, 0] <= bottom + margin) & (others[:, 1] >= top - margin)
            & (others[:, 2] <= right + margin) & (others[:, 3] >= left - margin))
    return bool(near.any())


def _refine_box(heatmap: np.ndarray, rows_matrix: np.ndarray, cols_matrix: np.ndarray,
                grid_rows: np.ndarray, grid_cols: np.ndarray, slices: tuple[slice, slice],
                grid_labels: np.ndarray | None, label: int, raw: float, step: int) -> np.ndarray:
    """Exact full-resolution edges of a region found on the grid.

    Each edge lies beyond the outermost grid line inside the region and, for regions no thinner than
    ``step``, before the second grid line outside it (the first can be crossed between its samples), so
    only four strips of full-resolution pixels around the grid box are evaluated. ``grid_labels`` (given
    when another region is near) restricts each strip to pixels 8-connected, inside the strip, to this
    region's grid pixels.
    """
    row_slice, col_slice = slices
    top, bottom = int(grid_rows[row_slice.start]), int(grid_rows[row_slice.stop - 1])
    left, right = int(grid_cols[col_slice.start]), int(grid_cols[col_slice.stop - 1])
    if step == 1:
        return np.array([left, top, right - left + 1, bottom - top + 1], dtype=np.float64)
    height, width = rows_matrix.shape[0], cols_matrix.shape[0]
    reach = 2 * step - 1
    row_lo, row_hi = max(top - reach, 0), min(bottom + reach, height - 1)
    col_lo, col_hi = max(left - reach, 0), min(right + reach, width - 1)
    along_cols = heatmap @ cols_matrix[col_lo:col_hi + 1].T  # (h, window width)
    along_rows = rows_matrix[row_lo:row_hi + 1] @ heatmap  # (window height, w)
    own = None
    if grid_labels is not None:
        own = grid_labels == label

    def members(strip: np.ndarray, strip_rows: np.ndarray, strip_cols: np.ndarray) -> np.ndarray:
        """Pixels of the strip connected to this region's grid pixels lying in it."""
        if own is None:
            return strip
        strip_labels, _ = ndimage.label(strip, structure=_EIGHT_CONNECTED)
        in_rows = np.flatnonzero(np.isin(grid_rows, strip_rows))
        in_cols = np.flatnonzero(np.isin(grid_cols, strip_cols))
        seeds = own[np.ix_(in_rows, in_cols)]
        seed_labels = strip_labels[np.ix_(grid_rows[in_rows] - strip_rows[0], grid_cols[in_cols] - strip_cols[0])][seeds]
        return np.isin(strip_labels, seed_labels[seed_labels > 0])

    # each strip spans from the grid edge (which holds the region's own grid pixels) outwards
    if top > row_lo:
        rows = np.arange(row_lo, top + 1)
        hit = np.flatnonzero(members(rows_matrix[rows] @ along_cols > raw, rows, np.arange(col_lo, col_hi + 1)).any(1))
        top = int(rows[hit[0]]) if len(hit) else top
    if bottom < row_hi:
        rows = np.arange(bottom, row_hi + 1)
        hit = np.flatnonzero(members(rows_matrix[rows] @ along_cols > raw, rows, np.arange(col_lo, col_hi + 1)).any(1))
        bottom = int(rows[hit[-1]]) if len(hit) else bottom
    if left > col_lo:
        cols = np.arange(col_lo, left + 1)
        hit = np.flatnonzero(members(along_rows @ cols_matrix[cols].T > raw, np.arange(row_lo, row_hi + 1), cols).any(0))
        left = int(cols[hit[0]]) if len(hit) else left
    if right < col_hi:
        cols = np.arange(right, col_hi + 1)
        hit = np.flatnonzero(members(along_rows @ cols_matrix[cols].T > raw, np.arange(row_lo, row_hi + 1), cols).any(0))
        right = int(cols[hit[-1]]) if len(hit) else right
    return np.array([left, top, right - left + 1, bottom - top + 1], dtype=np.float64)


def boxes_from_heatmap(
    heatmap: np.ndarray,
    threshold_0_255: float,
    original_size: tuple[int, int] | int,
    largest_only: bool = False,
    step: int = 8,
    cell_centres: CellCentres | None = None,
) -> ExtractedBoxes:
    """Boxes around the connected regions of a thresholded heatmap, in original-image pixels.

    Wang et al. (2017): the heatmap of a class is resized to the original image, min-max normalised to
    [0, 255] and thresholded (value strictly above ``threshold_0_255``); each 8-connected region gives one
    bounding box. ``largest_only`` keeps the region of largest area only, as the seed paper's code did.

    Args:
        heatmap: ``(h, w)`` raw heatmap at the model's native resolution (any scale: it is normalised).
        threshold_0_255: threshold on the 0-255 scale (60 and 180 in Wang et al.).
        original_size: ``(height, width)`` of the original image, or one int for a square image.
        largest_only: keep only the largest region's box.
        step: regions are found on every ``step``-th pixel and their edges refined at full resolution
            (1 = label the full-resolution map; larger is faster and differs only where two regions come
            closer than ``step`` pixels or a region is thinner than ``step`` pixels).
        cell_centres: where the heatmap's cells sit in the original image (:data:`CellCentres`);
            ``None``: the ``align_corners=False`` convention (:func:`legacy_cell_centres`).

    Returns:
        :class:`ExtractedBoxes`: ``boxes`` ``(K, 4)`` as ``(x, y, w, h)`` in original-image pixels (largest
        region first), ``scores`` ``(K,)`` in [0, 1], ``areas`` ``(K,)`` in original pixels.

    >>> import numpy as np
    >>> heatmap = np.zeros((8, 8))
    >>> heatmap[1:3, 5:7] = 1.0  # an 8 x 8 CAM that fires in the upper right
    >>> found = boxes_from_heatmap(heatmap, 180, 1024)  # cells 5-6 x 1-2 cover pixels 640-895 x 128-383
    >>> len(found), found.boxes[0].tolist(), found.scores.tolist()
    (1, [666.0, 154.0, 204.0, 204.0], [1.0])
    >>> boxes_from_heatmap(heatmap, 60, 1024).boxes[0].tolist()  # a lower threshold: a larger box
    [606.0, 94.0, 324.0, 324.0]
    """
    return boxes_from_heatmaps(heatmap, [threshold_0_255], original_size, largest_only, step,
                               cell_centres)[float(threshold_0_255)]


def extract_boxes(
    heatmaps: Mapping[tuple[str, str], np.ndarray] | Iterable[tuple[str, str, np.ndarray]],
    original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
    thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
    step: int = 8,
    progress: bool = False,
    registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None = None,
) -> pd.DataFrame:
    """Predicted boxes of many ``(image_id, class_name) -> heatmap`` pairs as a table.

    Returns one row per box with :data:`PREDICTED_BOX_COLUMNS` (``threshold`` as an int on the 0-255
    scale; x, y, w, h in original pixels; ``score`` = the region's peak normalised heat in [0, 1]).
    ``registration(heatmap_shape, original_size) -> CellCentres`` places each heatmap's cells in its
    image (``None``: the ``align_corners=False`` convention).
    """
    items = heatmaps.items() if isinstance(heatmaps, Mapping) else (((i, c), h) for i, c, h in heatmaps)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(list(items), desc="boxes", unit="map", leave=False)
    records: list[tuple] = []
    for (image_id, class_name), heatmap in items:
        if isinstance(original_sizes, Mapping):
            if image_id not in original_sizes:
                raise DataError(f"no original size known for image {image_id}")
            size = original_sizes[image_id]
        else:
            size = original_sizes
        if isinstance(size, (int, np.integer)):
            size = (int(size), int(size))
        centres = registration(np.shape(heatmap), tuple(size)) if registration is not None else None
        extracted = boxes_from_heatmaps(heatmap, thresholds, size, largest_only, step, centres)
        for threshold, found in extracted.items():
            for box, score in zip(found.boxes, found.scores):
                records.append((image_id, class_name, int(round(threshold)), *box.tolist(), float(score)))
    table = pd.DataFrame.from_records(records, columns=PREDICTED_BOX_COLUMNS)
    return table.astype({"threshold": int, "x": float, "y": float, "w": float, "h": float, "score": float})


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


def _check_ground_truth(ground_truth: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ["image_id", "class_name", *BOX_COLUMNS] if c not in ground_truth.columns]
    if missing:
        raise DataError(f"ground-truth box table lacks columns {missing} (has {list(ground_truth.columns)})")
    gt = ground_truth.reset_index(drop=True).copy()
    if "box_row" not in gt.columns:
        gt["box_row"] = np.arange(len(gt))
    if gt["box_row"].duplicated().any():
        raise DataError("ground-truth box table has duplicated box_row values; every row must be scored once")
    return gt


def _check_predicted(predicted: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ["image_id", "class_name", "threshold", *BOX_COLUMNS] if c not in predicted.columns]
    if missing:
        raise DataError(f"predicted box table lacks columns {missing} (has {list(predicted.columns)})")
    return predicted.reset_index(drop=True)


def score_localization(ground_truth: pd.DataFrame, predicted: pd.DataFrame, pooled: bool = True) -> pd.DataFrame:
    """Best IoU and IoBB of every ground-truth box row against the predicted boxes of its class and image.

    Args:
        ground_truth: one row per box (``image_id, class_name, x, y, w, h`` and optionally ``box_row``);
            every row is kept, also several boxes of one image.
        predicted: :data:`PREDICTED_BOX_COLUMNS` rows (``score`` optional); ``threshold`` groups the boxes
            of one heatmap threshold.
        pooled: also score each row against the boxes of all thresholds together (``threshold`` =
            :data:`POOLED`), the reading of Wang et al. where boxes from both thresholds count.

    Returns:
        One row per (ground-truth row, threshold): ``box_row, image_id, class_name, threshold`` (str),
        ``n_predicted`` (boxes of that class on that image), ``best_iou``, ``best_iobb`` (0 with no box).
    """
    gt = _check_ground_truth(ground_truth)
    pred = _check_predicted(predicted)
    groups = _threshold_groups(pred, pooled)
    frames = []
    for label, boxes in groups:
        pairs = gt[["box_row", "image_id", "class_name", *BOX_COLUMNS]].merge(
            boxes[["image_id", "class_name", *BOX_COLUMNS]], on=["image_id", "class_name"],
            how="left", suffixes=("", "_pred"))
        has_box, pairs["best_iou"], pairs["best_iobb"] = _pair_overlaps(
            pairs, BOX_COLUMNS, [c + "_pred" for c in BOX_COLUMNS])
        pairs["n_predicted"] = has_box.astype(int)
        best = pairs.groupby("box_row", sort=False).agg(
            n_predicted=("n_predicted", "sum"), best_iou=("best_iou", "max"), best_iobb=("best_iobb", "max"))
        scored = gt[["box_row", "image_id", "class_name"]].merge(best, left_on="box_row", right_index=True)
        scored.insert(3, "threshold", label)
        frames.append(scored)
    if len(frames) != len(groups) or sum(len(f) for f in frames) != len(gt) * len(groups):
        raise AssertionError("scoring lost ground-truth rows")  # guards the seed code's dict-by-image bug
    return pd.concat(frames, ignore_index=True)


def _pair_overlaps(pairs: pd.DataFrame, gt_columns: Sequence[str],
                   pred_columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows of a left merge of boxes: (partner found, IoU, IoBB), the values 0 where the merge found
    no partner box (its columns are NaN)."""
    gt_boxes = pairs[list(gt_columns)].to_numpy(dtype=np.float64)
    pred_boxes = pairs[list(pred_columns)].to_numpy(dtype=np.float64)
    found = np.isfinite(gt_boxes).all(axis=1) & np.isfinite(pred_boxes).all(axis=1)
    gt_boxes = np.where(found[:, None], gt_boxes, 0.0)
    pred_boxes = np.where(found[:, None], pred_boxes, 0.0)
    return found, np.where(found, iou(gt_boxes, pred_boxes), 0.0), np.where(found, iobb(gt_boxes, pred_boxes), 0.0)


def _threshold_groups(pred: pd.DataFrame, pooled: bool) -> list[tuple[str, pd.DataFrame]]:
    labels = sorted(pred["threshold"].unique().tolist(), key=lambda v: (str(type(v)), v))
    groups = [(str(t), pred[pred["threshold"] == t]) for t in labels]
    if pooled and len(labels) > 1:
        groups.append((POOLED, pred))
    if not groups:  # no box at all: every row still gets scored (as missed)
        groups = [(POOLED, pred)]
    return groups


def false_positive_boxes(ground_truth: pd.DataFrame, predicted: pd.DataFrame, pooled: bool = True) -> pd.DataFrame:
    """Best IoU and IoBB of every predicted box against the ground-truth boxes of its class and image.

    Returns the predicted rows (``threshold`` as str, plus pooled copies) with ``best_iou``, ``best_iobb``;
    a box is a false positive at T when its best value is not above T.
    """
    gt = _check_ground_truth(ground_truth)
    pred = _check_predicted(predicted)
    frames = []
    for label, boxes in _threshold_groups(pred, pooled):
        boxes = boxes.reset_index(drop=True).assign(pred_row=lambda d: np.arange(len(d)))
        pairs = boxes[["pred_row", "image_id", "class_name", *BOX_COLUMNS]].merge(
            gt[["image_id", "class_name", *BOX_COLUMNS]], on=["image_id", "class_name"],
            how="left", suffixes=("", "_gt"))
        _, pairs["best_iou"], pairs["best_iobb"] = _pair_overlaps(
            pairs, [c + "_gt" for c in BOX_COLUMNS], BOX_COLUMNS)
        best = pairs.groupby("pred_row", sort=True)[["best_iou", "best_iobb"]].max()
        out = boxes[["image_id", "class_name", *BOX_COLUMNS]].copy()
        out.insert(2, "threshold", label)
        out["best_iou"] = best["best_iou"].to_numpy()
        out["best_iobb"] = best["best_iobb"].to_numpy()
        frames.append(out)
    if not frames:
        return pd.DataFrame(columns=["image_id", "class_name", "threshold", *BOX_COLUMNS, "best_iou", "best_iobb"])
    return pd.concat(frames, ignore_index=True)


def localization_accuracy(
    ground_truth: pd.DataFrame,
    predicted: pd.DataFrame,
    class_names: Sequence[str] = BOX_CLASS_NAMES,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS,
    pooled: bool = True,
) -> pd.DataFrame:
    """Accuracy and average false positives per class and threshold (Wang et al. 2017; paper Tables 2-7).

    Returns a long table: ``threshold`` (heatmap threshold, str), ``metric`` ('IoU'/'IoBB'), ``t`` (the
    metric threshold), ``class_name`` (the box classes, then ``Mean`` = mean of the per-class accuracies
    over classes with boxes), ``accuracy`` (fraction of the class's box rows with best value > t; NaN
    for a class without boxes), ``n_boxes``, ``n_localized``, ``false_positives_per_image`` (boxes
    localizing no box of their class and image, divided by the number of images with a box of that class).
    """
    gt = _check_ground_truth(ground_truth)
    scored = score_localization(gt, predicted, pooled=pooled)
    fp = false_positive_boxes(gt, predicted, pooled=pooled)
    images_per_class = gt.groupby("class_name")["image_id"].nunique()
    records = []
    for label in scored["threshold"].unique():
        rows = scored[scored["threshold"] == label]
        boxes = fp[fp["threshold"] == label]
        for metric, ts in (("IoU", iou_thresholds), ("IoBB", iobb_thresholds)):
            column = "best_iou" if metric == "IoU" else "best_iobb"
            for t in ts:
                per_class = []
                for name in class_names:
                    values = rows.loc[rows["class_name"] == name, column].to_numpy()
                    n_images = int(images_per_class.get(name, 0))
                    false_pos = int((boxes.loc[boxes["class_name"] == name, column].to_numpy() <= t).sum())
                    accuracy = float((values > t).mean()) if len(values) else float("nan")
                    per_class.append(accuracy)
                    records.append((label, metric, float(t), name, accuracy, len(values), int((values > t).sum()),
                                    false_pos / n_images if n_images else float("nan")))
                defined = [a for a in per_class if np.isfinite(a)]
                fps = [r[-1] for r in records[-len(class_names):] if np.isfinite(r[-1])]
                records.append((label, metric, float(t), "Mean", float(np.mean(defined)) if defined else float("nan"),
                                sum(r[5] for r in records[-len(class_names):]),
                                sum(r[6] for r in records[-len(class_names):]),
                                float(np.mean(fps)) if fps else float("nan")))
    return pd.DataFrame.from_records(records, columns=[
        "threshold", "metric", "t", "class_name", "accuracy", "n_boxes", "n_localized", "false_positives_per_image"])


# --------------------------------------------------------------------------------------------------
# Baselines any method must beat
# --------------------------------------------------------------------------------------------------


def _sizes_of(ground_truth: pd.DataFrame, original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int
              ) -> np.ndarray:
    if isinstance(original_sizes, Mapping):
        return np.array([original_sizes[i] for i in ground_truth["image_id"]], dtype=np.float64).reshape(-1, 2)
    if isinstance(original_sizes, (int, np.integer)):
        original_sizes = (int(original_sizes), int(original_sizes))
    return np.tile(np.asarray(original_sizes, dtype=np.float64), (len(ground_truth), 1))


def centre_boxes(ground_truth: pd.DataFrame,
                 original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int) -> pd.DataFrame:
    """Baseline: for every (image, class) with a ground-truth box, one box of the class's mean size
    (over all its ground-truth boxes) centred in the image. Same columns as :func:`extract_boxes`."""
    gt = _check_ground_truth(ground_truth)
    pairs = gt.drop_duplicates(["image_id", "class_name"]).reset_index(drop=True)
    mean_size = gt.groupby("class_name")[["w", "h"]].mean()
    sizes = _sizes_of(pairs, original_sizes)  # (height, width)
    w = mean_size.loc[pairs["class_name"], "w"].to_numpy()
    h = mean_size.loc[pairs["class_name"], "h"].to_numpy()
    return pd.DataFrame({"image_id": pairs["image_id"], "class_name": pairs["class_name"], "threshold": 0,
                         "x": (sizes[:, 1] - w) / 2, "y": (sizes[:, 0] - h) / 2, "w": w, "h": h, "score": 1.0})


def random_boxes(ground_truth: pd.DataFrame,
                 original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
                 seed: int = 0) -> pd.DataFrame:
    """Baseline: for every (image, class) with a ground-truth box, one box whose width and height are
    drawn uniformly from that class's ground-truth box sizes and whose position is uniform inside the
    image (seeded ``numpy.random.default_rng``). Same columns as :func:`extract_boxes`."""
    gt = _check_ground_truth(ground_truth)
    rng = np.random.default_rng(seed)
    pairs = gt.drop_duplicates(["image_id", "class_name"]).reset_index(drop=True)
    sizes = _sizes_of(pairs, original_sizes)
    w = np.empty(len(pairs))
    h = np.empty(len(pairs))
    for name, index in pairs.groupby("class_name").indices.items():
        pool = gt.loc[gt["class_name"] == name, ["w", "h"]].to_numpy(dtype=np.float64)
        pick = rng.integers(0, len(pool), size=len(index))
        w[index], h[index] = pool[pick, 0], pool[pick, 1]
    w = np.minimum(w, sizes[:, 1])
    h = np.minimum(h, sizes[:, 0])
    x = rng.random(len(pairs)) * (sizes[:, 1] - w)
    y = rng.random(len(pairs)) * (sizes[:, 0] - h)
    return pd.DataFrame({"image_id": pairs["image_id"], "class_name": pairs["class_name"], "threshold": 0,
                         "x": x, "y": y, "w": w, "h": h, "score": 1.0})

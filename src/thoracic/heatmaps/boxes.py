"""Heatmap -> boxes: the box extraction of Wang et al. (2017), shared by localization and prediction.

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
but are computed without materialising the full-resolution map (see the notes above ``_extract_batch``): 984 rows at
two thresholds take well under 2 s on one core (``benchmarks/bench_localization.py``).
:mod:`thoracic.evaluation.localization` scores these boxes; :mod:`thoracic.prediction` draws them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from thoracic.constants import HEATMAP_THRESHOLDS
from thoracic.errors import DataError


def expand_runs(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For runs ``[start, start + length)``: (run index, position) of every element, in order."""
    owner = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, np.repeat(starts, lengths) + offsets


#: ``(row_centres, col_centres)``: the coordinate, in original-image pixels (pixel ``i``'s centre is ``i``),
#: of the centre of every heatmap cell along the rows and along the columns (increasing 1-D arrays).
CellCentres = tuple[np.ndarray, np.ndarray]


#: Model input side the default cell positions assume: the configs' ``data.image_size`` (the paper's 256 px).
DEFAULT_INPUT_SIZE = 256


def geometric_cell_centres(size_in: int, size_out: int, input_size: int = DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Cell centres of the geometric registration (``thoracic.geometry``, what every command uses) of a
    ResNet heatmap: the default of every function here that places cells.

    Every ResNet backbone, at every output stride, centres cell ``k`` of ``size_in`` on model-input pixel
    ``k * stride`` (its padded stride-2 layers add no offset; ``stride = input_size / size_in``), and the
    model input is the original image resized to ``input_size`` (pixel centres aligned), so the cell lies
    at ``(k * stride + 0.5) * size_out / input_size - 0.5`` of ``size_out`` original pixels. For another
    backbone or input size, pass the model's own registration:
    ``make_registration("geometric", method.grid(input_size))(heatmap.shape, original_size)``.
    """
    stride = input_size / size_in
    return (np.arange(size_in) * stride + 0.5) * (size_out / input_size) - 0.5


def default_cell_centres(shape: tuple[int, ...], original_size: tuple[int, int]) -> CellCentres:
    """:func:`geometric_cell_centres` along the rows and the columns of an ``(h, w)`` heatmap."""
    return (geometric_cell_centres(int(shape[-2]), int(original_size[0])),
            geometric_cell_centres(int(shape[-1]), int(original_size[1])))


def legacy_cell_centres(size_in: int, size_out: int) -> np.ndarray:
    """Cell centres of the ``align_corners=False`` convention: cell ``k`` of ``size_in`` at
    ``(k + 0.5) * size_out / size_in - 0.5`` of ``size_out`` pixels (each cell centred on its tile)."""
    return (np.arange(size_in) + 0.5) * (size_out / size_in) - 0.5


@dataclass(frozen=True, eq=False)  # hashed by identity: the instances themselves are cached
class _Taps:
    """1-D linear resizing as two taps per output pixel: ``out[j] = lerp(in[lower[j]], in[upper[j]],
    weight[j])``. A *segment* is a run of outputs with the same two taps; its weights never decrease,
    so along a segment the resized values are monotone (exactly, in floating point: see :func:`_lerp`)."""

    lower: np.ndarray
    upper: np.ndarray
    weight: np.ndarray
    seg_start: np.ndarray  # first output pixel of every segment
    seg_end: np.ndarray  # last output pixel of every segment (inclusive)
    seg_of: np.ndarray  # segment index of every output pixel

    @classmethod
    def build(cls, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> _Taps:
        change = np.flatnonzero((lower[1:] != lower[:-1]) | (upper[1:] != upper[:-1])) + 1
        seg_start = np.r_[0, change].astype(np.int64)
        seg_end = np.r_[change - 1, len(lower) - 1].astype(np.int64)
        seg_of = np.repeat(np.arange(len(seg_start)), seg_end - seg_start + 1)
        arrays = (lower.astype(np.int64), upper.astype(np.int64), weight.astype(np.float64), seg_start, seg_end,
                  seg_of)
        for array in arrays:
            array.setflags(write=False)
        return cls(*arrays)


@lru_cache(maxsize=64)
def _legacy_taps(size_in: int, size_out: int) -> _Taps:
    scale = size_in / size_out
    source = np.clip((np.arange(size_out) + 0.5) * scale - 0.5, 0, None)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return _Taps.build(low, high, source - low)


@lru_cache(maxsize=256)
def _positioned_taps(size_out: int, centres: tuple[float, ...]) -> _Taps:
    positions = np.asarray(centres, dtype=np.float64)
    pixels = np.arange(size_out, dtype=np.float64)
    if len(positions) == 1:
        zeros = np.zeros(size_out, dtype=np.int64)
        return _Taps.build(zeros, zeros, np.zeros(size_out))
    # segment k: pixels in [positions[k], positions[k + 1]); constant beyond the first and last centre
    upper = np.clip(np.searchsorted(positions, pixels, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    span = positions[upper] - positions[lower]
    return _Taps.build(lower, upper, np.clip((pixels - positions[lower]) / span, 0.0, 1.0))


def _interpolation_taps(size_in: int, size_out: int, centres: np.ndarray | None = None) -> _Taps:
    if size_in < 1 or size_out < 1:
        raise DataError(f"cannot resize {size_in} to {size_out} pixels")
    if centres is None:
        return _legacy_taps(size_in, size_out)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1)
    if len(centres) != size_in or not np.all(np.isfinite(centres)):
        raise DataError(f"cell centres: expected {size_in} finite coordinates, got shape {centres.shape}")
    if np.any(np.diff(centres) <= 0):
        raise DataError("cell centres must be strictly increasing")
    return _positioned_taps(size_out, tuple(centres.tolist()))


@lru_cache(maxsize=64)
def _matrix_of(taps: _Taps, size_in: int) -> np.ndarray:
    matrix = np.zeros((len(taps.lower), size_in), dtype=np.float64)
    rows = np.arange(len(taps.lower))
    np.add.at(matrix, (rows, taps.lower), 1.0 - taps.weight)
    np.add.at(matrix, (rows, taps.upper), taps.weight)
    matrix.setflags(write=False)
    return matrix


def interpolation_matrix(size_in: int, size_out: int, centres: np.ndarray | None = None) -> np.ndarray:
    """``(size_out, size_in)`` matrix of 1-D linear resizing. Read-only; cached (pure function of its inputs).

    Without ``centres``: identical to ``torch.nn.functional.interpolate(mode='bilinear',
    align_corners=False)`` (no antialiasing), i.e. cell centres at :func:`legacy_cell_centres`.
    With ``centres`` (``size_in`` increasing coordinates in output pixels): linear interpolation between
    the cell centres, constant beyond the first and the last one. :func:`upsample_heatmap` applies the
    same weights (equal to this matrix product up to floating-point rounding).
    """
    return _matrix_of(_interpolation_taps(size_in, size_out, centres), size_in)


def _lerp(low: np.ndarray, high: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``low + weight * (high - low)``, elementwise.

    The one formula of every interpolated value, in the reference upsampling and in the box extraction
    alike, so both compare the very same floats with a threshold. Written this way (not
    ``(1 - w) * low + w * high``) because for fixed ``low`` and ``high`` it is exactly monotone in
    ``weight`` in floating point: each operation rounds monotonically.
    """
    return low + weight * (high - low)


def upsample_heatmap(heatmap: np.ndarray, original_size: tuple[int, int],
                     cell_centres: CellCentres | None = None) -> np.ndarray:
    """Linear resize of an ``(h, w)`` heatmap to ``original_size = (height, width)`` (float64).

    Separable: the rows are interpolated first, then the columns, each with :func:`_lerp` between the
    two nearest cell centres. This is the upsampling of the plain localization algorithm, which
    :func:`boxes_from_heatmaps` reproduces exactly without materialising the map.
    ``cell_centres``: where each cell's centre lies in the original image (see :data:`CellCentres`);
    ``None``: :func:`default_cell_centres` (the geometric registration of a ResNet at 256 px).
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2:
        raise DataError(f"heatmap must be a 2-D array, got shape {heatmap.shape}")
    height, width = (int(v) for v in original_size)
    rows, cols = cell_centres if cell_centres is not None else default_cell_centres(heatmap.shape, (height, width))
    row_taps = _interpolation_taps(heatmap.shape[0], height, rows)
    col_taps = _interpolation_taps(heatmap.shape[1], width, cols)
    along_rows = _lerp(heatmap[row_taps.lower], heatmap[row_taps.upper], row_taps.weight[:, None])
    return _lerp(along_rows[:, col_taps.lower], along_rows[:, col_taps.upper], col_taps.weight[None, :])


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
    batch = _MapBatch(heatmap[None], _image_size(original_size), cell_centres)
    return _extract_batch(batch, _check_thresholds(thresholds), largest_only)[0]


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
    against it), but computed without materialising the full-resolution map (see the module docstring).

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


# The exact extraction, without materialising the full-resolution map.
#
# Hand-written because no library labels a map it is not given: scipy.ndimage.label needs the map at full
# resolution, and materialising, normalising and labelling a 1024 x 1024 map costs tens of milliseconds
# per map and threshold (about a minute for the 984 NIH rows at two thresholds). What it computes is
# exactly what that would give (the tests compare the two bit for bit); the labelling itself is left to
# scipy.sparse.csgraph.connected_components on a small graph.
#
# The map is separable: rows first (``rows`` below: height x w values, cheap), then columns. A *block* is
# the product of a run of image rows that interpolate between the same two heatmap rows and a run of
# columns that interpolate between the same two heatmap columns. Along a row inside a block the values
# are monotone exactly (see _lerp), so a row of a block holds one interval of pixels above the
# threshold at most, found from the values at the row's two end pixels and, where they differ, the
# crossing pixel (an analytic guess, then bisection in the rare case that the guess is off). Across a
# block the exact bilinear interpolant of the same weights peaks at the block's corners, and the
# computed values differ from it by a few units of rounding (a bound from the four heatmap values); so
# a block whose corners all clear the cut by that bound is entirely above it or entirely below it, and
# only the blocks that the region boundaries cross are looked at row by row. Regions are the connected
# components of a graph whose nodes are the runs of whole blocks above the cut in one block row and the
# chains of touching row intervals inside one crossed block; areas, boxes and peaks follow from the nodes.
# Every value compared with the cut is computed as upsample_heatmap computes it, so the result is the
# plain algorithm's, bit for bit. Many maps of one shape and size go in one batch.

_UNIT_ROUNDOFF = 2.0 ** -53
#: |computed - exact bilinear| <= ~10 u max|H| for two nested _lerp; 32 u leaves room for the bound's own rounding
_BOUND_FACTOR = 32 * _UNIT_ROUNDOFF


class _MapBatch:
    """``(B, h, w)`` maps of one shape, image size and registration, and what the box extraction and the
    peak search need of them: the interpolated rows, the blocks with their value bounds, and the exact
    minimum and maximum of every full-resolution map."""

    def __init__(self, maps: np.ndarray, size: tuple[int, int], cell_centres: CellCentres | None) -> None:
        self.maps = maps
        self.n_maps = len(maps)
        self.height, self.width = size
        if cell_centres is None:
            cell_centres = default_cell_centres(maps.shape, size)
        row_centres, col_centres = cell_centres
        rt = self.rt = _interpolation_taps(maps.shape[1], self.height, row_centres)
        ct = self.ct = _interpolation_taps(maps.shape[2], self.width, col_centres)
        # rows interpolated exactly as upsample_heatmap does: (B, height, w); the difference of each
        # segment's two heatmap rows is taken once per segment, the very floats _lerp computes per pixel
        difference = maps[:, rt.upper[rt.seg_start], :] - maps[:, rt.lower[rt.seg_start], :]
        self.rows = np.ascontiguousarray(maps[:, rt.lower, :] + rt.weight[None, :, None] * difference[:, rt.seg_of, :])
        self.flat_rows = self.rows.reshape(-1)  # a view: values are gathered from it by flat index
        # blocks (p, q): image rows r0[p]..r1[p] x columns c0[q]..c1[q]
        r0, r1, c0, c1 = self.r0, self.r1, self.c0, self.c1 = rt.seg_start, rt.seg_end, ct.seg_start, ct.seg_end
        n_p, n_q = len(r0), len(c0)
        corner_cols = np.r_[c0, c1]
        at_rows = self.rows[:, np.r_[r0, r1], :]
        corners = _lerp(at_rows[:, :, ct.lower[corner_cols]], at_rows[:, :, ct.upper[corner_cols]],
                        ct.weight[corner_cols]).reshape(self.n_maps, 2, n_p, 2, n_q)
        self.corner_low, self.corner_high = corners.min(axis=(1, 3)), corners.max(axis=(1, 3))  # exact pixels
        magnitude = np.abs(maps)
        magnitude = np.maximum(magnitude[:, rt.lower[r0], :], magnitude[:, rt.upper[r0], :])
        magnitude = np.maximum(magnitude[:, :, ct.lower[c0]], magnitude[:, :, ct.upper[c0]])
        slack = 2.0 * (_BOUND_FACTOR * magnitude + 1e-300)  # corner to pixel: twice the rounding bound
        self.block_high, self.block_low = self.corner_high + slack, self.corner_low - slack  # all pixels within
        # exact min and max of every map: the corners, then the rows of every block that could beat them
        self.high, self.low = self.corner_high.max(axis=(1, 2)), self.corner_low.min(axis=(1, 2))
        b, p, q = np.nonzero(self.block_high >= self.high[:, None, None])
        owner, _, larger, _ = self.block_rows(b, p, q)
        np.maximum.at(self.high, b[owner], larger)
        b, p, q = np.nonzero(self.block_low <= self.low[:, None, None])
        owner, _, _, smaller = self.block_rows(b, p, q)
        np.minimum.at(self.low, b[owner], smaller)

    def value(self, b: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The full-resolution map at pixels (row i, column j) of maps b, as upsample_heatmap has it."""
        ct, flat = self.ct, self.flat_rows
        base = (b * self.height + i) * self.rows.shape[2]
        return _lerp(flat.take(base + ct.lower[j]), flat.take(base + ct.upper[j]), ct.weight[j])

    def block_rows(self, b: np.ndarray, p: np.ndarray, q: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row of blocks (b, p, q): (block index, row, larger, smaller of the row's two end values).
        Along a row of a block the map is monotone: these are the row's extremes in the block."""
        owner, i = expand_runs(self.r0[p], self.r1[p] - self.r0[p] + 1)
        first, last = self.value(b[owner], i, self.c0[q[owner]]), self.value(b[owner], i, self.c1[q[owner]])
        return owner, i, np.maximum(first, last), np.minimum(first, last)

    def peaks(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every map's maximum; the first in raster order where it is reached several
        times (``numpy.argmax`` of the materialised map)."""
        b, p, q = np.nonzero(self.block_high >= self.high[:, None, None])
        owner, i = expand_runs(self.r0[p], self.r1[p] - self.r0[p] + 1)
        b, q = b[owner], q[owner]
        first_col, last_col = self.c0[q], self.c1[q]
        first_top = self.value(b, i, first_col) == self.high[b]
        rising = ~first_top & (self.value(b, i, last_col) == self.high[b])
        column = np.where(first_top, first_col, -1)
        lo, hi = first_col + 1, last_col.copy()  # rising rows: the first pixel reaching the maximum
        active = np.flatnonzero(rising & (lo < hi))
        while len(active):
            middle = (lo[active] + hi[active]) // 2
            hit = self.value(b[active], i[active], middle) >= self.high[b[active]]
            hi[active] = np.where(hit, middle, hi[active])
            lo[active] = np.where(hit, lo[active], middle + 1)
            active = active[lo[active] < hi[active]]
        column = np.where(rising, lo, column)
        found = column >= 0
        key = np.full(self.n_maps, np.iinfo(np.int64).max)
        np.minimum.at(key, b[found], i[found] * self.width + column[found])
        return np.divmod(key, self.width)


def _extract_batch(batch: _MapBatch, thresholds: list[float],
                   largest_only: bool) -> list[dict[float, ExtractedBoxes]]:
    """Exact boxes of a batch of maps at every threshold: one dict per map."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_maps, height, width = batch.n_maps, batch.height, batch.width
    rows, ct, value = batch.rows, batch.ct, batch.value
    r0, r1, c0, c1 = batch.r0, batch.r1, batch.c0, batch.c1
    n_q = len(c0)
    corner_high, block_high, block_low = batch.corner_high, batch.block_high, batch.block_low
    high, low = batch.high, batch.low
    block_pixels = batch.block_rows
    thr = np.asarray(thresholds, dtype=np.float64)
    n_thr = len(thr)
    results: list[dict[float, ExtractedBoxes]] = [{t: ExtractedBoxes.empty() for t in thresholds}
                                                  for _ in range(n_maps)]
    if not n_thr:
        return results
    constant = ~(high > low)
    scale = np.where(constant, 0.0, 255.0 / np.where(constant, 1.0, high - low))  # normalize_heatmap's
    # the cut: normalised > T  <=>  raw >= cut[t, b] (normalising is monotone, so a smallest such float exists)
    cut = np.empty((n_thr, n_maps))
    for t, threshold in enumerate(thr):
        with np.errstate(divide="ignore", invalid="ignore"):
            guess = np.where(constant, np.inf, low + threshold / np.where(constant, 1.0, scale))

        def above(u: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):  # constant maps (scale 0, cut inf) are left out below
                return (u - low) * scale > threshold

        while np.any(move := ~constant & ~above(guess)):
            guess = np.where(move, np.nextafter(guess, np.inf), guess)
        while np.any(move := ~constant & above(np.nextafter(guess, -np.inf))):
            guess = np.where(move, np.nextafter(guess, -np.inf), guess)
        cut[t] = guess
    cut_b = cut[:, :, None, None]
    whole = block_low >= cut_b  # (T, B, P, Q): every pixel above the cut
    mixed = ~whole & (block_high >= cut_b)

    # nodes 1: runs of whole blocks along a block row (t, b, p, qa..qb)
    padded = np.pad(whole, ((0, 0), (0, 0), (0, 0), (1, 1)))
    run_first = np.argwhere(padded[..., 1:-1] & ~padded[..., :-2])
    run_last = np.argwhere(padded[..., 1:-1] & ~padded[..., 2:])[:, 3]
    run_t, run_b, run_p, run_qa = run_first.T
    n_runs = len(run_qa)
    run_of_block = np.full(whole.shape, -1, dtype=np.int64)
    block_owner, block_q = expand_runs(run_qa, run_last - run_qa + 1)
    run_of_block[run_t[block_owner], run_b[block_owner], run_p[block_owner], block_q] = block_owner

    # nodes 2: in every mixed block, the interval above the cut in each of its rows (``layout``: the
    # rows of mixed block m at offsets[m]..); consecutive rows whose intervals touch form one chain
    mt, mb, mp, mq = np.nonzero(mixed)
    heights = r1[mp] - r0[mp] + 1
    offsets = np.cumsum(heights) - heights
    owner, i = expand_runs(r0[mp], heights)
    t, b, q = mt[owner], mb[owner], mq[owner]
    first_col, last_col = c0[q], c1[q]
    cut_row = cut[t, b]
    first_value, last_value = value(b, i, first_col), value(b, i, last_col)
    first_in, last_in = first_value >= cut_row, last_value >= cut_row
    start = np.where(first_in, first_col, last_col + 1)  # [start, stop] above the cut, empty if start > stop
    stop = np.where(last_in, last_col, first_col - 1)
    cross = np.flatnonzero(first_in != last_in)
    if len(cross):
        # first pixel of the segment whose side differs from the first pixel's
        cb, ci, cq = b[cross], i[cross], q[cross]
        rising = ~first_in[cross]
        a = rows[cb, ci, ct.lower[first_col[cross]]]
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.nan_to_num((cut_row[cross] - a) / (rows[cb, ci, ct.upper[first_col[cross]]] - a), nan=0.5)
        key = 2.0 * ct.seg_of + ct.weight  # grows along the image: segment, then weight inside it
        lo, hi = first_col[cross] + 1, last_col[cross].copy()
        guess = np.clip(np.searchsorted(key, 2.0 * cq + np.clip(weight, 0.0, 1.0)), lo, hi)

        def flipped(k: np.ndarray, j: np.ndarray) -> np.ndarray:
            return (value(cb[k], ci[k], j) >= cut_row[cross[k]]) == rising[k]

        every = np.arange(len(cross))
        hit = flipped(every, guess)
        hi, lo = np.where(hit, guess, hi), np.where(hit, lo, guess + 1)
        hit = flipped(every, guess - 1)
        hi, lo = np.where(hit, np.minimum(hi, guess - 1), hi), np.where(hit, lo, np.maximum(lo, guess))
        active = np.flatnonzero(lo < hi)
        while len(active):  # bisection where the guess was off (flat segments, rounding)
            middle = (lo[active] + hi[active]) // 2
            hit = flipped(active, middle)
            hi[active] = np.where(hit, middle, hi[active])
            lo[active] = np.where(hit, lo[active], middle + 1)
            active = active[lo[active] < hi[active]]
        start[cross] = np.where(rising, lo, first_col[cross])
        stop[cross] = np.where(rising, last_col[cross], lo - 1)
    filled = start <= stop
    # monotone along the row: an interval peaks at whichever of the segment's ends it holds
    row_peak = np.maximum(np.where(first_in, first_value, -np.inf), np.where(last_in, last_value, -np.inf))
    joined = np.zeros(len(i), dtype=bool)
    joined[1:] = (filled[1:] & filled[:-1] & (owner[1:] == owner[:-1])
                  & (start[1:] <= stop[:-1] + 1) & (start[:-1] <= stop[1:] + 1))
    chain = np.cumsum(filled & ~joined) - 1  # chain index of every filled row
    kept = np.flatnonzero(filled)
    heads = np.flatnonzero(~joined[kept])
    n_chains = len(heads)
    if n_runs + n_chains == 0:
        return results
    chain_group = (t * n_maps + b)[kept][heads]
    chain_top, chain_left = i[kept][heads], start[kept][heads]
    chain_bottom = np.maximum.reduceat(i[kept], heads) if n_chains else heads
    chain_left_most = np.minimum.reduceat(start[kept], heads) if n_chains else heads
    chain_right = np.maximum.reduceat(stop[kept], heads) if n_chains else heads
    chain_area = np.add.reduceat((stop - start + 1)[kept], heads) if n_chains else heads
    chain_peak = np.maximum.reduceat(row_peak[kept], heads) if n_chains else np.zeros(0)

    # the graph: runs are nodes 0..n_runs-1, chains the next ones
    edges = []
    # (1) across a block-row boundary: rows r1[p] and r1[p] + 1 hold the end rows of runs and of chains
    run_rows = np.r_[r0[run_p], r1[run_p]]
    twice = np.r_[np.arange(n_runs), np.arange(n_runs)]
    single = np.r_[np.ones(n_runs, bool), r1[run_p] > r0[run_p]]  # a one-row block row appears once
    edge_rows = np.flatnonzero(filled & ((i == r0[mp[owner]]) | (i == r1[mp[owner]])))
    node = np.r_[twice[single], n_runs + chain[edge_rows]]
    group = np.r_[(run_t * n_maps + run_b)[twice][single], (t * n_maps + b)[edge_rows]]
    row = np.r_[run_rows[single], i[edge_rows]]
    first = np.r_[np.r_[c0[run_qa], c0[run_qa]][single], start[edge_rows]]
    last = np.r_[np.r_[c1[run_last], c1[run_last]][single], stop[edge_rows]]
    stride = width + 2
    line = (group * (height + 1) + row) * stride  # one spare row per group: nothing follows its last row
    order = np.argsort(line + first, kind="stable")
    node, line, first, last = node[order], line[order], first[order], last[order]
    # 8-connectivity with the next row: last >= first - 1 and first <= last + 1
    begin = np.searchsorted(line + last, line + stride + first - 1, side="left")
    end = np.searchsorted(line + first, line + stride + last + 1, side="right")
    source, target = expand_runs(begin, np.clip(end - begin, 0, None))
    edges.append((node[source], node[target]))
    # (2) inside a block row, between horizontally adjacent mixed blocks: rows at most one apart whose
    # intervals reach the shared block edge
    left_edge = filled & (start == first_col)
    right_edge = filled & (stop == last_col)
    index_of = np.full(mixed.shape, -1, dtype=np.int64)
    index_of[mt, mb, mp, mq] = np.arange(len(mt))
    right_q = np.minimum(mq + 1, n_q - 1)
    neighbour = np.where(mq + 1 < n_q, index_of[mt, mb, mp, right_q], -1)
    pair = np.flatnonzero(neighbour >= 0)
    pair_owner, row_in_block = expand_runs(np.zeros(len(pair), dtype=np.int64), heights[pair])
    left_rows = offsets[pair][pair_owner] + row_in_block
    touching = np.flatnonzero(right_edge[left_rows])
    left_rows, pair_owner, row_in_block = left_rows[touching], pair_owner[touching], row_in_block[touching]
    for shift in (-1, 0, 1):
        other = row_in_block + shift
        fits = (other >= 0) & (other < heights[pair][pair_owner])
        right_rows = offsets[neighbour[pair]][pair_owner] + np.clip(other, 0, None)
        hit = np.flatnonzero(fits & left_edge[np.minimum(right_rows, len(i) - 1)])
        edges.append((n_runs + chain[left_rows[hit]], n_runs + chain[right_rows[hit]]))
    # (3) a chain row reaching its block's left / right edge touches a run of whole blocks beside it
    mq_row = mq[owner]
    for reach, side in ((left_edge, -1), (right_edge, 1)):
        beside_q = mq_row + side
        inside = reach & (beside_q >= 0) & (beside_q < n_q)
        hit = np.flatnonzero(inside)
        beside = run_of_block[t[hit], b[hit], mp[owner][hit], beside_q[hit]]
        hit, beside = hit[beside >= 0], beside[beside >= 0]
        edges.append((n_runs + chain[hit], beside))
    source = np.concatenate([e[0] for e in edges])
    target = np.concatenate([e[1] for e in edges])
    n_nodes = n_runs + n_chains
    graph = coo_matrix((np.ones(len(source), dtype=np.int8), (source, target)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)

    # regions: aggregates of their nodes
    node_group = np.r_[run_t * n_maps + run_b, chain_group]
    node_top = np.r_[r0[run_p], chain_top]
    node_bottom = np.r_[r1[run_p], chain_bottom]
    node_left = np.r_[c0[run_qa], chain_left_most]
    node_right = np.r_[c1[run_last], chain_right]
    node_area = np.r_[(r1 - r0 + 1)[run_p] * (c1[run_last] - c0[run_qa] + 1), chain_area]
    node_raster = np.r_[r0[run_p] * width + c0[run_qa], chain_top * width + chain_left]
    # a run's exact peak is known only for the blocks that could hold its region's peak (below)
    run_floor = np.full(n_runs, -np.inf)
    np.maximum.at(run_floor, block_owner, corner_high[run_b[block_owner], run_p[block_owner], block_q])
    node_peak = np.r_[run_floor, chain_peak]
    by_label = np.argsort(label, kind="stable")
    heads = np.r_[0, np.flatnonzero(np.diff(label[by_label])) + 1]
    sorted_nodes = lambda values: values[by_label]  # noqa: E731
    region_group = sorted_nodes(node_group)[heads]
    top = np.minimum.reduceat(sorted_nodes(node_top), heads)
    bottom = np.maximum.reduceat(sorted_nodes(node_bottom), heads)
    left = np.minimum.reduceat(sorted_nodes(node_left), heads)
    right = np.maximum.reduceat(sorted_nodes(node_right), heads)
    area = np.add.reduceat(sorted_nodes(node_area), heads)
    raster = np.minimum.reduceat(sorted_nodes(node_raster), heads)
    region_peak = np.maximum.reduceat(sorted_nodes(node_peak), heads)
    # blocks of runs that could beat what their region's peak is so far: their rows, exactly
    region_of_label = np.empty(len(heads), dtype=np.int64)
    region_of_label[label[by_label][heads]] = np.arange(len(heads))
    block_region = region_of_label[label[block_owner]]
    bb, bp = run_b[block_owner], run_p[block_owner]
    suspect = np.flatnonzero(block_high[bb, bp, block_q] > region_peak[block_region])
    if len(suspect):
        rows_of, _, larger, _ = block_pixels(bb[suspect], bp[suspect], block_q[suspect])
        np.maximum.at(region_peak, block_region[suspect][rows_of], larger)
    # largest region first; equal areas in raster order of their first pixel (ndimage.label's numbering)
    ranking = np.lexsort((raster, -area, region_group))
    region_group = region_group[ranking]
    boxes = np.stack([left, top, right - left + 1, bottom - top + 1], axis=1).astype(np.float64)[ranking]
    region_b = region_group % n_maps
    scores = np.clip((region_peak[ranking] - low[region_b]) * scale[region_b] / 255.0, 0.0, 1.0)
    area = area[ranking].astype(np.float64)
    edges_of = np.searchsorted(region_group, np.arange(n_thr * n_maps + 1))
    for g in range(n_thr * n_maps):
        t_g, b_g = divmod(g, n_maps)
        lo_g, hi_g = edges_of[g], edges_of[g + 1]
        if largest_only:
            hi_g = min(hi_g, lo_g + 1)
        if hi_g > lo_g:
            results[b_g][thresholds[t_g]] = ExtractedBoxes(boxes[lo_g:hi_g], scores[lo_g:hi_g], area[lo_g:hi_g])
    return results


def _map_batches(items: list[tuple[tuple[str, str], np.ndarray]],
                 original_sizes: Mapping[str, tuple[int, int]] | tuple[int, int] | int,
                 registration: Callable[[tuple[int, int], tuple[int, int]], CellCentres] | None,
                 batch_size: int, progress: str | None) -> Iterable[tuple[list[int], _MapBatch]]:
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
            yield members, _MapBatch(np.stack([arrays[k] for k in members]), size, centres)
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
        for k, result in zip(members, _extract_batch(batch, thresholds, largest_only)):
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
    row, column = _MapBatch(heatmap[None], _image_size(original_size), cell_centres).peaks()
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

"""Heatmap upsampling and normalisation: the first step of the box extraction of Wang et al. (2017).

A class's heatmap is resized linearly to the image's original size with every heatmap cell centred where
the registration puts it (:data:`CellCentres`; by default the geometric registration of a ResNet at the
default input size, :func:`geometric_cell_centres`; the ``align_corners=False`` convention is
:func:`legacy_cell_centres`), then min-max normalised to [0, 255] (:func:`normalize_heatmap`).
:func:`upsample_heatmap` materialises the resized map (the reference of the plain algorithm, figures);
the box extraction (:mod:`thoracic.heatmaps.blocks`) uses the same one-dimensional taps
(:func:`interpolation_taps`) and the same interpolation formula (:func:`lerp`) without materialising it.
Everything here is numpy; :mod:`thoracic.heatmaps.boxes` re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

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
class Taps:
    """1-D linear resizing as two taps per output pixel: ``out[j] = lerp(in[lower[j]], in[upper[j]],
    weight[j])``. A *segment* is a run of outputs with the same two taps; its weights never decrease,
    so along a segment the resized values are monotone (exactly, in floating point: see :func:`lerp`)."""

    lower: np.ndarray
    upper: np.ndarray
    weight: np.ndarray
    seg_start: np.ndarray  # first output pixel of every segment
    seg_end: np.ndarray  # last output pixel of every segment (inclusive)
    seg_of: np.ndarray  # segment index of every output pixel

    @classmethod
    def build(cls, lower: np.ndarray, upper: np.ndarray, weight: np.ndarray) -> Taps:
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
def _legacy_taps(size_in: int, size_out: int) -> Taps:
    scale = size_in / size_out
    source = np.clip((np.arange(size_out) + 0.5) * scale - 0.5, 0, None)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return Taps.build(low, high, source - low)


@lru_cache(maxsize=256)
def _positioned_taps(size_out: int, centres: tuple[float, ...]) -> Taps:
    positions = np.asarray(centres, dtype=np.float64)
    pixels = np.arange(size_out, dtype=np.float64)
    if len(positions) == 1:
        zeros = np.zeros(size_out, dtype=np.int64)
        return Taps.build(zeros, zeros, np.zeros(size_out))
    # segment k: pixels in [positions[k], positions[k + 1]); constant beyond the first and last centre
    upper = np.clip(np.searchsorted(positions, pixels, side="right"), 1, len(positions) - 1)
    lower = upper - 1
    span = positions[upper] - positions[lower]
    return Taps.build(lower, upper, np.clip((pixels - positions[lower]) / span, 0.0, 1.0))


def interpolation_taps(size_in: int, size_out: int, centres: np.ndarray | None = None) -> Taps:
    """The taps of resizing ``size_in`` cells to ``size_out`` pixels (cached; see :func:`interpolation_matrix`)."""
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
def _matrix_of(taps: Taps, size_in: int) -> np.ndarray:
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
    return _matrix_of(interpolation_taps(size_in, size_out, centres), size_in)


def lerp(low: np.ndarray, high: np.ndarray, weight: np.ndarray) -> np.ndarray:
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

    Separable: the rows are interpolated first, then the columns, each with :func:`lerp` between the
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
    row_taps = interpolation_taps(heatmap.shape[0], height, rows)
    col_taps = interpolation_taps(heatmap.shape[1], width, cols)
    along_rows = lerp(heatmap[row_taps.lower], heatmap[row_taps.upper], row_taps.weight[:, None])
    return lerp(along_rows[:, col_taps.lower], along_rows[:, col_taps.upper], col_taps.weight[None, :])


def normalize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Min-max normalisation to [0, 255] (Wang et al. 2017); a constant map becomes all zeros."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    low, high = heatmap.min(), heatmap.max()
    if not high > low:
        return np.zeros_like(heatmap)
    return (heatmap - low) * (255.0 / (high - low))


__all__ = ["DEFAULT_INPUT_SIZE", "CellCentres", "Taps", "default_cell_centres", "expand_runs", "geometric_cell_centres", "interpolation_matrix", "interpolation_taps", "legacy_cell_centres",
           "lerp", "normalize_heatmap", "upsample_heatmap"]

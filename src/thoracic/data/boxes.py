"""The one function that maps boxes between image sizes.

ChestX-ray14 boxes (``BBox_List_2017.csv``) are x, y, w, h in the pixels of the distributed image
(1024 x 1024). They stay so in every table; code that needs them at the cache or heatmap resolution calls
:func:`scale_boxes`. Images are resized to S x S without keeping the aspect ratio (as in the seed paper),
so x and w scale with the widths and y and h with the heights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def scale_boxes(
    boxes_xywh: np.ndarray | Sequence[float] | Sequence[Sequence[float]],
    from_size: tuple[float, float],
    to_size: tuple[float, float],
) -> np.ndarray:
    """Map x, y, w, h boxes from an image of ``from_size = (width, height)`` to one of ``to_size``.

    Pixel-edge convention: a box covering the whole image, (0, 0, W, H), maps to (0, 0, W', H').
    Accepts one box (shape (4,)) or many (shape (N, 4)); returns float64 of the same shape.

    >>> scale_boxes([100, 200, 50, 80], from_size=(1024, 1024), to_size=(256, 256)).tolist()
    [25.0, 50.0, 12.5, 20.0]
    >>> scale_boxes([[0, 0, 1024, 1024]], (1024, 1024), (256, 128)).tolist()  # the aspect ratio changes
    [[0.0, 0.0, 256.0, 128.0]]
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    if boxes.shape[-1:] != (4,) or boxes.ndim > 2:
        raise ValueError(f"expected boxes of shape (4,) or (N, 4), got {boxes.shape}")
    from_w, from_h = (float(v) for v in from_size)
    to_w, to_h = (float(v) for v in to_size)
    if min(from_w, from_h, to_w, to_h) <= 0:
        raise ValueError(f"image sizes must be positive, got {from_size} -> {to_size}")
    factors = np.array([to_w / from_w, to_h / from_h, to_w / from_w, to_h / from_h])
    return boxes * factors


def xywh_to_xyxy(boxes_xywh: np.ndarray) -> np.ndarray:
    """x, y, w, h -> x0, y0, x1, y1 (same units)."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


def xyxy_to_xywh(boxes_xyxy: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 -> x, y, w, h (same units)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)

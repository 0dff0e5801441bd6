"""Overlay figures of test images: which (image, class) pairs to show and their panels.

The one builder of overlay rows: ``thoracic localize`` (one method of one run, images from the run's
data) and the report's comparison figure (every run and method, images from the data folder) both use
:func:`overlay_rows`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from thoracic.data.images import read_image
from thoracic.evaluation.figures import OverlayPanel, OverlayRow
from thoracic.geometry import Registration

#: ``image_of(example)``: the grayscale image of an example row (``image_id``, ``original_width``,
#: ``original_height``...), in original pixels.
ImageSource = Callable[[Any], np.ndarray]


def example_rows(ground_truth: pd.DataFrame, n_examples: int,
                 class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Up to ``n_examples`` (image, class) pairs, taking the box classes in turn (first rows in file order):
    in the order of ``class_names`` (the run's labels), then any other class in order of appearance."""
    pairs = ground_truth.drop_duplicates(["image_id", "class_name"])
    order = list(dict.fromkeys([*(class_names or ()), *pairs["class_name"]]))
    by_class = [pairs[pairs["class_name"] == name] for name in order]
    depth = max((len(rows) for rows in by_class), default=0)
    chosen = [rows.iloc[rank] for rank in range(depth) for rows in by_class if rank < len(rows)]
    return pd.DataFrame(chosen[:n_examples])


def data_module_images(module: Any) -> ImageSource:
    """Images of a set-up data module: read from the original file; the cache image (stretched to the
    original size) when the file is not on disk or unreadable (a figure must not fail the evaluation)."""
    table = module.dataset.table.set_index("image_id")

    def image_of(example: Any) -> np.ndarray:
        path = table.at[example.image_id, "path"] if "path" in table.columns else None
        try:
            image = read_image(path) if path else None
        except Exception:  # noqa: BLE001 - a figure must not fail the evaluation
            image = None
        if image is None:
            small = module.cache.image(example.image_id)
            repeat = max(1, int(example.original_height) // small.shape[0])
            image = np.kron(small, np.ones((repeat, repeat), dtype=small.dtype))
        return image

    return image_of


def file_images(paths: Mapping[str, str]) -> ImageSource:
    """Images read from ``image_id -> path``; a grey canvas of the original size when missing or unreadable."""

    def image_of(example: Any) -> np.ndarray:
        path = paths.get(example.image_id)
        if path:
            try:
                return read_image(path)
            except Exception:  # noqa: BLE001 - fall back to a blank canvas
                pass
        return np.full((int(example.original_height), int(example.original_width)), 128, dtype=np.uint8)

    return image_of


def overlay_rows(ground_truth: pd.DataFrame,
                 sources: Mapping[str, tuple[Mapping[tuple[str, str], np.ndarray], pd.DataFrame]],
                 n_examples: int, image_of: ImageSource, threshold: float | None = None,
                 registrations: Mapping[str, Registration | None] | None = None,
                 class_names: Sequence[str] | None = None) -> list[OverlayRow]:
    """Overlay rows for up to ``n_examples`` (image, class) pairs (:func:`example_rows`) and each
    ``name -> (heatmaps, boxes)``, one panel per source.

    ``ground_truth``: box rows in original pixels (``image_id, class_name, x, y, w, h, original_width,
    original_height``). ``image_of`` gives each example's image (:func:`data_module_images`,
    :func:`file_images`). ``registrations`` (by source name) places each source's heatmap in the image as
    localization did. Predicted boxes shown are those of ``threshold``, by default the highest heatmap
    threshold of each source's ``boxes``. ``class_names``: the order the classes are taken in
    (:func:`example_rows`).
    """
    rows = []
    for example in example_rows(ground_truth, n_examples, class_names).itertuples(index=False):
        image_id, class_name = example.image_id, example.class_name
        image = image_of(example)
        truth = ground_truth[(ground_truth["image_id"] == image_id) & (ground_truth["class_name"] == class_name)]
        panels = []
        for name, (heatmaps, boxes) in sources.items():
            mine = boxes[(boxes["image_id"] == image_id) & (boxes["class_name"] == class_name)]
            # the same heatmap threshold in every panel (an image without a box at it shows none)
            shown = threshold if threshold is not None else (boxes["threshold"].max() if len(boxes) else None)
            mine = mine[np.isclose(mine["threshold"], shown)] if shown is not None else mine
            panels.append(OverlayPanel(name, heatmaps.get((image_id, class_name)),
                                       mine[["x", "y", "w", "h"]].to_numpy(dtype=float),
                                       registration=(registrations or {}).get(name)))
        rows.append(OverlayRow(image, f"{image_id}\n{class_name}", truth[["x", "y", "w", "h"]].to_numpy(float),
                               panels))
    return rows


__all__ = ["ImageSource", "data_module_images", "example_rows", "file_images", "overlay_rows"]

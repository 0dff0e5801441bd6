"""Weakly supervised localization, scored as Wang et al. (2017) defined it (paper Section 5.2, Tables 2-7).

Protocol (``docs/evaluation.md``):

1. For every ground-truth box row, take the heatmap of *that row's* class on its image (an image with
   several boxes contributes every row; nothing is keyed by image id alone).
2. Upsample the heatmap bilinearly to the image's original size (1024 x 1024 for NIH), min-max normalise
   it to [0, 255], threshold it at each T_heatmap (60 and 180), and draw one box around every
   8-connected region (or only around the largest, as the seed code did): the box extraction of
   :mod:`thoracic.heatmaps.boxes`.
3. IoU = intersection / union; IoBB = intersection / area of the *predicted* box (Wang et al. 2017).
   A ground-truth box is localized at T when some predicted box of its class on its image has a value
   strictly greater than T. A predicted box that localizes no ground-truth box of its class and image is
   a false positive; the average number of false positives per image is reported beside the accuracy.

All boxes are ``(x, y, w, h)`` in original-image pixels with ``(x, y)`` the top-left corner; a box covers
the half-open area ``[x, x + w) x [y, y + h)``, so two boxes that share an edge do not intersect.
This module holds the box geometry (:func:`iou`, :func:`iobb`), the scoring, the pointing game and the
baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from thoracic.errors import DataError
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS, expand_runs

#: Thresholds of the paper and of Wang et al. 2017.
IOU_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: Label of the pooled boxes of all heatmap thresholds in the tables.
POOLED = "all"
#: The heatmap threshold of the headline numbers: the paper's, the higher of :data:`HEATMAP_THRESHOLDS`
#: (60 "always covers most of the image").
HEADLINE_THRESHOLD = str(max(HEATMAP_THRESHOLDS))
#: ``metric`` of the pointing-game rows of the accuracy tables.
POINTING = "pointing"
#: ``class_name`` of the rows averaging over the classes with boxes.
MEAN = "Mean"

BOX_COLUMNS = ["x", "y", "w", "h"]
PREDICTED_BOX_COLUMNS = ["image_id", "class_name", "threshold", "x", "y", "w", "h", "score"]
#: Columns of :func:`localization_accuracy` (the ``localization_<method>.csv`` files add ``source``).
ACCURACY_COLUMNS = ["threshold", "metric", "t", "class_name", "accuracy", "accuracy_sd", "n_draws", "n_boxes",
                    "n_localized", "false_positives_per_image", "n_classes"]


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
    return predicted  # used by position only


def _labels(pred: pd.DataFrame, pooled: bool) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The heatmap-threshold labels (str, in order, :data:`POOLED` last when ``pooled`` and there are several
    thresholds), and the predicted rows as (row index, label index) pairs, the pooled copies included."""
    values = sorted(pred["threshold"].unique().tolist(), key=lambda v: (str(type(v)), v))
    labels = [str(v) for v in values]
    codes = _codes(pred["threshold"], values)
    rows = np.arange(len(pred))
    if pooled and len(labels) > 1:
        rows = np.r_[rows, rows]
        codes = np.r_[codes, np.full(len(pred), len(labels))]
        labels.append(POOLED)
    if not labels:  # no box at all: every row still gets scored (as missed)
        labels = [POOLED]
    return labels, rows, codes


def _codes(values: pd.Series, categories: Sequence[Any]) -> np.ndarray:
    """Index of every value in ``categories`` (-1 for others)."""
    codes, uniques = pd.factorize(values)
    position = {value: k for k, value in enumerate(categories)}
    lookup = np.asarray([position.get(value, -1) for value in uniques], dtype=np.int64)
    return lookup[codes] if len(codes) else np.zeros(0, dtype=np.int64)


def _pair_keys(*tables: pd.DataFrame) -> list[np.ndarray]:
    """One integer per (image_id, class_name), shared by the tables."""
    images, _ = pd.factorize(pd.concat([t["image_id"] for t in tables], ignore_index=True))
    classes, class_values = pd.factorize(pd.concat([t["class_name"] for t in tables], ignore_index=True))
    keys = images.astype(np.int64) * max(len(class_values), 1) + classes
    bounds = np.cumsum([0, *(len(t) for t in tables)])
    return [keys[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _matches(keys: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with ``keys[i] == other[j]``, as two index arrays."""
    order = np.argsort(other, kind="stable")
    begin = np.searchsorted(other[order], keys, side="left")
    end = np.searchsorted(other[order], keys, side="right")
    left, position = expand_runs(begin, end - begin)
    return left, order[position]


def _boxes_of(table: pd.DataFrame) -> np.ndarray:
    return table[BOX_COLUMNS].to_numpy(dtype=np.float64)


@dataclass(frozen=True)
class _Scores:
    """Best IoU / IoBB of every (label, ground-truth row) and of every labelled predicted box."""

    labels: list[str]
    row_count: np.ndarray  # (labels * rows,) predicted boxes of the row's pair
    row_iou: np.ndarray
    row_iobb: np.ndarray
    box_rows: np.ndarray  # predicted row of every labelled box (pooled copies included)
    box_labels: np.ndarray  # its label index
    box_iou: np.ndarray
    box_iobb: np.ndarray


def _score(gt: pd.DataFrame, pred: pd.DataFrame, pooled: bool) -> _Scores:
    labels, pred_rows, pred_labels = _labels(pred, pooled)
    gt_keys, pred_keys = _pair_keys(gt, pred)
    gt_boxes, pred_boxes = _boxes_of(gt), _boxes_of(pred)
    # rows: against the boxes of their pair, per label
    row, match = _matches(gt_keys, pred_keys[pred_rows])
    n_gt = len(gt)
    slot = pred_labels[match] * n_gt + row
    pairs = gt_boxes[row], pred_boxes[pred_rows[match]]
    row_iou, row_iobb = np.zeros(len(labels) * n_gt), np.zeros(len(labels) * n_gt)
    np.maximum.at(row_iou, slot, iou(*pairs))
    np.maximum.at(row_iobb, slot, iobb(*pairs))
    # predicted boxes: against the ground-truth boxes of their pair (the same for every label)
    box, match = _matches(pred_keys, gt_keys)
    pairs = gt_boxes[match], pred_boxes[box]
    box_iou, box_iobb = np.zeros(len(pred)), np.zeros(len(pred))
    np.maximum.at(box_iou, box, iou(*pairs))
    np.maximum.at(box_iobb, box, iobb(*pairs))
    return _Scores(labels, np.bincount(slot, minlength=len(labels) * n_gt).astype(np.int64), row_iou, row_iobb,
                   pred_rows, pred_labels, box_iou[pred_rows], box_iobb[pred_rows])


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
        One row per (threshold, ground-truth row): ``box_row, image_id, class_name, threshold`` (str,
        categorical), ``n_predicted`` (boxes of that class on that image), ``best_iou``, ``best_iobb``
        (0 with no box).
    """
    gt = _check_ground_truth(ground_truth)
    scores = _score(gt, _check_predicted(predicted), pooled)
    n_gt, labels = len(gt), scores.labels
    # (taking rows keeps the columns' dtypes; the labels are categorical: both spare a check per cell)
    scored = gt[["box_row", "image_id", "class_name"]].iloc[np.tile(np.arange(n_gt), len(labels))]
    scored = scored.reset_index(drop=True)
    scored["threshold"] = pd.Categorical.from_codes(np.repeat(np.arange(len(labels)), n_gt), categories=labels)
    scored["n_predicted"] = scores.row_count
    scored["best_iou"] = scores.row_iou
    scored["best_iobb"] = scores.row_iobb
    return scored


def false_positive_boxes(ground_truth: pd.DataFrame, predicted: pd.DataFrame, pooled: bool = True) -> pd.DataFrame:
    """Best IoU and IoBB of every predicted box against the ground-truth boxes of its class and image.

    Returns the predicted rows (``threshold`` as str, categorical; plus pooled copies) with ``best_iou``,
    ``best_iobb``; a box is a false positive at T when its best value is not above T.
    """
    gt = _check_ground_truth(ground_truth)
    pred = _check_predicted(predicted)
    scores = _score(gt, pred, pooled)
    out = pred.iloc[scores.box_rows][["image_id", "class_name", *BOX_COLUMNS]].reset_index(drop=True)
    out.insert(2, "threshold", pd.Categorical.from_codes(scores.box_labels, categories=scores.labels))
    out["best_iou"] = scores.box_iou
    out["best_iobb"] = scores.box_iobb
    return out


def _class_codes(names: pd.Series, class_names: Sequence[str]) -> np.ndarray:
    """Index of every name in ``class_names`` (-1 for other names)."""
    return _codes(names, class_names)


def _accuracy_rows(n_images: np.ndarray, labels: Sequence[str], class_names: Sequence[str],
                   row_cells: np.ndarray, row_values: dict[str, np.ndarray],
                   box_cells: np.ndarray | None, box_values: dict[str, np.ndarray] | None,
                   metrics: Sequence[tuple[str, Sequence[float]]]) -> pd.DataFrame:
    """The long accuracy table (:data:`ACCURACY_COLUMNS`).

    ``row_cells``: per scored ground-truth row its cell ``label * classes + class`` (-1: left out);
    ``row_values[metric]``: its best value (localized at t when above t). ``box_cells`` / ``box_values``:
    the same for the predicted boxes (a false positive at t when not above t; None: no false positive
    count). ``n_images``: images with a box, per class.
    """
    class_names, labels = list(class_names), list(labels)
    n_labels, n_classes = len(labels), len(class_names)
    size = n_labels * n_classes
    kept = row_cells >= 0
    n_boxes = np.bincount(row_cells[kept], minlength=size).reshape(n_labels, n_classes)
    frames = []
    for metric, ts in metrics:
        ts = np.asarray(ts, dtype=np.float64)
        values = row_values[metric][kept]
        localized = np.stack([np.bincount(row_cells[kept], weights=values > t, minlength=size) for t in ts],
                             axis=-1).reshape(n_labels, n_classes, len(ts))
        if box_cells is not None and box_values is not None:
            box_kept = box_cells >= 0
            best = box_values[metric][box_kept]
            false_pos = np.stack([np.bincount(box_cells[box_kept], weights=best <= t, minlength=size) for t in ts],
                                 axis=-1).reshape(n_labels, n_classes, len(ts))
            with np.errstate(invalid="ignore", divide="ignore"):
                fp_rate = np.where(n_images[None, :, None] > 0, false_pos / n_images[None, :, None], np.nan)
        else:
            fp_rate = np.full(localized.shape, np.nan)
        boxes = np.broadcast_to(n_boxes[:, :, None], localized.shape)
        defined = boxes > 0
        accuracy = np.where(defined, localized / np.maximum(boxes, 1), np.nan)
        finite_fp = np.isfinite(fp_rate)
        mean_accuracy = np.where(defined.any(axis=1), np.where(defined, accuracy, 0.0).sum(axis=1)
                                 / np.maximum(defined.sum(axis=1), 1), np.nan)
        mean_fp = np.where(finite_fp.any(axis=1), np.where(finite_fp, fp_rate, 0.0).sum(axis=1)
                           / np.maximum(finite_fp.sum(axis=1), 1), np.nan)
        # (label, class, t) -> rows per (label, t): the classes, then their Mean
        accuracy = np.concatenate([accuracy, mean_accuracy[:, None, :]], axis=1)
        fp_rate = np.concatenate([fp_rate, mean_fp[:, None, :]], axis=1)
        boxes = np.concatenate([boxes, boxes.sum(axis=1, keepdims=True)], axis=1)
        localized = np.concatenate([localized, localized.sum(axis=1, keepdims=True)], axis=1)
        classes = np.concatenate([defined, defined.sum(axis=1, keepdims=True)], axis=1)
        n_rows = n_classes + 1
        # per label, the rows of this metric: t-major, the classes then their Mean
        frames.append({
            "metric": np.full((n_labels, len(ts) * n_rows), metric, dtype=object),
            "t": np.broadcast_to(np.repeat(ts, n_rows), (n_labels, len(ts) * n_rows)),
            "class_name": np.broadcast_to(np.tile(np.arange(n_rows), len(ts)), (n_labels, len(ts) * n_rows)),
            "accuracy": accuracy.transpose(0, 2, 1).reshape(n_labels, -1),
            "n_boxes": boxes.transpose(0, 2, 1).reshape(n_labels, -1),
            "n_localized": localized.transpose(0, 2, 1).reshape(n_labels, -1),
            "false_positives_per_image": fp_rate.transpose(0, 2, 1).reshape(n_labels, -1),
            "n_classes": classes.transpose(0, 2, 1).reshape(n_labels, -1),
        })
    # per heatmap threshold (label): IoU, then IoBB, as the tables read
    columns = {key: np.concatenate([frame[key] for frame in frames], axis=1).ravel() for key in frames[0]}
    per_label = columns["t"].size // max(n_labels, 1)
    return pd.DataFrame({
        "threshold": np.repeat(np.asarray(labels, dtype=object), per_label),
        "metric": columns["metric"],
        "t": columns["t"].astype(np.float64),
        "class_name": np.asarray([*class_names, MEAN], dtype=object)[columns["class_name"]],
        "accuracy": columns["accuracy"],
        "accuracy_sd": np.nan,
        "n_draws": 1,
        "n_boxes": columns["n_boxes"].astype(np.int64),
        "n_localized": columns["n_localized"].astype(np.float64),
        "false_positives_per_image": columns["false_positives_per_image"],
        "n_classes": columns["n_classes"].astype(np.int64),
    })[ACCURACY_COLUMNS]


def box_classes(ground_truth: pd.DataFrame, class_names: Sequence[str] | None = None) -> list[str]:
    """The rows of an accuracy table: ``class_names`` (the run's box classes, those without box rows here
    too), else the classes of the ground truth in order of appearance."""
    if class_names is not None:
        return list(class_names)
    return list(dict.fromkeys(str(c) for c in ground_truth["class_name"]))


def _images_per_class(gt: pd.DataFrame, class_names: Sequence[str]) -> np.ndarray:
    return gt.groupby("class_name")["image_id"].nunique().reindex(list(class_names), fill_value=0).to_numpy()


def localization_accuracy(
    ground_truth: pd.DataFrame,
    predicted: pd.DataFrame,
    class_names: Sequence[str] | None = None,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS,
    pooled: bool = True,
) -> pd.DataFrame:
    """Accuracy and average false positives per class and threshold (Wang et al. 2017; paper Tables 2-7).

    Returns a long table with :data:`ACCURACY_COLUMNS`: ``threshold`` (heatmap threshold, str),
    ``metric`` ('IoU'/'IoBB'), ``t`` (the metric threshold), ``class_name`` (the box classes:
    ``class_names``, the run's, else those of the ground truth (:func:`box_classes`); then ``Mean`` = mean
    of the per-class accuracies over the classes with boxes, ``n_classes`` of them),
    ``accuracy`` (fraction of the class's box rows with best value > t; NaN for a class without boxes),
    ``accuracy_sd`` (NaN here; the spread over draws of :func:`baseline_accuracy`), ``n_draws`` (1),
    ``n_boxes``, ``n_localized``, ``false_positives_per_image`` (boxes localizing no box of their class
    and image, divided by the number of images with a box of that class; ``Mean``: over the classes),
    ``n_classes`` (1 for a class with boxes, 0 without; ``Mean``: the number of classes averaged).
    """
    gt = _check_ground_truth(ground_truth)
    pred = _check_predicted(predicted)
    class_names = box_classes(gt, class_names)
    scores = _score(gt, pred, pooled)
    n_classes = len(class_names)
    gt_class = _class_codes(gt["class_name"], class_names)
    pred_class = _class_codes(pred["class_name"], class_names)[scores.box_rows]
    row_cells = np.repeat(np.arange(len(scores.labels)), len(gt)) * n_classes + np.tile(gt_class, len(scores.labels))
    row_cells = np.where(np.tile(gt_class, len(scores.labels)) >= 0, row_cells, -1)
    box_cells = np.where(pred_class >= 0, scores.box_labels * n_classes + pred_class, -1)
    return _accuracy_rows(_images_per_class(gt, class_names), scores.labels, class_names,
                          row_cells, {"IoU": scores.row_iou, "IoBB": scores.row_iobb},
                          box_cells, {"IoU": scores.box_iou, "IoBB": scores.box_iobb},
                          [("IoU", iou_thresholds), ("IoBB", iobb_thresholds)])


# --------------------------------------------------------------------------------------------------
# Pointing game: is the heatmap's maximum inside a ground-truth box of its class?
# --------------------------------------------------------------------------------------------------


def pointing_game(ground_truth: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Whether the point of every ground-truth row's (image, class) falls inside *some* ground-truth box of
    that class on that image (a resolution-free measure: no threshold, no box).

    Args:
        ground_truth: box rows as in :func:`score_localization`.
        points: ``image_id, class_name, x, y`` in box coordinates (a box covers ``[x, x + w)``; the centre
            of pixel column ``c`` is at ``c + 0.5``), optionally ``draw`` (several points per pair, one
            per draw). Pairs without a point count as misses.

    Returns:
        One row per (draw, ground-truth row): ``draw`` (0 without draws), ``box_row, image_id,
        class_name, x, y`` (the point; NaN without one), ``hit`` (bool).
    """
    gt = _check_ground_truth(ground_truth)
    missing = [c for c in ["image_id", "class_name", "x", "y"] if c not in points.columns]
    if missing:
        raise DataError(f"point table lacks columns {missing} (has {list(points.columns)})")
    points = points.reset_index(drop=True)
    n_gt = len(gt)
    if points.empty:
        return pd.DataFrame({"draw": 0, "box_row": gt["box_row"].to_numpy(), "image_id": gt["image_id"].to_numpy(),
                             "class_name": gt["class_name"].to_numpy(), "x": np.nan, "y": np.nan, "hit": False})
    draw = points["draw"].to_numpy(dtype=np.int64) if "draw" in points.columns else np.zeros(len(points), np.int64)
    draws, draw_index = np.unique(draw, return_inverse=True)
    gt_keys, point_keys = _pair_keys(gt, points)
    width = int(max(gt_keys.max(initial=0), point_keys.max(initial=0))) + 1
    slot = draw_index * width + point_keys  # (draw, pair)
    if len(np.unique(slot)) != len(slot):
        raise DataError("point table has several points for one (draw, image, class)")
    # a point hits when it lies in some ground-truth box of its pair
    px, py = points["x"].to_numpy(dtype=np.float64), points["y"].to_numpy(dtype=np.float64)
    point, match = _matches(point_keys, gt_keys)
    boxes = _boxes_of(gt)[match]
    inside = ((boxes[:, 0] <= px[point]) & (px[point] < boxes[:, 0] + boxes[:, 2])
              & (boxes[:, 1] <= py[point]) & (py[point] < boxes[:, 1] + boxes[:, 3]))
    point_hit = np.zeros(len(points), dtype=bool)
    np.logical_or.at(point_hit, point, inside)
    # every ground-truth row, once per draw, with its pair's point of that draw (if any)
    grid = np.repeat(np.arange(len(draws)), n_gt) * width + np.tile(gt_keys, len(draws))
    order = np.argsort(slot)
    found = np.minimum(np.searchsorted(slot[order], grid), len(order) - 1)
    has = slot[order][found] == grid
    index = order[found]
    out = gt[["box_row", "image_id", "class_name"]].iloc[np.tile(np.arange(n_gt), len(draws))].reset_index(drop=True)
    out.insert(0, "draw", np.repeat(draws, n_gt))
    out["x"] = np.where(has, px[index], np.nan)
    out["y"] = np.where(has, py[index], np.nan)
    out["hit"] = has & point_hit[index]
    return out


def pointing_accuracy(ground_truth: pd.DataFrame, hits: pd.DataFrame,
                      class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of the accuracy table (:data:`ACCURACY_COLUMNS`, ``metric`` = :data:`POINTING`, ``t`` NaN,
    ``threshold`` '') from :func:`pointing_game`: per class the share of box rows whose point hits, and
    their ``Mean`` over the classes with boxes; over draws, mean and ``accuracy_sd`` as in
    :func:`baseline_accuracy`."""
    gt = _check_ground_truth(ground_truth)
    class_names = box_classes(gt, class_names)
    draws, draw_index = np.unique(hits["draw"].to_numpy(), return_inverse=True)
    classes = _class_codes(hits["class_name"], class_names)
    cells = np.where(classes >= 0, draw_index * len(class_names) + classes, -1)
    labels = [str(d) for d in draws] or ["0"]
    table = _accuracy_rows(_images_per_class(gt, class_names), labels, class_names, cells,
                           {POINTING: hits["hit"].to_numpy(dtype=np.float64)}, None, None, [(POINTING, [0.5])])
    table["t"] = np.nan
    return _over_draws(table) if len(labels) > 1 else table.assign(threshold="")


def _over_draws(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over the draws (``threshold`` labels) of a per-draw accuracy table, with the standard deviation
    over draws (ddof=1) in ``accuracy_sd``; ``threshold`` becomes ''."""
    keys = ["metric", "t", "class_name"]
    grouped = table.groupby(keys, sort=False, dropna=False)
    out = grouped.agg(accuracy=("accuracy", "mean"), accuracy_sd=("accuracy", "std"),
                      n_draws=("accuracy", "size"), n_boxes=("n_boxes", "first"),
                      n_localized=("n_localized", "mean"),
                      false_positives_per_image=("false_positives_per_image", "mean"),
                      n_classes=("n_classes", "first")).reset_index()
    out.insert(0, "threshold", "")
    return out[ACCURACY_COLUMNS]


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
    (over all its ground-truth boxes) centred in the image. Same columns as
    :func:`thoracic.heatmaps.boxes.extract_boxes`."""
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
                 seed: int = 0, draws: int = 1) -> pd.DataFrame:
    """Baseline: for every (image, class) with a ground-truth box, one box whose width and height are
    drawn uniformly from that class's ground-truth box sizes and whose position is uniform inside the
    image (seeded ``numpy.random.default_rng``). ``draws`` independent draws from one generator, in a
    ``draw`` column (0, 1, ...; the first draw does not depend on ``draws``). Same columns as
    :func:`thoracic.heatmaps.boxes.extract_boxes`, plus ``draw``."""
    gt = _check_ground_truth(ground_truth)
    rng = np.random.default_rng(seed)
    pairs = gt.drop_duplicates(["image_id", "class_name"]).reset_index(drop=True)
    sizes = _sizes_of(pairs, original_sizes)
    pools = {name: gt.loc[gt["class_name"] == name, ["w", "h"]].to_numpy(dtype=np.float64)
             for name in pairs["class_name"].unique()}
    indices = pairs.groupby("class_name").indices
    n_draws, n_pairs = max(1, int(draws)), len(pairs)
    w, h = np.empty((n_draws, n_pairs)), np.empty((n_draws, n_pairs))
    x, y = np.empty((n_draws, n_pairs)), np.empty((n_draws, n_pairs))
    for draw in range(n_draws):  # one generator, draw after draw: draw 0 does not depend on ``draws``
        for name, index in indices.items():
            pool = pools[name]
            pick = rng.integers(0, len(pool), size=len(index))
            w[draw, index], h[draw, index] = pool[pick, 0], pool[pick, 1]
        w[draw] = np.minimum(w[draw], sizes[:, 1])
        h[draw] = np.minimum(h[draw], sizes[:, 0])
        x[draw] = rng.random(n_pairs) * (sizes[:, 1] - w[draw])
        y[draw] = rng.random(n_pairs) * (sizes[:, 0] - h[draw])
    return pd.DataFrame({"image_id": np.tile(pairs["image_id"].to_numpy(), n_draws),
                         "class_name": np.tile(pairs["class_name"].to_numpy(), n_draws), "threshold": 0,
                         "x": x.ravel(), "y": y.ravel(), "w": w.ravel(), "h": h.ravel(), "score": 1.0,
                         "draw": np.repeat(np.arange(n_draws), n_pairs)})


def box_centres(boxes: pd.DataFrame) -> pd.DataFrame:
    """The centre of every box as a pointing-game point (``image_id, class_name, x, y`` [, ``draw``])."""
    columns = ["draw"] if "draw" in boxes.columns else []
    return boxes[[*columns, "image_id", "class_name"]].assign(x=boxes["x"] + boxes["w"] / 2,
                                                               y=boxes["y"] + boxes["h"] / 2)


def baseline_accuracy(ground_truth: pd.DataFrame, boxes: pd.DataFrame,
                      class_names: Sequence[str] | None = None,
                      iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
                      iobb_thresholds: Sequence[float] = IOBB_THRESHOLDS) -> pd.DataFrame:
    """Accuracy table (:data:`ACCURACY_COLUMNS`, ``threshold`` '') of one-box-per-(image, class) baseline
    boxes: IoU, IoBB and the pointing game of the box centres. With a ``draw`` column (several draws,
    :func:`random_boxes`): per draw, then the mean over draws with their standard deviation
    (``accuracy_sd``, ddof=1; ``n_localized`` and ``false_positives_per_image`` are means too)."""
    gt = _check_ground_truth(ground_truth)
    class_names = box_classes(gt, class_names)
    drawn = "draw" in boxes.columns and boxes["draw"].nunique() > 1
    by_draw = boxes.assign(threshold=boxes["draw"] if "draw" in boxes.columns else 0)
    table = localization_accuracy(gt, by_draw, class_names, iou_thresholds, iobb_thresholds, pooled=False)
    table = _over_draws(table) if drawn else table.assign(threshold="")
    pointing = pointing_accuracy(gt, pointing_game(gt, box_centres(boxes)), class_names)
    return pd.concat([table, pointing], ignore_index=True)

"""Mask metrics beside the box metrics: mIoU and hit rate (CheXlocalize, Saporta et al. 2022).

CheXlocalize scores a saliency map as a segmentation: the map is upsampled to the original image, min-max
normalised to [0, 255] and binarised, and its IoU with the ground-truth region is averaged over the
images of a class (mIoU); the *hit rate* asks whether the map's maximum lies inside the region (the
pointing game). Here the region of a pair (image, class) is the union of the class's boxes on the image
(a pixel belongs to it when its centre lies inside a box), the map is upsampled through the same cell
positions as the box extraction (:mod:`thoracic.heatmaps.boxes`), and it is binarised three ways:

* at the fixed heatmap thresholds (60 and 180, as the boxes: ``normalised > T``);
* at Otsu's threshold of the normalised map (``skimage.filters.threshold_otsu``; CheXlocalize's
  ``heatmap_to_segmentation.py`` binarises with OpenCV's Otsu);
* **clearly apart**, at a per-class threshold *tuned* (the integer level 0-254 of highest mean IoU, as
  CheXlocalize's ``tune_heatmap_threshold.py`` does on its validation set) on one half of the box rows and
  applied to the other: the rows' patients are split in two halves by a seeded draw, each half is scored
  with the threshold tuned on the other half (two-fold cross-fitting), so no IoU is scored with a
  threshold tuned on its own row or patient. A class whose rows all fall in one half gets no tuned score.

Per class and over all pairs: the mean with a percentile bootstrap 95% CI over the pairs (CheXlocalize
resamples images, 1000 times).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from thoracic.evaluation.trust.common import ALL, Pair, bootstrap_ci
from thoracic.geometry import Registration
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS, heatmap_peak
from thoracic.heatmaps.upsampling import normalize_heatmap, upsample_heatmap

#: Integer levels a tuned threshold is chosen from (``normalised > T``).
TUNING_LEVELS = np.arange(255)
#: Protocol names in ``mask_metrics.csv`` (the fixed ones are ``heatmap > T``).
OTSU = "Otsu"
TUNED = "tuned on the other half"
HIT_RATE = "hit rate"
MIOU = "mIoU"


def region_mask(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(height, width)`` bool mask of the pixels whose centre lies inside one of the ``(K, 4)`` boxes
    ``(x, y, w, h)`` (half-open ``[x, x + w) x [y, y + h)``, original pixels)."""
    height, width = size
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        # pixel c is inside when x <= c + 0.5 < x + w
        c0, c1 = max(0, int(np.ceil(x - 0.5))), min(width, int(np.ceil(x + w - 0.5)))
        r0, r1 = max(0, int(np.ceil(y - 0.5))), min(height, int(np.ceil(y + h - 0.5)))
        mask[r0:r1, c0:c1] = True
    return mask


def mask_iou(predicted: np.ndarray, region: np.ndarray) -> float:
    """IoU of two bool masks (NaN when both are empty)."""
    union = int(np.count_nonzero(predicted | region))
    return float(np.count_nonzero(predicted & region) / union) if union else float("nan")


def otsu_threshold(normalised: np.ndarray) -> float:
    """Otsu's threshold of a map on the 0-255 scale (``skimage.filters.threshold_otsu``, 256 bins); 255 for a
    constant map (nothing is above it)."""
    from skimage.filters import threshold_otsu

    if np.ptp(normalised) == 0:
        return 255.0
    return float(threshold_otsu(normalised, nbins=256))


def iou_by_level(normalised: np.ndarray, region: np.ndarray) -> np.ndarray:
    """IoU of ``normalised > T`` with ``region`` for every integer level ``T`` of :data:`TUNING_LEVELS` (one
    pass: ``v > T`` for an integer ``T`` is ``ceil(v) >= T + 1``)."""
    levels = np.clip(np.ceil(normalised), 0, 255).astype(np.int64)
    above = np.cumsum(np.bincount(levels.ravel(), minlength=256)[::-1])[::-1]  # above[k] = #(level >= k)
    inside = np.cumsum(np.bincount(levels[region], minlength=256)[::-1])[::-1]
    predicted, intersection = above[TUNING_LEVELS + 1], inside[TUNING_LEVELS + 1]
    union = predicted + int(np.count_nonzero(region)) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


def patient_halves(pairs: pd.DataFrame, seed: int) -> pd.Series:
    """Half 0 or 1 of every pair: the pairs' patients (``patient_id``; the image when unknown) in a seeded
    random order, alternately in each half."""
    patients = pairs["patient_id"].astype(str) if "patient_id" in pairs.columns else pairs["image_id"].astype(str)
    unique = np.asarray(sorted(patients.unique()))
    order = np.random.default_rng(seed).permutation(len(unique))
    half = {patient: int(position % 2) for position, patient in zip(range(len(unique)), unique[order])}
    return patients.map(half).astype(int)


def mask_scores(ground_truth: pd.DataFrame, pairs: pd.DataFrame, heatmaps: Mapping[Pair, np.ndarray],
                method: str, registration: Registration | None,
                thresholds: Sequence[float] = HEATMAP_THRESHOLDS, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per pair (``masks.csv``) and the tuned thresholds (``mask_thresholds.csv``) of one method.

    ``ground_truth``: box rows in original pixels (``image_id, class_name, x, y, w, h, original_width,
    original_height``); ``pairs``: the pairs scored (with ``patient_id`` when known); ``heatmaps``: their
    native maps; ``registration`` places the maps' cells as localization does. Per pair: the region's
    area, IoU at each fixed threshold (``iou_<T>``), Otsu's threshold and IoU, hit (the map's maximum in
    the region), the pair's half, the threshold tuned on the other half and its IoU (NaN when the other
    half has no pair of the class).
    """
    boxes_of = {key: rows[["x", "y", "w", "h"]].to_numpy(np.float64)
                for key, rows in ground_truth.groupby(["image_id", "class_name"], sort=False)}
    halves = patient_halves(pairs, seed).to_numpy()
    records, curves = [], []
    for row, half in zip(pairs.itertuples(index=False), halves):
        key = (str(row.image_id), str(row.class_name))
        size = (int(row.original_height), int(row.original_width))
        heatmap = np.asarray(heatmaps[key], dtype=np.float64)
        centres = registration(heatmap.shape, size) if registration is not None else None
        normalised = normalize_heatmap(upsample_heatmap(heatmap, size, centres))
        region = region_mask(boxes_of[key], size)
        peak_x, peak_y = heatmap_peak(heatmap, size, centres)
        otsu = otsu_threshold(normalised)
        record: dict[str, Any] = {"method": method, "image_id": key[0], "class_name": key[1],
                                  "patient_id": getattr(row, "patient_id", key[0]), "half": int(half),
                                  "region_area": int(np.count_nonzero(region))}
        for threshold in thresholds:
            record[f"iou_{threshold:g}"] = mask_iou(normalised > threshold, region)
        record.update({"otsu_threshold": otsu, "iou_otsu": mask_iou(normalised > otsu, region),
                       "hit": int(region[peak_y, peak_x]), "peak_x": int(peak_x), "peak_y": int(peak_y)})
        records.append(record)
        curves.append(iou_by_level(normalised, region))
    table = pd.DataFrame.from_records(records)
    tuned, chosen = _cross_fitted(table, np.asarray(curves), method)
    table["tuned_threshold"], table["iou_tuned"] = tuned[:, 0], tuned[:, 1]
    return table, chosen


def _cross_fitted(table: pd.DataFrame, curves: np.ndarray, method: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Per class and half: the level of highest mean IoU; each pair scored at the other half's level."""
    result = np.full((len(table), 2), np.nan)
    chosen = []
    for class_name, rows in table.groupby("class_name", sort=True):
        level_of: dict[int, float] = {}
        for half in (0, 1):
            members = rows.index[rows["half"] == half].to_numpy()
            if len(members):
                mean = np.nanmean(curves[members], axis=0) if np.isfinite(curves[members]).any() else None
                if mean is not None and np.isfinite(mean).any():
                    level = int(TUNING_LEVELS[int(np.nanargmax(mean))])  # the lowest level on ties
                    level_of[half] = level
                    chosen.append({"method": method, "class_name": class_name, "tuned_on_half": half,
                                   "threshold": level, "n_pairs": int(len(members)),
                                   "tuning_miou": float(mean[level])})
        for half in (0, 1):
            members = rows.index[rows["half"] == half].to_numpy()
            if len(members) and (1 - half) in level_of:
                level = level_of[1 - half]
                result[members, 0] = level
                result[members, 1] = curves[members, level]
    columns = ["method", "class_name", "tuned_on_half", "threshold", "n_pairs", "tuning_miou"]
    return result, pd.DataFrame.from_records(chosen, columns=columns)


def mask_metrics(table: pd.DataFrame, thresholds: Sequence[float], n_resamples: int, seed: int) -> pd.DataFrame:
    """``mask_metrics.csv``: per method, metric (mIoU, hit rate), protocol and class (and :data:`ALL` pairs):
    ``value`` (the mean over the pairs), its bootstrap CI and ``n`` (pairs with a defined value)."""
    protocols = [(MIOU, f"heatmap > {t:g}", f"iou_{t:g}") for t in thresholds]
    protocols += [(MIOU, OTSU, "iou_otsu"), (MIOU, TUNED, "iou_tuned"), (HIT_RATE, "", "hit")]
    records = []
    for method, group in table.groupby("method", sort=False):
        parts = [(name, rows) for name, rows in group.groupby("class_name", sort=True)] + [(ALL, group)]
        for metric, protocol, column in protocols:
            for class_name, rows in parts:
                values = rows[column].to_numpy(np.float64)
                finite = values[np.isfinite(values)]
                low, high = bootstrap_ci(finite, n_resamples, seed)
                records.append({"method": method, "metric": metric, "protocol": protocol, "class_name": class_name,
                                "value": float(finite.mean()) if len(finite) else float("nan"),
                                "ci_low": low, "ci_high": high, "n": int(len(finite))})
    return pd.DataFrame.from_records(records)


def mask_verdicts(metrics: pd.DataFrame, headline: float) -> dict[str, dict[str, Any]]:
    """Per method: the one-line result (mIoU at the headline threshold, at Otsu's, tuned; hit rate), over
    all pairs, with the CIs."""
    verdicts = {}
    for method, rows in metrics[metrics["class_name"] == ALL].groupby("method", sort=False):
        def cell(metric: str, protocol: str) -> tuple[float, str]:
            row = rows[(rows["metric"] == metric) & (rows["protocol"] == protocol)]
            if not len(row) or not np.isfinite(row["value"].iloc[0]):
                return float("nan"), "n/a"
            r = row.iloc[0]
            ci = f" [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if np.isfinite(r["ci_low"]) else ""
            return float(r["value"]), f"{r['value']:.2f}{ci}"

        fixed, fixed_text = cell(MIOU, f"heatmap > {headline:g}")
        otsu, otsu_text = cell(MIOU, OTSU)
        tuned, tuned_text = cell(MIOU, TUNED)
        hit, hit_text = cell(HIT_RATE, "")
        text = (f"mIoU {fixed_text} at heatmap > {headline:g}, {otsu_text} at Otsu's threshold, {tuned_text} with "
                f"thresholds tuned on the other half of the patients; hit rate {hit_text}")
        verdicts[str(method)] = {"miou": fixed, "miou_otsu": otsu, "miou_tuned": tuned, "hit_rate": hit, "text": text}
    return verdicts


__all__ = ["HIT_RATE", "MIOU", "OTSU", "TUNED", "TUNING_LEVELS", "iou_by_level", "mask_iou", "mask_metrics",
           "mask_scores", "mask_verdicts", "otsu_threshold", "patient_halves", "region_mask"]

"""What the heatmap checks share: which box images, the maps at the model input's resolution, how two maps
are compared, bootstrap intervals of a mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from thoracic.errors import DataError
from thoracic.geometry import Registration
from thoracic.heatmaps.upsampling import upsample_heatmap

#: A heatmap's key: ``(image_id, class_name)``.
Pair = tuple[str, str]
#: Default confidence of every interval.
CONFIDENCE = 0.95
#: The ``class_name`` of the row over every pair of every class in the per-class tables (a mean over pairs,
#: not over classes).
ALL = "All"


def select_pairs(ground_truth: pd.DataFrame, num_images: int | None, seed: int) -> pd.DataFrame:
    """The ``(image_id, class_name)`` pairs of the box rows of up to ``num_images`` box images.

    ``ground_truth``: box rows (``image_id``, ``class_name``, ...). The images are a seeded draw
    (``numpy.random.default_rng(seed)``) when there are more than ``num_images`` (``None`` / 0: all), so
    the same run, cap and seed always give the same images. One row per pair, in image order, with the
    original size (``original_width``, ``original_height``) when the table has it.
    """
    if ground_truth.empty:
        raise DataError("no box rows: the checks need test images with boxes")
    images = np.asarray(sorted(ground_truth["image_id"].astype(str).unique()))
    if num_images is not None and num_images < 0:
        raise DataError(f"num_images must be positive (0: every box image), got {num_images}")
    if num_images and num_images < len(images):
        images = np.sort(np.random.default_rng(seed).choice(images, size=int(num_images), replace=False))
    keep = [c for c in ("image_id", "class_name", "original_width", "original_height", "patient_id")
            if c in ground_truth.columns]
    pairs = ground_truth[ground_truth["image_id"].astype(str).isin(set(images))][keep]
    pairs = pairs.drop_duplicates(["image_id", "class_name"]).sort_values(["image_id", "class_name"], kind="stable")
    return pairs.reset_index(drop=True)


def needed_classes(pairs: pd.DataFrame) -> dict[str, list[str]]:
    """``image_id -> class names`` of ``pairs`` (what :func:`thoracic.evaluation.predictions.compute_heatmaps`
    takes)."""
    return pairs.groupby("image_id", sort=True)["class_name"].apply(list).to_dict()


def image_batches(images: Mapping[str, Any], batch_size: int) -> list[dict[str, Any]]:
    """``image_id -> (3, S, S) tensor`` as loader batches (dicts with ``image`` and ``image_id``)."""
    import torch

    ids = sorted(images)
    step = max(1, int(batch_size))
    return [{"image": torch.stack([images[i] for i in ids[k:k + step]]), "image_id": ids[k:k + step]}
            for k in range(0, len(ids), step)]


def collect_images(loader: Iterable[Mapping[str, Any]], image_ids: Iterable[str]) -> dict[str, Any]:
    """The model-input images (``(3, S, S)`` tensors) of ``image_ids`` from a loader's batches."""
    wanted = set(image_ids)
    images: dict[str, Any] = {}
    for batch in loader:
        for k, image_id in enumerate(batch["image_id"]):
            if str(image_id) in wanted:
                images[str(image_id)] = batch["image"][k].clone()
        if len(images) == len(wanted):
            break
    missing = sorted(wanted - set(images))
    if missing:
        raise DataError(f"{len(missing)} box images are not in the loader, e.g. {missing[:3]}")
    return images


def maps_at_input(heatmaps: Mapping[Pair, np.ndarray], registration: Registration | None,
                  input_size: int) -> dict[Pair, np.ndarray]:
    """Every map upsampled to the model input (``input_size`` x ``input_size``, float64), its cells placed by
    ``registration`` as localization places them (``None``: ``heatmaps.upsampling.default_cell_centres``);
    maps in [0, 1] stay in [0, 1]."""
    size = (int(input_size), int(input_size))
    result = {}
    for key, heatmap in heatmaps.items():
        centres = registration(heatmap.shape, size) if registration is not None else None
        result[key] = upsample_heatmap(heatmap, size, centres)
    return result


def map_similarity(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """``(Spearman rank correlation, SSIM)`` of two maps of one shape with values in [0, 1].

    Spearman's rho (``scipy.stats.spearmanr``) of the pixel values, NaN when either map is constant (no
    ranking to compare); SSIM (``skimage.metrics.structural_similarity``, data range 1, its default
    7 x 7 window) compares local means, contrasts and structure (Adebayo et al. 2018 report both).
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise DataError(f"maps to compare must be 2-D of one shape, got {a.shape} and {b.shape}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    window = min(7, *(s if s % 2 else s - 1 for s in a.shape))
    ssim = float(structural_similarity(a, b, data_range=1.0, win_size=window)) if window >= 3 else float("nan")
    return rho, ssim


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_resamples: int, seed: int,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of the finite ``values`` (``scipy.stats.bootstrap``,
    seeded); NaN bounds without resamples or with fewer than two values."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if n_resamples <= 0 or len(data) < 2:
        return float("nan"), float("nan")
    if np.ptp(data) == 0:  # every resample has the same mean
        return float(data[0]), float(data[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bootstrap((data,), np.mean, n_resamples=int(n_resamples), confidence_level=confidence,
                           method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summarise(values: np.ndarray) -> dict[str, float]:
    """Median, quartiles, mean and count of the finite values (the spread over images)."""
    data = np.asarray(values, dtype=np.float64)
    finite = data[np.isfinite(data)]
    if not len(finite):
        return {"median": float("nan"), "q25": float("nan"), "q75": float("nan"), "mean": float("nan"),
                "n": 0, "n_undefined": int(len(data))}
    q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "mean": float(finite.mean()),
            "n": int(len(finite)), "n_undefined": int(len(data) - len(finite))}


def per_class_means(table: pd.DataFrame, columns: Sequence[str], n_resamples: int, seed: int,
                    by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Mean and bootstrap CI of each column per ``by`` group and class, plus an :data:`ALL` row over every
    pair of the group (columns ``<column>``, ``<column>_ci_low``, ``<column>_ci_high``, ``n``)."""
    records = []
    for keys, group in table.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        parts = [(name, rows) for name, rows in group.groupby("class_name", sort=True)] + [(ALL, group)]
        for class_name, rows in parts:
            record: dict[str, Any] = dict(zip(by, keys))
            record["class_name"] = class_name
            record["n"] = int(len(rows))
            for column in columns:
                values = rows[column].to_numpy(dtype=np.float64)
                finite = values[np.isfinite(values)]
                record[column] = float(finite.mean()) if len(finite) else float("nan")
                record[f"{column}_ci_low"], record[f"{column}_ci_high"] = bootstrap_ci(values, n_resamples, seed)
            records.append(record)
    return pd.DataFrame.from_records(records)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` ``size`` at a time."""
    step = max(1, int(size))
    for start in range(0, len(items), step):
        yield items[start:start + step]


__all__ = ["ALL", "CONFIDENCE", "Pair", "bootstrap_ci", "chunks", "collect_images", "image_batches", "map_similarity",
           "maps_at_input", "needed_classes", "per_class_means", "select_pairs", "summarise"]

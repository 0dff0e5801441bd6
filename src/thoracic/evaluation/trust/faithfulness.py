"""Faithfulness: does the model's decision depend on the pixels a heatmap calls salient?

* **Deletion and insertion curves** (Petsiuk et al. 2018, RISE): the probability of the class as the most
  salient pixels are removed (replaced by the baseline, 0 in normalised units: the dataset's mean grey)
  or revealed on the baseline image, at fractions ``0, 1/steps, ..., 1`` of the pixels, beside the same
  curves for a random order of the pixels. The area under the deletion curve should be small and under
  the insertion curve large; the *gains* ``random deletion area - deletion area`` and ``insertion area -
  random insertion area`` say by how much the map beats a random order (both > 0 for a faithful map).
* **ROAD** (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods"):
  removed pixels are filled by noisy linear imputation from their neighbours instead of a constant, so
  that the removal itself leaks no shape; the probability after removing the most relevant (MoRF) and the
  least relevant (LeRF) fractions :data:`ROAD_FRACTIONS`; the score is ``(LeRF - MoRF) / 2`` averaged over
  the fractions (pytorch-grad-cam's ``ROADCombined``; > 0 for a faithful map).

Library code does the perturbing and scoring: pytorch-grad-cam's ``PerturbationConfidenceMetric`` with
its ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` perturbations (a pixel is removed when its
relevance is at or above a percentile of the map), with a constant-baseline imputer for the curves and its
``NoisyLinearImputer`` (``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst``) for ROAD. Neither captum
nor pytorch-grad-cam draws deletion / insertion *curves*; what is written here is only the loop over
fractions, the random order and the areas. Maps are passed to the library as pixel *ranks* (the most
salient pixel 1, the least 0, ties broken by a seeded random order), because a percentile of a map with
ties (the zeros of a ReLU'd Grad-CAM) would remove all tied pixels at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from thoracic.constants import NOT_FAITHFUL
from thoracic.evaluation.trust.common import ALL, Pair, bootstrap_ci, chunks
from thoracic.heatmaps.base import LogitsOnly

#: Steps of the deletion and insertion curves (fractions 0, 1/steps, ..., 1 of the pixels: 0, 0.2, ..., 1).
CURVE_STEPS = 5
#: Fractions of the pixels ROAD removes (most relevant first, and least relevant first).
ROAD_FRACTIONS: tuple[float, ...] = (0.2, 0.5, 0.8)
#: Columns of the curve table (``faithfulness_curves.csv``): ``order`` is ``saliency`` or ``random``;
#: ``curve`` is ``deletion``, ``insertion``, ``road-morf`` or ``road-lerf``; ``fraction`` of the pixels
#: removed (deletion, ROAD) or revealed (insertion).
CURVE_COLUMNS = ["method", "image_id", "class_name", "order", "curve", "fraction", "probability"]
#: Per-pair scores derived from the curves (:func:`pair_scores`).
SCORE_COLUMNS = ["deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc", "deletion_gain",
                 "insertion_gain", "road"]


class _ClassProbability:
    """pytorch-grad-cam target: the sigmoid probability of one class from a row of logits."""

    def __init__(self, class_index: int) -> None:
        self.class_index = int(class_index)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits[..., self.class_index].float())


class _Baseline:
    """Imputer: removed pixels (mask 0) take the baseline value, kept pixels (mask 1) their own."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = float(value)

    def __call__(self, image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        keep = keep.to(image.dtype)
        return image * keep + self.value * (1.0 - keep)


def rank_map(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The map's pixels as ranks in [0, 1] (1: the most salient), ties in a random order from ``rng``."""
    values = np.asarray(heatmap, dtype=np.float64).ravel()
    order = np.lexsort((rng.random(values.size), -values))  # most salient first
    ranks = np.empty(values.size)
    ranks[order] = np.linspace(1.0, 0.0, values.size)
    return ranks.reshape(np.shape(heatmap)).astype(np.float32)


def random_rank_map(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random order of the pixels, as ranks in [0, 1]."""
    return rank_map(np.zeros(shape), rng)


@torch.no_grad()
def _probabilities(model: nn.Module, images: torch.Tensor, targets: Sequence[_ClassProbability]) -> np.ndarray:
    logits = model(images)
    return np.asarray([float(t(row)) for t, row in zip(targets, logits)], dtype=np.float64)


def _perturbed(metric: Any, model: nn.Module, images: torch.Tensor, cams: np.ndarray,
               targets: Sequence[_ClassProbability]) -> np.ndarray:
    # pytorch-grad-cam builds its binary mask with np.float32(<torch tensor>), which NumPy 2 deprecates
    # (__array_wrap__); the values are right, so that one warning is silenced for this call only
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*__array_wrap__.*")
        scores = metric(images, cams, list(targets), model, return_diff=False)
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def faithfulness_curves(model: nn.Module, method: str, images: dict[str, torch.Tensor],
                        maps: dict[Pair, np.ndarray], class_index: dict[str, int], steps: int = CURVE_STEPS,
                        road_fractions: Sequence[float] = ROAD_FRACTIONS, seed: int = 0, batch_size: int = 16,
                        device: str | torch.device = "cpu") -> pd.DataFrame:
    """The deletion, insertion (saliency and random order) and ROAD curves of every pair (:data:`CURVE_COLUMNS`).

    ``images``: ``image_id -> (3, S, S)`` model inputs; ``maps``: ``(image_id, class_name) -> (S, S)`` maps
    at the input's resolution; ``class_index``: class name -> logit index. Seeded: the rank ties, the random
    order and ROAD's imputation noise come from ``seed``.
    """
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    classifier = LogitsOnly(model).to(device).eval()
    fractions = np.linspace(0.0, 1.0, int(steps) + 1)
    baseline = _Baseline(0.0)
    rng = np.random.default_rng(seed)
    keys = list(maps)
    records: list[tuple[Any, ...]] = []
    for batch_keys in chunks(keys, batch_size):
        batch = torch.stack([images[i] for i, _ in batch_keys]).to(device)
        targets = [_ClassProbability(class_index[c]) for _, c in batch_keys]
        orders = {"saliency": np.stack([rank_map(maps[k], rng) for k in batch_keys]),
                  "random": np.stack([random_rank_map(maps[k].shape, rng) for k in batch_keys])}
        clean = _probabilities(classifier, batch, targets)
        empty = _probabilities(classifier, torch.zeros_like(batch), targets)
        for order, cams in orders.items():
            for fraction in fractions:
                if fraction == 0.0:
                    deleted, inserted = clean, empty
                elif fraction == 1.0:
                    deleted, inserted = empty, clean
                else:  # RemoveMostRelevantFirst(p) keeps the pixels below the p-th percentile of relevance
                    percentile = 100.0 * (1.0 - fraction)
                    deleted = _perturbed(PerturbationConfidenceMetric(RemoveMostRelevantFirst(percentile, baseline)),
                                         classifier, batch, cams, targets)
                    inserted = _perturbed(PerturbationConfidenceMetric(
                        RemoveLeastRelevantFirst(100.0 * fraction, baseline)), classifier, batch, cams, targets)
                for curve, values in (("deletion", deleted), ("insertion", inserted)):
                    records.extend((method, i, c, order, curve, float(fraction), float(v))
                                   for (i, c), v in zip(batch_keys, values))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for fraction in road_fractions:
                percentile = 100.0 * (1.0 - float(fraction))
                morf = _perturbed(ROADMostRelevantFirst(percentile), classifier, batch, orders["saliency"], targets)
                # LeRF(p) keeps the pixels of relevance rank in the top p percent: it removes the rest
                lerf = _perturbed(ROADLeastRelevantFirst(percentile), classifier, batch, orders["saliency"], targets)
                for curve, values in (("road-morf", morf), ("road-lerf", lerf)):
                    records.extend((method, i, c, "saliency", curve, float(fraction), float(v))
                                   for (i, c), v in zip(batch_keys, values))
    return pd.DataFrame.from_records(records, columns=CURVE_COLUMNS)


def _area(rows: pd.DataFrame) -> float:
    ordered = rows.sort_values("fraction")
    return float(np.trapezoid(ordered["probability"].to_numpy(np.float64), ordered["fraction"].to_numpy(np.float64)))


def pair_scores(curves: pd.DataFrame) -> pd.DataFrame:
    """Per method and pair: the areas under the curves (trapezoid rule over the fractions), the gains over the
    random order and the ROAD score (:data:`SCORE_COLUMNS`)."""
    records = []
    for (method, image_id, class_name), rows in curves.groupby(["method", "image_id", "class_name"], sort=False):
        def area(order: str, curve: str) -> float:
            part = rows[(rows["order"] == order) & (rows["curve"] == curve)]
            return _area(part) if len(part) > 1 else float("nan")

        deletion, insertion = area("saliency", "deletion"), area("saliency", "insertion")
        random_deletion, random_insertion = area("random", "deletion"), area("random", "insertion")
        morf = rows[rows["curve"] == "road-morf"].sort_values("fraction")["probability"].to_numpy(np.float64)
        lerf = rows[rows["curve"] == "road-lerf"].sort_values("fraction")["probability"].to_numpy(np.float64)
        road = float(np.mean((lerf - morf) / 2.0)) if len(morf) and len(morf) == len(lerf) else float("nan")
        records.append({"method": method, "image_id": image_id, "class_name": class_name,
                        "deletion_auc": deletion, "insertion_auc": insertion,
                        "random_deletion_auc": random_deletion, "random_insertion_auc": random_insertion,
                        "deletion_gain": random_deletion - deletion, "insertion_gain": insertion - random_insertion,
                        "road": road})
    return pd.DataFrame.from_records(records)


#: The verdict of :func:`faithfulness_verdicts` when both mean gains are above 0 but neither CI excludes 0
#: (the draw was too small to tell); :data:`~thoracic.constants.NOT_FAITHFUL` flags a method.
INCONCLUSIVE = "inconclusive"


def faithfulness_verdicts(summary: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per method, from the :data:`~thoracic.evaluation.trust.common.ALL` rows of the summary: ``faithful``
    when both gains over the random order are above 0 with their whole 95% CI (the mean without resamples),
    ``partly`` when one is, ``inconclusive`` when neither CI excludes 0 but both mean gains are above 0 (too
    few pairs to tell), ``not better than a random order`` otherwise; with a one-line text."""
    verdicts = {}
    for method, rows in summary[summary["class_name"] == ALL].groupby("method", sort=False):
        row = rows.iloc[0]

        def above(name: str) -> bool:
            low = row[f"{name}_ci_low"]
            return bool((low if np.isfinite(low) else row[name]) > 0)

        wins = [above("deletion_gain"), above("insertion_gain")]
        verdict = ("faithful" if all(wins) else "partly" if any(wins) else
                   INCONCLUSIVE if row["deletion_gain"] > 0 and row["insertion_gain"] > 0 else NOT_FAITHFUL)
        text = (f"{verdict}: deletion area {row['deletion_auc']:.3f} vs {row['random_deletion_auc']:.3f} for a random "
                f"order, insertion area {row['insertion_auc']:.3f} vs {row['random_insertion_auc']:.3f}; ROAD "
                f"{row['road']:+.3f} (n = {int(row['n'])} images)")
        verdicts[str(method)] = {"verdict": verdict, "deletion_gain": float(row["deletion_gain"]),
                                 "insertion_gain": float(row["insertion_gain"]), "road": float(row["road"]),
                                 "text": text}
    return verdicts


__all__ = ["CURVE_COLUMNS", "CURVE_STEPS", "INCONCLUSIVE", "NOT_FAITHFUL", "ROAD_FRACTIONS", "SCORE_COLUMNS", "faithfulness_curves",
           "faithfulness_verdicts", "pair_scores", "random_rank_map", "rank_map"]

"""Repeatability across training seeds (Arun et al. 2021, Radiology: AI: "repeatability" of saliency maps).

The runs of one experiment differ only by their seed. Per method and pair (image, class) common to every
run: the mean over all pairs of runs of the Spearman correlation and SSIM of their maps (at the model
input's resolution, :func:`~thoracic.evaluation.trust.common.map_similarity`), the share of runs whose
map hits the region (the hit rate's pointing), and the spread (standard deviation) of the pair's IoU at the
headline heatmap threshold. Per method: the median and quartiles of those over the pairs, and each run's
hit rate and mIoU with their spread over the runs.

Criterion (:func:`repeatability_verdicts`): a method is **flagged** as not repeatable when the median over
the images of the across-seed Spearman correlation is below :data:`REPEATABILITY_FLAG` (0.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from thoracic.evaluation.trust.common import Pair, map_similarity, summarise

#: Below this median across-seed Spearman correlation a method is flagged as not repeatable.
REPEATABILITY_FLAG = 0.5


def repeatability_pairs(method: str, maps: Mapping[str, Mapping[Pair, np.ndarray]],
                        masks: Mapping[str, pd.DataFrame], iou_column: str) -> pd.DataFrame:
    """Per pair common to every run: the across-seed similarity and the spread of its localization.

    ``maps``: run name -> the run's maps of ``method`` at the model input's resolution; ``masks``: run name
    -> the run's per-pair mask table (``image_id, class_name, hit`` and ``iou_column``).
    """
    runs = sorted(maps)
    if len(runs) < 2:
        raise ValueError(f"repeatability needs at least two runs, got {runs}")
    common = sorted(set.intersection(*(set(maps[r]) for r in runs)))
    indexed = {r: masks[r].set_index(["image_id", "class_name"]) for r in runs}
    records = []
    for key in common:
        similarities = [map_similarity(maps[a][key], maps[b][key]) for a, b in combinations(runs, 2)]
        rho = np.asarray([s[0] for s in similarities], dtype=np.float64)
        ssim = np.asarray([s[1] for s in similarities], dtype=np.float64)
        hits = np.asarray([indexed[r].at[key, "hit"] if key in indexed[r].index else np.nan for r in runs], float)
        ious = np.asarray([indexed[r].at[key, iou_column] if key in indexed[r].index else np.nan for r in runs], float)
        records.append({
            "method": method, "image_id": key[0], "class_name": key[1], "n_runs": len(runs),
            "spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan"),
            "ssim": float(np.nanmean(ssim)) if np.isfinite(ssim).any() else float("nan"),
            "hit_share": float(np.nanmean(hits)) if np.isfinite(hits).any() else float("nan"),
            "iou_sd": float(np.nanstd(ious, ddof=1)) if np.isfinite(ious).sum() > 1 else float("nan"),
        })
    return pd.DataFrame.from_records(records)


def repeatability_summary(pairs: pd.DataFrame, masks: Mapping[str, pd.DataFrame], iou_column: str,
                          methods: Sequence[str]) -> pd.DataFrame:
    """Per method: the spread over the images of the across-seed similarity, and per-run hit rate and mIoU
    (over the pairs common to the runs) with their mean and standard deviation over the runs."""
    records = []
    for method in methods:
        rows = pairs[pairs["method"] == method]
        keys = set(zip(rows["image_id"], rows["class_name"]))
        record: dict[str, Any] = {"method": method, "n_pairs": int(len(rows))}
        for column in ("spearman", "ssim"):
            stats = summarise(rows[column].to_numpy(np.float64))
            record.update({f"{column}_{k}": stats[k] for k in ("median", "q25", "q75")})
        hit_rates, mious = [], []
        for run in sorted(masks):
            table = masks[run]
            common = np.asarray([k in keys for k in zip(table["image_id"], table["class_name"])], dtype=bool)
            table = table[(table["method"] == method).to_numpy() & common]
            hit_rates.append(float(table["hit"].mean()) if len(table) else float("nan"))
            mious.append(float(table[iou_column].mean()) if len(table) else float("nan"))
            record[f"hit_rate[{run}]"], record[f"miou[{run}]"] = hit_rates[-1], mious[-1]
        for name, values in (("hit_rate", hit_rates), ("miou", mious)):
            array = np.asarray(values, dtype=np.float64)
            record[f"{name}_mean"] = float(np.nanmean(array)) if np.isfinite(array).any() else float("nan")
            record[f"{name}_sd"] = float(np.nanstd(array, ddof=1)) if np.isfinite(array).sum() > 1 else float("nan")
        records.append(record)
    return pd.DataFrame.from_records(records)


def repeatability_verdicts(summary: pd.DataFrame, threshold: float = REPEATABILITY_FLAG) -> dict[str, dict[str, Any]]:
    """Per method: flagged when the median across-seed Spearman correlation is below ``threshold``."""
    verdicts = {}
    for row in summary.itertuples(index=False):
        rho = float(row.spearman_median)
        flagged = bool(not np.isfinite(rho) or rho < threshold)
        text = (f"{'FLAGGED' if flagged else 'repeatable'}: median across-seed Spearman correlation {rho:.2f} "
                f"(SSIM {row.ssim_median:.2f}) over {row.n_pairs} images; hit rate {row.hit_rate_mean:.2f} ± "
                f"{row.hit_rate_sd:.2f}, mIoU {row.miou_mean:.2f} ± {row.miou_sd:.2f} over the seeds "
                f"(flagged below {threshold:g})")
        verdicts[str(row.method)] = {"flagged": flagged, "spearman_median": rho, "ssim_median": float(row.ssim_median),
                                     "hit_rate_sd": float(row.hit_rate_sd), "miou_sd": float(row.miou_sd),
                                     "threshold": threshold, "text": text}
    return verdicts


__all__ = ["REPEATABILITY_FLAG", "repeatability_pairs", "repeatability_summary", "repeatability_verdicts"]

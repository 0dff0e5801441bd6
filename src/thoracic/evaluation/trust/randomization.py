"""The cascading model randomization test (Adebayo et al. 2018, "Sanity checks for saliency maps").

A heatmap that explains the model must change when the model's learned weights are destroyed. The test
re-initialises the network stage by stage from the top down (:data:`RANDOMIZATION_STAGES`: the classifier
head, then the backbone's ``layer4``, ``layer3``, ``layer2``, ``layer1`` and stem, each stage staying random
once it is: *cascading*), recomputes each method's maps on the same images after every stage and compares
them with the trained model's maps by Spearman rank correlation and SSIM (:func:`~thoracic.evaluation.trust.
common.map_similarity`), at the model input's resolution.

Criterion (:func:`randomization_verdicts`): a method is **flagged** when, with every stage randomized, the
median Spearman correlation over the images is still at least :data:`SIMILARITY_FLAG` (0.5): its maps
then look more like the image than like the model's decision (Adebayo et al. found guided backpropagation
and guided Grad-CAM so; an edge detector of the input is the extreme case, correlation 1 at every depth).
A map that becomes constant after randomization has no ranking left: its Spearman correlation is
undefined (NaN in the per-image table) and counts as 0 in the median of the verdict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from thoracic.evaluation.trust.common import Pair, map_similarity, summarise

#: Stages re-initialised in turn, from the output down (``classifier``: every module of the model outside
#: its backbone: the head, attention, gates).
RANDOMIZATION_STAGES: tuple[str, ...] = ("classifier", "layer4", "layer3", "layer2", "layer1", "stem")
#: A method whose median Spearman correlation with every stage randomized is at least this is flagged.
SIMILARITY_FLAG = 0.5
#: Columns of the per-image table (``randomization.csv``).
RANDOMIZATION_COLUMNS = ["method", "depth", "stage", "image_id", "class_name", "spearman", "ssim"]


def stage_modules(model: nn.Module, stage: str) -> list[nn.Module]:
    """The modules of ``stage``: ``classifier`` = every child of the model but its ``backbone``; a backbone
    stage by name (``layer4`` ... ``stem``)."""
    if stage == "classifier":
        return [child for name, child in model.named_children() if name != "backbone"]
    if stage not in RANDOMIZATION_STAGES:
        raise ValueError(f"randomization stage must be one of {list(RANDOMIZATION_STAGES)}, got {stage!r}")
    return [getattr(model.backbone, stage)]


def reinitialise(modules: Sequence[nn.Module], seed: int) -> int:
    """Re-initialise every parameter of ``modules`` as at construction (each submodule's
    ``reset_parameters``: Kaiming-uniform convolutions and linear layers, BatchNorm back to weight 1, bias 0
    and fresh running statistics), drawn from ``seed``; returns how many tensors were re-initialised.
    Parameters of a module without ``reset_parameters`` get a normal draw of their own standard deviation."""
    count = 0
    generator_devices = sorted({p.device.index for m in modules for p in m.parameters()
                                if p.device.type == "cuda" and p.device.index is not None})
    with torch.random.fork_rng(devices=generator_devices), torch.no_grad():
        torch.manual_seed(seed)
        for module in modules:
            for sub in module.modules():
                own = list(sub.parameters(recurse=False))
                if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                    sub.reset_parameters()
                    count += len(own)
                else:
                    for parameter in own:
                        spread = float(parameter.std()) if parameter.numel() > 1 else 1.0
                        parameter.normal_(0.0, spread if np.isfinite(spread) and spread > 0 else 1.0)
                        count += 1
    return count


def cascading_randomization(model: nn.Module, stages: Sequence[str] = RANDOMIZATION_STAGES, seed: int = 0
                            ) -> Iterator[tuple[int, str, nn.Module]]:
    """``(depth, stage, model)`` after randomizing each stage in turn, from ``stages[0]`` down; one copy of
    ``model`` (left untouched) is randomized further at every step (depth 1 = the first stage random)."""
    randomized = copy.deepcopy(model).eval()
    for depth, stage in enumerate(stages, start=1):
        reinitialise(stage_modules(randomized, stage), seed + depth)
        yield depth, stage, randomized


def compare_maps(method: str, depth: int, stage: str, trained: Mapping[Pair, np.ndarray],
                 randomized: Mapping[Pair, np.ndarray]) -> pd.DataFrame:
    """Spearman and SSIM of every pair's trained and randomized maps (:data:`RANDOMIZATION_COLUMNS`)."""
    records = []
    for (image_id, class_name), heatmap in trained.items():
        rho, ssim = map_similarity(heatmap, randomized[(image_id, class_name)])
        records.append((method, depth, stage, image_id, class_name, rho, ssim))
    return pd.DataFrame.from_records(records, columns=RANDOMIZATION_COLUMNS)


def randomization_test(model: nn.Module, method: str, trained: Mapping[Pair, np.ndarray],
                       maps_of: Callable[[nn.Module], Mapping[Pair, np.ndarray]],
                       stages: Sequence[str] = RANDOMIZATION_STAGES, seed: int = 0,
                       on_stage: Callable[[int, str], Any] | None = None) -> pd.DataFrame:
    """The per-image table of the cascading test of one method.

    ``trained``: the trained model's maps at the model input's resolution; ``maps_of(model)``: the same
    pairs' maps of another model, also at that resolution (the caller computes them as it computed
    ``trained``). ``on_stage(depth, stage)`` is called after each stage (progress).
    """
    frames = []
    for depth, stage, randomized in cascading_randomization(model, stages, seed):
        frames.append(compare_maps(method, depth, stage, trained, maps_of(randomized)))
        if on_stage is not None:
            on_stage(depth, stage)
    return pd.concat(frames, ignore_index=True)


def randomization_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and depth: median and quartiles of Spearman and SSIM over the images, and how many
    Spearman values are undefined (constant maps; counted as 0 in ``spearman_median_verdict``)."""
    records = []
    for (method, depth, stage), rows in table.groupby(["method", "depth", "stage"], sort=False):
        record: dict[str, Any] = {"method": method, "depth": int(depth), "stage": stage}
        for column in ("spearman", "ssim"):
            stats = summarise(rows[column].to_numpy(dtype=np.float64))
            record.update({f"{column}_{k}": stats[k] for k in ("median", "q25", "q75")})
            if column == "spearman":
                record["n_images"] = int(len(rows))
                record["spearman_undefined"] = stats["n_undefined"]
        record["spearman_median_verdict"] = float(np.median(np.nan_to_num(rows["spearman"].to_numpy(np.float64))))
        records.append(record)
    return pd.DataFrame.from_records(records)


def randomization_verdicts(summary: pd.DataFrame, threshold: float = SIMILARITY_FLAG) -> dict[str, dict[str, Any]]:
    """Per method: the deepest randomization's medians and whether the method is flagged (criterion in the
    module docstring), with a one-line text."""
    verdicts = {}
    for method, rows in summary.groupby("method", sort=False):
        last = rows.sort_values("depth").iloc[-1]
        rho, ssim = float(last["spearman_median_verdict"]), float(last["ssim_median"])
        flagged = bool(rho >= threshold)
        text = (f"{'FLAGGED' if flagged else 'passes'}: with every stage down to the {last['stage']} randomized, the "
                f"median Spearman correlation with the trained maps is {rho:.2f} (SSIM {ssim:.2f}; flagged at "
                f">= {threshold:g})")
        verdicts[str(method)] = {"flagged": flagged, "spearman_median": rho, "ssim_median": ssim,
                                 "deepest_stage": str(last["stage"]), "threshold": threshold, "text": text}
    return verdicts


__all__ = ["RANDOMIZATION_COLUMNS", "RANDOMIZATION_STAGES", "SIMILARITY_FLAG", "cascading_randomization",
           "compare_maps", "randomization_summary", "randomization_test", "randomization_verdicts", "reinitialise",
           "stage_modules"]

"""``thoracic localize``: weakly supervised localization of a run (the command only parses arguments).

``localize_run`` computes the heatmaps of every box row of the test images and writes, into
``<run>/evaluation/``, what :mod:`thoracic.evaluation.protocol` makes of them (the file list is there) and
``overlays_<method>.png`` (heatmap overlays with boxes, paper Figs. 6-8).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from thoracic.constants import METHOD_LABELS, MODEL_LABELS
from thoracic.data.datasets import box_class_names
from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError
from thoracic.evaluation.figures import box_legend_handles, overlay_figure, save_figure
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS
from thoracic.evaluation.overlays import data_module_images, overlay_rows
from thoracic.evaluation.predictions import compute_heatmaps, save_heatmaps
from thoracic.evaluation.protocol import (
    RANDOM_DRAWS,
    ground_truth_boxes,
    localize_boxes,
    registration_table,
    write_localization,
)
from thoracic.geometry import REGISTRATIONS, make_registration
from thoracic.heatmaps import create_heatmap_method, list_heatmap_methods
from thoracic.workflows.common import OpenedRun, evaluation_outputs, open_run
from thoracic.io import write_csv_atomic


@dataclass(frozen=True)
class LocalizationRunResult:
    accuracy: pd.DataFrame
    scores: pd.DataFrame
    boxes: pd.DataFrame
    files: dict[str, Path]
    registrations: pd.DataFrame | None = None
    """:func:`registration_table` of the run's heatmaps (the registration used first)."""


@renamed_keywords(thresholds="heatmap_thresholds", data_root="data", which="checkpoint", n_examples="num_examples")
def localize_run(
    run: str | Path,
    method: str = "native",
    heatmap_thresholds: Sequence[float] = HEATMAP_THRESHOLDS,
    largest_only: bool = False,
    batch_size: int | None = None,
    device: str = "auto",
    data: str | Path | None = None,
    cache: str | Path | None = None,
    num_workers: int | None = None,
    checkpoint: str = "best",
    seed: int = 0,
    num_examples: int = 8,
    progress: bool = True,
    draws: int = RANDOM_DRAWS,
    registration: str = "geometric",
    *,
    trust_checkpoint: bool = False,
) -> LocalizationRunResult:
    """Weakly supervised localization of every box row of the test images (Wang et al. 2017 protocol):
    ``thoracic localize``, with its option names as keywords (``heatmap_thresholds`` on the 0-255 scale,
    ``checkpoint`` ``best`` / ``last`` / a ``.ckpt`` path, ``num_examples`` images in the overlay figure).

    ``registration``: where heatmap cells sit in the image, ``geometric`` (their receptive-field centres,
    derived from the network) or ``legacy`` (``align_corners=False``); the other one is also scored on
    the same heatmaps (``registration_<method>.csv``). ``trust_checkpoint`` opens the checkpoint with full
    pickle. The run folder is locked while its files are written, and every file is recorded in
    ``evaluation/thoracic_outputs.json`` with the checkpoint it came from (the heatmaps file also holds its
    SHA-256).
    """
    if method not in list_heatmap_methods():
        raise DataError(f"method must be one of {list_heatmap_methods()}, got {method!r}")
    if registration not in REGISTRATIONS:
        raise DataError(f"registration must be one of {list(REGISTRATIONS)}, got {registration!r}")
    opened = open_run(run, checkpoint, device, batch_size, data, cache, num_workers,
                      trust_checkpoint=trust_checkpoint)
    with evaluation_outputs(opened, "localize"):
        return _localize_opened(opened, method, heatmap_thresholds, largest_only, seed, num_examples, progress,
                                draws, registration)


def _localize_opened(opened: OpenedRun, method: str, heatmap_thresholds: Sequence[float], largest_only: bool,
                     seed: int, num_examples: int, progress: bool, draws: int, registration: str
                     ) -> LocalizationRunResult:
    """The body of :func:`localize_run`, under the run folder's lock and the evaluation folder's manifest."""
    loaded, module, out, device = opened.loaded, opened.data, opened.out, opened.device
    ground_truth = ground_truth_boxes(module.box_table)
    if ground_truth.empty:
        raise DataError(f"{module.root}: no test image carries a box (BBox_List_2017.csv rows)")
    box_classes = box_class_names(module.dataset, loaded.class_names)  # the run's labels that carry boxes
    needed = ground_truth.groupby("image_id")["class_name"].apply(list).to_dict()
    heatmaps = compute_heatmaps(loaded.model, module.box_dataloader(), needed, method=method, device=device,
                                progress=progress, class_names=loaded.class_names)
    grid = create_heatmap_method(method, loaded.model).grid(loaded.spec.image_size)
    registered = make_registration(registration, grid)
    files = {"heatmaps": save_heatmaps(heatmaps, out / f"heatmaps_{method}.npz", loaded.info["sha256"])}
    tables = localize_boxes(ground_truth, heatmaps, method, heatmap_thresholds, largest_only, seed,
                            progress=progress, draws=draws, registration=registered, class_names=box_classes)
    sensitivity = registration_table(ground_truth, heatmaps, [registered, registered.other()],
                                     heatmap_thresholds, largest_only, class_names=box_classes)
    write_csv_atomic(out / f"registration_{method}.csv", sensitivity, index=False, float_format="%.6f")
    info = {
        "method": method, "model": loaded.config.model.name, "seed": loaded.config.seed,
        "checkpoint": loaded.info, "heatmap_thresholds": [float(t) for t in heatmap_thresholds],
        "largest_only": bool(largest_only), "baseline_seed": seed, "random_box_draws": int(draws),
        "n_box_rows": int(len(ground_truth)), "n_images": int(ground_truth["image_id"].nunique()),
        "registration": registered.describe(),
        "registrations": json.loads(sensitivity.to_json(orient="records")),
    }
    files.update(write_localization(out, method, tables, info))
    files["registration"] = out / f"registration_{method}.csv"
    boxes, scores, accuracy = tables.boxes, tables.scores, tables.accuracy
    name = loaded.config.model.name
    label = f"{MODEL_LABELS.get(name, name)}, {METHOD_LABELS.get(method, method)}"
    rows = overlay_rows(ground_truth, {label: (heatmaps, boxes)}, num_examples, data_module_images(module),
                        registrations={label: registered}, class_names=box_classes)
    if rows:
        top = int(max(heatmap_thresholds))
        figure = overlay_figure(rows, legend=box_legend_handles(solid_label=f"predicted box (heatmap > {top})"),
                                title=f"{label}: test images with boxes")
        files["overlays"] = save_figure(figure, out / f"overlays_{method}.png")
    return LocalizationRunResult(accuracy, scores, boxes, files, sensitivity)


__all__ = ["LocalizationRunResult", "localize_run"]

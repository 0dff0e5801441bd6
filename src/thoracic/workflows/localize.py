"""``thoracic localize``: weakly supervised localization of a run (the command only parses arguments).

``localize_run`` computes the heatmaps of every box row of the test images and writes, into
``<run>/evaluation/``, what :mod:`thoracic.evaluation.protocol` makes of them (the file list is there) and
``overlays_<method>.png`` (heatmap overlays with boxes, paper Figs. 6-8).

Every box set is scored with the same protocol: ChestX-ray14's box rows as they always were, and the boxes
of VinDr-CXR and RSNA Pneumonia (the run's own, or another dataset's with ``dataset``: then in the test
set's sub-folder of ``evaluation/``, :mod:`thoracic.workflows.common`) for the box classes the run has
(matched by harmonised name). Where several readers boxed an image, the ground truth follows a policy
(``ground_truth``: :mod:`thoracic.evaluation.readers`), written with the rows as
``ground_truth_<method>.csv``, and the human row (each reader against the others) goes to
``human_<method>.csv`` and ``human_scores_<method>.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from torch.utils.data import DataLoader

from thoracic.config import ConfigError
from thoracic.constants import BOX_SPLITS, METHOD_LABELS, MODEL_LABELS
from thoracic.data.dataset import box_table
from thoracic.data.datasets import box_class_names
from thoracic.data.harmonisation import label_mapping
from thoracic.deprecation import renamed_keywords
from thoracic.errors import DataError
from thoracic.evaluation.figures import box_legend_handles, overlay_figure, save_figure
from thoracic.evaluation.overlays import data_module_images, overlay_rows
from thoracic.evaluation.predictions import compute_heatmaps, save_heatmaps
from thoracic.evaluation.protocol import (
    RANDOM_DRAWS,
    ground_truth_boxes,
    localize_boxes,
    registration_table,
    write_localization,
)
from thoracic.evaluation.readers import (
    HumanAgreement,
    READER_MATCH_IOU,
    check_policy,
    ground_truth_rows,
    human_agreement,
    image_readers,
)
from thoracic.geometry import REGISTRATIONS, make_registration
from thoracic.heatmaps import create_heatmap_method, list_heatmap_methods
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS
from thoracic.io import write_csv_atomic
from thoracic.workflows.common import (
    OpenedRun,
    evaluation_outputs,
    flag_shared_images,
    open_run,
    run_dataset_kind,
    write_test_set,
)

#: What each ground-truth policy means, as the localization files record it.
POLICY_DEFINITIONS: dict[str, str] = {
    "each": "every reader's box is a ground-truth row of its own",
    "any": f"one row per finding at least one reader boxed: boxes of one image and class by different readers "
           f"with IoU > {READER_MATCH_IOU} are one finding, its box the mean of their corners",
    "consensus": f"the findings (boxes matched at IoU > {READER_MATCH_IOU}, corners averaged) that more than half "
                 "of the image's readers boxed; a dataset's own consensus boxes as they are",
}


@dataclass(frozen=True)
class LocalizationRunResult:
    accuracy: pd.DataFrame
    scores: pd.DataFrame
    boxes: pd.DataFrame
    files: dict[str, Path]
    registrations: pd.DataFrame | None = None
    """:func:`registration_table` of the run's heatmaps (the registration used first)."""
    box_classes: tuple[str, ...] = ()
    """The box classes of the tables: the run's labels that carry boxes (ChestX-ray14's 8 for a ChestX-ray14
    run of every label; another box set's classes the run has)."""
    human: HumanAgreement | None = None
    """Each reader against the other readers (a box set with reader ids; None for ChestX-ray14's)."""
    box_set: dict[str, Any] = field(default_factory=dict)
    """What was scored beyond ChestX-ray14's boxes: the dataset, split, ground-truth policy (empty for them)."""
    warnings: list[str] = field(default_factory=list)
    """Test images the run was trained on (a mapping of shared images), datasets known to share images."""


@dataclass(frozen=True)
class _BoxSet:
    """The ground truth of one localization: its rows, classes, images and (several readers) the human row."""

    ground_truth: pd.DataFrame
    class_names: tuple[str, ...]
    loader: DataLoader
    image_ids: tuple[str, ...]
    record: dict[str, Any] = field(default_factory=dict)
    reader_boxes: pd.DataFrame | None = None
    readers: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _chestxray14_box_set(opened: OpenedRun) -> _BoxSet:
    """ChestX-ray14's box rows of the test images, exactly as localize has always scored them, for the run's
    labels that carry boxes (its 8 box classes, or those among ``data.classes``)."""
    module = opened.data
    truth = ground_truth_boxes(module.box_table)
    if truth.empty:
        raise DataError(f"{module.root}: no test image carries a box (BBox_List_2017.csv rows)")
    classes = box_class_names(module.dataset, opened.loaded.class_names)
    return _BoxSet(truth, classes, module.box_dataloader(), module.box_image_ids)


def _policy_box_set(opened: OpenedRun, policy: str, split: str) -> _BoxSet:
    """The boxes of any dataset (several readers or one), of the classes the run has, under ``policy``."""
    loaded, module = opened.loaded, opened.data
    dataset = module.dataset
    mapping = (opened.test_set.labels if opened.test_set is not None else
               label_mapping(run_dataset_kind(loaded), loaded.class_names, dataset.kind, dataset.class_names))
    boxed = set(dataset.boxes["class_name"])
    if not boxed:
        raise DataError(f"{module.root}: this {dataset.kind} folder holds no boxes (docs/data.md: ChestX-ray14, VinDr-CXR "
                        "and RSNA Pneumonia distribute boxes): nothing to localize")
    classes = tuple(n for n in mapping.run_labels if mapping.test_label(n) in boxed)
    if not classes:
        raise DataError(f"{module.root}: none of the {dataset.kind} box classes ({', '.join(sorted(boxed)) or 'none'}) "
                        f"is a label of the run ({', '.join(loaded.class_names)}); nothing to localize")
    ids = module.box_images(split)
    rows = dataset.boxes[dataset.boxes["image_id"].isin(list(ids))].reset_index(drop=True)
    table = box_table(dataset, module.cache, ids)  # the same rows, with the decoded image sizes
    if "source" in rows.columns and "csv_line" in rows.columns:
        source = [f"{Path(str(s)).name}:{int(line)}" for s, line in zip(rows["source"], rows["csv_line"])]
    else:
        source = [str(r) for r in table["box_row"]]
    boxes = pd.DataFrame({
        "image_id": table["image_id"].astype(str),
        "class_name": table["class_name"].map(mapping.run_label),
        "dataset_class": table["class_name"],
        "x": table["x_original"], "y": table["y_original"], "w": table["w_original"], "h": table["h_original"],
        "original_width": table["original_width"], "original_height": table["original_height"],
        "reader_id": table["reader_id"].fillna("").astype(str),
        "source_row": source,
    })
    boxes = boxes[boxes["class_name"].notna()].reset_index(drop=True)
    readers = image_readers(boxes, dataset.table)
    truth = ground_truth_rows(boxes, policy, readers)
    if truth.empty:
        where = "test images" if split == "test" else "images"
        raise DataError(f"{module.root}: no {where} carry a box of the run's classes ({', '.join(classes)}) under the "
                        f"ground-truth policy {policy!r}" + ("; --split all scores every image of another dataset"
                                                             if split == "test" and opened.test_set is not None else ""))
    named = sorted({r for names in readers.values() for r in names if r})
    record = {"dataset": dataset.kind, "root": str(module.root), "split": split,
              "ground_truth": {"policy": policy, "definition": POLICY_DEFINITIONS[policy],
                               "match_iou": READER_MATCH_IOU, "n_rows": int(len(truth)),
                               "n_reader_boxes": int(len(boxes)), "readers": named},
              "box_classes": list(classes),
              "label_mapping": [r for r in mapping.to_records() if r["run_label"] in classes]}
    return _BoxSet(truth, classes, module.box_dataloader(split), tuple(truth["image_id"].unique()), record,
                   boxes, readers)


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
    dataset: str | None = None,
    ground_truth: str = "each",
    split: str = "test",
    shared_images: str | Path | None = None,
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

    ``dataset`` (with ``data`` its folder, ``cache`` its image cache): the boxes of another dataset (VinDr-CXR,
    RSNA Pneumonia, ChestX-ray14 for a run trained elsewhere), for the box classes the run has, into the
    test set's sub-folder of ``evaluation/``; ``split``: ``test`` (its test images) or ``all`` (every image
    with boxes, e.g. VinDr-CXR's training images read by three radiologists each; another dataset only);
    ``shared_images``: a mapping of the two datasets' image ids (the box images the run was trained on are
    listed). ``ground_truth`` (``each``, ``any``, ``consensus``: :mod:`thoracic.evaluation.readers`): what
    several readers' boxes become; with reader ids, the human row scores each reader against the others.
    ChestX-ray14's own box rows (one reader) are scored and written exactly as before.

    Raises:
        DataError / ConfigError: an unknown method, registration, policy or split; ``split="all"`` on the
            run's own dataset (its training images); no box of the run's classes.
    """
    if method not in list_heatmap_methods():
        raise DataError(f"method must be one of {list_heatmap_methods()}, got {method!r}")
    if registration not in REGISTRATIONS:
        raise DataError(f"registration must be one of {list(REGISTRATIONS)}, got {registration!r}")
    check_policy(ground_truth)
    if split not in BOX_SPLITS:
        raise ConfigError(f"--split: expected one of {', '.join(BOX_SPLITS)} (the box rows of the test images, or of "
                          f"every image of another dataset), got {split!r}")
    opened = open_run(run, checkpoint, device, batch_size, data, cache, num_workers,
                      trust_checkpoint=trust_checkpoint, dataset=dataset, shared_images=shared_images)
    if split == "all" and opened.test_set is None:
        raise ConfigError("--split all: every image with boxes includes the images the run was trained on; it is for "
                          "another dataset than the run's (--data FOLDER --dataset KIND)")
    with evaluation_outputs(opened, "localize"):
        return _localize_opened(opened, method, heatmap_thresholds, largest_only, seed, num_examples, progress,
                                draws, registration, ground_truth, split)


def _localize_opened(opened: OpenedRun, method: str, heatmap_thresholds: Sequence[float], largest_only: bool,
                     seed: int, num_examples: int, progress: bool, draws: int, registration: str,
                     ground_truth: str = "each", split: str = "test") -> LocalizationRunResult:
    """The body of :func:`localize_run`, under the run folder's lock and the evaluation folder's manifest."""
    loaded, module, out, device = opened.loaded, opened.data, opened.out, opened.device
    legacy = opened.test_set is None and module.dataset.kind == "chestxray14"
    box_set = _chestxray14_box_set(opened) if legacy else _policy_box_set(opened, ground_truth, split)
    truth, class_names = box_set.ground_truth, box_set.class_names
    files = write_test_set(opened)
    shared, warnings = flag_shared_images(opened, list(box_set.image_ids))
    if shared is not None:
        files["shared_images"] = out / shared["file"]
    needed = truth.groupby("image_id")["class_name"].apply(list).to_dict()
    heatmaps = compute_heatmaps(loaded.model, box_set.loader, needed, method=method, device=device,
                                progress=progress, class_names=loaded.class_names)
    grid = create_heatmap_method(method, loaded.model).grid(loaded.spec.image_size)
    registered = make_registration(registration, grid)
    files["heatmaps"] = save_heatmaps(heatmaps, out / f"heatmaps_{method}.npz", loaded.info["sha256"])
    tables = localize_boxes(truth, heatmaps, method, heatmap_thresholds, largest_only, seed,
                            progress=progress, draws=draws, registration=registered, class_names=class_names)
    sensitivity = registration_table(truth, heatmaps, [registered, registered.other()],
                                     heatmap_thresholds, largest_only, class_names)
    write_csv_atomic(out / f"registration_{method}.csv", sensitivity, index=False, float_format="%.6f")
    info: dict[str, Any] = {
        "method": method, "model": loaded.config.model.name, "seed": loaded.config.seed,
        "checkpoint": loaded.info, "heatmap_thresholds": [float(t) for t in heatmap_thresholds],
        "largest_only": bool(largest_only), "baseline_seed": seed, "random_box_draws": int(draws),
        "n_box_rows": int(len(truth)), "n_images": int(truth["image_id"].nunique()),
        "registration": registered.describe(),
        "registrations": json.loads(sensitivity.to_json(orient="records")),
    }
    human = None
    if not legacy:
        human = _human_row(box_set, ground_truth, out, method, files)
        info.update({"box_set": box_set.record, "box_classes": list(class_names),
                     "human": {"defined": human.defined, "reason": human.reason, "n_pairs": human.n_pairs,
                               "readers": list(human.readers), "file": files["human"].name},
                     "shared_images": shared, "warnings": warnings})
        if opened.test_set is not None:
            info["test_dataset"] = opened.test_set.record()
        files["ground_truth"] = out / f"ground_truth_{method}.csv"
        write_csv_atomic(files["ground_truth"], truth, index=False)
    files.update(write_localization(out, method, tables, info))
    files["registration"] = out / f"registration_{method}.csv"
    boxes, scores, accuracy = tables.boxes, tables.scores, tables.accuracy
    name = loaded.config.model.name
    label = f"{MODEL_LABELS.get(name, name)}, {METHOD_LABELS.get(method, method)}"
    rows = overlay_rows(truth, {label: (heatmaps, boxes)}, num_examples, data_module_images(module),
                        registrations={label: registered}, class_names=class_names)
    if rows:
        top = int(max(heatmap_thresholds))
        where = f" ({box_set.record['dataset']})" if box_set.record else ""
        figure = overlay_figure(rows, legend=box_legend_handles(solid_label=f"predicted box (heatmap > {top})"),
                                title=f"{label}: test images with boxes{where}")
        files["overlays"] = save_figure(figure, out / f"overlays_{method}.png")
    return LocalizationRunResult(accuracy, scores, boxes, files, sensitivity, class_names, human, box_set.record,
                                 warnings)


def _human_row(box_set: _BoxSet, policy: str, out: Path, method: str, files: dict[str, Path]) -> HumanAgreement:
    """The human row of a box set (each reader against the other readers): ``human_<method>.csv`` and
    ``human_scores_<method>.csv``, written also when it is not defined (no rows: never an earlier box set's)."""
    assert box_set.reader_boxes is not None
    human = human_agreement(box_set.reader_boxes, policy, box_set.readers, box_set.class_names)
    files["human"] = out / f"human_{method}.csv"
    files["human_scores"] = out / f"human_scores_{method}.csv"
    write_csv_atomic(files["human"], human.accuracy, index=False, float_format="%.6f")
    write_csv_atomic(files["human_scores"], human.scores, index=False)
    return human


__all__ = ["LocalizationRunResult", "POLICY_DEFINITIONS", "localize_run"]

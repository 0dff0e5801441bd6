"""``thoracic explain``: can a run's heatmaps be trusted? (the command only parses arguments).

For a run folder, per heatmap method, on the box rows of up to ``num_images`` test images
(:mod:`thoracic.evaluation.trust`): the cascading model randomization test, deletion / insertion curves
and ROAD, and the mask metrics (mIoU, hit rate; fixed, Otsu and cross-fitted thresholds). For an
experiment folder, the same for every seed run, then the repeatability of the maps across the seeds.

Files, beside the localization files (all written atomically)::

    RUN/evaluation/randomization.csv          per method, randomized depth and pair: Spearman, SSIM
    RUN/evaluation/randomization_summary.csv  per method and depth: median and quartiles over the images
    RUN/evaluation/randomization.png          similarity against randomized depth, one line per method
    RUN/evaluation/randomization_examples.png example maps as the network is randomized
    RUN/evaluation/faithfulness_curves.csv    deletion / insertion (saliency and random order), ROAD
    RUN/evaluation/faithfulness.csv           per method and class: areas, gains, ROAD, bootstrap CIs
    RUN/evaluation/faithfulness.png           mean deletion and insertion curves
    RUN/evaluation/masks.csv                  per method and pair: IoU per protocol, hit, tuned threshold
    RUN/evaluation/mask_metrics.csv           per method, metric, protocol and class: mean, bootstrap CI
    RUN/evaluation/mask_thresholds.csv        the per-class thresholds tuned on each half
    RUN/evaluation/explain.json               settings, checkpoint, pairs, one verdict per method and check
    EXPERIMENT/evaluation/repeatability.csv, repeatability_summary.csv, repeatability.json

Interrupted work resumes: every (method, check) is a *part* under ``RUN/evaluation/explain/`` recorded in
``parts.json`` with a key of what it depends on (checkpoint hash, images, settings); a part whose key
matches is reused, anything else is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from thoracic.constants import CHECKPOINT_NAMES
from thoracic.errors import DataError, RunError
from thoracic.evaluation.predictions import compute_heatmaps
from thoracic.evaluation.protocol import ground_truth_boxes
from thoracic.evaluation.trust import CHECKS, DEFAULT_NUM_IMAGES
from thoracic.evaluation.trust.common import (
    collect_images,
    image_batches,
    maps_at_input,
    needed_classes,
    per_class_means,
    select_pairs,
)
from thoracic.evaluation.trust.faithfulness import (
    CURVE_STEPS,
    ROAD_FRACTIONS,
    SCORE_COLUMNS,
    faithfulness_curves,
    faithfulness_verdicts,
    pair_scores,
)
from thoracic.evaluation.trust.figures import (
    faithfulness_figure,
    randomization_examples_figure,
    randomization_figure,
    save_png_atomic,
)
from thoracic.evaluation.trust.masks import mask_metrics, mask_scores, mask_verdicts
from thoracic.evaluation.trust.randomization import (
    RANDOMIZATION_STAGES,
    SIMILARITY_FLAG,
    cascading_randomization,
    randomization_summary,
    randomization_test,
    randomization_verdicts,
)
from thoracic.evaluation.trust.repeatability import (
    REPEATABILITY_FLAG,
    repeatability_pairs,
    repeatability_summary,
    repeatability_verdicts,
)
from thoracic.geometry import make_registration
from thoracic.heatmaps import create_heatmap_method, list_heatmap_methods
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS
from thoracic.io import atomic_write, write_csv_atomic, write_json_atomic
from thoracic.reporting.runs import expand_runs
from thoracic.safety import read_json
from thoracic.workflows.common import OpenedRun, evaluation_outputs, open_run

#: Files ``thoracic explain`` writes into a run's ``evaluation/`` folder (and an experiment's).
RUN_FILES = ("randomization.csv", "randomization_summary.csv", "randomization.png", "randomization_examples.png",
             "faithfulness_curves.csv", "faithfulness.csv", "faithfulness.png", "masks.csv", "mask_metrics.csv",
             "mask_thresholds.csv", "explain.json")
EXPERIMENT_FILES = ("repeatability.csv", "repeatability_summary.csv", "repeatability.json")
PARTS_FOLDER = "explain"


@dataclass(frozen=True)
class ExplainSettings:
    """What the checks depend on besides the run (each part's key holds the fields it uses)."""

    method: tuple[str, ...] | None = None
    """Heatmap methods (``--method``; ``None``: those ``thoracic localize`` ran on the run, else ``native``)."""
    checks: tuple[str, ...] = CHECKS
    num_images: int = DEFAULT_NUM_IMAGES
    seed: int = 0
    bootstrap: int = 1000
    heatmap_thresholds: tuple[float, ...] = tuple(float(t) for t in HEATMAP_THRESHOLDS)
    stages: tuple[str, ...] = RANDOMIZATION_STAGES
    steps: int = CURVE_STEPS
    road_fractions: tuple[float, ...] = ROAD_FRACTIONS


@dataclass
class RunExplanation:
    """One run's results: files written, verdicts per method and check, and what repeatability needs."""

    run: Path
    files: dict[str, Path]
    verdicts: dict[str, dict[str, Any]]
    maps: dict[str, dict[tuple[str, str], np.ndarray]] = field(default_factory=dict)
    masks: pd.DataFrame | None = None
    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)


@dataclass
class ExplainResult:
    """What ``thoracic explain`` did: per run its explanation, and the experiment's repeatability."""

    runs: list[RunExplanation]
    files: dict[str, Path]
    verdicts: dict[str, dict[str, Any]]
    """method -> check -> verdict (the experiment's repeatability; per run in :attr:`runs`)."""
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """One line per run, method and check (what the command prints)."""
        lines = []
        for explanation in self.runs:
            lines.append(f"{explanation.run}:")
            for method, checks in explanation.verdicts.items():
                for check, verdict in checks.items():
                    lines.append(f"  {method:<15} {check:<14} {verdict['text']}")
        if self.verdicts:
            lines.append("across the seeds:")
            for method, checks in self.verdicts.items():
                for check, verdict in checks.items():
                    lines.append(f"  {method:<15} {check:<14} {verdict['text']}")
        return lines


class _Parts:
    """The resumable parts of one run's explanation (``evaluation/explain/``, indexed by ``parts.json``)."""

    def __init__(self, folder: Path, context: dict[str, Any]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.index_path = folder / "parts.json"
        index = read_json(self.index_path, "the explain parts index", RunError) if self.index_path.is_file() else {}
        self.index: dict[str, str] = index if isinstance(index, dict) else {}
        self.context = context

    def key(self, name: str, settings: dict[str, Any]) -> str:
        text = json.dumps({"context": self.context, "part": name, "settings": settings}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def fresh(self, name: str, settings: dict[str, Any]) -> bool:
        return self.index.get(name) == self.key(name, settings) and (self.folder / name).is_file()

    def done(self, name: str, settings: dict[str, Any]) -> None:
        self.index[name] = self.key(name, settings)
        write_json_atomic(self.index_path, self.index)

    def path(self, name: str) -> Path:
        return self.folder / name


def _save_maps(path: Path, maps: dict[tuple[str, str], np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"{i}|{c}": m.astype(np.float32) for (i, c), m in maps.items()})
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _load_maps(path: Path) -> dict[tuple[str, str], np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {tuple(key.split("|", 1)): data[key].astype(np.float64) for key in data.files}  # type: ignore[misc]


def _run_methods(evaluation: Path, methods: Sequence[str] | None) -> list[str]:
    """The requested methods, else the ones ``thoracic localize`` ran on the run, else ``native``."""
    known = list_heatmap_methods()
    if methods:
        chosen = list(dict.fromkeys(methods))
        unknown = [m for m in chosen if m not in known]
        if unknown:
            raise DataError(f"heatmap method(s) {unknown} unknown: choose among {known}")
        return chosen
    localized = [p.stem.split("_", 1)[1] for p in sorted(evaluation.glob("localization_*.json"))]
    return [m for m in known if m in localized] or ["native"]


@contextmanager
def _progress(total: int, description: str, enabled: bool) -> Iterator[Callable[[str], None]]:
    if not enabled:
        yield lambda _: None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=description, unit="step")

    def step(text: str) -> None:
        bar.set_postfix_str(text)
        bar.update(1)

    try:
        yield step
    finally:
        bar.close()


def _headline(thresholds: Sequence[float]) -> float:
    return 180.0 if 180.0 in thresholds else float(max(thresholds))


def explain_run(run: str | Path, settings: ExplainSettings = ExplainSettings(), checkpoint: str = "best",
                device: str = "auto", batch_size: int | None = None, data: str | Path | None = None,
                cache: str | Path | None = None, num_workers: int | None = None,
                progress: bool = True, *, trust_checkpoint: bool = False) -> RunExplanation:
    """Randomization, faithfulness and mask checks of one run folder (see the module docstring);
    ``trust_checkpoint`` opens the checkpoint with full pickle."""
    start = time.perf_counter()
    opened = open_run(run, checkpoint, device, batch_size, data, cache, num_workers,
                      trust_checkpoint=trust_checkpoint)
    with evaluation_outputs(opened, "explain"):  # the run's lock; every file listed with its checkpoint
        return _explain_opened(opened, run, settings, batch_size, progress, start)


def _explain_opened(opened: OpenedRun, run: str | Path, settings: ExplainSettings, batch_size: int | None,
                    progress: bool, start: float) -> RunExplanation:
    """The body of :func:`explain_run`, under the run folder's lock and the evaluation folder's manifest."""
    loaded, module, out, device = opened.loaded, opened.data, opened.out, opened.device
    model = loaded.model.eval()
    size = int(loaded.spec.image_size)
    names = loaded.class_names  # the model's labels: the logit index of each box class
    methods = _run_methods(out, settings.method)
    checks = [c for c in settings.checks if c != "repeatability"]
    boxes = module.box_table
    ground_truth = ground_truth_boxes(boxes)
    patients = module.dataset.table[["image_id", "patient_id"]] if "patient_id" in module.dataset.table else None
    if patients is not None:
        ground_truth = ground_truth.merge(patients.drop_duplicates("image_id"), on="image_id", how="left")
    pairs = select_pairs(ground_truth, settings.num_images, settings.seed)
    class_index = {name: k for k, name in enumerate(names)}
    images = collect_images(module.box_dataloader(), pairs["image_id"].unique())
    batches = image_batches(images, batch_size or loaded.config.train.batch_size)
    needed = needed_classes(pairs)
    pair_keys = [[str(i), str(c)] for i, c in zip(pairs["image_id"], pairs["class_name"])]
    context = {"checkpoint_sha256": (loaded.info or {}).get("sha256"), "image_size": size,
               "pairs": hashlib.sha256(json.dumps(pair_keys).encode()).hexdigest()}
    parts = _Parts(out / PARTS_FOLDER, context)
    explanation = RunExplanation(Path(run), {}, {})
    steps_per_method = 1 + (len(settings.stages) if "randomization" in checks else 0) + \
        sum(c in checks for c in ("faithfulness", "masks"))
    randomization, curves, masks, thresholds = [], [], [], []
    with _progress(len(methods) * steps_per_method, f"explain {Path(run).name}", progress) as step:
        for method in methods:
            grid = create_heatmap_method(method, model).grid(size)
            registration = make_registration("geometric", grid)

            def maps_of(network: torch.nn.Module, name: str = method) -> dict[tuple[str, str], np.ndarray]:
                return compute_heatmaps(network, batches, needed, method=name, device=device, progress=False,
                                        class_names=names)

            name = f"maps_{method}.npz"
            if parts.fresh(name, {}):
                native = _load_maps(parts.path(name))
                explanation.reused.append(name)
            else:
                native = maps_of(model)
                _save_maps(parts.path(name), native)
                parts.done(name, {})
                explanation.computed.append(name)
            step(f"{method}: maps")
            at_input = maps_at_input(native, registration, size)
            explanation.maps[method] = at_input
            if "randomization" in checks:
                part = {"stages": list(settings.stages), "seed": settings.seed}
                name = f"randomization_{method}.csv"
                if parts.fresh(name, part):
                    randomization.append(pd.read_csv(parts.path(name)))
                    explanation.reused.append(name)
                    for stage in settings.stages:
                        step(f"{method}: randomized {stage} (reused)")
                else:
                    table = randomization_test(
                        model, method, at_input, lambda network: maps_at_input(maps_of(network), registration, size),
                        settings.stages, settings.seed, on_stage=lambda _, stage: step(f"{method}: randomized {stage}"))
                    write_csv_atomic(parts.path(name), table, index=False)
                    parts.done(name, part)
                    explanation.computed.append(name)
                    randomization.append(table)
            if "faithfulness" in checks:
                part = {"steps": settings.steps, "road": list(settings.road_fractions), "seed": settings.seed}
                name = f"faithfulness_{method}.csv"
                if parts.fresh(name, part):
                    curves.append(pd.read_csv(parts.path(name)))
                    explanation.reused.append(name)
                else:
                    table = faithfulness_curves(model, method, images, at_input, class_index, settings.steps,
                                                settings.road_fractions, settings.seed,
                                                batch_size or loaded.config.train.batch_size, device)
                    write_csv_atomic(parts.path(name), table, index=False)
                    parts.done(name, part)
                    explanation.computed.append(name)
                    curves.append(table)
                step(f"{method}: faithfulness")
            if "masks" in checks:
                part = {"thresholds": list(settings.heatmap_thresholds), "seed": settings.seed}
                name, chosen_name = f"masks_{method}.csv", f"mask_thresholds_{method}.csv"
                if parts.fresh(name, part) and parts.fresh(chosen_name, part):
                    table, chosen = pd.read_csv(parts.path(name)), pd.read_csv(parts.path(chosen_name))
                    explanation.reused.append(name)
                else:
                    table, chosen = mask_scores(ground_truth, pairs, native, method, registration,
                                                settings.heatmap_thresholds, settings.seed)
                    write_csv_atomic(parts.path(chosen_name), chosen, index=False)
                    parts.done(chosen_name, part)
                    write_csv_atomic(parts.path(name), table, index=False)
                    parts.done(name, part)
                    explanation.computed.append(name)
                masks.append(table)
                thresholds.append(chosen)
                step(f"{method}: masks")
    verdicts: dict[str, dict[str, Any]] = {m: {} for m in methods}
    files: dict[str, Path] = {}
    criteria: dict[str, str] = {}
    if randomization:
        table = pd.concat(randomization, ignore_index=True)
        summary = randomization_summary(table)
        files["randomization"] = write_csv_atomic(out / "randomization.csv", table, index=False)
        files["randomization_summary"] = write_csv_atomic(out / "randomization_summary.csv", summary, index=False)
        files["randomization_figure"] = save_png_atomic(randomization_figure(summary), out / "randomization.png")
        files["randomization_examples"] = _examples(model, methods, pairs, images, explanation, parts, batches,
                                                    needed, device, size, settings, out / "randomization_examples.png",
                                                    names)
        for method, verdict in randomization_verdicts(summary).items():
            verdicts[method]["randomization"] = verdict
        criteria["randomization"] = (f"flagged when, with every stage down to the {settings.stages[-1]} randomized, "
                                     f"the median Spearman correlation with the trained maps is >= {SIMILARITY_FLAG:g}")
    if curves:
        table = pd.concat(curves, ignore_index=True)
        scores = pair_scores(table)
        summary = per_class_means(scores, SCORE_COLUMNS, settings.bootstrap, settings.seed)
        files["faithfulness_curves"] = write_csv_atomic(out / "faithfulness_curves.csv", table, index=False)
        files["faithfulness"] = write_csv_atomic(out / "faithfulness.csv", summary, index=False)
        files["faithfulness_figure"] = save_png_atomic(faithfulness_figure(table), out / "faithfulness.png")
        for method, verdict in faithfulness_verdicts(summary).items():
            verdicts[method]["faithfulness"] = verdict
        criteria["faithfulness"] = ("faithful when both the deletion gain (random-order area - deletion area) and the "
                                    "insertion gain (insertion area - random-order area) are > 0 with their 95% CI")
    if masks:
        table = pd.concat(masks, ignore_index=True)
        metrics = mask_metrics(table, settings.heatmap_thresholds, settings.bootstrap, settings.seed)
        files["masks"] = write_csv_atomic(out / "masks.csv", table, index=False)
        files["mask_metrics"] = write_csv_atomic(out / "mask_metrics.csv", metrics, index=False)
        files["mask_thresholds"] = write_csv_atomic(out / "mask_thresholds.csv", pd.concat(thresholds, ignore_index=True),
                                                    index=False)
        for method, verdict in mask_verdicts(metrics, _headline(settings.heatmap_thresholds)).items():
            verdicts[method]["masks"] = verdict
        explanation.masks = table
    document = {
        "run": str(run), "checkpoint": loaded.info, "methods": methods, "checks": checks,
        "settings": {"num_images": settings.num_images, "seed": settings.seed, "bootstrap": settings.bootstrap,
                     "heatmap_thresholds": list(settings.heatmap_thresholds), "stages": list(settings.stages),
                     "steps": settings.steps, "road_fractions": list(settings.road_fractions),
                     "image_size": size, "registration": "geometric"},
        "n_images": int(pairs["image_id"].nunique()), "n_pairs": int(len(pairs)),
        "n_box_images": int(ground_truth["image_id"].nunique()), "pairs": pair_keys, "criteria": criteria,
        "verdicts": verdicts, "files": {k: p.name for k, p in files.items()},
        "parts": {"computed": explanation.computed, "reused": explanation.reused},
        "seconds": round(time.perf_counter() - start, 1),
    }
    files["explain"] = write_json_atomic(out / "explain.json", document)
    explanation.files, explanation.verdicts = files, verdicts
    return explanation


def _examples(model: torch.nn.Module, methods: Sequence[str], pairs: pd.DataFrame, images: dict[str, Any],
              explanation: RunExplanation, parts: _Parts, batches: list[dict[str, Any]], needed: dict[str, list[str]],
              device: str, size: int, settings: ExplainSettings, path: Path, class_names: Sequence[str]) -> Path:
    """The first pair's maps by every method as the network is randomized (the draws of the test), as a
    figure; the maps are a part of their own (reused when the methods, stages and seed are unchanged)."""
    first = pairs.iloc[0]
    key = (str(first["image_id"]), str(first["class_name"]))
    part = {"methods": list(methods), "stages": list(settings.stages), "seed": settings.seed, "pair": list(key)}
    name = "randomization_examples.npz"
    if parts.fresh(name, part):
        stored = _load_maps(parts.path(name))
        maps = {m: [stored[(m, str(depth))] for depth in range(len(settings.stages) + 1)] for m in methods}
    else:
        chosen = [b for b in batches if key[0] in b["image_id"]]
        registration = {m: make_registration("geometric", create_heatmap_method(m, model).grid(size)) for m in methods}
        maps = {m: [explanation.maps[m][key]] for m in methods}
        for _, _, randomized in cascading_randomization(model, settings.stages, settings.seed):
            for method in methods:
                native = compute_heatmaps(randomized, chosen, {key[0]: [key[1]]}, method=method, device=device,
                                          progress=False, class_names=class_names)
                maps[method].append(maps_at_input(native, registration[method], size)[key])
        _save_maps(parts.path(name), {(m, str(depth)): v for m in methods for depth, v in enumerate(maps[m])})
        parts.done(name, part)
    picture = images[key[0]][0].float().cpu().numpy()
    return save_png_atomic(randomization_examples_figure({key[0]: picture}, maps, key, settings.stages), path)


def explain(run: str | Path, settings: ExplainSettings = ExplainSettings(), checkpoint: str = "best",
            device: str = "auto", batch_size: int | None = None, data: str | Path | None = None,
            cache: str | Path | None = None, num_workers: int | None = None, progress: bool = True, *,
            trust_checkpoint: bool = False) -> ExplainResult:
    """``thoracic explain RUN``: :func:`explain_run` on a run folder, or on every run of an experiment folder
    followed by the repeatability of the maps across its seeds (files in ``EXPERIMENT/evaluation/``)."""
    start = time.perf_counter()
    path = Path(run)
    runs = expand_runs([path])
    if checkpoint not in CHECKPOINT_NAMES:  # a checkpoint file: explained in the run folder that holds it
        if len(runs) > 1:
            raise DataError(f"--checkpoint {checkpoint}: one checkpoint file cannot stand for the {len(runs)} runs of "
                            f"{path}; give best or last")
        if not Path(checkpoint).is_file():
            raise DataError(f"--checkpoint {checkpoint}: expected best, last or a checkpoint file, and no such file exists")
        runs, checkpoint, path = [Path(checkpoint)], "best", Path(checkpoint)
    explanations = [explain_run(r, settings, checkpoint, device, batch_size, data, cache, num_workers, progress,
                                trust_checkpoint=trust_checkpoint) for r in runs]
    files: dict[str, Path] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    if runs != [path] and len(runs) > 1 and "repeatability" in settings.checks:
        files, verdicts = _repeatability(path, explanations, settings)
    return ExplainResult(explanations, files, verdicts, time.perf_counter() - start)


def _repeatability(experiment: Path, explanations: Sequence[RunExplanation], settings: ExplainSettings
                   ) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Repeatability across the runs of an experiment, written into ``EXPERIMENT/evaluation/``."""
    if any(e.masks is None for e in explanations):
        raise DataError("repeatability compares the runs' mask scores: run it with the masks check")
    out = experiment / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    names = [e.run.name for e in explanations]
    iou_column = f"iou_{_headline(settings.heatmap_thresholds):g}"
    methods = [m for m in explanations[0].maps if all(m in e.maps for e in explanations)]
    masks = {e.run.name: e.masks for e in explanations}
    tables = [repeatability_pairs(m, {e.run.name: e.maps[m] for e in explanations},
                                  {name: table[table["method"] == m] for name, table in masks.items()}, iou_column)
              for m in methods]
    pairs = pd.concat(tables, ignore_index=True)
    summary = repeatability_summary(pairs, masks, iou_column, methods)
    found = repeatability_verdicts(summary)
    files = {"repeatability": write_csv_atomic(out / "repeatability.csv", pairs, index=False),
             "repeatability_summary": write_csv_atomic(out / "repeatability_summary.csv", summary, index=False)}
    document = {"experiment": str(experiment), "runs": names, "methods": methods, "iou_column": iou_column,
                "criterion": f"flagged when the median across-seed Spearman correlation is below {REPEATABILITY_FLAG:g}",
                "verdicts": found, "files": {k: p.name for k, p in files.items()}}
    files["repeatability_json"] = write_json_atomic(out / "repeatability.json", document)
    return files, {m: {"repeatability": v} for m, v in found.items()}


__all__ = ["CHECKS", "DEFAULT_NUM_IMAGES", "EXPERIMENT_FILES", "ExplainResult", "ExplainSettings", "RUN_FILES",
           "RunExplanation", "explain", "explain_run"]

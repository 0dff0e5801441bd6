"""Finding evaluated runs (run and experiment folders), reading their artefacts, grouping seeds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.errors import RunError, ThoracicError
from thoracic.provenance import SHORT_HASH, file_sha256
from thoracic.safety import OUTPUT_MANIFEST, OutputFolder, read_json
from thoracic.spec import legacy_class_names
from thoracic.data.metadata import find_image_files
from thoracic.reporting.crossdata import TestSetSummary, load_test_sets


_IGNORED_KEYS = ("seed", "run_name", "output_dir")


@dataclass
class RunSummary:
    """What a report needs from one evaluated run folder.

    ``checkpoints`` maps each evaluation file (``auc_test.json``, ``localization_native.json`` ...) to the
    :func:`~thoracic.training.checkpoints.checkpoint_info` it records; ``warnings`` says, per run, what a
    reader must know: an evaluation of another checkpoint than the run's current ``best.ckpt`` (``stale``),
    or a checkpoint of another model than the run folder's ``config.yaml`` names.
    """

    path: Path
    config: dict[str, Any]
    auc: dict[str, Any] | None
    localization: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    operating_points: pd.DataFrame | None = None
    """``operating_points_<split>.csv``: per class AUC, threshold, sensitivity, specificity."""
    run_info: dict[str, Any] = field(default_factory=dict)
    """``run_info.json`` (versions, data kind, image counts per split, box rows)."""
    training: dict[str, Any] = field(default_factory=dict)
    """``summary.json`` (epochs run, best epoch)."""
    operating_point_method: str | None = None
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: bool = False
    warnings: list[str] = field(default_factory=list)
    box_images: int | None = None
    """Test images with box rows (``run_info.json``'s ``box_images``, else a ``localization_*.json``)."""
    test_sets: list[TestSetSummary] = field(default_factory=list)
    """Other datasets the run was scored on (``evaluation/<kind>-<folder>/``: cross-dataset validation)."""

    @property
    def model(self) -> str:
        """The model the evaluated checkpoint holds (its stored config), else the run's config.yaml."""
        for info in self.checkpoints.values():
            if info.get("model_name"):
                return str(info["model_name"])
        return str(self.config.get("model", {}).get("name", "?"))

    def _evaluated(self, key: str) -> Any:
        """A field of the evaluated checkpoint's record (None when no evaluation file records one)."""
        return next((info[key] for info in self.checkpoints.values() if info.get(key) is not None), None)

    @property
    def backbone(self) -> str | None:
        """The backbone of the evaluated checkpoint, else of the run's config.yaml."""
        return self._evaluated("backbone") or self.config.get("model", {}).get("backbone")

    @property
    def image_size(self) -> int | None:
        """The input side (pixels) of the evaluated checkpoint, else of the run's config.yaml."""
        return self._evaluated("image_size") or self.config.get("data", {}).get("image_size")

    @property
    def data_kind(self) -> str | None:
        """``phantom`` / ``real`` as the evaluated checkpoint records it."""
        for info in self.checkpoints.values():
            if info.get("data_kind"):
                return str(info["data_kind"])
        return None

    @property
    def dataset(self) -> str:
        """The layout the run was trained on (``run_info.json``'s ``data.dataset``); ChestX-ray14 for a run
        that does not record one (the only layout thoracic read then)."""
        data = self.run_info.get("data") if isinstance(self.run_info.get("data"), dict) else {}
        return str(data.get("dataset") or "chestxray14")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The run's labels, in the order of its outputs: ``run_info.json``'s, else its ``auc_<split>.json``'s,
        else those of a run written before labels were recorded (:data:`~thoracic.spec.LEGACY_CLASS_NAMES`)."""
        names = self.run_info.get("class_names") or (self.auc or {}).get("class_names")
        return legacy_class_names(names)

    @property
    def roc_figure(self) -> Path | None:
        return next((p for p in self.figures if p.name.startswith("roc_")), None)

    def overlay_figures(self) -> dict[str, Path]:
        """heatmap method -> ``overlays_<method>.png``."""
        return {p.stem.split("_", 1)[1]: p for p in self.figures if p.name.startswith("overlays_")}

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def group_key(self) -> str:
        reduced = {k: v for k, v in self.config.items() if k not in _IGNORED_KEYS}
        reduced["evaluated_model"] = self.model
        return json.dumps(reduced, sort_keys=True, default=str)


@dataclass
class RunGroup:
    """Runs of one config (seeds of one experiment) under a label: the run folder (an experiment's folder
    for its seeds) with the model beside it, e.g. ``seed0: baseline (resnet10, 64 px)``."""

    label: str
    runs: list[RunSummary]
    description: str = ""
    """What was trained, without the folder: ``baseline (resnet10, 64 px)``."""

    @property
    def model(self) -> str:
        return self.runs[0].model

    def run_label(self, run: RunSummary) -> str:
        """The group's label for a group of one run; inside a group of seeds, the run's own folder
        (``experiment/seed0``) with the model beside it."""
        if len(self.runs) == 1:
            return self.label
        return f"{run.path.parent.name}/{run.path.name}: {self.description or run.model}"


def _is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "config.yaml").is_file() or (path / "evaluation").is_dir())


def _natural_key(path: Path) -> tuple:
    """``seed2`` before ``seed10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


def expand_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders: the run folders inside each experiment folder, or each path itself.

    An experiment folder (``thoracic experiment``: its own ``config.yaml`` beside ``seed*/`` runs) is
    recognised first, by the run folders it holds (a folder with ``config.yaml`` or ``evaluation/``);
    a run folder holds none (its ``checkpoints/``, ``logs/`` and ``evaluation/`` are not runs).
    """
    runs: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise RunError(f"run {path} is not a folder (expected a run or experiment folder)")
        children = sorted((p for p in path.iterdir() if _is_run(p)), key=_natural_key)
        if children:
            runs.extend(children)
        elif _is_run(path):
            runs.append(path)
        else:
            raise RunError(f"{path} holds neither a run (config.yaml) nor run folders (an experiment)")
    return runs


def _read_config(run: Path) -> dict[str, Any]:
    import yaml

    path = run / "config.yaml"
    if path.is_file():
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RunError(f"{path}: the run's config is not valid YAML ({str(exc).splitlines()[0]}); the file is "
                           "damaged: restore it (the same config is stored in the run's checkpoints)") from None
        if not isinstance(config, dict):
            raise RunError(f"{path}: expected the run's config (a YAML mapping), got a {type(config).__name__}")
        return config
    for json_path in sorted((run / "evaluation").glob("auc_*.json")):
        info = _read_evaluation_json(json_path)
        return {"model": {"name": info.get("model", "?")}, "seed": info.get("seed")}
    return {}


def load_run_summary(run: str | Path, split: str = "test") -> RunSummary:
    """Read ``config.yaml`` and ``evaluation/`` (``auc_<split>.json``, ``localization_*.csv``, figures)."""
    run = Path(run)
    evaluation = run / "evaluation"
    if not evaluation.is_dir():
        raise RunError(f"run {run} has no evaluation/ folder: run `thoracic evaluate {run}` first "
                       "(`thoracic experiment` does it for every seed unless --no-test)")
    auc_path = evaluation / f"auc_{split}.json"
    auc = _read_evaluation_json(auc_path) if auc_path.is_file() else None
    if auc is not None and not isinstance(auc.get("per_class"), dict):
        raise RunError(f"{auc_path}: no 'per_class' table; expected the auc_{split}.json that thoracic evaluate "
                       "writes (rerun it)")
    localization = {p.stem.split("_", 1)[1]: _read_localization_csv(p)
                    for p in sorted(evaluation.glob("localization_*.csv"))}
    for table in localization.values():
        table["threshold"] = table["threshold"].fillna("").astype(str)  # baselines have no heatmap threshold
    figures = sorted(evaluation.glob(f"roc_{split}.png")) + sorted(evaluation.glob("overlays_*.png"))
    test_sets = load_test_sets(evaluation)
    if auc is None and not localization and not test_sets:
        raise RunError(f"run {run}: evaluation/ holds neither auc_{split}.json nor localization_*.csv, nor the "
                       "results of another dataset")
    points_path = evaluation / f"operating_points_{split}.csv"
    points = (read_evaluation_csv(points_path, "thoracic evaluate", keep_default_na=False, na_values=[""])
              if points_path.is_file() else None)
    method = None
    if (evaluation / "operating_points.json").is_file():
        method = _read_evaluation_json(evaluation / "operating_points.json").get("method")
    summary = RunSummary(run, _read_config(run), auc, localization, figures, points,
                         _read_json(run / "run_info.json"), _read_json(run / "summary.json"), method)
    summary.test_sets = test_sets
    summary.box_images = summary.run_info.get("box_images")
    for path in sorted(evaluation.glob("localization_*.json")):
        if summary.box_images is None:
            summary.box_images = _read_json(path).get("n_images")
    check_provenance(summary, split)
    return summary


def check_provenance(summary: RunSummary, split: str = "test") -> None:
    """Fill ``summary.checkpoints``, ``stale`` and ``warnings`` from the evaluation files' records.

    Stale: an evaluation's checkpoint hash differs from the run's current ``checkpoints/best.ckpt`` (the
    run was trained further after it was evaluated). Model: the evaluated checkpoint holds another model
    than the run's ``config.yaml`` names (a checkpoint copied between runs).
    """
    evaluation = summary.path / "evaluation"
    names = ([f"auc_{split}.json", "operating_points.json", f"subgroups_{split}.json"]
             + sorted(p.name for p in evaluation.glob("localization_*.json")))
    for name in names:
        path = evaluation / name
        if not path.is_file():
            continue
        info = _read_evaluation_json(path).get("checkpoint")
        if isinstance(info, dict):
            summary.checkpoints[name] = info
        elif name in ("operating_points.json", f"subgroups_{split}.json"):
            pass  # recorded since run-level provenance of every artefact; the manifest below covers older ones
        else:
            summary.warnings.append(f"{name} does not record which checkpoint it evaluated (written by an older "
                                    f"thoracic): rerun `thoracic evaluate` / `thoracic localize` to be sure")
    best = summary.path / "checkpoints" / "best.ckpt"
    current = file_sha256(best) if best.is_file() else None
    other = {f"{t.path.name}/{name}": info.get("checkpoint") for t in summary.test_sets
             for name, info in [("auc_test.json", t.auc or {}),
                                *((f"localization_{m}.json", i) for m, i in t.localization_info.items())]}
    for name, info in [*summary.checkpoints.items(), *((n, i) for n, i in other.items() if isinstance(i, dict))]:
        if current is not None and info.get("sha256") and info["sha256"] != current:
            summary.stale = True
            summary.warnings.append(
                f"STALE: {name} evaluated a checkpoint (epoch {info.get('epoch')}, sha256 {info['sha256'][:SHORT_HASH]}) that "
                f"is no longer the run's best.ckpt (sha256 {current[:SHORT_HASH]}): rerun the evaluation")
    _check_file_sources(summary, evaluation)
    configured = summary.config.get("model", {}).get("name")
    evaluated = sorted({str(i["model_name"]) for i in summary.checkpoints.values() if i.get("model_name")})
    if configured and evaluated and evaluated != [configured]:
        summary.warnings.append(f"the run's config.yaml names model {configured}, but the evaluated checkpoint holds "
                                f"{', '.join(evaluated)}: reported as {', '.join(evaluated)}")


def _check_file_sources(summary: RunSummary, evaluation: Path) -> None:
    """Every file of the evaluation folder whose manifest entry names another checkpoint than the one the
    report's numbers come from (``auc_<split>.json``'s): a warning naming the files (Table 1, figures,
    heatmaps ... of other weights must not be read as this checkpoint's)."""
    reference = next((info.get("sha256") for info in summary.checkpoints.values() if info.get("sha256")), None)
    if reference is None or not (evaluation / OUTPUT_MANIFEST).is_file():
        return
    try:
        folder = OutputFolder(evaluation, "report")
    except ThoracicError as exc:
        summary.warnings.append(str(exc))
        return
    others: dict[str, list[str]] = {}
    for name in sorted(folder.entries):
        source = folder.source_of(name) or {}
        if source.get("id") and source["id"] != reference and (evaluation / name).is_file():
            others.setdefault(str(source.get("description", source["id"])), []).append(name)
    for description, names in others.items():
        summary.stale = True
        summary.warnings.append(
            f"MIXED: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''} in {evaluation} come from {description}, "
            f"not from the checkpoint of the other evaluation files (sha256 {reference[:SHORT_HASH]}): rerun "
            "`thoracic evaluate` / `thoracic localize` with one --checkpoint")


def read_evaluation_csv(path: Path, command: str, **read_csv: Any) -> pd.DataFrame:
    """A CSV of an evaluation folder; an empty, truncated or garbled one is a named error (rerun ``command``)."""
    try:
        return pd.read_csv(path, **read_csv)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RunError(f"{path}: unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                       f"the file is damaged: rerun `{command}` for this run") from None


def _read_localization_csv(path: Path) -> pd.DataFrame:
    table = read_evaluation_csv(path, "thoracic localize", dtype={"threshold": str, "source": str})
    missing = [c for c in ("source", "threshold", "metric", "t", "class_name", "accuracy") if c not in table]
    if missing:
        raise RunError(f"{path}: columns {missing} missing; expected the table thoracic localize writes (rerun it)")
    return table


def _read_evaluation_json(path: Path) -> dict[str, Any]:
    """An evaluation file (``auc_*.json``, ``localization_*.json``): damage is a named error."""
    data = read_json(path, "an evaluation file", RunError)
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object (an evaluation file), got {type(data).__name__}")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged side file must not stop the report
        return {}


def _folder_label(runs: Sequence[RunSummary], depth: int = 1) -> str:
    """The folder a group's column is named by: the run folder, or the experiment folder holding its seeds
    (their run folders when they have no common parent); ``depth`` path parts (more to tell apart two
    folders of one name)."""
    def tail(path: Path) -> str:
        return "/".join(path.parts[-depth:])

    if len(runs) == 1:
        return tail(runs[0].path)
    parents = {r.path.parent for r in runs}
    if len(parents) == 1:
        return tail(next(iter(parents)))
    return ", ".join(tail(r.path) for r in runs)


def group_runs(summaries: Sequence[RunSummary]) -> list[RunGroup]:
    """Runs with the same config apart from the seed form one group (in first-seen order), labelled by
    their folder with the model beside it: ``seed0: baseline (resnet10, 64 px)``, ``experiment: baseline
    (resnet10, 64 px) x3 seeds``; two folders of one name get their parent folders too."""
    grouped: dict[str, list[RunSummary]] = {}
    for summary in summaries:
        grouped.setdefault(summary.group_key(), []).append(summary)
    runs_of = list(grouped.values())
    folders = [_folder_label(runs) for runs in runs_of]
    for depth in (2, 3):
        repeated = {f for f in folders if folders.count(f) > 1}
        folders = [_folder_label(runs, depth) if f in repeated else f for f, runs in zip(folders, runs_of)]
    result = []
    seen: dict[str, int] = {}
    for folder, runs in zip(folders, runs_of):
        size = runs[0].image_size
        # what was trained, at a glance: "baseline (resnet10, 160 px)" beside "Paper BL ResNet-34"; from
        # the evaluated checkpoint when it is recorded (a checkpoint copied between runs keeps its model)
        details = ", ".join(str(v) for v in (runs[0].backbone, f"{size} px" if size else None) if v)
        description = f"{runs[0].model} ({details})" if details else runs[0].model
        label = f"{folder}: {description}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # the same folder given twice
            label += f" ({seen[label]})"
        if len(runs) > 1:
            label += f" x{len(runs)} seeds"
        if any(r.stale for r in runs):
            label += " (STALE)"
        result.append(RunGroup(label, runs, description))
    return result


def image_paths(summary: RunSummary) -> dict[str, str]:
    root = summary.config.get("data", {}).get("root")
    if not root or not Path(root).is_dir():
        return {}
    try:
        return find_image_files(root)
    except Exception:  # noqa: BLE001 - a figure must never fail the report
        return {}


__all__ = ["RunGroup", "RunSummary", "check_provenance", "expand_runs", "group_runs", "image_paths", "load_run_summary"]

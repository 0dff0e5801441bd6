"""The report's view of a run scored on other datasets: the test sets (``<run>/evaluation/<kind>-<folder>/``,
each with its ``test_set.json``), the train-dataset x test-dataset AUC tables, the localization on other
box sets beside the human (reader-vs-reader) row, and the warnings about images two datasets share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.constants import METHOD_LABELS, TEST_SET_FILE
from thoracic.data.harmonisation import harmonised_name
from thoracic.data.shared_images import overlap_note, shared_warning
from thoracic.evaluation.formatting import ci_cell, fmt
from thoracic.evaluation.protocol import CENTRE_BOX, RANDOM_BOX, headline
from thoracic.evaluation.readers import HUMAN_SOURCE


@dataclass
class TestSetSummary:
    """One test set of a run: its record (``test_set.json``), its ``auc_test.json`` and its localization files."""

    path: Path
    record: dict[str, Any]
    auc: dict[str, Any] | None = None
    localization: dict[str, pd.DataFrame] = field(default_factory=dict)
    localization_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    human: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.record.get("kind", "?"))

    @property
    def name(self) -> str:
        """``chexpert (CheXpert-v1.0-small)``: the dataset kind and its folder's name."""
        return f"{self.kind} ({Path(str(self.record.get('root', self.path.name))).name})"

    @property
    def train_kind(self) -> str | None:
        return (self.record.get("train_dataset") or {}).get("kind")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _csv(path: Path, **options: Any) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, **options)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None


def load_test_sets(evaluation: Path) -> list[TestSetSummary]:
    """Every test set under a run's ``evaluation/`` (sub-folders with ``test_set.json``), by folder name; a
    damaged file is left out of the tables (the report must not fail on it)."""
    found = []
    for record_path in sorted(Path(evaluation).glob(f"*/{TEST_SET_FILE}")):
        record = _json(record_path)
        if record is None:
            continue
        folder = record_path.parent
        summary = TestSetSummary(folder, record, _json(folder / "auc_test.json") if (folder / "auc_test.json").is_file()
                                 else None)
        for path in sorted(folder.glob("localization_*.csv")):
            method = path.stem.split("_", 1)[1]
            table = _csv(path, dtype={"threshold": str, "source": str})
            info = _json(path.with_suffix(".json"))
            if table is None or info is None:
                continue
            table["threshold"] = table["threshold"].fillna("").astype(str)
            summary.localization[method] = table
            summary.localization_info[method] = info
            human = _csv(folder / f"human_{method}.csv", dtype={"threshold": str, "source": str})
            if human is not None and len(human):
                human["threshold"] = human["threshold"].fillna("").astype(str)
                summary.human[method] = human
        found.append(summary)
    return found


def _own_kind(run: Any) -> str:
    """The dataset a run was trained on: its test sets' record, its ``run_info.json``, its config."""
    for test_set in run.test_sets:
        if test_set.train_kind:
            return str(test_set.train_kind)
    recorded = (run.run_info.get("data") or {}).get("dataset") or run.config.get("data", {}).get("dataset")
    return str(recorded) if recorded and recorded != "auto" else "chestxray14"


def _own_name(run: Any) -> str:
    root = run.config.get("data", {}).get("root") or "?"
    return f"{_own_kind(run)} ({Path(str(root)).name}), own test split"


def _labels(count: int) -> str:
    return f"{count} label{'' if count == 1 else 's'}"


def _defined(auc: dict[str, Any]) -> list[str]:
    return [n for n, e in (auc.get("per_class") or {}).items() if e.get("auc") is not None]


def _mean_cell(auc: dict[str, Any], names: list[str] | None = None) -> str:
    """The mean AUC with its CI (over the labels with an AUC), or the plain mean over those of ``names``
    (no CI: computed here)."""
    per_class = auc.get("per_class") or {}
    if names is None:
        low, high = (auc.get("mean_ci") or [None, None])[:2]
        return f"{ci_cell(auc.get('mean_auc'), low, high)} ({_labels(len(_defined(auc)))})"
    values = [per_class[n]["auc"] for n in names if n in per_class and per_class[n].get("auc") is not None]
    return f"{fmt(float(np.mean(values)), 3)} ({_labels(len(values))})" if values else "undefined"


def cross_auc_tables(runs: list[Any], label_of: Any) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """The train-dataset x test-dataset tables of the runs with a test set: mean AUC (one row per run, one
    column per test dataset, the run's own test split first) and AUC per harmonised finding (one column per
    run and test dataset); None when no run was scored on another dataset."""
    scored = [r for r in runs if any(t.auc for t in r.test_sets)]
    if not scored:
        return None
    means: dict[str, dict[str, str]] = {}
    per_label: dict[str, dict[str, str]] = {}
    for run in scored:
        label = f"{label_of(run)} [trained on {_own_kind(run)}]"
        row: dict[str, str] = {}
        own_kind = _own_kind(run)
        if run.auc:
            row[_own_name(run)] = _mean_cell(run.auc)
            column: dict[str, str] = {}
            for name, entry in run.auc["per_class"].items():
                column[harmonised_name(own_kind, name) or name] = ci_cell(entry.get("auc"), entry.get("ci_low"),
                                                                         entry.get("ci_high"))
            per_label[f"{label_of(run)} on {_own_name(run)}"] = column
        for test_set in run.test_sets:
            if not test_set.auc:
                continue
            cell = _mean_cell(test_set.auc)
            if run.auc:  # the run's own test split over the labels defined here
                cell += f"; own test split on these labels {_mean_cell(run.auc, _defined(test_set.auc))}"
            row[test_set.name] = cell
            mapping = {m["run_label"]: m["finding"] for m in test_set.record.get("label_mapping", [])}
            per_label[f"{label_of(run)} on {test_set.name}"] = {
                mapping.get(name, name): ci_cell(entry.get("auc"), entry.get("ci_low"), entry.get("ci_high"))
                for name, entry in test_set.auc["per_class"].items()}
        means[label] = row
    mean_table = pd.DataFrame.from_dict(means, orient="index").fillna("")
    mean_table.index.name = "run [train dataset]"
    label_table = pd.DataFrame(per_label).fillna("")
    label_table.index.name = "finding"
    return mean_table, label_table


def other_box_set_table(runs: list[Any], label_of: Any) -> pd.DataFrame | None:
    """Localization on other box sets: per run, test set and heatmap method the headline (heatmap
    threshold 180) with the baselines, and beside it the human row (each reader against the other
    readers) of the same box set; None without one."""
    records = []
    for run in runs:
        for test_set in run.test_sets:
            for method, table in test_set.localization.items():
                info = test_set.localization_info.get(method, {})
                box_set = info.get("box_set") or {}
                policy = (box_set.get("ground_truth") or {}).get("policy", "")
                common = {"run": label_of(run), "box set": f"{test_set.name} ({box_set.get('split', 'test')} images)",
                          "ground truth": policy}
                row = headline(table, method)
                records.append({**common, "source": METHOD_LABELS.get(method, method), **_cells(row, True)})
                records.append({**common, "source": RANDOM_BOX, **_cells({
                    "classes": row["classes"], "boxes": row["boxes"], "IoU>0.3": row["IoU>0.3 random"],
                    "IoBB>0.25": row["IoBB>0.25 random"], "pointing": row["pointing random"]}, False)})
                records.append({**common, "source": CENTRE_BOX, **_cells({
                    "classes": row["classes"], "boxes": row["boxes"], "IoU>0.3": row["IoU>0.3 centre"],
                    "IoBB>0.25": row["IoBB>0.25 centre"], "pointing": row["pointing centre"]}, False)})
                human = test_set.human.get(method)
                human_info = info.get("human") or {}
                if human is not None:
                    pairs = human_info.get("n_pairs")
                    records.append({**common, "source": f"{HUMAN_SOURCE} ({pairs} image-reader pairs)",
                                    **_cells(headline(human, HUMAN_SOURCE, ""), True)})
                elif human_info.get("reason"):
                    records.append({**common, "source": f"{HUMAN_SOURCE}: not defined: {human_info['reason']}"})
    if not records:
        return None
    return pd.DataFrame.from_records(records).fillna("")


def _cells(row: dict[str, float], with_fp: bool) -> dict[str, str]:
    def cell(name: str) -> str:
        value = fmt(row.get(name), 3)
        if with_fp and np.isfinite(row.get(f"{name} FP", np.nan)):
            value += f" ({fmt(row[f'{name} FP'], 2)})"
        return value

    boxes = row.get("boxes", np.nan)
    classes = row.get("classes", np.nan)
    return {"box rows (classes)": "" if not np.isfinite(boxes) else f"{int(boxes)} ({int(classes)})",
            "IoU > 0.3 (FP)": cell("IoU>0.3"), "IoBB > 0.25 (FP)": cell("IoBB>0.25"),
            "pointing game": fmt(row.get("pointing"), 3)}


def test_set_lines(run: Any, split: str = "test") -> str:
    """Setup's list of a run's test sets: its own split, then every other dataset it was scored on."""
    own = _own_name(run).replace("own test split", f"own {split} split")
    parts = [own]
    for test_set in run.test_sets:
        images = (test_set.auc or {}).get("n_images")
        labels = len(test_set.record.get("label_mapping", []))
        methods = ", ".join(METHOD_LABELS.get(m, m) for m in sorted(test_set.localization))
        what = [f"{images} test images" if images is not None else None, f"{_labels(labels)} shared",
                f"localized: {methods}" if methods else None]
        parts.append(f"{test_set.name} ({'; '.join(w for w in what if w)}; evaluation/{test_set.path.name}/)")
    return "; ".join(parts)


def test_set_warnings(run: Any) -> list[str]:
    """Images the run was trained on among a test set's (a mapping of shared images), and test sets of a
    dataset known to share images with the run's when no mapping was given."""
    warnings: list[str] = []
    for test_set in run.test_sets:
        infos = [test_set.auc or {}, *test_set.localization_info.values()]
        shared = next((i.get("shared_images") for i in infos if i.get("shared_images")), None)
        if shared:
            warning = shared_warning(shared, test_set.kind, str(shared.get("mapping")))
            if warning:
                warnings.append(f"{test_set.name}: {warning}")
        elif test_set.train_kind:
            note = overlap_note(test_set.train_kind, test_set.kind)
            if note:
                warnings.append(f"{test_set.name}: {note}")
    return warnings


__all__ = ["TestSetSummary", "cross_auc_tables", "load_test_sets", "other_box_set_table",
           "test_set_lines", "test_set_warnings"]

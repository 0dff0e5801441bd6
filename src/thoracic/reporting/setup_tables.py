"""The report's Setup tables: what each run is (model, training, data, checkpoint), the data it saw against
the full dataset's size (:mod:`thoracic.data.published_sizes`), and the box rows per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from thoracic.constants import MODEL_LABELS
from thoracic.data.published_sizes import published_size
from thoracic.data.synth import folder_kind
from thoracic.provenance import SHORT_HASH
from thoracic.reporting.crossdata import test_set_lines
from thoracic.reporting.document import ReportContext
from thoracic.reporting.localization_tables import box_rows_per_class
from thoracic.reporting.runs import RunGroup, RunSummary
from thoracic.training.checkpoints import checkpoint_info


def _weights(model: dict[str, Any]) -> str:
    if model.get("weights"):
        return f"file {Path(str(model['weights'])).name}"
    return "ImageNet (torchvision)" if model.get("pretrained") else "none (trained from scratch)"


def _checkpoint_hash(run: RunSummary) -> str:
    """Short SHA-256 of the run's best checkpoint (the one evaluate and localize use by default)."""
    path = run.path / "checkpoints" / "best.ckpt"
    if not path.is_file():
        return "n/a (no checkpoints/best.ckpt)"
    try:
        return f"best.ckpt, sha256 {checkpoint_info(path)['sha256'][:SHORT_HASH]}"
    except Exception:  # noqa: BLE001 - an unreadable checkpoint must not stop the report
        return "best.ckpt (unreadable)"


def data_kind(run: RunSummary) -> str:
    """``phantom``, ``real`` or ``unknown``: what the evaluated checkpoint records, else what training
    recorded in run_info.json, else what the data folder is now."""
    return (run.data_kind or run.run_info.get("data_kind")
            or folder_kind(run.config.get("data", {}).get("root")))


def _data_folder(run: RunSummary) -> str:
    words = {"phantom": "phantom (synthetic)", "real": "real ChestX-ray14", "unknown": "unknown (folder not found)"}
    kind = data_kind(run)
    return f"{words.get(kind, kind)}: {run.config.get('data', {}).get('root')}"


def _image_counts(run: RunSummary, split: str) -> dict[str, Any]:
    """Images per split: ``run_info.json``, else the evaluation files."""
    counts = dict(run.run_info.get("images") or {})
    if run.auc:
        counts.setdefault(split, run.auc.get("n_images"))
        if run.auc.get("n_val_images") is not None:
            counts.setdefault("val", run.auc["n_val_images"])
    return counts


def _box_row_counts(run: RunSummary) -> dict[str, int]:
    """Test box rows per class: ``run_info.json``, else the run's first localization table."""
    counts = run.run_info.get("box_rows")
    if not counts and run.localization:
        counts = box_rows_per_class(RunGroup("", [run]), sorted(run.localization)[0])
    return dict(counts or {})


def _box_rows(run: RunSummary) -> str:
    counts = _box_row_counts(run)
    if not counts:
        return "n/a"
    k = sum(1 for n in counts.values() if n > 0)
    images = f" on {run.box_images} images" if run.box_images is not None else ""
    return f"{sum(counts.values())} in {k} of {len(counts)} classes{images}"


def _share(count: int, total: int) -> str:
    """``75 of 25,596 (0.3%)``."""
    fraction = count / total if total else 0.0
    percent = "<0.1%" if 0 < fraction < 0.001 else f"{fraction:.1%}"
    return f"{count:,} of {total:,} ({percent})"


def run_dataset(run: RunSummary) -> str | None:
    """The dataset a run was trained on: the layout its ``run_info.json`` recorded (the one ``auto``
    detected), else its config's ``data.dataset``."""
    return (run.run_info.get("data") or {}).get("dataset") or run.config.get("data", {}).get("dataset")


def dataset_coverage(run: RunSummary, split: str = "test") -> str:
    """The test images and box rows a run saw against the full dataset's
    (:data:`~thoracic.data.published_sizes.PUBLISHED_SIZES`): ``test images 75 of 25,596 (0.3%); box rows
    12 of 984 (1.2%) on 10 of 880 images``; ``n/a`` for a dataset without published sizes."""
    size = published_size(run_dataset(run))
    if size is None:
        return "n/a (no published size for this dataset)"
    parts = []
    test = _image_counts(run, split).get("test")
    if test is not None and size.test_images:
        parts.append(f"test images {_share(int(test), size.test_images)}")
    rows = _box_row_counts(run)
    if rows and size.box_rows:
        text = f"box rows {_share(sum(rows.values()), size.box_rows)}"
        if run.box_images is not None and size.box_images:
            text += f" on {run.box_images:,} of {size.box_images:,} images"
        parts.append(text)
    if not parts:
        return "n/a"
    kind = data_kind(run)
    suffix = f" (phantom images, not a part of {size.name})" if kind == "phantom" else ""
    return "; ".join(parts) + suffix


def coverage_warnings(run: RunSummary, split: str = "test") -> list[str]:
    """A warning when a run on real data saw only part of the official test split or box rows: its numbers
    are not comparable with the published ones (which use all of them)."""
    size = published_size(run_dataset(run))
    if size is None or data_kind(run) == "phantom":
        return []
    test = _image_counts(run, split).get("test")
    rows = sum(_box_row_counts(run).values()) or None
    seen = []
    if test is not None and size.test_images and int(test) < size.test_images:
        seen.append(f"{_share(int(test), size.test_images)} official test images")
    if rows is not None and size.box_rows and rows < size.box_rows:
        seen.append(f"{_share(rows, size.box_rows)} box rows")
    if not seen:
        return []
    return [f"the run saw {' and '.join(seen)} of the full {size.name}: its numbers are not comparable with "
            "the published ones, which use all of them"]


def setup_table(context: ReportContext) -> pd.DataFrame:
    """One column per run: what was trained, on what, for how long, and which checkpoint was evaluated."""
    rows = ["model", "backbone", "input size", "weights", "backbone frozen", "epochs run", "best epoch", "seed",
            "images train / val / test", "box rows (test)", "of the full dataset", "data folder", "test sets",
            "checkpoint"]
    table = pd.DataFrame(index=rows)
    table.index.name = "setting"
    for run in context.runs:
        model, data = run.config.get("model", {}), run.config.get("data", {})
        training = run.training
        best = training.get("best_epoch")
        counts = _image_counts(run, context.split)
        table[context.run_label(run)] = [
            MODEL_LABELS.get(run.model, run.model), run.backbone or "n/a",
            f"{run.image_size or 'n/a'} px", _weights(model),
            "yes" if model.get("freeze_backbone") else "no",
            str(training.get("epochs_completed", "n/a")),
            "n/a" if best is None else str(best), str(run.seed),
            " / ".join(str(counts.get(k, "n/a")) for k in ("train", "val", "test")), _box_rows(run),
            dataset_coverage(run, context.split), _data_folder(run), test_set_lines(run, context.split),
            _checkpoint_hash(run)]
    return table


def box_rows_table(context: ReportContext) -> pd.DataFrame | None:
    """Box rows per class on the test images of each distinct data folder."""
    columns: dict[str, dict[str, int]] = {}
    for run in context.runs:
        counts = _box_row_counts(run)
        if counts:
            columns.setdefault(str(run.config.get("data", {}).get("root", run.path)), counts)
    if not columns:
        return None
    names = list(dict.fromkeys(name for counts in columns.values() for name in counts))  # the runs' box classes
    table = pd.DataFrame({root: [int(c.get(n, 0)) for n in names] + [int(sum(c.values()))]
                          for root, c in columns.items()}, index=[*names, "total"])
    table.index.name = "class"
    return table


__all__ = ["box_rows_table", "coverage_warnings", "data_kind", "dataset_coverage", "setup_table"]

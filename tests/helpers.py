"""Shared test helpers (imported by test modules; pytest puts this folder on sys.path)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from thoracic.config import Config, DataConfig, ModelConfig, TrainConfig, save_config, to_dict
from thoracic.constants import CLASS_NAMES


def chromium_binary() -> str | None:
    """``$THORACIC_CHROMIUM``, else Debian's ``chromium`` (or the other usual names) on the PATH."""
    named = os.environ.get("THORACIC_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def make_run(folder: Path, data_root: Path, model: str, seed: int, image_size: int = 64) -> Path:
    """A run folder with a Lightning-format checkpoint of an untrained tiny model (no training needed)."""
    from thoracic.models import build_model

    config = Config(seed=seed, output_dir=str(folder.parent), run_name=folder.name,
                    data=DataConfig(root=str(data_root), image_size=image_size, num_workers=0),
                    model=ModelConfig(name=model, backbone="resnet10", pretrained=False),
                    train=TrainConfig(batch_size=16))
    torch.manual_seed(seed)
    net = build_model(config.model)
    (folder / "checkpoints").mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"config": to_dict(config), "class_names": list(CLASS_NAMES)},
                "epoch": 0}, folder / "checkpoints" / "best.ckpt")
    return folder


# ---------------------------------------------------------------------------------------------------------
# An independent recomputation of a run's localization table from its exported CSV files
# ---------------------------------------------------------------------------------------------------------

IOU_TS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
IOBB_TS = (0.1, 0.25, 0.5, 0.75, 0.9)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float]:
    """(IoU, IoBB = intersection / area of b) of two (x, y, w, h) boxes covering [x, x + w) x [y, y + h)."""
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = width * height
    union = a[2] * a[3] + b[2] * b[3] - inter
    return (inter / union if union > 0 else 0.0), (inter / (b[2] * b[3]) if b[2] * b[3] > 0 else 0.0)


def _summaries(truth: list[tuple], best_rows: list[tuple[float, float]], best_boxes: list[tuple[str, float, float]],
               images: dict[str, set], classes: tuple[str, ...], with_fp: bool = True) -> list[dict]:
    """Per (metric, t, class + Mean): accuracy, n_boxes, n_localized, false positives per image, n_classes."""
    records = []
    for metric, ts, k in (("IoU", IOU_TS, 0), ("IoBB", IOBB_TS, 1)):
        for t in ts:
            per_class = []
            for name in classes:
                values = [best[k] for row, best in zip(truth, best_rows) if row[1] == name]
                fps = sum(1 for box in best_boxes if box[0] == name and box[1 + k] <= t)
                n_images = len(images.get(name, ()))
                record = {"metric": metric, "t": t, "class_name": name, "n_boxes": len(values),
                          "n_localized": sum(v > t for v in values),
                          "accuracy": sum(v > t for v in values) / len(values) if values else math.nan,
                          "false_positives_per_image": fps / n_images if n_images and with_fp else math.nan,
                          "n_classes": int(bool(values))}
                per_class.append(record)
            defined = [r["accuracy"] for r in per_class if not math.isnan(r["accuracy"])]
            rates = [r["false_positives_per_image"] for r in per_class
                     if not math.isnan(r["false_positives_per_image"])]
            records += per_class + [{"metric": metric, "t": t, "class_name": "Mean",
                                     "n_boxes": sum(r["n_boxes"] for r in per_class),
                                     "n_localized": sum(r["n_localized"] for r in per_class),
                                     "accuracy": sum(defined) / len(defined) if defined else math.nan,
                                     "false_positives_per_image": sum(rates) / len(rates) if rates else math.nan,
                                     "n_classes": len(defined)}]
    return records


def _pointing(truth: list[tuple], points: dict[tuple[str, str], tuple[float, float]],
              boxes_of: dict[tuple[str, str], list[tuple]], classes: tuple[str, ...]) -> list[dict]:
    hits = []
    for row in truth:
        point = points.get((row[0], row[1]))
        hits.append(point is not None and any(b[0] <= point[0] < b[0] + b[2] and b[1] <= point[1] < b[1] + b[3]
                                              for b in boxes_of[(row[0], row[1])]))
    records = []
    for name in classes:
        values = [hit for row, hit in zip(truth, hits) if row[1] == name]
        records.append({"metric": "pointing", "t": math.nan, "class_name": name, "n_boxes": len(values),
                        "n_localized": sum(values), "accuracy": sum(values) / len(values) if values else math.nan,
                        "false_positives_per_image": math.nan, "n_classes": int(bool(values))})
    defined = [r["accuracy"] for r in records if not math.isnan(r["accuracy"])]
    records.append({"metric": "pointing", "t": math.nan, "class_name": "Mean",
                    "n_boxes": sum(r["n_boxes"] for r in records),
                    "n_localized": sum(r["n_localized"] for r in records),
                    "accuracy": sum(defined) / len(defined) if defined else math.nan,
                    "false_positives_per_image": math.nan, "n_classes": len(defined)})
    return records


def recompute_localization(evaluation: Path, method: str, classes: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Every number of ``localization_<method>.csv`` recomputed from ``boxes_``, ``scores_`` and
    ``baselines_<method>.csv`` alone, with plain Python (none of thoracic's scoring code); ``classes``: the
    box classes of the table (ChestX-ray14's 8 by default)."""
    from thoracic.constants import BOX_CLASS_NAMES

    classes = tuple(BOX_CLASS_NAMES) if classes is None else tuple(classes)
    boxes = pd.read_csv(evaluation / f"boxes_{method}.csv")
    scores = pd.read_csv(evaluation / f"scores_{method}.csv", dtype={"threshold": str})
    baselines = pd.read_csv(evaluation / f"baselines_{method}.csv")
    rows = scores.drop_duplicates("box_row")
    truth = list(rows[["image_id", "class_name", "x", "y", "w", "h"]].itertuples(index=False, name=None))
    boxes_of: dict[tuple[str, str], list[tuple]] = {}
    images: dict[str, set] = {}
    for image_id, name, *box in truth:
        boxes_of.setdefault((image_id, name), []).append(tuple(box))
        images.setdefault(name, set()).add(image_id)

    def score(predicted: pd.DataFrame) -> tuple[list[tuple[float, float]], list[tuple[str, float, float]]]:
        by_pair: dict[tuple[str, str], list[tuple]] = {}
        for image_id, name, *box in predicted[["image_id", "class_name", "x", "y", "w", "h"]].itertuples(
                index=False, name=None):
            by_pair.setdefault((image_id, name), []).append(tuple(box))
        best_rows = []
        for image_id, name, *box in truth:
            pairs = [_overlap(tuple(box), p) for p in by_pair.get((image_id, name), [])]
            best_rows.append((max((p[0] for p in pairs), default=0.0), max((p[1] for p in pairs), default=0.0)))
        best_boxes = []
        for (image_id, name), predicted_boxes in by_pair.items():
            for p in predicted_boxes:
                pairs = [_overlap(g, p) for g in boxes_of.get((image_id, name), [])]
                best_boxes.append((name, max((q[0] for q in pairs), default=0.0),
                                   max((q[1] for q in pairs), default=0.0)))
        return best_rows, best_boxes

    records = []
    labels = sorted(boxes["threshold"].unique().tolist())
    groups = [(str(t), boxes[boxes["threshold"] == t]) for t in labels] + ([("all", boxes)] if len(labels) > 1 else [])
    for label, predicted in groups:
        records += [{**r, "source": method, "threshold": label} for r in _summaries(truth, *score(predicted), images,
                                                                                      classes)]
    peaks = scores.drop_duplicates(["image_id", "class_name"])
    points = {(i, c): (x + 0.5, y + 0.5) for i, c, x, y in
              peaks[["image_id", "class_name", "peak_x", "peak_y"]].itertuples(index=False, name=None)}
    records += [{**r, "source": method, "threshold": ""} for r in _pointing(truth, points, boxes_of, classes)]
    for source in ("random box", "centre box"):
        mine = baselines[baselines["source"] == source]
        per_draw = []
        for _, drawn in mine.groupby("draw"):
            centres = {(i, c): (x + w / 2, y + h / 2) for i, c, x, y, w, h in
                       drawn[["image_id", "class_name", "x", "y", "w", "h"]].itertuples(index=False, name=None)}
            per_draw.append(_summaries(truth, *score(drawn), images, classes)
                            + _pointing(truth, centres, boxes_of, classes))
        for k, first in enumerate(per_draw[0]):
            accuracies = [draw[k]["accuracy"] for draw in per_draw]
            records.append({**first, "source": source, "threshold": "",
                            "accuracy": float(np.mean(accuracies)),
                            "accuracy_sd": float(np.std(accuracies, ddof=1)) if len(per_draw) > 1 else math.nan,
                            "n_localized": float(np.mean([draw[k]["n_localized"] for draw in per_draw])),
                            "false_positives_per_image": float(np.mean([draw[k]["false_positives_per_image"]
                                                                        for draw in per_draw])),
                            "n_draws": len(per_draw)})
    table = pd.DataFrame.from_records(records)
    table["accuracy_sd"] = table.get("accuracy_sd", pd.Series(math.nan, index=table.index))
    table["n_draws"] = table["n_draws"].fillna(1).astype(int) if "n_draws" in table else 1
    return table


def assert_table_recomputes(evaluation: Path, method: str, classes: tuple[str, ...] | None = None) -> pd.DataFrame:
    """``localization_<method>.csv`` equals :func:`recompute_localization` row for row (6 decimals)."""
    written = pd.read_csv(evaluation / f"localization_{method}.csv", dtype={"threshold": str})
    written["threshold"] = written["threshold"].fillna("")
    mine = recompute_localization(evaluation, method, classes)
    keys = ["source", "threshold", "metric", "t", "class_name"]
    for frame in (written, mine):
        frame["t"] = frame["t"].round(4).fillna(-1.0)
    merged = written.merge(mine, on=keys, how="outer", suffixes=("", "_recomputed"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged.loc[merged["_merge"] != "both", [*keys, "_merge"]]
    for column in ("accuracy", "accuracy_sd", "n_localized", "false_positives_per_image"):
        np.testing.assert_allclose(merged[column].to_numpy(float), merged[column + "_recomputed"].to_numpy(float),
                                   rtol=0, atol=6e-7, err_msg=column)
    for column in ("n_boxes", "n_classes", "n_draws"):
        np.testing.assert_array_equal(merged[column].to_numpy(), merged[column + "_recomputed"].to_numpy(),
                                      err_msg=column)
    return mine

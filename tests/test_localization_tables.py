"""The localization tables of a run: threshold 180 first, false positives beside every accuracy, the random
box over seeded draws, the pointing game, means that say over how many classes; and every number recomputes
from the exported CSV files (boxes, scores, baselines) with code that shares nothing with thoracic's."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_table_recomputes
from scipy import ndimage

from thoracic.constants import BOX_CLASS_NAMES
from thoracic.workflows.demo import headline_numbers
from thoracic.errors import DataError
from thoracic.evaluation.localization import baseline_accuracy, pointing_accuracy, pointing_game, random_boxes
from thoracic.evaluation.protocol import (
    BASELINE_BOX_COLUMNS,
    SCORE_COLUMNS,
    headline,
    headline_text,
    localize_boxes,
    write_localization,
)
from thoracic.reporting.runs import RunGroup, load_run_summary
from thoracic.reporting.localization_tables import (
    false_positive_table,
    localization_headline_table,
    localization_tables,
    per_threshold_table,
    pointing_table,
)

CLASSES = ("Mass", "Nodule", "Effusion", "Atelectasis", "Pneumothorax")  # 5 of the 8 box classes


def synthetic_run(rng: np.random.Generator, n_images: int = 40) -> tuple[pd.DataFrame, dict]:
    """Box rows on images of two sizes (some with two boxes of one class) and heatmaps that see some
    of the lesions (a blob near the box, sometimes elsewhere, plus noise)."""
    rows = []
    for k in range(n_images):
        width, height = (256, 256) if k % 3 else (300, 200)
        for name in rng.choice(CLASSES, size=rng.integers(1, 3), replace=False):
            for _ in range(1 + int(rng.random() < 0.2)):
                w, h = rng.uniform(15, 80, 2)
                rows.append((f"{k:03d}.png", name, rng.uniform(0, width - w), rng.uniform(0, height - h), w, h,
                             width, height))
    gt = pd.DataFrame(rows, columns=["image_id", "class_name", "x", "y", "w", "h", "original_width",
                                     "original_height"])
    gt["box_row"] = np.arange(100, 100 + len(gt))  # not 0..n-1: nothing may assume it
    heatmaps = {}
    for (image_id, name), boxes in gt.groupby(["image_id", "class_name"]):
        heatmap = rng.random((8, 8)) * 0.3
        box = boxes.iloc[0]
        if rng.random() < 0.7:  # sees the lesion
            row = int((box.y + box.h / 2) / box.original_height * 8)
            col = int((box.x + box.w / 2) / box.original_width * 8)
            heatmap[min(row, 7), min(col, 7)] += 1.0
        heatmaps[(image_id, name)] = ndimage.gaussian_filter(heatmap, 0.6)
    return gt, heatmaps


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A run folder whose evaluation/ holds what ``thoracic localize`` writes, for synthetic heatmaps."""
    gt, heatmaps = synthetic_run(np.random.default_rng(0))
    run = tmp_path_factory.mktemp("run") / "baseline"
    evaluation = run / "evaluation"
    evaluation.mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  name: baseline\nseed: 0\n")
    tables = localize_boxes(gt, heatmaps, "native", draws=100, seed=3, class_names=BOX_CLASS_NAMES)
    write_localization(evaluation, "native", tables, {"method": "native"})
    return run, gt


def test_every_number_of_the_table_recomputes_from_the_exported_csvs(written: tuple[Path, pd.DataFrame]) -> None:
    run, gt = written
    evaluation = run / "evaluation"
    assert list(pd.read_csv(evaluation / "scores_native.csv").columns) == SCORE_COLUMNS
    assert list(pd.read_csv(evaluation / "baselines_native.csv").columns) == BASELINE_BOX_COLUMNS
    recomputed = assert_table_recomputes(evaluation, "native")
    # what the table holds: the method at 60, 180 and pooled, its pointing game, the baselines
    table = pd.read_csv(evaluation / "localization_native.csv", dtype={"threshold": str}).fillna({"threshold": ""})
    assert set(zip(table["source"], table["threshold"])) == {
        ("native", "60"), ("native", "180"), ("native", "all"), ("native", ""), ("random box", ""), ("centre box", "")}
    mean = table[(table["class_name"] == "Mean")]
    assert (mean["n_classes"] == len(CLASSES)).all()  # 5 of 8 classes have boxes
    assert (mean.loc[mean["metric"] != "pointing", "n_boxes"] == len(gt)).all()
    random = mean[(mean["source"] == "random box")]
    assert (random["n_draws"] == 100).all() and (random["accuracy_sd"] > 0).any()
    assert mean.loc[mean["metric"] != "pointing", "false_positives_per_image"].notna().all()
    # the headline (demo, README, localize) reads the same numbers at threshold 180
    numbers = headline(table, "native")
    at = recomputed.set_index(["source", "threshold", "metric", "t", "class_name"])["accuracy"]
    assert numbers["IoU>0.3"] == pytest.approx(at[("native", "180", "IoU", 0.3, "Mean")], abs=1e-6)
    assert numbers["IoBB>0.25 pooled"] == pytest.approx(at[("native", "all", "IoBB", 0.25, "Mean")], abs=1e-6)
    assert numbers["IoU>0.3 random"] == pytest.approx(at[("random box", "", "IoU", 0.3, "Mean")], abs=1e-6)
    assert numbers["pointing centre"] == pytest.approx(at[("centre box", "", "pointing", -1.0, "Mean")], abs=1e-6)
    assert numbers["classes"] == len(CLASSES)
    text = headline_text(numbers, "native")
    assert "heatmap threshold 180" in text and f"over {len(CLASSES)} of 8 box classes" in text


def test_report_tables_show_threshold_180_with_false_positives_and_class_counts(
        written: tuple[Path, pd.DataFrame]) -> None:
    run, gt = written
    groups = [RunGroup("baseline", [load_run_summary(run)])]
    recomputed = assert_table_recomputes(run / "evaluation", "native").set_index(
        ["source", "threshold", "metric", "t", "class_name"])

    def number(source: str, threshold: str, metric: str, t: float, name: str, column: str = "accuracy") -> float:
        return float(recomputed.loc[(source, threshold, metric, t, name), column])

    def fp(source: str, threshold: str, metric: str, t: float, name: str) -> float:
        return number(source, threshold, metric, t, name, "false_positives_per_image")

    tables = localization_tables(groups)
    iou = tables["IoU > 0.3"]
    mean_label = f"Mean over {len(CLASSES)} of 8 classes"
    column = "baseline, native heatmap"
    assert list(iou.index) == [*BOX_CLASS_NAMES, mean_label]
    assert iou.loc["Mass", "box rows"] == str((gt["class_name"] == "Mass").sum())
    assert iou.loc["Cardiomegaly", "box rows"] == "0" and iou.loc["Cardiomegaly", column] == "n/a"
    for name, label in (("Mass", "Mass"), ("Mean", mean_label)):
        assert iou.loc[label, column] == (f"{number('native', '180', 'IoU', 0.3, name):.4f} "
                                                     f"({fp('native', '180', 'IoU', 0.3, name):.2f})")
        assert iou.loc[label, "random box"] == (f"{number('random box', '', 'IoU', 0.3, name):.4f} ± "
                                                f"{number('random box', '', 'IoU', 0.3, name, 'accuracy_sd'):.4f} "
                                                f"({fp('random box', '', 'IoU', 0.3, name):.2f})")
        assert iou.loc[label, "centre box"].startswith(f"{number('centre box', '', 'IoU', 0.3, name):.4f} (")
    head = localization_headline_table(groups).iloc[0]
    assert head["classes"] == f"{len(CLASSES)} of 8 classes"
    assert head["IoBB > 0.25, threshold 180 (FP)"].startswith(f"{number('native', '180', 'IoBB', 0.25, 'Mean'):.3f} (")
    assert head["IoBB > 0.25, threshold 60"] == f"{number('native', '60', 'IoBB', 0.25, 'Mean'):.3f}"
    assert head["IoBB > 0.25, 60 and 180 pooled"] == f"{number('native', 'all', 'IoBB', 0.25, 'Mean'):.3f}"
    assert head["pointing game"] == f"{number('native', '', 'pointing', -1.0, 'Mean'):.3f}"
    per_threshold = per_threshold_table(groups)
    assert per_threshold["heatmap threshold"].tolist() == ["180", "60", "60 and 180 pooled"]  # the paper's first
    assert per_threshold.loc[1, "IoU>0.5"] == (f"{number('native', '60', 'IoU', 0.5, 'Mean'):.3f} "
                                               f"({fp('native', '60', 'IoU', 0.5, 'Mean'):.2f})")
    false_positives = false_positive_table(groups)
    assert false_positives.loc["IoBB > 0.5", column] == f"{fp('native', '180', 'IoBB', 0.5, 'Mean'):.2f}"
    pointing = pointing_table(groups)
    assert pointing.loc["Nodule", column] == f"{number('native', '', 'pointing', -1.0, 'Nodule'):.4f}"
    assert pointing.loc[mean_label, "random box centres"].count("±") == 1


def test_demo_headline_reads_threshold_180_from_the_written_table(written: tuple[Path, pd.DataFrame]) -> None:
    run, _ = written
    (run / "evaluation" / "auc_test.json").write_text(json.dumps({"mean_auc": 0.9}))
    row = headline_numbers({"baseline": run}, {"baseline": ("native",)}).iloc[0]
    table = pd.read_csv(run / "evaluation" / "localization_native.csv", dtype={"threshold": str})
    mean = table[(table["class_name"] == "Mean") & (table["metric"] == "IoU") & np.isclose(table["t"], 0.3)]
    assert row["IoU>0.3 model"] == pytest.approx(mean.loc[mean["threshold"] == "180", "accuracy"].item())
    assert row["IoU>0.3 pooled"] == pytest.approx(mean.loc[mean["threshold"] == "all", "accuracy"].item())
    assert row["IoU>0.3 random sd"] == pytest.approx(
        mean.loc[mean["source"] == "random box", "accuracy_sd"].item())


def test_random_baseline_is_mean_and_sd_over_seeded_draws() -> None:
    gt, _ = synthetic_run(np.random.default_rng(1), n_images=20)
    sizes = {i: (int(h), int(w)) for i, w, h in gt[["image_id", "original_width", "original_height"]].itertuples(
        index=False)}
    boxes = random_boxes(gt, sizes, seed=5, draws=30)
    pairs = gt.drop_duplicates(["image_id", "class_name"])
    assert len(boxes) == 30 * len(pairs) and sorted(boxes["draw"].unique()) == list(range(30))
    # the first draw is the single draw of the same seed; the same box-size model (a class's own sizes)
    pd.testing.assert_frame_equal(boxes[boxes["draw"] == 0].reset_index(drop=True),
                                  random_boxes(gt, sizes, seed=5).reset_index(drop=True))
    own = gt.groupby("class_name")["w"].apply(set)
    assert all(w in own[c] or w == sizes[i][1] for i, c, w in boxes[["image_id", "class_name", "w"]].itertuples(
        index=False))
    assert ((boxes["x"] >= 0) & (boxes["x"] + boxes["w"] <= [sizes[i][1] for i in boxes["image_id"]])).all()
    table = baseline_accuracy(gt, boxes)
    per_draw = [baseline_accuracy(gt, boxes[boxes["draw"] == d].drop(columns="draw")) for d in range(30)]

    def mean_row(frame: pd.DataFrame) -> pd.Series:
        rows = frame[(frame["class_name"] == "Mean") & (frame["metric"] == "IoBB")]
        return rows[np.isclose(rows["t"], 0.1)].iloc[0]

    values = [mean_row(frame)["accuracy"] for frame in per_draw]
    assert mean_row(table)["accuracy"] == pytest.approx(np.mean(values))
    assert mean_row(table)["accuracy_sd"] == pytest.approx(np.std(values, ddof=1))
    assert mean_row(table)["n_draws"] == 30 and table["threshold"].eq("").all()
    assert not random_boxes(gt, sizes, seed=6, draws=2)[["x", "y"]].equals(boxes[boxes["draw"] < 2][["x", "y"]])


def test_pointing_game_by_hand() -> None:
    gt = pd.DataFrame({"image_id": ["a", "a", "a", "b"], "class_name": ["Mass", "Mass", "Nodule", "Mass"],
                       "x": [0.0, 50.0, 0.0, 10.0], "y": [0.0, 50.0, 0.0, 10.0], "w": [10.0, 10.0, 5.0, 5.0],
                       "h": [10.0, 10.0, 5.0, 5.0], "box_row": [1, 2, 3, 4]})
    points = pd.DataFrame({"image_id": ["a", "a", "b"], "class_name": ["Mass", "Nodule", "Mass"],
                           "x": [55.5, 9.5, 15.0], "y": [55.5, 9.5, 12.0]})
    hits = pointing_game(gt, points)
    # a/Mass: the point is in the second Mass box, so both Mass rows of image a hit; the Nodule point
    # lies in the Mass box, not in a Nodule box; b's point is on the box's right edge: [x, x + w) excludes it
    assert dict(zip(hits["box_row"], hits["hit"])) == {1: True, 2: True, 3: False, 4: False}
    table = pointing_accuracy(gt, hits, class_names=["Mass", "Nodule"])
    at = table.set_index("class_name")
    assert at.loc["Mass", "accuracy"] == pytest.approx(2 / 3) and at.loc["Nodule", "accuracy"] == 0.0
    assert at.loc["Mean", "accuracy"] == pytest.approx((2 / 3 + 0.0) / 2) and at.loc["Mean", "n_classes"] == 2
    assert math.isnan(at.loc["Mean", "t"]) and (table["metric"] == "pointing").all()
    missing = pointing_game(gt, points.iloc[:1])  # pairs without a point miss
    assert dict(zip(missing["box_row"], missing["hit"])) == {1: True, 2: True, 3: False, 4: False}
    with pytest.raises(DataError, match="several points"):
        pointing_game(gt, pd.concat([points, points]))

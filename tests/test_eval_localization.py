"""IoU / IoBB on hand-made boxes, box extraction on synthetic heatmaps, row-wise scoring, baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from thoracic.evaluation.localization import (
    centre_boxes,
    iobb,
    iou,
    localization_accuracy,
    random_boxes,
    score_localization,
)
from thoracic.heatmaps.boxes import (
    boxes_from_heatmap,
    boxes_from_heatmaps,
    extract_boxes,
    interpolation_matrix,
    legacy_cell_centres,
)


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    ("gt", "pred", "expected_iou", "expected_iobb"),
    [
        ((0, 0, 10, 10), (20, 20, 10, 10), 0.0, 0.0),  # disjoint
        ((0, 0, 10, 10), (10, 0, 10, 10), 0.0, 0.0),  # touching along an edge
        ((0, 0, 10, 10), (10, 10, 5, 5), 0.0, 0.0),  # touching at a corner
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0, 1.0),  # identical
        ((0, 0, 10, 10), (5, 0, 10, 10), 50 / 150, 0.5),  # half overlap
        ((0, 0, 100, 100), (10, 10, 20, 20), 400 / 10000, 1.0),  # prediction inside the ground truth
        ((10, 10, 20, 20), (0, 0, 100, 100), 400 / 10000, 400 / 10000),  # ground truth inside the prediction
        # the seed code's failure case: at 256 px a 251 x 251 box around a 20 x 20 nodule
        ((100, 100, 20, 20), (2, 2, 251, 251), 400 / 63001, 400 / 63001),
    ],
)
def test_iou_and_iobb_on_hand_made_boxes(gt, pred, expected_iou, expected_iobb) -> None:
    assert iou(gt, pred) == pytest.approx(expected_iou)
    assert iou(pred, gt) == pytest.approx(expected_iou)  # symmetric
    assert iobb(gt, pred) == pytest.approx(expected_iobb)


def test_seed_failure_case_is_not_rewarded() -> None:
    value = float(iobb((100, 100, 20, 20), (2, 2, 251, 251)))
    assert value == pytest.approx(0.0063, abs=5e-5)  # the seed code scored it 1.10
    assert value < 0.1


def test_geometry_broadcasts_and_handles_empty_boxes() -> None:
    gt = np.array([[0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 10, 10]])
    np.testing.assert_allclose(iobb(gt, pred), [1.0, 0.0, 0.25])
    np.testing.assert_allclose(iou(gt, pred), [1.0, 0.0, 25 / 175])


# ---------------------------------------------------------------------------------------------- extraction
def _full_resolution_reference(heatmap: np.ndarray, threshold: float, size: tuple[int, int]) -> set[tuple]:
    """The plain algorithm: torch bilinear upsampling, min-max to 0-255, threshold, 8-connected labels."""
    up = torch.nn.functional.interpolate(torch.from_numpy(heatmap)[None, None], size=size, mode="bilinear",
                                         align_corners=False)[0, 0].numpy()
    normalised = (up - up.min()) / (up.max() - up.min()) * 255
    labels, _ = ndimage.label(normalised > threshold, structure=np.ones((3, 3)))
    return {(s[1].start, s[0].start, s[1].stop - s[1].start, s[0].stop - s[0].start)
            for s in ndimage.find_objects(labels)}


def _as_set(boxes: np.ndarray) -> set[tuple]:
    return {tuple(int(v) for v in box) for box in boxes}


def test_interpolation_matches_torch() -> None:
    heatmap = np.random.default_rng(0).random((8, 6))
    for size in [(1024, 1024), (1000, 700), (5, 3)]:
        expected = torch.nn.functional.interpolate(torch.from_numpy(heatmap)[None, None], size=size,
                                                   mode="bilinear", align_corners=False)[0, 0].numpy()
        got = interpolation_matrix(8, size[0]) @ heatmap @ interpolation_matrix(6, size[1]).T
        np.testing.assert_allclose(got, expected, atol=1e-12)


def _two_blobs() -> np.ndarray:
    """32 x 32 map: a strong blob (1.0) top-left, a weaker one (0.5) bottom-right, zeros elsewhere."""
    heatmap = np.zeros((32, 32))
    heatmap[4:8, 4:10] = 1.0
    heatmap[20:26, 18:28] = 0.5
    return heatmap


def _legacy(shape: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The align_corners=False cell centres (what the torch reference above interpolates between)."""
    return legacy_cell_centres(shape[0], size[0]), legacy_cell_centres(shape[1], size[1])


def test_box_extraction_finds_known_blobs_at_both_thresholds() -> None:
    heatmap = _two_blobs()
    found = boxes_from_heatmaps(heatmap, [60, 180], 1024, cell_centres=_legacy((32, 32), (1024, 1024)))
    # at 60/255 both blobs; at 180/255 only the strong one (the weak one peaks at 0.5 * 255 = 127.5)
    assert len(found[60]) == 2 and len(found[180]) == 1
    # hand-derived edges: low-res pixel k covers output pixels [32k, 32k + 32); a plateau over rows 4..7
    # ramps linearly to 0 over one low-res pixel, so value > t between source rows 3 + t and 8 - t,
    # i.e. output rows i with (i + 0.5) / 32 - 0.5 in that range
    def extent(first: int, last: int, t: float) -> tuple[int, int]:
        lo = int(np.floor(32 * (first - 1 + t + 0.5) - 0.5)) + 1
        hi = int(np.ceil(32 * (last + 1 - t + 0.5) - 0.5)) - 1
        return lo, hi

    top, bottom = extent(4, 7, 180 / 255)
    left, right = extent(4, 9, 180 / 255)
    np.testing.assert_array_equal(found[180].boxes[0], [left, top, right - left + 1, bottom - top + 1])
    # the weak blob at 60 (relative to its own height 0.5): value > 60/255 <=> ramp > 120/255
    top, bottom = extent(20, 25, 120 / 255)
    left, right = extent(18, 27, 120 / 255)
    assert (left, top, right - left + 1, bottom - top + 1) in _as_set(found[60].boxes)
    # and both agree with the plain full-resolution algorithm, in original pixels
    for threshold in (60, 180):
        assert _as_set(found[threshold].boxes) == _full_resolution_reference(heatmap, threshold, (1024, 1024))
    assert found[180].scores[0] == pytest.approx(1.0, abs=0.01)


def test_box_extraction_in_non_square_original_pixels_and_options() -> None:
    heatmap = _two_blobs()
    size = (1000, 700)
    legacy = _legacy(heatmap.shape, size)
    boxes = boxes_from_heatmap(heatmap, 60, size, cell_centres=legacy).boxes
    assert _as_set(boxes) == _full_resolution_reference(heatmap, 60, size)
    largest = boxes_from_heatmap(heatmap, 60, size, largest_only=True, cell_centres=legacy)
    assert len(largest) == 1 and largest.boxes[0][2] * largest.boxes[0][3] == max(b[2] * b[3] for b in boxes)
    assert len(boxes_from_heatmap(np.full((8, 8), 0.3), 60, 1024)) == 0  # constant map: no region
    assert len(boxes_from_heatmap(heatmap, 255, 1024)) == 0  # nothing strictly above the maximum


# ---------------------------------------------------------------------------------------------- scoring
def _ground_truth() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": ["a.png", "a.png", "a.png", "b.png"],
        "class_name": ["Mass", "Nodule", "Mass", "Effusion"],
        "x": [0.0, 500.0, 600.0, 100.0], "y": [0.0, 500.0, 600.0, 100.0],
        "w": [100.0, 20.0, 100.0, 200.0], "h": [100.0, 20.0, 100.0, 200.0],
        "box_row": [10, 11, 12, 13],
    })


def _predicted() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": ["a.png", "a.png", "a.png", "b.png"],
        "class_name": ["Mass", "Mass", "Nodule", "Effusion"],
        "threshold": [60, 60, 60, 180],
        "x": [0.0, 650.0, 0.0, 100.0], "y": [0.0, 600.0, 0.0, 100.0],
        "w": [100.0, 50.0, 100.0, 100.0], "h": [100.0, 100.0, 100.0, 200.0],
        "score": 1.0,
    })


def test_scoring_keeps_every_row_of_a_multi_box_image() -> None:
    scores = score_localization(_ground_truth(), _predicted(), pooled=False)
    by_row = scores[scores["threshold"] == "60"].set_index("box_row")
    assert sorted(scores["box_row"].unique()) == [10, 11, 12, 13]
    assert len(scores) == 4 * 2  # 4 rows x thresholds 60 and 180
    # each row against its own class and box: both Mass rows of image a are localized by their own box
    assert by_row.loc[10, "best_iou"] == pytest.approx(1.0)
    assert by_row.loc[12, "best_iou"] == pytest.approx(0.5) and by_row.loc[12, "best_iobb"] == pytest.approx(1.0)
    # the Nodule row is scored against the Nodule box (which misses it), never against the Mass boxes
    assert by_row.loc[11, "best_iou"] == 0.0 and by_row.loc[11, "n_predicted"] == 1
    assert by_row.loc[13, "n_predicted"] == 0 and by_row.loc[13, "best_iobb"] == 0.0  # its box is at 180 only
    pooled = score_localization(_ground_truth(), _predicted())
    assert set(pooled["threshold"]) == {"60", "180", "all"}
    assert pooled[(pooled["threshold"] == "all") & (pooled["box_row"] == 13)]["best_iobb"].item() == 1.0


def test_accuracy_and_false_positives_by_hand() -> None:
    table = localization_accuracy(_ground_truth(), _predicted(), class_names=["Mass", "Nodule", "Effusion"],
                                  iou_thresholds=[0.5], iobb_thresholds=[0.5, 0.9])
    at = table.set_index(["threshold", "metric", "t", "class_name"])
    # Mass at T=60: IoU 1.0 and 0.5 -> strictly above 0.5 only the first
    assert at.loc[("60", "IoU", 0.5, "Mass"), "accuracy"] == 0.5
    assert at.loc[("60", "IoBB", 0.9, "Mass"), "accuracy"] == 1.0
    assert at.loc[("60", "IoU", 0.5, "Nodule"), "accuracy"] == 0.0
    # false positives: the Nodule box localizes nothing -> 1 FP on 1 image with a Nodule box
    assert at.loc[("60", "IoBB", 0.5, "Nodule"), "false_positives_per_image"] == 1.0
    assert at.loc[("60", "IoBB", 0.5, "Mass"), "false_positives_per_image"] == 0.0
    assert at.loc[("all", "IoBB", 0.5, "Effusion"), "accuracy"] == 1.0
    assert at.loc[("60", "IoU", 0.5, "Mean"), "accuracy"] == pytest.approx(np.mean([0.5, 0.0, 0.0]))
    assert at.loc[("60", "IoU", 0.5, "Mass"), "n_boxes"] == 2


def test_baselines_are_seeded_and_shaped() -> None:
    gt = _ground_truth()
    centre = centre_boxes(gt, 1024)
    mass = centre[centre["class_name"] == "Mass"].iloc[0]
    assert (mass["w"], mass["h"]) == (100.0, 100.0)
    assert mass["x"] + mass["w"] / 2 == 512 and mass["y"] + mass["h"] / 2 == 512
    assert len(centre) == 3  # one per (image, class)
    first, again, other = random_boxes(gt, 1024, seed=1), random_boxes(gt, 1024, seed=1), random_boxes(gt, 1024, 2)
    pd.testing.assert_frame_equal(first, again)
    assert not first[["x", "y"]].equals(other[["x", "y"]])
    assert ((first["x"] >= 0) & (first["x"] + first["w"] <= 1024)).all()


def test_random_boxes_lie_inside_each_image_with_their_class_sizes() -> None:
    """Every random box keeps a (w, h) pair of its class's ground truth (clipped to the image) and lies in
    its image, its corner uniform over the free range, along both axes of non-square images."""
    gt = pd.DataFrame({
        "image_id": ["a.png", "a.png", "b.png", "b.png", "c.png"],
        "class_name": ["Mass", "Nodule", "Mass", "Effusion", "Effusion"],
        "x": [0.0, 50.0, 10.0, 100.0, 0.0], "y": [0.0, 60.0, 10.0, 100.0, 0.0],
        "w": [300.0, 40.0, 150.0, 500.0, 90.0], "h": [120.0, 30.0, 450.0, 250.0, 700.0],
    })
    sizes = {"a.png": (600, 1000), "b.png": (1000, 400), "c.png": (500, 500)}  # (height, width)
    boxes = random_boxes(gt, sizes, seed=3, draws=400)
    height = boxes["image_id"].map(lambda i: sizes[i][0]).to_numpy(float)
    width = boxes["image_id"].map(lambda i: sizes[i][1]).to_numpy(float)
    pools = {name: {(w, h) for w, h in part[["w", "h"]].itertuples(index=False)}
             for name, part in gt.groupby("class_name")}
    for row, w_max, h_max in zip(boxes.itertuples(index=False), width, height):
        assert any((row.w, row.h) == (min(w, w_max), min(h, h_max)) for w, h in pools[row.class_name])
    assert ((boxes["x"] >= 0) & (boxes["x"] + boxes["w"] <= width)).all()
    assert ((boxes["y"] >= 0) & (boxes["y"] + boxes["h"] <= height)).all()
    for position, free in ((boxes["x"], width - boxes["w"]), (boxes["y"], height - boxes["h"])):
        fraction = (position / free.where(free > 0)).dropna()  # where the box leaves room to move
        assert fraction.min() < 0.02 and fraction.max() > 0.98 and abs(fraction.mean() - 0.5) < 0.03


def _synthetic_rows(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    images = [f"{i:05d}.png" for i in range(int(rows * 0.9))]
    ids = images + list(rng.choice(images, size=rows - len(images), replace=False))
    w, h = rng.uniform(40, 300, rows), rng.uniform(40, 300, rows)
    return pd.DataFrame({"image_id": ids, "class_name": rng.choice(["Mass", "Nodule", "Effusion"], size=rows),
                         "x": rng.uniform(0, 1024 - w), "y": rng.uniform(0, 1024 - h), "w": w, "h": h})


def test_heatmaps_that_see_the_lesion_beat_both_baselines() -> None:
    rng = np.random.default_rng(0)
    gt = _synthetic_rows(120, rng)
    heatmaps = {}
    for (image_id, class_name), rows in gt.groupby(["image_id", "class_name"]):
        heatmap = np.zeros((32, 32))
        for row in rows.itertuples():  # a blob over each lesion, as a good model's CAM would be
            heatmap[int(row.y // 32):int((row.y + row.h) // 32) + 1, int(row.x // 32):int((row.x + row.w) // 32) + 1] = 1
        heatmaps[(image_id, class_name)] = ndimage.gaussian_filter(heatmap, 0.7)
    boxes = extract_boxes(heatmaps, 1024)
    method = localization_accuracy(gt, boxes, class_names=["Mass", "Nodule", "Effusion"])
    for baseline in (random_boxes(gt, 1024), centre_boxes(gt, 1024)):
        other = localization_accuracy(gt, baseline, class_names=["Mass", "Nodule", "Effusion"], pooled=False)
        for metric, t in (("IoU", 0.3), ("IoBB", 0.5)):
            ours = method[(method["threshold"] == "all") & (method["metric"] == metric) & (method["t"] == t)
                          & (method["class_name"] == "Mean")]["accuracy"].item()
            theirs = other[(other["metric"] == metric) & (other["t"] == t)
                           & (other["class_name"] == "Mean")]["accuracy"].item()
            assert ours > theirs + 0.2


def test_984_rows_at_both_thresholds_are_all_scored() -> None:
    """The real set's size (984 rows, several boxes on some images): every row is scored at both
    heatmap thresholds and pooled, and every heatmap yields a box at each threshold (its normalised
    peak is 255). The time this takes is measured by benchmarks/bench_localization.py."""
    rng = np.random.default_rng(0)
    gt = _synthetic_rows(984, rng)
    pairs = gt.drop_duplicates(["image_id", "class_name"])
    heatmaps = {(i, c): ndimage.gaussian_filter(rng.random((8, 8)), 1.0)
                for i, c in zip(pairs["image_id"], pairs["class_name"])}
    boxes = extract_boxes(heatmaps, 1024)
    assert set(boxes["threshold"]) == {60, 180}
    for threshold in (60, 180):
        found = boxes[boxes["threshold"] == threshold].drop_duplicates(["image_id", "class_name"])
        assert len(found) == len(pairs)
    scores = score_localization(gt.assign(box_row=np.arange(984)), boxes)
    assert set(scores["threshold"].astype(str)) == {"60", "180", "all"}
    for _, group in scores.groupby("threshold"):
        assert sorted(group["box_row"]) == list(range(984))
        assert (group["n_predicted"] >= 1).all()
    table = localization_accuracy(gt, boxes, class_names=["Mass", "Nodule", "Effusion"])
    counts = table[(table["threshold"] == "all") & (table["class_name"] != "Mean")]
    assert counts.groupby("class_name")["n_boxes"].first().sum() == 984

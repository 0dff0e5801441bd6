"""Box extraction is exactly the plain algorithm: seeded random maps, sizes, registrations and thresholds.

The plain algorithm, written out here with nothing of the fast path: materialise the full-resolution map
with ``upsample_heatmap``, min-max normalise it to 0-255, keep the pixels strictly above T, label them
with ``scipy.ndimage.label`` (8-connectivity), one tight box per region, largest region first (equal
areas in label order). ``extract_boxes`` / ``boxes_from_heatmaps`` must give the same boxes, region
areas (pixel counts) and scores (peak normalised value / 255), bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from thoracic.errors import DataError
from thoracic.heatmaps.boxes import (
    boxes_from_heatmap,
    boxes_from_heatmaps,
    extract_boxes,
    heatmap_peak,
    heatmap_peaks,
    interpolation_matrix,
    legacy_cell_centres,
    normalize_heatmap,
    upsample_heatmap,
)

MAP_SHAPES = [(5, 5), (8, 8), (16, 16), (32, 32)]
KINDS = ("smooth", "noise", "plateaus", "border", "ramp", "twins")


def plain_regions(heatmap: np.ndarray, thresholds: list[float], size: tuple[int, int],
                  centres: tuple[np.ndarray, np.ndarray] | None = None) -> dict[float, tuple]:
    """Per threshold: (boxes (K, 4) x, y, w, h; scores; areas) of the plain full-resolution algorithm."""
    normalised = normalize_heatmap(upsample_heatmap(heatmap, size, centres))
    result = {}
    for threshold in thresholds:
        labels, count = ndimage.label(normalised > threshold, structure=np.ones((3, 3), dtype=bool))
        if count == 0:
            result[threshold] = (np.zeros((0, 4)), np.zeros(0), np.zeros(0))
            continue
        slices = ndimage.find_objects(labels)
        boxes = np.array([[c.start, r.start, c.stop - c.start, r.stop - r.start] for r, c in slices], dtype=float)
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(float)
        peaks = np.array([normalised[sl][labels[sl] == k + 1].max() for k, sl in enumerate(slices)])
        order = np.argsort(-areas, kind="stable")
        result[threshold] = (boxes[order], np.clip(peaks[order] / 255.0, 0.0, 1.0), areas[order])
    return result


def random_map(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    if kind == "smooth":  # CAM-like
        return ndimage.gaussian_filter(rng.random(shape), max(shape) / 8) * rng.uniform(0.1, 50)
    if kind == "noise":  # many small regions, some closer than a few pixels
        return rng.standard_normal(shape)
    if kind == "plateaus":  # equal values: flat segments, ties at the threshold and between areas
        return np.round(rng.random(shape) * 3)
    if kind == "border":  # the peak on a border cell: thin regions along the image edge
        heatmap = rng.random(shape) * 0.5
        edge = rng.integers(4)
        index = rng.integers(0, shape[1] if edge < 2 else shape[0])
        if edge < 2:
            heatmap[(0, -1)[edge], index] = 1.0
        else:
            heatmap[index, (0, -1)[edge - 2]] = 1.0
        return heatmap
    if kind == "ramp":  # rises towards one edge: at high thresholds a sliver of a few rows or columns
        ramp = np.add.outer(np.arange(shape[0]) * rng.uniform(-1, 1), np.arange(shape[1]) * rng.uniform(-1, 1))
        return ramp + rng.random(shape) * 1e-3
    heatmap = np.zeros(shape)  # "twins": two equal, mirrored peaks (regions of equal area)
    heatmap[shape[0] // 2, 1] = heatmap[shape[0] // 2, shape[1] - 2] = 1.0
    return heatmap


def registrations(rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int]) -> dict:
    """align_corners=False, None (the default: the geometric registration of a ResNet at 256 px), cell k at
    stride * k, and random increasing centres (some outside)."""
    strided = tuple(np.arange(n) * (s / n) for n, s in zip(shape, size))
    scattered = []
    for n, s in zip(shape, size):
        centres = np.sort(rng.uniform(-0.3 * s, 1.3 * s, n))
        while np.any(np.diff(centres) <= 0):
            centres = np.sort(rng.uniform(-0.3 * s, 1.3 * s, n))
        scattered.append(centres)
    legacy = tuple(legacy_cell_centres(n, s) for n, s in zip(shape, size))
    return {"legacy": legacy, "default": None, "strided": strided, "random": tuple(scattered)}


def thresholds_for(rng: np.random.Generator, n_uniform: int) -> list[float]:
    """Uniform thresholds, one near the top (thin regions) and the paper's 180; distinct as ints (the box
    table stores ``int(round(T))``)."""
    while True:
        values = [*rng.uniform(0, 255, n_uniform).tolist(), float(rng.uniform(250, 255)), 180.0]
        if len({int(round(v)) for v in values}) == len(values):
            return values


def assert_same(found, expected, context: str) -> None:
    boxes, scores, areas = expected
    assert len(found) == len(boxes), f"{context}: {len(found)} regions, plain algorithm {len(boxes)}"
    np.testing.assert_array_equal(found.boxes, boxes, err_msg=context)
    np.testing.assert_array_equal(found.areas, areas, err_msg=context)
    np.testing.assert_array_equal(found.scores, scores, err_msg=context)


@pytest.mark.parametrize(("size", "kinds_per_case", "n_uniform"),
                         [((64, 64), 6, 4), ((256, 256), 6, 2), ((1024, 1024), 2, 1), ((256, 64), 3, 2)])
def test_extraction_equals_the_plain_algorithm(size: tuple[int, int], kinds_per_case: int, n_uniform: int) -> None:
    """Every map shape x registration, map kinds and thresholds drawn (seeded) per case."""
    rng = np.random.default_rng(size[0] * 7 + size[1])
    checked = 0
    for shape in MAP_SHAPES:
        for name, centres in registrations(rng, shape, size).items():
            kinds = rng.choice(KINDS, kinds_per_case, replace=False)
            maps = {(f"{kind}", "c"): random_map(rng, shape, kind) for kind in kinds}
            thresholds = thresholds_for(rng, n_uniform)
            # the batched path, with the registration as data, and the one-map path
            table = extract_boxes(maps, size, thresholds, registration=lambda s, o, c=centres: c)
            for key, heatmap in maps.items():
                single = boxes_from_heatmaps(heatmap, thresholds, size, cell_centres=centres)
                plain = plain_regions(heatmap, thresholds, size, centres)
                for threshold in thresholds:
                    expected = plain[threshold]
                    context = f"{size} {shape} {name} {key[0]} T={threshold}"
                    assert_same(single[threshold], expected, context)
                    mine = table[(table["image_id"] == key[0]) & (table["threshold"] == int(round(threshold)))]
                    np.testing.assert_array_equal(mine[["x", "y", "w", "h"]].to_numpy(), expected[0], context)
                    np.testing.assert_array_equal(mine["area"].to_numpy(), expected[2], context)
                    np.testing.assert_array_equal(mine["score"].to_numpy(), expected[1], context)
                    checked += 1
    assert checked >= len(MAP_SHAPES) * 3 * kinds_per_case * (n_uniform + 2)


def test_largest_only_keeps_the_plain_algorithm_s_largest_region() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        heatmap = rng.standard_normal((8, 8))
        boxes, scores, areas = plain_regions(heatmap, [100.0], (256, 256))[100.0]
        largest = boxes_from_heatmap(heatmap, 100.0, 256, largest_only=True)
        assert len(largest) == 1
        np.testing.assert_array_equal(largest.boxes[0], boxes[0])
        assert largest.areas[0] == areas[0] == areas.max()


def test_regions_thinner_and_closer_than_a_grid_step_stay_apart() -> None:
    """Stripes 4 px wide, 4 px apart (a grid of every 8th pixel saw them merged or not at all)."""
    heatmap = np.zeros((32, 32))
    heatmap[:, ::2] = 1.0
    legacy = (legacy_cell_centres(32, 256), legacy_cell_centres(32, 256))
    found = boxes_from_heatmap(heatmap, 127.5, 256, cell_centres=legacy)
    expected = plain_regions(heatmap, [127.5], (256, 256), legacy)[127.5]
    assert len(found) == len(expected[0]) == 16
    assert_same(found, expected, "stripes")
    assert set(found.boxes[:, 2].tolist()) <= {4.0, 5.0, 8.0}  # each stripe its own box


def test_sliver_on_the_image_border_is_exact() -> None:
    """The map's peak row is its first one: near 255 only a few full-resolution rows at the top remain
    (with align_corners=False the rows above the first cell centre are all at the peak)."""
    heatmap = np.tile(np.linspace(1.0, 0.0, 32)[:, None], (1, 5))
    legacy = (legacy_cell_centres(32, 1024), legacy_cell_centres(5, 1024))
    for centres in (legacy, (np.arange(32) * 32.0, np.arange(5) * 1024 / 5)):
        thresholds = [252.0, 254.0, 254.9]
        plain = plain_regions(heatmap, thresholds, (1024, 1024), centres)
        found = boxes_from_heatmaps(heatmap, thresholds, 1024, cell_centres=centres)
        for threshold in thresholds:
            assert_same(found[threshold], plain[threshold], f"sliver T={threshold}")
            assert found[threshold].boxes[0][1] == 0 and found[threshold].boxes[0][3] < 32  # thinner than a cell
            assert found[threshold].boxes[0][2] == 1024


def test_upsampling_is_torch_bilinear_and_the_interpolation_matrix() -> None:
    heatmap = np.random.default_rng(0).random((8, 6))
    for size in [(1024, 1024), (1000, 700), (5, 3)]:
        expected = torch.nn.functional.interpolate(torch.from_numpy(heatmap)[None, None], size=size,
                                                   mode="bilinear", align_corners=False)[0, 0].numpy()
        legacy = (legacy_cell_centres(8, size[0]), legacy_cell_centres(6, size[1]))
        np.testing.assert_allclose(upsample_heatmap(heatmap, size, legacy), expected, atol=1e-12)
        np.testing.assert_allclose(interpolation_matrix(8, size[0]) @ heatmap @ interpolation_matrix(6, size[1]).T,
                                   expected, atol=1e-12)
        centres = (legacy_cell_centres(8, size[0]) + 3.0, np.arange(6) * size[1] / 6)
        through_matrix = interpolation_matrix(8, size[0], centres[0]) @ heatmap \
            @ interpolation_matrix(6, size[1], centres[1]).T
        np.testing.assert_allclose(upsample_heatmap(heatmap, size, centres), through_matrix, atol=1e-12)


def test_constant_maps_and_bad_thresholds() -> None:
    assert len(boxes_from_heatmap(np.full((8, 8), 0.3), 0, 1024)) == 0  # normalises to zeros: nothing > 0
    assert len(boxes_from_heatmap(np.random.default_rng(0).random((8, 8)), 255, 1024)) <= 1
    for bad in (-1.0, 256.0, float("nan")):
        with pytest.raises(DataError, match="threshold"):
            boxes_from_heatmap(np.eye(4), bad, 64)
    with pytest.raises(DataError, match="finite"):
        boxes_from_heatmap(np.full((4, 4), np.nan), 60, 64)


@pytest.mark.parametrize("size", [(64, 64), (256, 256), (1024, 1024), (100, 37)])
def test_heatmap_peak_is_the_argmax_of_the_upsampled_map(size: tuple[int, int]) -> None:
    """In original pixels, through the same cell centres; ties (flat maps, plateaus): first in raster order."""
    rng = np.random.default_rng(size[0] + size[1])
    maps = {}
    for shape in MAP_SHAPES:
        for name, centres in registrations(rng, shape, size).items():
            for kind in ("smooth", "plateaus", "border", "twins", "flat"):
                heatmap = np.full(shape, 0.25) if kind == "flat" else random_map(rng, shape, kind)
                upsampled = upsample_heatmap(heatmap, size, centres)
                row, column = np.unravel_index(np.argmax(upsampled), upsampled.shape)
                assert heatmap_peak(heatmap, size, centres) == (column, row), f"{shape} {name} {kind}"
                if name == "strided":
                    maps[(f"{kind}", f"{shape}")] = (heatmap, (column, row))
    table = heatmap_peaks({key: value[0] for key, value in maps.items()}, size,
                          registration=lambda shape, _: tuple(np.arange(n) * (s / n) for n, s in zip(shape, size)))
    assert list(zip(table["peak_x"], table["peak_y"])) == [value[1] for value in maps.values()]

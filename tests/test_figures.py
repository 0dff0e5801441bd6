"""Overlay figures stay readable: wrapped, non-overlapping titles, column headings once, box styles."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.patches import Rectangle

from thoracic.evaluation.figures import (
    GROUND_TRUTH_COLOR,
    WHOLE_IMAGE_COLOR,
    OverlayPanel,
    OverlayRow,
    box_legend_handles,
    covers_whole_image,
    draw_overlay,
    overlay_figure,
)

LONG_TITLES = ["attention_gated (resnet10, 160 px) x3 seeds\nGrad-CAM",
               "space_attention (resnet10, 160 px) x3 seeds\nnative heatmap",
               "baseline (resnet34, 256 px) [baseline-seed0-20250101-120000]\nnative heatmap"]


def _rows(n_rows: int = 3) -> list[OverlayRow]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1024, 1024), dtype=np.uint8)
    return [OverlayRow(image, f"0000{r}_000.png\nPleural_Thickening", np.array([[100, 100, 200, 150]]),
                       [OverlayPanel(t, rng.random((8, 8)), np.array([[50, 60, 300, 200]])) for t in LONG_TITLES])
            for r in range(n_rows)]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_overlay_titles_are_wrapped_written_once_and_never_overlap() -> None:
    fig = overlay_figure(_rows(), legend=box_legend_handles(), title="The same test images")
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"][:3 * 4]
    titles = [ax.title for ax in grid if ax.title.get_text()]
    # the three model/method columns are headed once, above the first row; every row keeps its image label
    first_row = [ax.title.get_text() for ax in grid[:4]]
    assert first_row[0] == "00000_000.png\nPleural_Thickening"
    assert all(ax.title.get_text() == "" for row in (1, 2) for ax in grid[row * 4 + 1:row * 4 + 4])
    assert len(titles) == 4 + 2
    # wrapped to the panel width: no title wider than its panel, and no two titles overlap
    for ax in grid[:4]:
        assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width * 1.02
    extents = [t.get_window_extent(renderer) for t in titles]
    assert not any(_overlaps(a, b) for a, b in itertools.combinations(extents, 2))
    # titles do not run into the images of the row above
    images = [ax.get_window_extent(renderer) for ax in grid]
    assert not any(_overlaps(t, i) for t in extents for i in images)
    # a colour bar of the heatmap scale and a legend of the box styles
    assert any(ax.get_ylabel().startswith("heatmap") for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["ground truth", "predicted box"]


def test_box_styles_lower_threshold_dashed_and_whole_image_marked() -> None:
    from thoracic.evaluation.figures import new_figure as _figure

    fig = _figure()
    ax = fig.subplots()
    boxes = np.array([[10, 10, 20, 20], [12, 12, 30, 30], [0, 0, 100, 96]])
    panel = OverlayPanel("p", np.ones((4, 4)), boxes, np.array([180, 60, 60]))
    draw_overlay(ax, np.zeros((100, 100), dtype=np.uint8), panel, np.array([[40, 40, 10, 10]]))
    drawn = [(p.get_width(), p.get_linestyle()) for p in ax.patches if isinstance(p, Rectangle)]
    assert drawn == [(10, "-"), (20, "-"), (30, "--"), (100, "--")]
    colours = [p.get_edgecolor() for p in ax.patches]
    from matplotlib.colors import to_rgba

    assert colours[0] == to_rgba(GROUND_TRUTH_COLOR) and colours[3] == to_rgba(WHOLE_IMAGE_COLOR)
    assert [t.get_text() for t in ax.texts] == ["whole image"]
    np.testing.assert_array_equal(covers_whole_image(boxes, (100, 100)), [False, False, True])
    assert covers_whole_image(np.array([[0, 0, 100, 89]]), (100, 100)).tolist() == [False]

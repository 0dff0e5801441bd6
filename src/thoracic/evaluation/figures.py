"""Figures like the paper's: ROC curves per class (Figs. 3-5) and heatmap overlays with boxes (Figs. 6-8).

Overlays show the image at its original size with the class heatmap (upsampled the same way as for
localization, its cells placed by the panel's registration) on top, the ground-truth box(es) in blue
and the predicted boxes in green; several models / heatmap methods sit side by side on the same image.

Figures are plain :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas: no pyplot, so no
global backend choice, no figure registry to leak into, and nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from thoracic.heatmaps.boxes import normalize_heatmap, upsample_heatmap
from thoracic.io import save_figure_atomic

GROUND_TRUTH_COLOR = "tab:blue"
PREDICTED_COLOR = "lime"


def new_figure(**kwargs: object) -> Figure:
    """A figure attached to an Agg canvas (PNG output without pyplot)."""
    fig = Figure(**kwargs)  # type: ignore[arg-type]
    FigureCanvasAgg(fig)
    return fig


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], aucs: Mapping[str, float] | None = None,
               title: str = "ROC curves", positives: Mapping[str, int] | None = None,
               left_out: Mapping[str, str] | None = None) -> Figure:
    """One ROC curve per class with its AUC (and, given ``positives``, its positive images) in the legend
    (paper Figs. 3-5); ``left_out`` (class -> why it has no curve) is written under the legend, so a figure
    with fewer curves than classes says which are missing."""
    fig = new_figure(figsize=(6.4, 6.0), dpi=100)
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab20"](np.linspace(0, 1, max(len(curves), 1)))
    for color, (name, (fpr, tpr)) in zip(colors, curves.items()):
        value = (aucs or {}).get(name)
        details = [f"{value:.3f}"] if value is not None and np.isfinite(value) else []
        if positives is not None and name in positives:
            details.append(f"{positives[name]} pos.")
        label = f"{name} ({', '.join(details)})" if details else name
        ax.plot(fpr, tpr, color=color, linewidth=1.2, label=label)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7, title="class (AUC, positive images)" if positives else "class (AUC)",
              title_fontsize=7)
    if left_out:
        total = len(curves) + len(left_out)
        ax.text(0.02, 0.98, f"{len(left_out)} of {total} classes left out (no curve):\n"
                + "\n".join(f"{name}: {why}" for name, why in left_out.items()),
                transform=ax.transAxes, va="top", ha="left", fontsize=6, color="0.3")
    fig.tight_layout()
    return fig


#: A predicted box covering at least this fraction of the image is marked "whole image": a heatmap
#: threshold that keeps almost every pixel draws a frame, not a finding.
WHOLE_IMAGE_FRACTION = 0.9
WHOLE_IMAGE_COLOR = "orange"
#: Longest side of the image copy drawn in an overlay panel (the panels are ~300 px wide).
DISPLAY_MAX_SIDE = 512
HEATMAP_CMAP = "jet"


def covers_whole_image(boxes: np.ndarray, image_size: tuple[int, int],
                       fraction: float = WHOLE_IMAGE_FRACTION) -> np.ndarray:
    """``(K,)`` bool: whether each ``(x, y, w, h)`` box covers at least ``fraction`` of a ``(height, width)``
    image."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return boxes[:, 2] * boxes[:, 3] >= fraction * float(image_size[0]) * float(image_size[1])


def display_heatmap(heatmap: np.ndarray, display_size: tuple[int, int],
                    registration: Callable[[tuple[int, ...], tuple[int, int]], tuple[np.ndarray, np.ndarray]]
                    | None = None) -> np.ndarray:
    """A heatmap as drawn over its image: upsampled to ``display_size = (height, width)`` with its cells
    placed by ``registration`` (as localization places them), min-max normalised to [0, 1].

    The display copy is the image resized with pixel centres aligned, so registering the cells to the
    display size puts them where they are registered in the original (the boxes stay exact: they are
    computed at full resolution).
    """
    centres = registration(np.shape(heatmap), display_size) if registration else None
    return normalize_heatmap(upsample_heatmap(heatmap, display_size, centres)) / 255.0


@dataclass
class OverlayPanel:
    """One panel: a heatmap (native resolution, any scale) and its predicted boxes, under a title.

    ``box_thresholds`` (``(K,)``, optional) is the heatmap threshold each box came from: boxes of the
    highest threshold are drawn solid, the others dashed.
    ``registration(heatmap_shape, image_size) -> (row_centres, col_centres)`` places the heatmap's cells
    (:class:`thoracic.geometry.Registration`); ``None``: :func:`~thoracic.heatmaps.boxes.default_cell_centres`.
    """

    title: str
    heatmap: np.ndarray | None
    predicted_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    box_thresholds: np.ndarray | None = None
    registration: Callable[[tuple[int, ...], tuple[int, int]], tuple[np.ndarray, np.ndarray]] | None = None


def draw_overlay(ax: Axes, image: np.ndarray, panel: OverlayPanel, ground_truth_boxes: np.ndarray,
                 alpha: float = 0.4, title: str | None = None, fontsize: float = 8) -> None:
    """Image (original pixels) + upsampled heatmap + ground truth (blue) + predicted boxes (green; boxes of
    a lower heatmap threshold dashed; boxes covering the whole image orange and labelled)."""
    height, width = image.shape[:2]
    factor = -(-max(height, width) // DISPLAY_MAX_SIDE)
    if factor > 1:  # a panel is a few hundred pixels wide: draw a box-filtered copy (boxes stay exact)
        from PIL import Image

        image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(int(factor)))
    ax.imshow(image, cmap="gray", extent=(0, width, height, 0), interpolation="antialiased")
    if panel.heatmap is not None:
        # a coarser display copy: the overlay is a picture, the boxes are computed at full resolution
        heat = display_heatmap(panel.heatmap, (min(height, 256), min(width, 256)), panel.registration)
        ax.imshow(heat, cmap=HEATMAP_CMAP, alpha=alpha, extent=(0, width, height, 0), vmin=0, vmax=1)
    for x, y, w, h in np.asarray(ground_truth_boxes).reshape(-1, 4):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=GROUND_TRUTH_COLOR, linewidth=2, linestyle="-"))
    boxes = np.asarray(panel.predicted_boxes, dtype=float).reshape(-1, 4)
    thresholds = (np.full(len(boxes), np.inf) if panel.box_thresholds is None
                  else np.asarray(panel.box_thresholds, dtype=float).reshape(-1))
    whole = covers_whole_image(boxes, (height, width))
    top = thresholds.max() if len(thresholds) else np.inf
    for (x, y, w, h), threshold, frame in zip(boxes, thresholds, whole):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, linewidth=1.5,
                               edgecolor=WHOLE_IMAGE_COLOR if frame else PREDICTED_COLOR,
                               linestyle="-" if threshold >= top else "--"))
        if frame:
            ax.text(x + 0.03 * width, y + 0.03 * height, "whole image", color="black", fontsize=fontsize - 1,
                    va="top", ha="left", bbox={"facecolor": WHOLE_IMAGE_COLOR, "edgecolor": "none", "pad": 1})
    if title is None:
        title = panel.title
    if title:
        ax.set_title(title, fontsize=fontsize)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.axis("off")


@dataclass
class OverlayRow:
    """One image (one box class) with a panel per model / method."""

    image: np.ndarray
    label: str
    ground_truth_boxes: np.ndarray
    panels: Sequence[OverlayPanel]


def _wrap(text: str, width: int) -> str:
    """Wrap each line of ``text`` at ``width`` characters (breaking at spaces and underscores)."""
    import textwrap

    lines = []
    for line in text.split("\n"):
        lines.extend(textwrap.wrap(line.replace("_", "_\u200b"), width) or [""])
    return "\n".join(lines).replace("\u200b", "")


def box_legend_handles(ground_truth: bool = True, dashed_label: str | None = None,
                       solid_label: str = "predicted box", whole_image: bool = True) -> list:
    """Legend entries for the box styles of :func:`draw_overlay`."""
    from matplotlib.lines import Line2D

    handles = []
    if ground_truth:
        handles.append(Line2D([], [], color=GROUND_TRUTH_COLOR, linewidth=2, label="ground truth"))
    handles.append(Line2D([], [], color=PREDICTED_COLOR, linewidth=1.5, label=solid_label))
    if dashed_label:
        handles.append(Line2D([], [], color=PREDICTED_COLOR, linewidth=1.5, linestyle="--", label=dashed_label))
    if whole_image:
        handles.append(Line2D([], [], color=WHOLE_IMAGE_COLOR, linewidth=1.5,
                              label=f"box covering >= {WHOLE_IMAGE_FRACTION:.0%} of the image"))
    return handles


def overlay_figure(rows: Sequence[OverlayRow], panel_size: float = 2.6,
                   legend: str | Sequence = "ground truth: blue, predicted boxes: green",
                   title: str | None = None, colorbar: bool = True, fontsize: float = 8) -> Figure:
    """Grid of overlays (paper Figs. 6-8): one row per image, the plain image first, then one column per
    model / heatmap method, so models are compared on the same test image.

    When every row has the same panel titles (one model / method per column), they are written once, as
    column headings above the first row; titles are wrapped to the panel width so they never overlap.
    ``legend``: a caption line, or legend handles (:func:`box_legend_handles`) drawn under the grid.
    ``colorbar``: a colour bar of the (min-max normalised) heatmap scale beside the grid.
    """
    n_cols = 1 + max((len(r.panels) for r in rows), default=0)
    width_chars = max(12, int(panel_size * 72 / (fontsize * 0.62)))
    same_columns = len(rows) > 1 and len({tuple(p.title for p in r.panels) for r in rows}) == 1
    titles = []
    for r, row in enumerate(rows):
        shown = [p.title if (r == 0 or not same_columns) else "" for p in row.panels]
        titles.append([_wrap(t, width_chars) for t in [row.label, *shown]])

    # An explicit layout in inches (matplotlib's layout engines cost a second per figure here): every
    # row gets the height of its longest title above its panels.
    line = fontsize * 1.35 / 72
    row_title = [max(t.count("\n") + 1 if t else 0 for t in row) * line + 0.06 for row in titles]
    top = ((title.count("\n") + 1) * (fontsize + 1) * 1.45 / 72 + 0.12) if title else 0.05
    bottom = 0.4 if legend else 0.05
    gap, margin, bar = 0.08, 0.05, (0.85 if colorbar else 0.0)
    width = margin * 2 + n_cols * panel_size + (n_cols - 1) * gap + bar
    height = top + sum(row_title) + len(rows) * panel_size + bottom
    fig = new_figure(figsize=(width, height), dpi=100)
    axes = np.empty((len(rows), n_cols), dtype=object)
    y = top
    for r, row in enumerate(rows):
        y += row_title[r]
        for c in range(n_cols):
            x = margin + c * (panel_size + gap)
            axes[r, c] = fig.add_axes((x / width, 1 - (y + panel_size) / height, panel_size / width,
                                       panel_size / height))
        y += panel_size
        draw_overlay(axes[r, 0], row.image, OverlayPanel(row.label, None), row.ground_truth_boxes,
                     title=titles[r][0], fontsize=fontsize)
        for c in range(1, n_cols):
            if c - 1 < len(row.panels):
                draw_overlay(axes[r, c], row.image, row.panels[c - 1], row.ground_truth_boxes,
                             title=titles[r][c], fontsize=fontsize)
            else:
                axes[r, c].axis("off")
    if colorbar and any(p.heatmap is not None for row in rows for p in row.panels):
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        grid_top, grid_bottom = top + row_title[0], height - bottom
        bar_height = min(grid_bottom - grid_top, 3 * panel_size)
        cax = fig.add_axes(((width - bar + 0.1) / width, 1 - (grid_top + bar_height) / height, 0.14 / width,
                            bar_height / height))
        colour_bar = fig.colorbar(ScalarMappable(Normalize(0, 1), HEATMAP_CMAP), cax=cax)
        colour_bar.set_label("heatmap (min-max normalised per map)", fontsize=fontsize)
        colour_bar.ax.tick_params(labelsize=fontsize - 1)
    if title:
        fig.suptitle(title, fontsize=fontsize + 1, y=1 - 0.06 / height, va="top")
    if isinstance(legend, str):
        if legend:
            fig.text(0.5, 0.1 / height, legend, fontsize=fontsize, ha="center", va="bottom")
    elif legend:
        fig.legend(handles=list(legend), loc="lower center", bbox_to_anchor=(0.5, 0.02 / height),
                   ncols=len(legend), fontsize=fontsize, frameon=False)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save as PNG (the figure is not registered anywhere: it is freed when no longer referenced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    return save_figure_atomic(fig, path, format="png", bbox_inches="tight", pad_inches=0.05)

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

from thoracic.evaluation.localization import normalize_heatmap, upsample_heatmap

GROUND_TRUTH_COLOR = "tab:blue"
PREDICTED_COLOR = "lime"


def _figure(**kwargs: object) -> Figure:
    """A figure attached to an Agg canvas (PNG output without pyplot)."""
    fig = Figure(**kwargs)  # type: ignore[arg-type]
    FigureCanvasAgg(fig)
    return fig


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], aucs: Mapping[str, float] | None = None,
               title: str = "ROC curves") -> Figure:
    """One ROC curve per class with its AUC in the legend (paper Figs. 3-5)."""
    fig = _figure(figsize=(6.4, 6.0), dpi=100)
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab20"](np.linspace(0, 1, max(len(curves), 1)))
    for color, (name, (fpr, tpr)) in zip(colors, curves.items()):
        value = (aucs or {}).get(name)
        label = f"{name} ({value:.3f})" if value is not None and np.isfinite(value) else name
        ax.plot(fpr, tpr, color=color, linewidth=1.2, label=label)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7, title="class (AUC)", title_fontsize=7)
    fig.tight_layout()
    return fig


@dataclass
class OverlayPanel:
    """One panel: a heatmap (native resolution, any scale) and its predicted boxes, under a title.

    ``registration(heatmap_shape, image_size) -> (row_centres, col_centres)`` places the heatmap's cells
    (:class:`thoracic.geometry.Registration`); ``None``: the ``align_corners=False`` convention.
    """

    title: str
    heatmap: np.ndarray | None
    predicted_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    registration: Callable[[tuple[int, ...], tuple[int, int]], tuple[np.ndarray, np.ndarray]] | None = None


def draw_overlay(ax: Axes, image: np.ndarray, panel: OverlayPanel, ground_truth_boxes: np.ndarray,
                 alpha: float = 0.4) -> None:
    """Image (original pixels) + upsampled heatmap + ground truth (blue) + predicted boxes (green)."""
    height, width = image.shape[:2]
    ax.imshow(image, cmap="gray", extent=(0, width, height, 0), interpolation="nearest")
    if panel.heatmap is not None:
        # a coarser display copy: the overlay is a picture, the boxes are computed at full resolution
        display = (min(height, 256), min(width, 256))
        # the display copy is the image resized with pixel centres aligned, so registering the cells to
        # the display size puts them where they are registered in the original
        centres = panel.registration(np.shape(panel.heatmap), display) if panel.registration else None
        heat = normalize_heatmap(upsample_heatmap(panel.heatmap, display, centres)) / 255.0
        ax.imshow(heat, cmap="jet", alpha=alpha, extent=(0, width, height, 0), vmin=0, vmax=1)
    for x, y, w, h in np.asarray(ground_truth_boxes).reshape(-1, 4):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=GROUND_TRUTH_COLOR, linewidth=2))
    for x, y, w, h in np.asarray(panel.predicted_boxes).reshape(-1, 4):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=PREDICTED_COLOR, linewidth=1.5))
    ax.set_title(panel.title, fontsize=8)
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


def overlay_figure(rows: Sequence[OverlayRow], panel_size: float = 2.6,
                   legend: str = "ground truth: blue, predicted boxes: green") -> Figure:
    """Grid of overlays (paper Figs. 6-8): one row per image, the plain image first, then one column per
    model / heatmap method, so models are compared on the same test image. ``legend`` is the caption."""
    n_cols = 1 + max((len(r.panels) for r in rows), default=0)
    fig = _figure(figsize=(panel_size * n_cols, panel_size * len(rows) + 0.3), dpi=100)
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    for r, row in enumerate(rows):
        draw_overlay(axes[r, 0], row.image, OverlayPanel(row.label, None), row.ground_truth_boxes)
        for c in range(1, n_cols):
            if c - 1 < len(row.panels):
                draw_overlay(axes[r, c], row.image, row.panels[c - 1], row.ground_truth_boxes)
            else:
                axes[r, c].axis("off")
    fig.tight_layout()
    fig.suptitle(legend, fontsize=8, y=1.0, va="bottom")
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save as PNG (the figure is not registered anywhere: it is freed when no longer referenced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path

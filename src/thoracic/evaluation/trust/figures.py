"""Figures of the heatmap checks: similarity against randomized depth, example maps, faithfulness curves.

Plain Agg figures (:func:`thoracic.evaluation.figures.new_figure`), written atomically as PNG.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from thoracic.constants import METHOD_LABELS
from thoracic.evaluation.figures import new_figure
from thoracic.evaluation.trust.common import Pair
from thoracic.evaluation.trust.randomization import SIMILARITY_FLAG
from thoracic.io import write_bytes_atomic


def save_png_atomic(figure: Figure, path: str | Path) -> Path:
    """The figure as PNG, written atomically (temporary file + rename)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.05)
    return write_bytes_atomic(path, buffer.getvalue())


def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def randomization_figure(summary: pd.DataFrame) -> Figure:
    """Median Spearman correlation and SSIM (with the quartiles as a band) against the randomized depth,
    one line per method; depth 0 is the trained model (similarity 1)."""
    figure = new_figure(figsize=(10, 3.8))
    axes = figure.subplots(1, 2)
    stages = ["trained"] + list(summary.sort_values("depth").drop_duplicates("depth")["stage"])
    for method, rows in summary.groupby("method", sort=False):
        rows = rows.sort_values("depth")
        depth = np.r_[0, rows["depth"].to_numpy()]
        for ax, column in zip(axes, ("spearman", "ssim")):
            median = np.r_[1.0, rows[f"{column}_median"].to_numpy(np.float64)]
            low = np.r_[1.0, rows[f"{column}_q25"].to_numpy(np.float64)]
            high = np.r_[1.0, rows[f"{column}_q75"].to_numpy(np.float64)]
            line, = ax.plot(depth, median, marker="o", label=_label(str(method)))
            ax.fill_between(depth, low, high, color=line.get_color(), alpha=0.15)
    for ax, title in zip(axes, ("Spearman rank correlation", "SSIM")):
        ax.set_xticks(range(len(stages)))
        ax.set_xticklabels([f"{s}\n" if k == 0 else f"+{s}" for k, s in enumerate(stages)], rotation=30, ha="right")
        ax.set_ylim(-0.2, 1.05)
        ax.axhline(0.0, color="grey", linewidth=0.6)
        ax.set_ylabel(f"{title} with the trained maps")
        ax.set_xlabel("randomized, from the classifier down")
    axes[0].axhline(SIMILARITY_FLAG, color="tab:red", linestyle=":", linewidth=1, label=f"flag ({SIMILARITY_FLAG:g})")
    axes[0].legend(fontsize=7, loc="lower left")
    figure.suptitle("Model randomization test: median over images (band: quartiles)", fontsize=10)
    return figure


def randomization_examples_figure(images: Mapping[str, np.ndarray], maps: Mapping[str, Sequence[np.ndarray]],
                                  pair: Pair, stages: Sequence[str]) -> Figure:
    """One image (first column) and, per method (rows), its map for the pair by the trained model and
    after each randomized stage (columns)."""
    methods = list(maps)
    columns = 1 + len(stages) + 1
    figure = new_figure(figsize=(1.5 * columns, 1.6 * max(1, len(methods))))
    axes = np.asarray(figure.subplots(max(1, len(methods)), columns, squeeze=False))
    image = images[pair[0]]
    for row, method in enumerate(methods):
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 0].set_ylabel(_label(method), fontsize=7)
        for column, heatmap in enumerate(maps[method], start=1):
            axes[row, column].imshow(heatmap, cmap="jet", vmin=0.0, vmax=1.0)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    titles = ["image", "trained", *(f"+{s}" for s in stages)]
    for column, title in enumerate(titles):
        axes[0, column].set_title(title, fontsize=7)
    figure.suptitle(f"{pair[0]}, {pair[1]}: maps as the network is randomized", fontsize=9)
    return figure


def faithfulness_figure(curves: pd.DataFrame) -> Figure:
    """Mean deletion and insertion curves per method (solid) and of the random order (dashed)."""
    figure = new_figure(figsize=(10, 3.8))
    axes = figure.subplots(1, 2)
    for method, rows in curves.groupby("method", sort=False):
        color = None
        for ax, curve in zip(axes, ("deletion", "insertion")):
            for order, style in (("saliency", "-"), ("random", "--")):
                part = rows[(rows["curve"] == curve) & (rows["order"] == order)]
                mean = part.groupby("fraction")["probability"].mean()
                line, = ax.plot(mean.index, mean.to_numpy(), style, color=color,
                                label=_label(str(method)) if order == "saliency" else None)
                color = line.get_color()
    for ax, curve, verb in zip(axes, ("deletion", "insertion"), ("removed", "revealed")):
        ax.set_xlabel(f"fraction of the pixels {verb}, most salient first")
        ax.set_ylabel("probability of the class (mean over images)")
        ax.set_title(f"{curve} (dashed: random order)", fontsize=9)
        ax.set_xlim(0, 1)
    axes[1].legend(fontsize=7)
    return figure


__all__ = ["faithfulness_figure", "randomization_examples_figure", "randomization_figure", "save_png_atomic"]

"""The side-by-side overlay figure of a report: every run and heatmap method on the same test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from thoracic.constants import METHOD_LABELS
from thoracic.evaluation.figures import box_legend_handles, overlay_figure, save_figure
from thoracic.evaluation.overlays import file_images, overlay_rows
from thoracic.evaluation.protocol import load_registration
from thoracic.evaluation.predictions import load_heatmaps
from thoracic.reporting.runs import RunGroup, RunSummary, group_runs, image_paths, read_evaluation_csv


def comparison_figure(summaries: Sequence[RunSummary], out_dir: Path, n_examples: int = 4,
                      groups: Sequence[RunGroup] | None = None) -> Path | None:
    """Models and heatmap methods side by side on the same box images (paper Figs. 6-8).

    Uses each run's ``heatmaps_<method>.npz``, ``boxes_<method>.csv`` and ``scores_<method>.csv``; the
    image is read from the run's data folder when present (otherwise a grey canvas of its size). Boxes
    shown are those of the highest heatmap threshold. Returns None (and writes nothing) with fewer than
    two runs x methods.
    """
    labels = {id(r): g.run_label(r) for g in (groups or group_runs(summaries)) for r in g.runs}
    sources = []
    for summary in summaries:
        for method in sorted(summary.localization):
            evaluation = summary.path / "evaluation"
            paths = [evaluation / f"{kind}_{method}.{ext}" for kind, ext in
                     (("heatmaps", "npz"), ("boxes", "csv"), ("scores", "csv"))]
            if all(p.is_file() for p in paths):
                name = f"{labels.get(id(summary), summary.model)}\n{METHOD_LABELS.get(method, method)}"
                sources.append((name, summary, *paths, load_registration(evaluation, method)))
    if len(sources) < 2:
        return None
    scores = read_evaluation_csv(sources[0][4], "thoracic localize")
    if not {"x", "y", "w", "h", "original_width", "original_height"} <= set(scores.columns):
        return None
    truth = scores.drop_duplicates("box_row")
    loaded = [(name, load_heatmaps(h), read_evaluation_csv(b, "thoracic localize"), reg)
              for name, _, h, b, _, reg in sources]
    top = max((float(b["threshold"].max()) for _, _, b, _ in loaded if len(b)), default=None)
    rows = overlay_rows(truth, {name: (heatmaps, boxes) for name, heatmaps, boxes, _ in loaded}, n_examples,
                        file_images(image_paths(sources[0][1])), threshold=top,
                        registrations={name: registration for name, _, _, registration in loaded},
                        class_names=sources[0][1].class_names)
    if not rows:
        return None
    legend = box_legend_handles(solid_label=f"predicted box (heatmap > {top:g})" if top is not None else "predicted box")
    figure = overlay_figure(rows, legend=legend, title="The same test images under every run and heatmap method")
    return save_figure(figure, out_dir / "compare_overlays.png")


__all__ = ["comparison_figure"]

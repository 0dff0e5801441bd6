"""Evaluation: classification AUC with bootstrap CIs, weakly supervised localization, figures, reports.

Pure metrics (no model, no data folder): :mod:`~thoracic.evaluation.classification` (``compute_auc``,
``roc_curve``) and :mod:`~thoracic.evaluation.localization` (``iou``, ``iobb``,
``score_localization``, ``localization_accuracy``, pointing game, baselines) of the boxes that
:mod:`thoracic.heatmaps.boxes` extracts from heatmaps. Running models over loaders:
:mod:`~thoracic.evaluation.predictions`; the localization protocol after the network (boxes, scores, tables,
headline): :mod:`~thoracic.evaluation.protocol`; overlay figures: :mod:`~thoracic.evaluation.overlays`;
operating points, subgroups, calibration; Table 1 and its file (:mod:`~thoracic.evaluation.table1`), how
numbers are written (:mod:`~thoracic.evaluation.formatting`) and the small-sample warnings
(:mod:`~thoracic.evaluation.sample_size`). What the commands do to a run folder is in
:mod:`thoracic.workflows`, reports in :mod:`thoracic.reporting`. Heavier modules (figures, protocol,
overlays) are not imported here so that the metrics stay cheap to import.
"""

from thoracic.evaluation.classification import AUCResult, compute_auc, roc_auc, roc_curve, roc_curves
from thoracic.evaluation.localization import (
    HEADLINE_THRESHOLD,
    IOBB_THRESHOLDS,
    IOU_THRESHOLDS,
    baseline_accuracy,
    centre_boxes,
    iobb,
    iou,
    localization_accuracy,
    pointing_accuracy,
    pointing_game,
    random_boxes,
    score_localization,
)
from thoracic.evaluation.references import load_classification_reference, load_localization_reference

__all__ = [
    "AUCResult", "HEADLINE_THRESHOLD", "IOBB_THRESHOLDS", "IOU_THRESHOLDS", "baseline_accuracy", "centre_boxes",
    "compute_auc", "iobb", "iou", "load_classification_reference", "load_localization_reference",
    "localization_accuracy", "pointing_accuracy", "pointing_game", "random_boxes", "roc_auc", "roc_curve",
    "roc_curves", "score_localization",
]

"""Per-class decision thresholds ("operating points") chosen on the validation split.

A weighted loss (Eq. 1) shifts each class's probabilities differently, so one threshold for all 14
classes (0.5) is wrong for most of them. ``thoracic evaluate`` chooses one threshold per class on the
*validation* split (never on the test split it reports), by

- ``youden`` (default): the threshold maximising Youden's J = sensitivity + specificity - 1;
- ``f1``: the threshold maximising F1 = 2 precision recall / (precision + recall);

and stores them in ``<run>/evaluation/operating_points.json``::

    {"method": "youden", "split": "val", "thresholds": {"Atelectasis": 0.4132, ...},
     "checkpoint": {"path": ..., "epoch": 2, "sha256": ...}}

(these keys: other tools read the file; ``checkpoint`` is the
:func:`~thoracic.training.checkpoints.checkpoint_info` of the weights the thresholds were chosen for,
absent from files written before it was recorded). Thresholds belong to the weights they were chosen
on: :func:`check_operating_points_checkpoint` refuses them for other weights. An image is called positive
for a class when its probability is ``>= threshold``. A NaN label (image not labelled for the class) is
skipped: thresholds, sensitivity and specificity count the labelled images of each class only. A class
whose labelled validation images hold one value has no ROC curve; it gets :data:`DEFAULT_THRESHOLD` and
the per-class table says so. ``thoracic predict`` uses these
thresholds by default.

Both criteria are evaluated at every distinct score of the ROC curve
(:func:`thoracic.evaluation.classification.roc_curve`, the points of scikit-learn's ``roc_curve``); ties
keep the highest threshold (the most specific of the equally good points).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thoracic.errors import DataError, RunError
from thoracic.evaluation.classification import roc_curve
from thoracic.io import write_text_atomic
from thoracic.metrics import check_labels, resolve_class_names

#: Criteria of :func:`choose_threshold`.
OPERATING_POINT_METHODS: tuple[str, ...] = ("youden", "f1")
#: Threshold of a class without both label values on the validation split (and of runs without a file).
DEFAULT_THRESHOLD = 0.5
#: File name in ``<run>/evaluation/``.
OPERATING_POINTS_FILE = "operating_points.json"


def choose_threshold(labels: np.ndarray, scores: np.ndarray, method: str = "youden") -> float | None:
    """The probability threshold of one class that maximises ``method`` (``youden`` or ``f1``).

    Args:
        labels: ``(N,)`` 0/1 labels; NaN (not labelled) rows are skipped.
        scores: ``(N,)`` probabilities.
    Returns:
        The threshold (predict positive when ``score >= threshold``), or None when the labelled rows hold
        one value.
    """
    if method not in OPERATING_POINT_METHODS:
        raise DataError(f"operating point method must be one of {OPERATING_POINT_METHODS}, got {method!r}")
    labels = check_labels(np.asarray(labels, dtype=np.float64).reshape(-1))[:, 0]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labelled = ~np.isnan(labels)
    labels, scores = labels[labelled], scores[labelled]
    if labels.size == 0:
        return None
    fpr, tpr, thresholds = roc_curve(labels, scores)
    if not len(fpr):
        return None
    # drop the (0, 0) point: its threshold is +inf (nothing positive)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    if method == "youden":
        objective = tpr - fpr
    else:
        n_pos = labels.sum()
        tp, fp = tpr * n_pos, fpr * (len(labels) - n_pos)
        objective = 2 * tp / (tp + fp + n_pos)  # = 2PR / (P + R), defined at every point (tp + fp >= 1)
    return float(thresholds[int(np.argmax(objective))])  # argmax: first maximum = highest threshold


def choose_thresholds(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str] | None = None,
                      method: str = "youden") -> dict[str, float | None]:
    """:func:`choose_threshold` for every column of ``(N, C)`` labels (0 / 1 / NaN) and scores:
    ``class -> threshold``."""
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores)
    if labels.shape != scores.shape or labels.ndim != 2:
        raise DataError(f"labels {labels.shape} and scores {scores.shape} must both be (N, C)")
    class_names = resolve_class_names(class_names, labels.shape[1])
    return {name: choose_threshold(labels[:, j], scores[:, j], method) for j, name in enumerate(class_names)}


def sensitivity_specificity(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity (true-positive rate) and specificity (true-negative rate) of ``score >= threshold`` over
    the labelled rows (a NaN label is neither positive nor negative); NaN for a rate whose denominator is 0."""
    labels = check_labels(np.asarray(labels, dtype=np.float64).reshape(-1))[:, 0]
    called = np.asarray(scores).reshape(-1) >= threshold
    positive, negative = labels == 1, labels == 0
    positives, negatives = int(positive.sum()), int(negative.sum())
    sensitivity = float((called & positive).sum() / positives) if positives else math.nan
    specificity = float((~called & negative).sum() / negatives) if negatives else math.nan
    return sensitivity, specificity


def save_operating_points(path: str | Path, method: str, thresholds: Mapping[str, float | None],
                          split: str = "val", checkpoint: Mapping[str, Any] | None = None) -> Path:
    """Write the contract file (classes without a chosen threshold get :data:`DEFAULT_THRESHOLD`);
    ``checkpoint``: the :func:`~thoracic.training.checkpoints.checkpoint_info` of the weights they were
    chosen for."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {name: float(DEFAULT_THRESHOLD if t is None else t) for name, t in thresholds.items()}
    data: dict[str, Any] = {"method": method, "split": split, "thresholds": values}
    if checkpoint is not None:
        data["checkpoint"] = dict(checkpoint)
    write_text_atomic(path, json.dumps(data, indent=2))
    return path


def check_operating_points_checkpoint(points: Mapping[str, Any], path: str | Path, checkpoint: Mapping[str, Any],
                                      what: str = "predict") -> str:
    """Refuse operating points chosen for other weights than ``checkpoint`` (a
    :func:`~thoracic.training.checkpoints.checkpoint_info`); returns a note for the user ("" when they
    record the same checkpoint, a caution when they record none: written by an older thoracic).

    Raises:
        RunError: the file records another checkpoint's SHA-256 (names both, and what to do).
    """
    stored = points.get("checkpoint")
    if not isinstance(stored, Mapping) or not stored.get("sha256"):
        return (f"{path} does not record which checkpoint its thresholds were chosen for (written by an older "
                "thoracic); rerun `thoracic evaluate` to be sure they fit these weights")
    if stored["sha256"] == checkpoint.get("sha256"):
        return ""
    raise RunError(
        f"{path}: its thresholds were chosen for checkpoint {stored.get('path')} (epoch {stored.get('epoch')}, "
        f"sha256 {str(stored['sha256'])[:12]}), but {what} uses {checkpoint.get('path')} (epoch "
        f"{checkpoint.get('epoch')}, sha256 {str(checkpoint.get('sha256'))[:12]}): thresholds of other weights "
        f"would make other decisions. Rerun `thoracic evaluate` with the same --checkpoint, or give one "
        f"threshold with --threshold P")


def load_operating_points(path: str | Path, class_names: Sequence[str] | None = None, *,
                          strict: bool = True) -> dict:
    """Read and check ``operating_points.json``: ``{"method", "split", "thresholds": {class: float}}`` (and
    ``checkpoint`` when the file records it). ``class_names``: the model's labels (default: the file's).

    ``strict`` (``thoracic predict``): the file must hold ``method``, ``split`` and a threshold for every
    class of ``class_names``. Not strict (the subgroup tables, still worth showing for a file written for
    fewer classes): only ``thresholds`` is needed; ``method`` and ``split`` are returned when the file has
    them, ``thresholds`` holds the classes of ``class_names`` the file has (in that order), and a class
    the file names outside ``class_names`` is an error.

    Raises:
        RunError: (strict) unreadable file, missing keys, a class missing, or a threshold that is not a
            number in [0, 1].
        DataError: (not strict) the file is not JSON, lacks ``thresholds``, names an unknown class, or a
            threshold is not a number in [0, 1].
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        if not strict:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        raise RunError(f"cannot read operating points {path}: {exc}") from None
    except (OSError, ValueError) as exc:
        if not strict:
            raise
        raise RunError(f"cannot read operating points {path}: {exc}") from None
    if strict:
        if not isinstance(data, dict) or not {"method", "split", "thresholds"} <= set(data):
            raise RunError(f"{path}: expected the keys method, split, thresholds")
        thresholds = data["thresholds"]
        if not isinstance(thresholds, dict):
            raise RunError(f"{path}: expected a 'thresholds' object {{class name: probability}}")
        class_names = list(thresholds) if class_names is None else class_names
        missing = [n for n in class_names if n not in thresholds]
        if missing:
            raise RunError(f"{path}: no threshold for {', '.join(missing)}")
    else:
        thresholds = data.get("thresholds") if isinstance(data, dict) else None
        if not isinstance(thresholds, dict):
            raise DataError(f"{path}: expected a 'thresholds' object {{class name: probability}}")
        class_names = list(thresholds) if class_names is None else class_names
    given = [n for n in class_names if n in thresholds]
    for name in given:
        value = thresholds[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            if strict:
                raise RunError(f"{path}: threshold of {name} must be a number in [0, 1], got {value!r}")
            raise DataError(f"{path}: thresholds[{name!r}] is {value!r}; expected a probability in [0, 1]")
    if not strict:
        unknown = sorted(set(thresholds) - set(class_names))
        if unknown:
            raise DataError(f"{path}: thresholds name unknown class(es) {unknown}; "
                            f"expected names among {list(class_names)}")
    points = {key: data[key] for key in ("method", "split", "checkpoint") if key in data}
    points["thresholds"] = {n: float(thresholds[n]) for n in given}
    return points


def operating_point_table(labels: np.ndarray, scores: np.ndarray, thresholds: Mapping[str, float | None],
                          auc: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
                          method: str = "youden", threshold_split: str = "val") -> pd.DataFrame:
    """Per class: AUC (when given), the threshold, and the sensitivity / specificity it gives on
    ``labels`` / ``scores`` (the evaluated split; NaN labels skipped), with the labelled counts and a note
    for default thresholds."""
    labels, scores = check_labels(labels), np.asarray(scores)
    class_names = resolve_class_names(class_names, labels.shape[1])
    rows = []
    for j, name in enumerate(class_names):
        chosen = thresholds.get(name)
        threshold = DEFAULT_THRESHOLD if chosen is None else float(chosen)
        sensitivity, specificity = sensitivity_specificity(labels[:, j], scores[:, j], threshold)
        rows.append({
            "class_name": name,
            "auc": float(auc[j]) if auc is not None else math.nan,
            "threshold": threshold,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "n_positive": int((labels[:, j] == 1).sum()),
            "n_negative": int((labels[:, j] == 0).sum()),
            "note": "" if chosen is not None else
            f"default {DEFAULT_THRESHOLD}: no positives or no negatives on the {threshold_split} split",
        })
    table = pd.DataFrame(rows)
    table.attrs.update({"method": method, "threshold_split": threshold_split})
    return table


__all__ = [
    "DEFAULT_THRESHOLD", "OPERATING_POINTS_FILE", "OPERATING_POINT_METHODS", "check_operating_points_checkpoint",
    "choose_threshold",
    "choose_thresholds", "load_operating_points", "operating_point_table", "save_operating_points",
    "sensitivity_specificity",
]

"""The one ROC AUC of thoracic: a pure per-class function that training and evaluation both call.

Pattern of MONAI's ``monai/metrics/rocauc.py``: a pure function (:func:`per_class_auc`) holds the
arithmetic and the rule for undefined values; wrappers only gather their inputs and call it
(:class:`thoracic.training.module.DeduplicatedAUROC` gathers predictions over processes during training,
:func:`thoracic.evaluation.classification.compute_auc` adds bootstrap confidence intervals). It lives in
this neutral layer (numpy only) so that the training layer may import it.

**The AUC** of a class is the Mann-Whitney statistic (the probability that a random positive image outranks
a random negative one, ties counting one half), identical to ``sklearn.metrics.roc_auc_score`` and to
torchmetrics' exact ``multilabel_auroc`` (``thresholds=None``).

**Missing labels are missing.** Labels are an ``(N, C)`` matrix of 0, 1 and NaN, where NaN means "not
labelled" (or an uncertain label to be ignored): a class's AUC is computed on the rows labelled for that
class only. **The one rule:** a class whose labelled rows hold a single value (no positive, no negative,
or no labelled row at all) has no AUC: NaN, with a reason in words, never 0 and never a crash; means are
over the classes with a defined AUC.

scikit-learn's ``roc_auc_score`` is not used here because the bootstrap of
:mod:`thoracic.evaluation.classification` needs the *weighted* statistic of :class:`RankIndex` (one sort per
class, then a few passes per resample), and the training layer needs it without scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from thoracic.errors import DataError


def resolve_class_names(class_names: Sequence[str] | None, n_columns: int) -> tuple[str, ...]:
    """The names of ``n_columns`` label columns: ``class_names`` when given (its length must match), else
    ``class_0, class_1, ...`` (a column count says nothing about which labels they are: CheXpert has 14
    too; pass the run's ``class_names``)."""
    if class_names is None:
        return tuple(f"class_{j}" for j in range(n_columns))
    names = tuple(str(name) for name in class_names)
    if len(names) != n_columns:
        raise DataError(f"{len(names)} class names for {n_columns} label / score columns")
    return names


def check_labels(labels: np.ndarray, what: str = "labels") -> np.ndarray:
    """``labels`` as float64 (``(N,)`` becomes ``(N, 1)``); every entry must be 0, 1 or NaN (not labelled)."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise DataError(f"{what} must be an (N, C) matrix, got shape {labels.shape}")
    if not np.all(np.isnan(labels) | (labels == 0) | (labels == 1)):
        bad = labels[~(np.isnan(labels) | (labels == 0) | (labels == 1))]
        raise DataError(f"{what} must be 0, 1 or NaN (not labelled), got e.g. {bad[:3].tolist()}")
    return labels


def check_labels_and_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` as float64 ``(N, C)``; labels 0 / 1 / NaN, scores finite, same shape."""
    labels = check_labels(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if labels.shape != scores.shape:
        raise DataError(f"labels {labels.shape} and scores {scores.shape} must have the same shape (N, C)")
    if not np.all(np.isfinite(scores)):
        raise DataError("scores contain NaN or infinite values")
    return labels, scores


def label_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n_positive, n_negative)`` per column of a 0 / 1 / NaN label matrix (NaN counts as neither)."""
    labels = check_labels(labels)
    return (labels == 1).sum(0).astype(int), (labels == 0).sum(0).astype(int)


def positive_fractions(labels: np.ndarray) -> np.ndarray:
    """Fraction of positives per class over the rows *labelled* for it (NaN = not labelled); NaN for a class
    without any labelled row. The training-set frequencies of the per-class loss weights
    (:class:`thoracic.losses.PerClassWeightedBCEWithLogits`).

    >>> nan = float("nan")
    >>> positive_fractions(np.array([[1.0, 0.0], [0.0, nan], [nan, nan], [0.0, 1.0]])).tolist()
    [0.3333333333333333, 0.5]
    """
    labels = check_labels(labels)
    positives, negatives = (labels == 1).sum(0), (labels == 0).sum(0)
    labelled = positives + negatives
    return np.where(labelled > 0, positives / np.maximum(labelled, 1), np.nan)


def undefined_auc_reason(name: str, n_positive: int, n_negative: int, n_rows: int) -> str | None:
    """Why a class's AUC is undefined (words for tables), or None when it is defined.

    ``n_rows`` is the number of images; when it exceeds the labelled ones, the reason says "labelled".
    """
    labelled = n_positive + n_negative
    if n_positive > 0 and n_negative > 0:
        return None
    if labelled == 0:
        return f"AUC undefined: none of the {n_rows} images is labelled for {name}"
    side = "positive" if n_negative == 0 else "negative"
    images = "images" if labelled == n_rows else "labelled images"
    return f"AUC undefined: all {labelled} {images} are {side} for {name}"


@dataclass(frozen=True)
class RankIndex:
    """One class's sorted negatives and, per positive, how many negatives score below / not above it.

    Rows whose label is NaN are in neither ``positives`` nor ``negatives``: they never count.
    """

    positives: np.ndarray  # row indices of the positive images
    negatives: np.ndarray  # row indices of the negative images, by ascending score
    below: np.ndarray  # per positive: number of negatives with a strictly lower score
    below_or_tied: np.ndarray  # per positive: number of negatives with a lower or equal score

    @classmethod
    def build(cls, labels: np.ndarray, scores: np.ndarray) -> RankIndex:
        """From ``(N,)`` labels (0 / 1 / NaN) and scores of one class."""
        positives = np.flatnonzero(labels == 1)
        negatives = np.flatnonzero(labels == 0)
        negatives = negatives[np.argsort(scores[negatives], kind="mergesort")]
        negative_scores = scores[negatives]
        return cls(positives, negatives,
                   np.searchsorted(negative_scores, scores[positives], side="left"),
                   np.searchsorted(negative_scores, scores[positives], side="right"))

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """Weighted Mann-Whitney AUC for each row of ``weights`` (``(..., N)`` image multiplicities).

        AUC = sum_i w_i (W_neg_below_i + W_neg_tied_i / 2) / (W_pos W_neg) over positives i; with unit
        weights this is ``roc_auc_score``; NaN where a row has no positive or no negative weight.
        """
        if len(self.positives) == 0 or len(self.negatives) == 0:
            return np.full(weights.shape[:-1], np.nan)
        negative_weights = weights[..., self.negatives]
        cumulative = np.zeros(weights.shape[:-1] + (len(self.negatives) + 1,), dtype=np.float64)
        np.cumsum(negative_weights, axis=-1, out=cumulative[..., 1:])
        low = cumulative[..., self.below]
        high = cumulative[..., self.below_or_tied]
        positive_weights = weights[..., self.positives]
        numerator = np.einsum("...p,...p->...", positive_weights, low + 0.5 * (high - low))
        denominator = positive_weights.sum(-1) * cumulative[..., -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


@dataclass(frozen=True)
class ClassAUC:
    """What :func:`per_class_auc` returns.

    Attributes:
        class_names: column order of every array.
        auc: ``(C,)`` AUC per class over its labelled rows; NaN where undefined.
        reasons: ``class -> why its AUC is NaN`` (only for NaN classes).
        n_positive, n_negative: ``(C,)`` labelled positives / negatives per class (NaN rows in neither).
        n_rows: the number of images (labelled or not).
        ranks: the per-class :class:`RankIndex` (reused by the bootstrap).
    """

    class_names: tuple[str, ...]
    auc: np.ndarray
    reasons: dict[str, str]
    n_positive: np.ndarray
    n_negative: np.ndarray
    n_rows: int
    ranks: tuple[RankIndex, ...] = field(repr=False, default=())

    @property
    def mean_auc(self) -> float:
        """Mean over the classes whose AUC is defined (NaN if none is)."""
        defined = np.isfinite(self.auc)
        return float(self.auc[defined].mean()) if defined.any() else float("nan")


def per_class_auc(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str] | None = None) -> ClassAUC:
    """Per-class ROC AUC of ``(N, C)`` labels (0 / 1 / NaN = not labelled) and scores, over labelled rows.

    Args:
        labels: ``(N, C)`` ground truth; NaN entries are left out of their class.
        scores: ``(N, C)`` probabilities or logits (rank based: either gives the same AUC).
        class_names: the ``C`` names (default :func:`resolve_class_names`).

    Returns:
        :class:`ClassAUC`: the AUC per class (NaN with a reason where the labelled rows of a class hold a
        single value), the labelled counts and the mean over defined classes.

    >>> import numpy as np
    >>> nan = float("nan")
    >>> labels = np.array([[0, 1], [1, nan], [0, 0], [1, nan]])
    >>> scores = np.array([[0.1, 0.9], [0.8, 0.7], [0.3, 0.2], [0.6, 0.4]])
    >>> result = per_class_auc(labels, scores, ("Mass", "Nodule"))
    >>> result.auc.tolist(), result.n_negative.tolist()
    ([1.0, 1.0], [2, 1])
    >>> per_class_auc(labels[:, :1] * 0, scores[:, :1], ("Mass",)).reasons
    {'Mass': 'AUC undefined: all 4 images are negative for Mass'}
    >>> per_class_auc([[nan], [1.0], [1.0]], [[0.1], [0.2], [0.3]], ("Mass",)).reasons
    {'Mass': 'AUC undefined: all 2 labelled images are positive for Mass'}
    """
    labels, scores = check_labels_and_scores(labels, scores)
    n, c = labels.shape
    names = resolve_class_names(class_names, c)
    n_pos = (labels == 1).sum(0).astype(int)
    n_neg = (labels == 0).sum(0).astype(int)
    ranks = tuple(RankIndex.build(labels[:, j], scores[:, j]) for j in range(c))
    ones = np.ones(n)
    auc = np.array([rank.auc(ones) for rank in ranks], dtype=np.float64).reshape(c)
    reasons = {}
    for j, name in enumerate(names):
        reason = undefined_auc_reason(name, int(n_pos[j]), int(n_neg[j]), n)
        if reason is not None:
            reasons[name] = reason
            auc[j] = np.nan
    return ClassAUC(names, auc, reasons, n_pos, n_neg, n, ranks)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of one class (equals ``sklearn.metrics.roc_auc_score`` on the labelled rows); NaN if the
    labelled rows hold one value.

    ``labels``: ``(N,)`` 0 / 1 / NaN; ``scores``: ``(N,)`` probabilities or logits. Ties count one half:

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1, 0, 1], [0.2, 0.2, 0.1, 0.9])
    0.875
    >>> roc_auc([0, 1, float("nan"), 1], [0.2, 0.2, 0.95, 0.9])
    0.75
    """
    labels, scores = check_labels_and_scores(labels, scores)
    if labels.shape[1] != 1:
        raise DataError(f"roc_auc: one class expected, got {labels.shape[1]} columns (use per_class_auc)")
    return float(per_class_auc(labels, scores, ("class",)).auc[0])


__all__ = [
    "ClassAUC", "RankIndex", "check_labels", "check_labels_and_scores", "label_counts", "per_class_auc",
    "positive_fractions",
    "resolve_class_names", "roc_auc", "undefined_auc_reason",
]

"""Classification metrics: per-class ROC AUC, their mean, seeded bootstrap confidence intervals, ROC curves.

The paper (Section 5.1, Table 1, Figs. 3-5) reports one ROC AUC per class on the official test split.
Each AUC is :func:`thoracic.metrics.per_class_auc`, the one AUC of thoracic (training logs the same
function): the Mann-Whitney statistic, identical to scikit-learn's ``roc_auc_score``, over the rows
labelled for the class (a NaN label means "not labelled" and is skipped). A class whose labelled rows hold
a single value has no AUC: it is NaN with a reason, and the mean is over the defined classes.

Confidence intervals are percentile intervals of a seeded, non-parametric bootstrap over images (the same
resample for every class, so the mean's interval is consistent with the per-class ones; each class counts
the resampled images labelled for it). The bootstrap is vectorised: an AUC under resampling with
replacement is a *weighted* Mann-Whitney statistic whose weights are the multiplicities of each image, so
each class is sorted once and each resample costs a few passes over an array of counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thoracic.deprecation import renamed_keywords
from thoracic.metrics import check_labels_and_scores, per_class_auc, resolve_class_names, roc_auc


@dataclass(frozen=True)
class AUCResult:
    """Per-class AUCs of one split.

    Attributes:
        class_names: column order of every array.
        auc: ``(C,)`` AUC per class; NaN where undefined.
        reasons: ``class -> why its AUC is NaN`` (only for NaN classes).
        mean_auc: mean over the classes whose AUC is defined (NaN if none is).
        n_positive, n_negative: ``(C,)`` labelled positives / negatives per class (a NaN label counts as
            neither: the image is not labelled for that class).
        ci_low, ci_high: ``(C,)`` bootstrap percentile bounds, or None without a bootstrap.
        mean_ci: ``(low, high)`` of the mean AUC, or None.
        n_bootstrap, confidence, seed: how the intervals were drawn (0 / None without a bootstrap).
        replicates: ``(n_bootstrap, C)`` AUC of every resample (NaN where a resample lacks a label value),
            kept only when asked (``compute_auc(..., keep_replicates=True)``): differences between
            independently resampled groups (subgroup gaps) need them.
    """

    class_names: tuple[str, ...]
    auc: np.ndarray
    reasons: dict[str, str]
    mean_auc: float
    n_positive: np.ndarray
    n_negative: np.ndarray
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    mean_ci: tuple[float, float] | None = None
    n_bootstrap: int = 0
    confidence: float = 0.95
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    replicates: np.ndarray | None = field(default=None, repr=False)

    def to_frame(self) -> pd.DataFrame:
        """One row per class plus a final ``Mean`` row: auc, ci_low, ci_high, n_positive, n_negative, note."""
        rows = []
        for i, name in enumerate(self.class_names):
            rows.append({
                "class_name": name,
                "auc": self.auc[i],
                "ci_low": self.ci_low[i] if self.ci_low is not None else np.nan,
                "ci_high": self.ci_high[i] if self.ci_high is not None else np.nan,
                "n_positive": int(self.n_positive[i]),
                "n_negative": int(self.n_negative[i]),
                "note": self.reasons.get(name, ""),
            })
        defined = int(np.isfinite(self.auc).sum())
        rows.append({
            "class_name": "Mean",
            "auc": self.mean_auc,
            "ci_low": self.mean_ci[0] if self.mean_ci else np.nan,
            "ci_high": self.mean_ci[1] if self.mean_ci else np.nan,
            "n_positive": int(self.n_positive.sum()),
            "n_negative": int(self.n_negative.sum()),
            "note": f"mean over {defined} of {len(self.class_names)} classes with a defined AUC",
        })
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN as None)."""

        def num(value: float) -> float | None:
            return None if value is None or not np.isfinite(value) else float(value)

        per_class = {}
        for i, name in enumerate(self.class_names):
            per_class[name] = {
                "auc": num(self.auc[i]),
                "ci_low": num(self.ci_low[i]) if self.ci_low is not None else None,
                "ci_high": num(self.ci_high[i]) if self.ci_high is not None else None,
                "n_positive": int(self.n_positive[i]),
                "n_negative": int(self.n_negative[i]),
                "note": self.reasons.get(name),
            }
        return {
            "class_names": list(self.class_names),
            "mean_auc": num(self.mean_auc),
            "mean_ci": [num(v) for v in self.mean_ci] if self.mean_ci else None,
            "per_class": per_class,
            "bootstrap": {"n_resamples": self.n_bootstrap, "confidence": self.confidence, "seed": self.seed},
            **self.extra,
        }


@renamed_keywords(n_bootstrap="bootstrap")
def compute_auc(
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str] | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    confidence: float = 0.95,
    chunk_size: int = 100,
    progress: bool = False,
    keep_replicates: bool = False,
) -> AUCResult:
    """Per-class ROC AUC, the mean over defined classes, and optional bootstrap CIs (paper Table 1).

    Args:
        labels: ``(N, C)`` ground truth: 1, 0, or NaN (not labelled: left out of that class's AUC).
        scores: ``(N, C)`` probabilities or logits (AUC is rank based, so either gives the same AUC).
        class_names: the ``C`` class names, in column order (default
            :func:`~thoracic.metrics.resolve_class_names`: ``class_0, class_1, ...``).
        bootstrap: number of bootstrap resamples of the images (0: no intervals).
        seed: seed of the bootstrap's generator (``numpy.random.default_rng``).
        confidence: two-sided level of the percentile interval.
        chunk_size: resamples computed together (memory ~ chunk_size x N x 8 bytes x a few).
        progress: show a progress bar over chunks.
        keep_replicates: keep the ``(bootstrap, C)`` resample AUCs in ``AUCResult.replicates``.

    Returns:
        :class:`AUCResult`: ``auc`` ``(C,)`` (NaN with a reason where the labelled rows of a class hold
        one value),
        ``mean_auc`` over the defined classes, and with ``bootstrap > 0`` the percentile bounds
        ``ci_low`` / ``ci_high`` ``(C,)`` and ``mean_ci``. AUCs are unitless, in [0, 1].

    >>> import numpy as np
    >>> labels = np.array([[0, 1], [1, 1], [0, 0], [1, 1]])
    >>> scores = np.array([[0.1, 0.9], [0.8, 0.7], [0.3, 0.2], [0.6, 0.4]])
    >>> result = compute_auc(labels, scores, class_names=("Mass", "Nodule"))
    >>> result.auc.tolist(), result.mean_auc
    ([1.0, 1.0], 1.0)
    >>> compute_auc(labels[:, :1] * 0, scores[:, :1], class_names=("Mass",)).reasons
    {'Mass': 'AUC undefined: all 4 images are negative for Mass'}
    >>> unlabelled = np.where([[1, 0], [0, 0], [1, 0], [1, 0]], np.nan, labels)  # NaN: not labelled
    >>> compute_auc(unlabelled, scores, class_names=("Mass", "Nodule")).n_positive.tolist()
    [1, 3]
    >>> rng = np.random.default_rng(0)
    >>> labels = rng.integers(0, 2, size=(200, 3))
    >>> result = compute_auc(labels, labels + rng.normal(0, 0.8, (200, 3)), class_names="ABC",
    ...                      bootstrap=100, seed=0)
    >>> bool(np.all((result.ci_low <= result.auc) & (result.auc <= result.ci_high)))
    True
    """
    labels, scores = check_labels_and_scores(labels, scores)
    n, c = labels.shape
    point = per_class_auc(labels, scores, class_names)
    class_names, auc, reasons, ranks = point.class_names, point.auc, point.reasons, point.ranks
    n_pos, n_neg, mean_auc = point.n_positive, point.n_negative, point.mean_auc
    if bootstrap <= 0:
        return AUCResult(class_names, auc, reasons, mean_auc, n_pos, n_neg)

    undefined = {class_names.index(k) for k in reasons}
    rng = np.random.default_rng(seed)
    boot = np.empty((bootstrap, c))
    chunks = range(0, bootstrap, chunk_size)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="bootstrap", unit="chunk", leave=False)
    for first in chunks:
        b = min(chunk_size, bootstrap - first)
        index = rng.integers(0, n, size=(b, n))
        # multiplicity of every image in every resample: one bincount over offset indices
        counts = np.bincount((index + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n)
        # float32 is exact for integer counts up to 2**24 and halves the memory traffic
        counts = counts.reshape(b, n).astype(np.float32)
        for j in range(c):
            if j in undefined:
                boot[first:first + b, j] = np.nan
                continue
            boot[first:first + b, j] = ranks[j].auc(counts)
    alpha = (1.0 - confidence) / 2.0
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        ci_low = np.nanquantile(boot, alpha, axis=0)
        ci_high = np.nanquantile(boot, 1 - alpha, axis=0)
        # the mean of each resample is over the classes defined on the full split (a resample that
        # loses all positives of a rare class then averages over the others, as the point estimate would)
        defined = np.isfinite(auc)
        boot_mean = np.nanmean(boot[:, defined], axis=1) if defined.any() else np.full(bootstrap, np.nan)
        mean_ci = (float(np.nanquantile(boot_mean, alpha)), float(np.nanquantile(boot_mean, 1 - alpha)))
    ci_low[~np.isfinite(auc)] = np.nan
    ci_high[~np.isfinite(auc)] = np.nan
    return AUCResult(class_names, auc, reasons, mean_auc, n_pos, n_neg, ci_low, ci_high, mean_ci,
                     bootstrap, confidence, seed, replicates=boot if keep_replicates else None)


class _quiet_nan_warnings:
    """Silence 'All-NaN slice' / 'Mean of empty slice' locally: such classes are reported as NaN on purpose."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending) of one class.

    Same points as ``sklearn.metrics.roc_curve(drop_intermediate=False)`` on the labelled rows (NaN
    labels are skipped), starting at (0, 0). Empty arrays when the labelled rows hold one value.
    """
    labels, scores = check_labels_and_scores(labels, scores)
    labelled = ~np.isnan(labels[:, 0])
    y, s = labels[labelled, 0], scores[labelled, 0]
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        empty = np.empty(0)
        return empty, empty, empty
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    thresholds = np.r_[np.inf, s[last]]
    return fpr, tpr, thresholds


def roc_curves(labels: np.ndarray, scores: np.ndarray,
               class_names: Sequence[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``class -> (fpr, tpr)`` for every class with both label values among its labelled rows (paper
    Figs. 3-5)."""
    labels, scores = check_labels_and_scores(labels, scores)
    class_names = resolve_class_names(class_names, labels.shape[1])
    curves = {}
    for j, name in enumerate(class_names):
        fpr, tpr, _ = roc_curve(labels[:, j], scores[:, j])
        if len(fpr):
            curves[name] = (fpr, tpr)
    return curves


__all__ = ["AUCResult", "compute_auc", "roc_auc", "roc_curve", "roc_curves"]

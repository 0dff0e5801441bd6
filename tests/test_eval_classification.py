"""Per-class AUC, NaN handling, bootstrap CIs and ROC curves against scikit-learn and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from thoracic.constants import CLASS_NAMES
from thoracic.evaluation.classification import compute_auc, roc_auc, roc_curve, roc_curves
from thoracic.evaluation.references import load_classification_reference, load_localization_reference


def _data(n: int = 400, c: int = 14, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.2).astype(int)
    scores = rng.random((n, c)) + 0.4 * labels
    scores[:, 1] = np.round(scores[:, 1], 1)  # many ties
    return labels, scores


def test_auc_equals_sklearn_including_ties() -> None:
    labels, scores = _data()
    result = compute_auc(labels, scores)
    expected = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(14)]
    np.testing.assert_allclose(result.auc, expected, rtol=0, atol=1e-12)
    assert result.mean_auc == pytest.approx(np.mean(expected))
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)  # hand-computed
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)  # all tied


def test_single_label_value_gives_nan_with_reason_and_mean_over_defined() -> None:
    labels, scores = _data()
    labels[:, 13] = 0  # Hernia: no positive
    labels[:, 12] = 1  # Pleural_Thickening: no negative
    result = compute_auc(labels, scores, CLASS_NAMES, bootstrap=20)
    assert np.isnan(result.auc[13]) and np.isnan(result.auc[12])
    assert "Hernia" in result.reasons and "negative" in result.reasons["Hernia"]
    assert "positive" in result.reasons["Pleural_Thickening"]
    assert result.mean_auc == pytest.approx(np.mean(result.auc[:12]))
    assert np.isnan(result.ci_low[13]) and np.isfinite(result.ci_low[:12]).all()
    frame = result.to_frame()
    assert frame.loc[13, "note"] and frame.iloc[-1]["class_name"] == "Mean"
    assert result.to_dict()["per_class"]["Hernia"]["auc"] is None  # JSON-safe


def test_bootstrap_matches_a_plain_loop_and_is_seeded() -> None:
    labels, scores = _data(n=150, c=3)
    result = compute_auc(labels, scores, class_names=CLASS_NAMES[:3], bootstrap=40, seed=7, chunk_size=40)
    # the same resamples drawn by hand, each scored by scikit-learn
    index = np.random.default_rng(7).integers(0, 150, size=(40, 150))
    loop = np.array([[roc_auc_score(labels[i, j], scores[i, j]) for j in range(3)] for i in index])
    np.testing.assert_allclose(result.ci_low, np.quantile(loop, 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(result.ci_high, np.quantile(loop, 0.975, axis=0), atol=1e-12)
    again = compute_auc(labels, scores, class_names=CLASS_NAMES[:3], bootstrap=40, seed=7, chunk_size=7)
    np.testing.assert_array_equal(result.ci_low, again.ci_low)  # chunking does not change the draws' use
    assert np.all(result.ci_low <= result.auc) and np.all(result.auc <= result.ci_high)
    assert result.mean_ci[0] <= result.mean_auc <= result.mean_ci[1]


def test_roc_curve_matches_sklearn() -> None:
    labels, scores = _data()
    for j in (0, 1):
        fpr, tpr, _ = roc_curve(labels[:, j], scores[:, j])
        expected_fpr, expected_tpr, _ = sklearn_roc_curve(labels[:, j], scores[:, j], drop_intermediate=False)
        np.testing.assert_allclose(fpr, expected_fpr)
        np.testing.assert_allclose(tpr, expected_tpr)
    labels[:, 5] = 0
    assert "Nodule" not in roc_curves(labels, scores) and len(roc_curves(labels, scores)) == 13


def test_references_load_as_package_data() -> None:
    auc = load_classification_reference()
    assert list(auc.index) == list(CLASS_NAMES)
    assert auc["wang2017_resnet50"].mean() == pytest.approx(0.7451, abs=1e-4)
    assert auc["paper_space_attention"].mean() == pytest.approx(0.7938, abs=1e-4)
    localization = load_localization_reference()
    row = localization[(localization["metric"] == "IoU") & (localization["threshold"] == 0.3)
                       & (localization["class_name"] == "Atelectasis")]
    assert row["accuracy"].item() == pytest.approx(0.2444)

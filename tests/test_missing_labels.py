"""Missing labels are missing: a NaN label (not labelled, or an uncertain label ignored) is skipped per class
by the loss and its weights, the AUC and its bootstrap, the operating points, calibration and subgroups.

Every metric is checked against scikit-learn (or torchmetrics) on the rows labelled for each class, and
against the same data with NaN read as 0, which must give other numbers (so the masking cannot break
unnoticed).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score, roc_curve
from torchmetrics.functional.classification import binary_calibration_error

from thoracic.errors import DataError
from thoracic.evaluation.calibration import (
    evaluate_calibration,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from thoracic.evaluation.classification import compute_auc, roc_curves
from thoracic.evaluation.operating_points import choose_thresholds, operating_point_table, sensitivity_specificity
from thoracic.evaluation.predictions import Predictions, load_predictions, save_predictions
from thoracic.evaluation.subgroups import evaluate_subgroups, subgroup_attributes
from thoracic.losses import BCEWithLogits, FocalLossWithLogits, PerClassWeightedBCEWithLogits, WeightedBCEWithLogits
from thoracic.metrics import per_class_auc, positive_fractions
from thoracic.training.module import DeduplicatedAUROC

CLASSES = ("A", "B", "C", "D")


def with_missing(n: int = 300, seed: int = 0, missing: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``(labels with NaN, scores)``: scores carry signal; about ``missing`` of every column is not labelled,
    and the unlabelled rows of class A score high (so reading them as negatives would move its AUC)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(CLASSES))) < [0.3, 0.2, 0.4, 0.1]).astype(np.float64)
    scores = np.clip(0.4 * labels + rng.normal(0.3, 0.2, labels.shape), 0, 1)
    scores[:, 1] = np.round(scores[:, 1], 1)  # ties
    labels[rng.random(labels.shape) < missing] = np.nan
    scores[np.isnan(labels[:, 0]), 0] = np.clip(scores[np.isnan(labels[:, 0]), 0] + 0.5, 0, 1)
    return labels, scores


def labelled(labels: np.ndarray, j: int) -> np.ndarray:
    return ~np.isnan(labels[:, j])


# --------------------------------------------------------------------------------------------------
# The loss: NaN entries add nothing, Eq. 1's weights count the labelled entries
# --------------------------------------------------------------------------------------------------

LOGITS = torch.tensor([[0.0, 2.0, -1.0], [-1.0, 0.5, 3.0]])
NAN = float("nan")
TARGETS = torch.tensor([[1.0, NAN, 0.0], [0.0, 0.0, 1.0]])


def softplus(z: float) -> float:
    return math.log1p(math.exp(z))


def test_wcel_weights_count_only_labelled_entries_hand_computed() -> None:
    # labelled: |P| = 2, |N| = 3 (the NaN counts in neither): beta_P = 5/2, beta_N = 5/3
    image1 = 2.5 * softplus(-0.0) + 5 / 3 * softplus(-1.0)
    image2 = 5 / 3 * (softplus(-1.0) + softplus(0.5)) + 2.5 * softplus(-3.0)
    value = WeightedBCEWithLogits()(LOGITS, TARGETS)
    assert value.item() == pytest.approx((image1 + image2) / 2, rel=1e-6)
    # reading the NaN as a negative changes both the weights and the terms
    as_zero = WeightedBCEWithLogits()(LOGITS, torch.nan_to_num(TARGETS))
    assert abs(as_zero.item() - value.item()) > 0.1


def test_per_class_weights_from_labelled_rows_hand_computed() -> None:
    train = np.array([[1, 0, NAN], [0, NAN, NAN], [0, 1, NAN], [NAN, 0, NAN]])
    frequencies = positive_fractions(train)
    np.testing.assert_allclose(frequencies, [1 / 3, 1 / 3, np.nan])  # over 3, 3 and 0 labelled rows
    loss = PerClassWeightedBCEWithLogits(frequencies)
    # beta_P = (3, 3, 1: never labelled), beta_N = (1.5, 1.5, 1); the NaN target adds nothing
    image1 = 3 * softplus(-0.0) + 1 * softplus(-1.0)
    image2 = 1.5 * softplus(-1.0) + 1.5 * softplus(0.5) + 1 * softplus(-3.0)
    assert loss(LOGITS, TARGETS).item() == pytest.approx((image1 + image2) / 2, rel=1e-6)


@pytest.mark.parametrize("loss", [WeightedBCEWithLogits(), PerClassWeightedBCEWithLogits([0.5, 0.25, 0.5]),
                                  BCEWithLogits(), FocalLossWithLogits(2.0)], ids=lambda m: type(m).__name__)
def test_nan_entries_add_nothing_and_get_no_gradient(loss: torch.nn.Module) -> None:
    logits = LOGITS.clone().requires_grad_(True)
    value = loss(logits, TARGETS)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert logits.grad[0, 1].item() == 0.0 and (logits.grad.abs().sum() > 0)
    moved = LOGITS.clone()
    moved[0, 1] = -7.0  # the unlabelled entry's logit does not matter
    assert loss(moved, TARGETS).item() == pytest.approx(value.item(), rel=1e-6)
    if not isinstance(loss, (WeightedBCEWithLogits, PerClassWeightedBCEWithLogits)):
        # unweighted losses: exactly the sum over labelled entries of the element-wise loss, / batch
        terms = [softplus(-0.0), softplus(-1.0), softplus(-1.0), softplus(0.5), softplus(-3.0)]
        if isinstance(loss, FocalLossWithLogits):
            terms = [(1 - math.exp(-t)) ** 2 * t for t in terms]
        assert value.item() == pytest.approx(sum(terms) / 2, rel=1e-5)


def test_without_nan_the_losses_are_unchanged() -> None:
    full = torch.nan_to_num(TARGETS)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, full, reduction="sum") / 2
    assert BCEWithLogits()(LOGITS, full).item() == pytest.approx(bce.item(), rel=1e-7)


# --------------------------------------------------------------------------------------------------
# AUC, bootstrap and ROC curves
# --------------------------------------------------------------------------------------------------


def test_auc_is_sklearn_on_each_class_labelled_rows() -> None:
    labels, scores = with_missing()
    result = compute_auc(labels, scores, CLASSES)
    expected = [roc_auc_score(labels[labelled(labels, j), j], scores[labelled(labels, j), j]) for j in range(4)]
    np.testing.assert_allclose(result.auc, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result.n_positive, np.nansum(labels, 0))
    np.testing.assert_array_equal(result.n_positive + result.n_negative, (~np.isnan(labels)).sum(0))
    # NaN read as 0 (a negative) gives another AUC for class A, whose unlabelled rows score high
    as_zero = compute_auc(np.nan_to_num(labels), scores, CLASSES)
    assert abs(as_zero.auc[0] - result.auc[0]) > 0.05


def test_a_class_whose_labelled_rows_hold_one_value_has_no_auc() -> None:
    labels, scores = with_missing(n=60)
    labels[:, 2] = np.where(np.isnan(labels[:, 2]), np.nan, 1.0)  # every labelled row positive
    labels[:, 3] = np.nan  # never labelled
    result = compute_auc(labels, scores, CLASSES, bootstrap=20)
    assert np.isnan(result.auc[2:]).all() and np.isnan(result.ci_low[2:]).all()
    assert "labelled images are positive for C" in result.reasons["C"]
    assert result.reasons["D"] == "AUC undefined: none of the 60 images is labelled for D"
    assert result.mean_auc == pytest.approx(np.mean(result.auc[:2]))
    assert "C" not in roc_curves(labels, scores, CLASSES) and set(roc_curves(labels, scores, CLASSES)) == {"A", "B"}


def test_bootstrap_uses_the_labelled_rows_of_each_resample() -> None:
    labels, scores = with_missing(n=120, seed=3)
    result = compute_auc(labels, scores, CLASSES, bootstrap=30, seed=5, keep_replicates=True)
    index = np.random.default_rng(5).integers(0, 120, size=(30, 120))  # the resamples compute_auc draws
    for b, rows in enumerate(index):
        for j in range(4):
            keep = rows[labelled(labels, j)[rows]]
            assert result.replicates[b, j] == pytest.approx(roc_auc_score(labels[keep, j], scores[keep, j]),
                                                            abs=1e-12)
    assert np.all(result.ci_low <= result.auc) and np.all(result.auc <= result.ci_high)


def test_roc_curve_is_sklearn_on_labelled_rows() -> None:
    labels, scores = with_missing()
    fpr, tpr = roc_curves(labels, scores, CLASSES)["A"]
    keep = labelled(labels, 0)
    expected_fpr, expected_tpr, _ = roc_curve(labels[keep, 0], scores[keep, 0], drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)


def test_labels_other_than_0_1_nan_are_refused() -> None:
    with pytest.raises(DataError, match="0, 1 or NaN"):
        per_class_auc(np.array([[0.0], [1.0], [-1.0]]), np.zeros((3, 1)))


# --------------------------------------------------------------------------------------------------
# Training's AUC: the same function, gathered and de-duplicated
# --------------------------------------------------------------------------------------------------


def test_training_auc_skips_missing_labels_like_evaluation() -> None:
    labels, scores = with_missing(n=40, seed=2)
    metric = DeduplicatedAUROC(len(CLASSES))
    metric.update(torch.from_numpy(scores[:30]).float(), torch.from_numpy(labels[:30]).float(), torch.arange(30))
    metric.update(torch.from_numpy(scores[:4]).float(), torch.from_numpy(labels[:4]).float(), torch.arange(4))
    metric.update(torch.from_numpy(scores[30:]).float(), torch.from_numpy(labels[30:]).float(), torch.arange(30, 40))
    auc = metric.compute().numpy()
    expected = compute_auc(labels, scores.astype(np.float32), CLASSES).auc
    np.testing.assert_allclose(auc, expected, rtol=0, atol=1e-6, equal_nan=True)
    for j in range(4):
        keep = labelled(labels, j)
        if 0 < np.nansum(labels[:, j]) < keep.sum():
            assert auc[j] == pytest.approx(roc_auc_score(labels[keep, j], scores[keep, j]), abs=1e-6)


# --------------------------------------------------------------------------------------------------
# Operating points
# --------------------------------------------------------------------------------------------------


def test_operating_points_are_chosen_and_measured_on_labelled_rows() -> None:
    labels, scores = with_missing(seed=4)
    thresholds = choose_thresholds(labels, scores, CLASSES, "youden")
    for j, name in enumerate(CLASSES):
        keep = labelled(labels, j)
        fpr, tpr, cut = roc_curve(labels[keep, j], scores[keep, j], drop_intermediate=False)
        best = np.flatnonzero(np.isclose(tpr - fpr, (tpr - fpr).max()))
        assert thresholds[name] == pytest.approx(cut[best[0]])
        sensitivity, specificity = sensitivity_specificity(labels[:, j], scores[:, j], thresholds[name])
        called = scores[keep, j] >= thresholds[name]
        truth = labels[keep, j] == 1
        assert sensitivity == pytest.approx(called[truth].mean())
        assert specificity == pytest.approx((~called[~truth]).mean())
    table = operating_point_table(labels, scores, thresholds, class_names=CLASSES)
    np.testing.assert_array_equal(table["n_positive"] + table["n_negative"], (~np.isnan(labels)).sum(0))
    # NaN read as 0: the unlabelled high scores of A become false positives and its specificity drops
    _, specificity_as_zero = sensitivity_specificity(np.nan_to_num(labels[:, 0]), scores[:, 0], thresholds["A"])
    assert specificity_as_zero < table.loc[0, "specificity"] - 0.05


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------


def test_ece_and_reliability_bins_use_labelled_rows() -> None:
    labels, probabilities = with_missing(n=2000, seed=6)
    ece = expected_calibration_error(labels, probabilities, n_bins=10)
    bins = reliability_bins(labels, probabilities, CLASSES, n_bins=10)
    for j, name in enumerate(CLASSES):
        keep = labelled(labels, j)
        expected = binary_calibration_error(torch.from_numpy(probabilities[keep, j]),
                                            torch.from_numpy(labels[keep, j]).long(), n_bins=10, norm="l1")
        assert ece[j] == pytest.approx(float(expected), abs=1e-9)
        part = bins[(bins["class_name"] == name) & (bins["count"] > 0)]
        assert part["count"].sum() == keep.sum()
        if name == "B":
            continue  # B's scores sit on the bin edges, which scikit-learn assigns to the lower bin
        prob_true, prob_pred = calibration_curve(labels[keep, j], probabilities[keep, j], n_bins=10)
        np.testing.assert_allclose(part["fraction_positive"], prob_true, atol=1e-12)
        np.testing.assert_allclose(part["mean_probability"], prob_pred, atol=1e-12)
    assert abs(expected_calibration_error(np.nan_to_num(labels), probabilities, 10)[0] - ece[0]) > 0.05


def test_temperature_is_fitted_on_labelled_rows() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 3, (6000, 2))
    labels = (rng.random((6000, 2)) < expit(logits / 2.5)).astype(np.float64)
    labels[rng.random(labels.shape) < 0.4] = np.nan
    temperature, notes = fit_temperature(logits, labels, "per_class", ("A", "B"))
    for j in range(2):
        keep = labelled(labels, j)
        alone, _ = fit_temperature(logits[keep, j:j + 1], labels[keep, j:j + 1], "per_class", ("A",))
        assert temperature[j] == pytest.approx(alone[0], rel=1e-6)
    np.testing.assert_allclose(temperature, 2.5, rtol=0.1)
    as_zero, _ = fit_temperature(logits, np.nan_to_num(labels), "per_class", ("A", "B"))
    assert not np.allclose(as_zero, temperature, rtol=0.05)
    single, _ = fit_temperature(logits, labels, "single", ("A", "B"))
    assert single[0] == pytest.approx(2.5, rel=0.1)
    labels[:, 1] = np.nan
    temperature, notes = fit_temperature(logits, labels, "per_class", ("A", "B"))
    assert temperature[1] == 1.0 and "none of the 6000 fitting images is labelled" in notes["B"]
    table = evaluate_calibration(labels, logits, ("A", "B"), temperature).table.set_index("class_name")
    assert table.loc["A", "n_images"] == labelled(labels, 0).sum() and table.loc["B", "n_images"] == 0
    assert np.isnan(table.loc["B", "ece"]) and np.isfinite(table.loc["A", "ece"])


# --------------------------------------------------------------------------------------------------
# Subgroups
# --------------------------------------------------------------------------------------------------


def test_subgroups_skip_missing_labels() -> None:
    labels, scores = with_missing(n=400, seed=8)
    rng = np.random.default_rng(8)
    ids = np.array([f"{i:08d}_000.png" for i in range(len(labels))])
    metadata = pd.DataFrame({"image_id": ids, "sex": rng.choice(["M", "F"], len(ids)),
                             "age": rng.integers(20, 90, len(ids)), "view": rng.choice(["PA", "AP"], len(ids)),
                             "follow_up": rng.integers(0, 3, len(ids))})
    thresholds = {name: 0.45 for name in CLASSES}
    result = evaluate_subgroups(labels, scores, ids, metadata, thresholds, class_names=CLASSES, bootstrap=20,
                                attributes=("sex", "view"))
    attributes = subgroup_attributes(metadata).loc[ids]
    rows = result.groups[result.groups["class_name"] != "Mean"]
    for row in rows.itertuples(index=False):
        j = CLASSES.index(row.class_name)
        group = (attributes[row.attribute].to_numpy() == row.group) & labelled(labels, j)
        y, s = labels[group, j], scores[group, j]
        assert (row.n_positive, row.n_negative) == (int(y.sum()), int((y == 0).sum()))
        assert row.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert row.tpr == pytest.approx((s[y == 1] >= 0.45).mean())
    as_zero = evaluate_subgroups(np.nan_to_num(labels), scores, ids, metadata, thresholds, class_names=CLASSES,
                                 bootstrap=0, attributes=("sex",))
    a_rows = as_zero.groups[as_zero.groups["class_name"] == "A"]["auc"].to_numpy()
    assert np.abs(a_rows - rows[(rows["class_name"] == "A") & (rows["attribute"] == "sex")]["auc"].to_numpy()).min() > 0.02


# --------------------------------------------------------------------------------------------------
# The predictions file keeps them missing
# --------------------------------------------------------------------------------------------------


def test_predictions_file_writes_missing_labels_as_empty_cells(tmp_path: Path) -> None:
    labels, scores = with_missing(n=5, seed=9)
    labels[0, 0] = np.nan
    predictions = Predictions(np.array([f"{i}.png" for i in range(5)]), scores, labels, CLASSES)
    path = save_predictions(predictions, tmp_path / "predictions_test.csv")
    first = path.read_text().splitlines()[1].split(",")
    assert first[1 + len(CLASSES)] == ""  # label_A of the first image: not labelled
    assert set(v for v in first[1 + len(CLASSES):] if v) <= {"0", "1"}  # labels stay integers
    back = load_predictions(path, CLASSES)
    np.testing.assert_array_equal(back.labels, labels)

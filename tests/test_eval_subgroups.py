"""Subgroup evaluation: AUC equal to scikit-learn's on each group's rows, TPR at the operating points,
undefined groups kept with their reason, configurable age bands, gaps with CIs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from thoracic.errors import DataError
from thoracic.evaluation.subgroups import (
    age_band_labels,
    evaluate_subgroups,
    save_subgroups,
    subgroup_attributes,
    subgroup_thresholds,
)

CLASSES = ("A", "B", "C")


def synthetic(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Labels, scores that carry signal, image ids and a data-entry table (no one under 20, some ages wrong)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(CLASSES))) < [0.3, 0.2, 0.1]).astype(int)
    scores = np.clip(0.5 * labels + rng.normal(0.3, 0.2, labels.shape), 0, 1)
    scores[:, 2] = np.round(scores[:, 2], 1)  # ties
    ids = np.array([f"{i:08d}_000.png" for i in range(n)])
    age = rng.integers(20, 95, n)
    age[:3] = [150, 412, 130]  # data-entry errors
    metadata = pd.DataFrame({"image_id": ids, "sex": rng.choice(["M", "F"], n, p=[0.6, 0.4]), "age": age,
                             "view": rng.choice(["PA", "AP"], n), "follow_up": rng.integers(0, 4, n),
                             "patient_id": np.arange(n)})
    return labels, scores, ids, metadata


def test_subgroup_auc_equals_sklearn_on_the_same_rows() -> None:
    labels, scores, ids, metadata = synthetic()
    result = evaluate_subgroups(labels, scores, ids, metadata, class_names=CLASSES, bootstrap=50, seed=1)
    attributes = subgroup_attributes(metadata).loc[ids]
    checked = 0
    for row in result.groups[result.groups["class_name"] != "Mean"].itertuples(index=False):
        rows = np.flatnonzero(attributes[row.attribute].to_numpy() == row.group)
        assert row.n_images == len(rows)
        j = CLASSES.index(row.class_name)
        y = labels[rows, j]
        if 0 < y.sum() < len(y):
            assert row.auc == pytest.approx(roc_auc_score(y, scores[rows, j]), abs=1e-12)
            assert row.auc_ci_low <= row.auc <= row.auc_ci_high
            checked += 1
        else:
            reason = "AUC undefined" if len(rows) else "no images in this group"
            assert np.isnan(row.auc) and reason in row.note
    assert checked >= 20
    # the groups of each attribute partition the images
    means = result.groups[result.groups["class_name"] == "Mean"]
    assert (means.groupby("attribute")["n_images"].sum() == len(ids)).all()


def test_every_group_is_listed_even_when_empty_or_too_small() -> None:
    labels, scores, ids, metadata = synthetic()
    result = evaluate_subgroups(labels, scores, ids, metadata, class_names=CLASSES, bootstrap=20, min_count=15)
    groups = result.groups
    assert list(dict.fromkeys(groups.loc[groups["attribute"] == "age_band", "group"])) == \
        ["0-19", "20-39", "40-59", "60-79", "80+", "unknown"]
    empty = groups[(groups["group"] == "0-19")]
    assert len(empty) == len(CLASSES) + 1 and (empty["n_images"] == 0).all()
    assert empty["auc"].isna().all() and empty["note"].str.contains("no images in this group").all()
    unknown = groups[(groups["group"] == "unknown") & (groups["class_name"] == "Mean")]
    assert unknown["n_images"].item() == 3  # ages 150, 412, 130: never counted as 80+
    # a class with fewer than min_count positives in a group: NaN with the counts in the note, row kept
    small = groups[(groups["class_name"] == "C") & (groups["n_positive"] < 15) & (groups["n_images"] > 0)]
    assert len(small) > 0 and small["auc"].isna().all()
    assert small["note"].str.contains("at least 15 of each needed").all()
    # a gap to or from an undefined group is undefined, and says why
    gaps = result.gaps[(result.gaps["group"] == "0-19") & (result.gaps["metric"] == "auc")]
    assert gaps["gap"].isna().all() and gaps["note"].str.len().gt(0).all()


def test_tpr_at_operating_points_and_the_fallback(tmp_path: Path) -> None:
    labels, scores, ids, metadata = synthetic()
    thresholds, source = subgroup_thresholds(tmp_path, CLASSES)
    assert thresholds == {c: 0.5 for c in CLASSES} and "no operating_points.json" in source
    (tmp_path / "operating_points.json").write_text(json.dumps(
        {"method": "youden", "split": "val", "thresholds": {"A": 0.62, "B": 0.41}}))
    thresholds, source = subgroup_thresholds(tmp_path, CLASSES)
    assert thresholds == {"A": 0.62, "B": 0.41, "C": 0.5}
    assert "youden on val" in source and "0.5 for C" in source
    result = evaluate_subgroups(labels, scores, ids, metadata, thresholds, source, CLASSES, bootstrap=30)
    attributes = subgroup_attributes(metadata).loc[ids]
    for row in result.groups[(result.groups["attribute"] == "sex") & (result.groups["class_name"] != "Mean")].itertuples():
        rows = np.flatnonzero(attributes["sex"].to_numpy() == row.group)
        j = CLASSES.index(row.class_name)
        positives = labels[rows, j] == 1
        expected = (scores[rows, j][positives] >= thresholds[row.class_name]).mean()
        assert row.threshold == thresholds[row.class_name]
        assert row.tpr == pytest.approx(expected)
        assert row.tpr_ci_low <= row.tpr <= row.tpr_ci_high
    assert result.settings["threshold_source"] == source


@pytest.mark.parametrize("content, message", [
    ("not json", "not valid JSON"),
    (json.dumps({"thresholds": {"A": 1.5}}), "thresholds['A'] is 1.5"),
    (json.dumps({"thresholds": {"Z": 0.3}}), "unknown class"),
    (json.dumps({"method": "f1"}), "expected a 'thresholds' object"),
])
def test_bad_operating_points_file_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "operating_points.json").write_text(content)
    with pytest.raises(DataError, match="operating_points.json") as error:
        subgroup_thresholds(tmp_path, CLASSES)
    assert message in str(error.value)


def test_gaps_are_group_minus_reference_with_a_ci() -> None:
    labels, scores, ids, metadata = synthetic(n=600)
    scores = scores.copy()
    female = metadata["sex"].to_numpy() == "F"
    scores[female] = np.random.default_rng(5).random((female.sum(), len(CLASSES)))  # no signal for F
    result = evaluate_subgroups(labels, scores, ids, metadata, class_names=CLASSES, bootstrap=200, seed=3)
    groups = result.groups.set_index(["attribute", "group", "class_name"])
    gap = result.gaps[(result.gaps["attribute"] == "sex") & (result.gaps["metric"] == "auc")].set_index("class_name")
    assert set(gap["reference"]) == {"M"}  # the larger group
    for name in CLASSES:
        expected = groups.loc[("sex", "F", name), "auc"] - groups.loc[("sex", "M", name), "auc"]
        assert gap.loc[name, "gap"] == pytest.approx(expected)
        assert gap.loc[name, "ci_low"] <= gap.loc[name, "gap"] <= gap.loc[name, "ci_high"]
    # a model without signal for women: the mean AUC gap is clearly negative, its CI excludes 0
    assert gap.loc["Mean", "gap"] < -0.2 and gap.loc["Mean", "ci_high"] < 0
    # seeded: the same call gives the same intervals
    again = evaluate_subgroups(labels, scores, ids, metadata, class_names=CLASSES, bootstrap=200, seed=3)
    pd.testing.assert_frame_equal(again.gaps, result.gaps)


def test_configurable_age_bands_and_follow_up() -> None:
    assert age_band_labels([0, 20, 40, 60, 80]) == ["0-19", "20-39", "40-59", "60-79", "80+"]
    metadata = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "sex": ["M", "F", "M", "F", "O"],
                             "age": [3, 49, 50, 121, 88], "view": ["PA", "AP", "PA", "AP", "LL"],
                             "follow_up": [0, 1, 7, 0, 2]})
    table = subgroup_attributes(metadata, age_bands=(0, 50))
    assert table["age_band"].tolist() == ["0-49", "0-49", "50+", "unknown", "50+"]
    assert table["follow_up"].tolist() == ["first", "later", "later", "first", "later"]
    assert table["view"].tolist() == ["PA", "AP", "PA", "AP", "LL"]  # other values become their own group
    with pytest.raises(DataError, match="increasing"):
        age_band_labels([20, 10])
    with pytest.raises(DataError, match="not in the data-entry table"):
        evaluate_subgroups(np.zeros((1, 1)), np.zeros((1, 1)), ["zzz"], metadata, class_names=("A",), bootstrap=0)


def test_files_beside_the_auc_table(tmp_path: Path) -> None:
    labels, scores, ids, metadata = synthetic(n=200)
    result = evaluate_subgroups(labels, scores, ids, metadata, class_names=CLASSES, bootstrap=20)
    files = save_subgroups(result, tmp_path, "test")
    table = pd.read_csv(files["subgroups_csv"])
    assert list(table.columns[:4]) == ["attribute", "group", "class_name", "n_images"]
    assert len(table) == len(result.groups)
    info = json.loads(files["subgroups_json"].read_text())
    assert info["split"] == "test" and info["age_band_labels"][-1] == "80+" and len(info["gaps"]) == len(result.gaps)
    assert files["subgroups_png"].stat().st_size > 10_000


def test_without_bootstrap_values_stay_and_intervals_are_empty() -> None:
    labels, scores, ids, metadata = synthetic(n=200)
    result = evaluate_subgroups(labels, scores, ids, metadata, class_names=CLASSES, bootstrap=0)
    defined = result.groups[np.isfinite(result.groups["auc"])]
    assert len(defined) > 10 and defined["auc_ci_low"].isna().all() and defined["tpr_ci_low"].isna().all()
    assert np.isfinite(result.gaps["gap"]).any() and result.gaps["ci_low"].isna().all()

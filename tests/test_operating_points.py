"""Per-class operating points: Youden's J and F1 thresholds agree with scikit-learn; the file contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_curve, roc_curve

from thoracic.constants import CLASS_NAMES
from thoracic.errors import DataError, RunError
from thoracic.evaluation.operating_points import (
    DEFAULT_THRESHOLD,
    choose_threshold,
    choose_thresholds,
    load_operating_points,
    operating_point_table,
    save_operating_points,
    sensitivity_specificity,
)


def _data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(float)
    scores = np.clip(0.35 * labels + rng.normal(0.4, 0.2, n), 0, 1).round(2)  # ties included
    return labels, scores


@pytest.mark.parametrize("seed", range(5))
def test_youden_threshold_matches_scikit_learn(seed: int) -> None:
    labels, scores = _data(seed)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    best = np.max(tpr - fpr)
    chosen = choose_threshold(labels, scores, "youden")
    sensitivity, specificity = sensitivity_specificity(labels, scores, chosen)
    assert sensitivity + specificity - 1 == pytest.approx(best)
    # the highest threshold among the equally good ones (the most specific)
    assert chosen == pytest.approx(max(t for t, j in zip(thresholds, tpr - fpr) if np.isclose(j, best) and np.isfinite(t)))


@pytest.mark.parametrize("seed", range(5))
def test_f1_threshold_matches_scikit_learn(seed: int) -> None:
    labels, scores = _data(seed)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        best = np.nanmax(2 * precision * recall / (precision + recall))
    chosen = choose_threshold(labels, scores, "f1")
    assert f1_score(labels, scores >= chosen) == pytest.approx(best)


def test_sensitivity_specificity_by_hand_and_undefined_classes() -> None:
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.4, 0.5, 0.2, 0.1])
    assert sensitivity_specificity(labels, scores, 0.5) == (0.5, pytest.approx(2 / 3))
    assert sensitivity_specificity(labels, scores, 0.4) == (1.0, pytest.approx(2 / 3))
    assert choose_threshold(labels, scores) == 0.4  # J = 1 + 2/3 - 1 beats 0.5 + 2/3 - 1
    assert choose_threshold(np.zeros(5), scores) is None  # no positive: no ROC curve
    assert choose_threshold(np.zeros(0), np.zeros(0)) is None
    with pytest.raises(Exception, match="youden"):
        choose_threshold(labels, scores, "accuracy")


def test_contract_file_and_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random((200, 14)) < 0.3).astype(float)
    labels[:, -1] = 0  # Hernia: no positive on "val"
    scores = np.clip(0.3 * labels + rng.random((200, 14)) * 0.7, 0, 1)
    thresholds = choose_thresholds(labels, scores, CLASS_NAMES, "youden")
    assert thresholds["Hernia"] is None and all(thresholds[n] is not None for n in CLASS_NAMES[:-1])
    path = save_operating_points(tmp_path / "evaluation" / "operating_points.json", "youden", thresholds)
    data = json.loads(path.read_text())
    assert data == {"method": "youden", "split": "val",
                    "thresholds": {n: (DEFAULT_THRESHOLD if t is None else t) for n, t in thresholds.items()}}
    assert load_operating_points(path)["thresholds"]["Hernia"] == DEFAULT_THRESHOLD

    table = operating_point_table(labels, scores, thresholds, auc=np.full(14, 0.8), class_names=CLASS_NAMES)
    assert list(table.columns) == ["class_name", "auc", "threshold", "sensitivity", "specificity",
                                   "n_positive", "n_negative", "note"]
    assert "no positives or no negatives on the val split" in table.iloc[-1]["note"]
    assert np.isnan(table.iloc[-1]["sensitivity"]) and table.iloc[0]["note"] == ""
    sens, spec = sensitivity_specificity(labels[:, 0], scores[:, 0], thresholds[CLASS_NAMES[0]])
    assert (table.iloc[0]["sensitivity"], table.iloc[0]["specificity"]) == (sens, spec)


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"),
    ('{"method": "youden", "thresholds": {}}', "expected the keys method, split, thresholds"),
    (json.dumps({"method": "f1", "split": "val", "thresholds": {n: 0.5 for n in CLASS_NAMES[:-1]}}),
     "no threshold for Hernia"),
    (json.dumps({"method": "f1", "split": "val", "thresholds": {**{n: 0.5 for n in CLASS_NAMES}, "Mass": "high"}}),
     "threshold of Mass must be a number in \\[0, 1\\], got 'high'"),
    (json.dumps({"method": "f1", "split": "val", "thresholds": {**{n: 0.5 for n in CLASS_NAMES}, "Edema": 1.5}}),
     "threshold of Edema"),
])
def test_bad_operating_point_files_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "operating_points.json"
    path.write_text(content)
    with pytest.raises(RunError, match=message) as caught:
        load_operating_points(path, CLASS_NAMES)  # checked against the model's labels
    assert str(path) in str(caught.value)


def test_lenient_reading_keeps_the_classes_the_file_has(tmp_path: Path) -> None:
    path = tmp_path / "operating_points.json"
    path.write_text(json.dumps({"thresholds": {"Mass": 0.25, "Atelectasis": 1}}))
    points = load_operating_points(path, CLASS_NAMES, strict=False)
    assert points == {"thresholds": {"Atelectasis": 1.0, "Mass": 0.25}}  # class order; no method / split
    assert list(points["thresholds"]) == ["Atelectasis", "Mass"]
    assert list(load_operating_points(path, strict=False)["thresholds"]) == ["Mass", "Atelectasis"]  # the file's
    with pytest.raises(RunError, match="expected the keys method, split, thresholds"):
        load_operating_points(path)
    path.write_text(json.dumps({"method": "f1", "thresholds": {"Mass": 0.25, "Lump": 0.5}}))
    with pytest.raises(DataError, match="unknown class"):
        load_operating_points(path, CLASS_NAMES, strict=False)

"""Calibration: ECE and reliability bins against scikit-learn / their definition, temperature scaling that
recovers a known temperature, the stored artefact tied to its checkpoint, and `evaluate --calibrate` ->
`predict` end to end on a phantom run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_run
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES
from thoracic.errors import DataError
from thoracic.evaluation.calibration import (
    CALIBRATION_FILE,
    apply_temperature,
    calibration_for_checkpoint,
    evaluate_calibration,
    expected_calibration_error,
    fit_temperature,
    read_calibration,
    reliability_bins,
    write_calibration,
)


def overconfident(n: int = 4000, temperature: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits z whose true probabilities are sigmoid(z / temperature): over-confident by that factor."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 2))
    labels = (rng.random((n, 2)) < expit(logits / temperature)).astype(int)
    return logits, labels


def test_ece_matches_its_reliability_bins_and_sklearn_bins() -> None:
    logits, labels = overconfident(n=2000)
    probabilities = expit(logits)
    ece = expected_calibration_error(labels, probabilities, n_bins=10)
    bins = reliability_bins(labels, probabilities, ("A", "B"), n_bins=10)
    for j, name in enumerate(("A", "B")):
        part = bins[(bins["class_name"] == name) & (bins["count"] > 0)]
        weights = part["count"] / part["count"].sum()
        assert ece[j] == pytest.approx(float((weights * (part["fraction_positive"] - part["mean_probability"]).abs()).sum()),
                                       abs=1e-6)
        prob_true, prob_pred = calibration_curve(labels[:, j], probabilities[:, j], n_bins=10, strategy="uniform")
        np.testing.assert_allclose(part["fraction_positive"], prob_true, atol=1e-12)
        np.testing.assert_allclose(part["mean_probability"], prob_pred, atol=1e-12)
    assert (ece > 0.05).all()  # over-confident logits are visibly miscalibrated


def test_temperature_scaling_recovers_the_temperature_and_keeps_auc() -> None:
    logits, labels = overconfident(n=20000, temperature=2.5)
    temperature, notes = fit_temperature(logits, labels, "per_class", ("A", "B"))
    np.testing.assert_allclose(temperature, 2.5, rtol=0.06)
    assert notes == {}
    single, _ = fit_temperature(logits, labels, "single", ("A", "B"))
    assert single[0] == single[1] and single[0] == pytest.approx(2.5, rel=0.06)
    test_logits, test_labels = overconfident(n=4000, temperature=2.5, seed=1)
    result = evaluate_calibration(test_labels, test_logits, ("A", "B"), temperature)
    table = result.table.set_index("class_name")
    assert (table.loc[["A", "B"], "ece_calibrated"] < table.loc[["A", "B"], "ece"] / 3).all()
    calibrated = apply_temperature(test_logits, temperature)
    for j in range(2):  # a positive temperature keeps the order: the AUC does not move
        assert roc_auc_score(test_labels[:, j], calibrated[:, j]) == pytest.approx(
            roc_auc_score(test_labels[:, j], test_logits[:, j]))
    assert set(result.bins["probabilities"]) == {"raw", "calibrated"}


def test_a_class_without_positives_keeps_temperature_one() -> None:
    logits, labels = overconfident(n=500)
    labels[:, 1] = 0
    temperature, notes = fit_temperature(logits, labels, "per_class", ("A", "B"))
    assert temperature[1] == 1.0 and "all 500 fitting images are negative" in notes["B"]
    with pytest.raises(DataError, match="calibration mode"):
        fit_temperature(logits, labels, "isotonic", ("A", "B"))


def test_stored_calibration_is_tied_to_its_checkpoint(tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.ckpt"
    checkpoint.write_bytes(b"weights one")
    temperature = np.linspace(0.5, 2.0, len(CLASS_NAMES))
    path = write_calibration(tmp_path / CALIBRATION_FILE, temperature, "per_class", checkpoint, n_fit=10,
                             class_names=CLASS_NAMES)
    info = json.loads(path.read_text())
    assert info["method"] == "temperature" and info["fitted_on"] == "val" and len(info["temperature"]) == 14
    stored, message = calibration_for_checkpoint(tmp_path, checkpoint)
    np.testing.assert_allclose(stored.temperature, temperature)
    assert message.startswith("applied temperature scaling per class")
    checkpoint.write_bytes(b"weights two")  # retrained: the calibration no longer belongs to it
    stored, message = calibration_for_checkpoint(tmp_path, checkpoint)
    assert stored is None and "fitted for other weights" in message
    path.write_text(json.dumps({**info, "temperature": -1.0}))
    with pytest.raises(DataError, match="must be positive"):
        read_calibration(path)
    assert calibration_for_checkpoint(tmp_path / "nothing", checkpoint)[0] is None


@pytest.mark.slow
def test_evaluate_calibrate_then_predict_and_report(phantom_dir: Path, phantom_cache: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    run = make_run(tmp_path / "baseline", phantom_dir, "baseline", 0)
    assert main(["evaluate", str(run), "--bootstrap", "30", "--no-progress", "--calibrate",
                 "--age-bands", "0", "40", "65"]) == 0
    evaluation = run / "evaluation"
    stored = json.loads((evaluation / CALIBRATION_FILE).read_text())
    assert stored["fitted_on"] == "val" and stored["ece_split"] == "test"
    calibration = pd.read_csv(evaluation / "calibration_test.csv").set_index("class_name")
    assert calibration.loc["Mean", "ece"] == pytest.approx(stored["ece_before"], abs=1e-6)
    assert (evaluation / "reliability_test.png").is_file() and (evaluation / "reliability_test.csv").is_file()

    # subgroups of the phantom test split: sklearn's AUC on the same rows of the predictions file
    groups = pd.read_csv(evaluation / "subgroups_test.csv")
    assert set(groups["attribute"]) == {"sex", "age_band", "view", "follow_up"}
    assert list(dict.fromkeys(groups.loc[groups["attribute"] == "age_band", "group"])) == ["0-39", "40-64", "65+"]
    predictions = pd.read_csv(evaluation / "predictions_test.csv")
    entry = pd.read_csv(phantom_dir / "Data_Entry_2017_v2020.csv", index_col=False)
    merged = predictions.merge(entry, left_on="image_id", right_on="Image Index")
    for (attribute, column, value), name in [(("sex", "Patient Gender", "M"), "Effusion"),
                                             (("view", "View Position", "AP"), "Infiltration")]:
        rows = merged[merged[column] == value]
        row = groups[(groups["attribute"] == attribute) & (groups["group"] == value) & (groups["class_name"] == name)]
        y = rows[f"label_{name}"]
        if 0 < y.sum() < len(y):
            assert row["auc"].item() == pytest.approx(roc_auc_score(y, rows[f"prob_{name}"]), abs=1e-6)
        else:
            assert np.isnan(row["auc"].item())

    # predict applies the stored temperature: sigmoid(logit / T) of the model's own logits
    image = sorted((phantom_dir / "images").glob("*.png"))[0]
    capsys.readouterr()
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "pred"), "--json",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "applied temperature scaling per class" in captured.err
    probabilities = json.loads(captured.out)["images"][0]["probabilities"]
    from thoracic.data.images import read_image
    from thoracic.prediction import preprocess
    from thoracic.training.checkpoints import load_run

    loaded = load_run(run)
    with torch.no_grad():
        logits = loaded.model(preprocess(read_image(image), 64)[None]).logits[0].double().numpy()
    expected = expit(logits / np.asarray(stored["temperature"]))
    np.testing.assert_allclose([probabilities[c] for c in CLASS_NAMES], expected, atol=1e-5)
    record = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert record["calibration"]["applied"] is True
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "raw"), "--json",
                 "--no-calibration", "--no-progress"]) == 0
    raw = json.loads(capsys.readouterr().out)["images"][0]["probabilities"]
    np.testing.assert_allclose([raw[c] for c in CLASS_NAMES], expit(logits), atol=1e-5)

    # an export carries the calibration, and predict --model applies it
    assert main(["export", str(run)]) == 0
    capsys.readouterr()
    assert main(["predict", str(image), "--model", str(run / "export" / "baseline.onnx"), "--out",
                 str(tmp_path / "onnx"), "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "applied temperature scaling per class" in captured.err
    exported = json.loads(captured.out)["images"][0]["probabilities"]
    np.testing.assert_allclose([exported[c] for c in CLASS_NAMES], expected, atol=1e-5)

    # the report has both sections, computed from these files
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Subgroups" in markdown and "## Calibration" in markdown
    assert "| sex | M - F (M: 15 images) |" in markdown or "| sex | F - M" in markdown
    assert f"{stored['ece_before']:.4f}" in markdown and f"{stored['ece_after']:.4f}" in markdown

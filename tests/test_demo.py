"""`thoracic demo`: the whole pipeline on tiny phantoms, its reuse of finished steps, and its headline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from thoracic.cli import main
from thoracic.demo import (
    DEMO_MODELS,
    DEMO_OVERRIDES,
    DemoResult,
    DemoSettings,
    check_learning,
    format_headline,
    headline_numbers,
    run_demo,
)

HEADLINE_COLUMNS = ["model", "method", "mean AUC",
                    "IoU>0.3 model", "IoU>0.3 random", "IoU>0.3 centre",
                    "IoBB>0.25 model", "IoBB>0.25 random", "IoBB>0.25 centre"]


def tiny_settings(out_dir: Path) -> DemoSettings:
    """The demo's code path at test size: 120 phantoms at 64 px, the baseline only, one epoch."""
    overrides = {**DEMO_OVERRIDES, "data.image_size": 64, "train.max_epochs": 1}
    return DemoSettings(out_dir=out_dir, num_images=120, image_size=64, models=("baseline",),
                        overrides=overrides, n_bootstrap=20, progress=False, workers=1)


@pytest.mark.slow
def test_demo_end_to_end_then_reuses_data_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tiny_settings(tmp_path / "demo")
    logged: list[str] = []
    result = run_demo(settings, log=logged.append)

    assert result.report_markdown.is_file() and result.report_html.is_file()
    assert result.report_markdown.parent == settings.out_dir / "report"
    assert set(result.runs) == {"baseline"}
    run = result.runs["baseline"]
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 1
    for name in ("auc_test.json", "localization_native.csv", "localization_gradcam.csv", "localization_ig.csv",
                 "registration_native.csv"):
        assert (run / "evaluation" / name).is_file()
    # one headline row per (model, heatmap method): Grad-CAM and Integrated Gradients beside the native
    # maps for the baseline
    headline = result.headline
    assert list(headline.columns) == HEADLINE_COLUMNS
    assert list(zip(headline["model"], headline["method"])) == [
        ("baseline", "native"), ("baseline", "gradcam"), ("baseline", "ig")]
    auc = json.loads((run / "evaluation" / "auc_test.json").read_text())["mean_auc"]
    assert headline["mean AUC"].tolist() == [auc, auc, auc]
    # the demo's record (what the README copies) holds the same headline and the conditions
    record = json.loads((settings.out_dir / "demo_results.json").read_text())
    assert [(r["model"], r["method"]) for r in record["headline"]] == list(zip(headline["model"], headline["method"]))
    assert record["output_stride"] == DEMO_OVERRIDES["model.output_stride"] and record["image_size"] == 64
    accuracies = headline[HEADLINE_COLUMNS[3:]].to_numpy()
    assert ((accuracies >= 0) & (accuracies <= 1)).all()
    # the baselines do not depend on the heatmap method
    assert headline["IoU>0.3 centre"].nunique() == 1 and headline["IoBB>0.25 random"].nunique() == 1
    assert str(result.report_html) in format_headline(result)
    assert any("[3/4] training baseline" in line and "64 px" in line for line in logged)

    # second call: the phantom folder and the finished run are reused, nothing is generated or trained
    phantom_info = settings.out_dir / "phantom" / "phantom.json"
    checkpoint = run / "checkpoints" / "best.ckpt"
    stamps = (phantom_info.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo redid a finished step")

    monkeypatch.setattr("thoracic.data.synth.generate_phantom_dataset", refuse)
    monkeypatch.setattr("thoracic.training.trainer.train", refuse)
    logged.clear()
    again = run_demo(settings, log=logged.append)
    assert (phantom_info.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns) == stamps
    assert any("already trained with this config: reused" in line for line in logged)
    pd.testing.assert_frame_equal(again.headline, headline)


def write_run(folder: Path, mean_auc: float, tables: dict[str, pd.DataFrame]) -> Path:
    evaluation = folder / "evaluation"
    evaluation.mkdir(parents=True)
    (evaluation / "auc_test.json").write_text(json.dumps({"mean_auc": mean_auc}))
    for method, table in tables.items():
        table.to_csv(evaluation / f"localization_{method}.csv", index=False, float_format="%.6f")
    return folder


def localization_table(method: str, model_iou: list[float], model_iobb: list[float]) -> pd.DataFrame:
    """Rows like ``localize_run`` writes for two box classes: the model at each heatmap threshold and
    pooled ("all"), the baselines without threshold; rows that the headline must ignore hold 0.9."""
    rows = []
    for k, name in enumerate(("Mass", "Nodule")):
        for threshold in ("60", "180"):  # per threshold: not the headline
            rows += [(method, threshold, "IoU", 0.3, name, 0.9), (method, threshold, "IoBB", 0.25, name, 0.9)]
        rows += [(method, "all", "IoU", 0.3, name, model_iou[k]), (method, "all", "IoBB", 0.25, name, model_iobb[k]),
                 (method, "all", "IoU", 0.1, name, 0.9), (method, "all", "IoBB", 0.5, name, 0.9),  # other T
                 ("random box", "", "IoU", 0.3, name, [0.1, 0.0][k]), ("random box", "", "IoBB", 0.25, name, 0.1),
                 ("centre box", "", "IoU", 0.3, name, 0.2), ("centre box", "", "IoBB", 0.25, name, [0.3, 0.5][k])]
    return pd.DataFrame(rows, columns=["source", "threshold", "metric", "t", "class_name", "accuracy"])


def test_headline_numbers_reads_pooled_model_rows_and_baselines(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "baseline", 0.93, {
        "native": localization_table("native", [0.4, 0.2], [0.5, 0.3]),
        "gradcam": localization_table("gradcam", [0.0, 0.1], [0.6, 0.6]),
    })
    gated = write_run(tmp_path / "attention_gated", 0.85, {"native": localization_table("native", [1, 1], [0, 0])})
    headline = headline_numbers({"baseline": baseline, "attention_gated": gated},
                                {"baseline": ("native", "gradcam")})  # gated: native by default
    assert list(headline.columns) == HEADLINE_COLUMNS
    expected = pd.DataFrame([
        ("baseline", "native", 0.93, 0.3, 0.05, 0.2, 0.4, 0.1, 0.4),
        ("baseline", "gradcam", 0.93, 0.05, 0.05, 0.2, 0.6, 0.1, 0.4),
        ("attention_gated", "native", 0.85, 1.0, 0.05, 0.2, 0.0, 0.1, 0.4),
    ], columns=HEADLINE_COLUMNS)
    pd.testing.assert_frame_equal(headline, expected, atol=1e-9, check_dtype=False)


def test_check_learning_names_each_shortfall() -> None:
    def row(model: str, method: str, auc: float, iou: float, iobb: float) -> dict[str, object]:
        return dict(zip(HEADLINE_COLUMNS, (model, method, auc, iou, 0.05, 0.2, iobb, 0.1, 0.4)))

    good = pd.DataFrame([row("baseline", "native", 0.95, 0.3, 0.5)])
    assert check_learning(good) == []
    bad = pd.DataFrame([
        row("baseline", "native", 0.95, 0.3, 0.5),
        row("space_attention", "native", 0.85, 0.3, 0.5),           # AUC under 0.9
        row("attention_gated", "native", 0.95, 0.2, 0.5),           # IoU equal to the centre box: not above
        row("baseline", "gradcam", math.nan, math.nan, 0.41),       # NaN is never good enough
    ])
    problems = check_learning(bad)
    assert problems == [
        "space_attention: mean AUC 0.850 < 0.9",
        "attention_gated native: IoU>0.3 accuracy 0.200 not above random 0.050 / centre 0.200",
        "baseline: mean AUC nan < 0.9",
        "baseline gradcam: IoU>0.3 accuracy nan not above random 0.050 / centre 0.200",
    ]
    assert check_learning(bad, min_auc=0.8)[0].startswith("attention_gated native: IoU>0.3")


def test_format_headline_says_where_the_report_is(tmp_path: Path) -> None:
    headline = pd.DataFrame([dict(zip(HEADLINE_COLUMNS, ("baseline", "native", 0.9712, 0.2, 0.05, 0.1,
                                                         0.34, 0.11, 0.13)))])
    result = DemoResult(tmp_path / "report.md", tmp_path / "report.html", {}, headline, 90.0)
    text = format_headline(result)
    assert "1.5 min" in text and str(tmp_path / "report.html") in text and "0.971" in text


def test_demo_command_passes_every_option_to_run_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``thoracic demo`` options reach :func:`run_demo`; the headline and any shortfall are printed."""
    calls: list[DemoSettings] = []
    headline = pd.DataFrame([dict(zip(HEADLINE_COLUMNS, ("baseline", "native", 0.5, 0.0, 0.05, 0.2,
                                                         0.3, 0.1, 0.4)))])

    def fake_run_demo(settings: DemoSettings) -> DemoResult:
        calls.append(settings)
        return DemoResult(tmp_path / "report.md", tmp_path / "report.html", {}, headline, 30.0)

    monkeypatch.setattr("thoracic.demo.run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path / "d"), "--images", "50", "--size", "48", "--seed", "3",
                 "--models", "baseline", "attention_gated", "--epochs", "2", "--no-progress"]) == 0
    settings = calls[-1]
    assert (settings.out_dir, settings.num_images, settings.image_size, settings.seed) == (tmp_path / "d", 50, 48, 3)
    assert settings.models == ("baseline", "attention_gated") and settings.progress is False
    assert settings.overrides == {**DEMO_OVERRIDES, "train.max_epochs": 2}
    out = capsys.readouterr().out
    assert str(tmp_path / "report.html") in out and "0.500" in out
    assert "did not reach its targets" in out and "baseline: mean AUC 0.500 < 0.9" in out
    # no options: the documented defaults (what `make demo` runs)
    assert main(["demo"]) == 0
    assert calls[-1] == DemoSettings()
    assert DemoSettings().overrides == DEMO_OVERRIDES and DemoSettings().models == DEMO_MODELS
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--models", "resnet_attention"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--output-stride", "--threads"):
        assert option in text

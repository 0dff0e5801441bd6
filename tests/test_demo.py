"""`thoracic demo`: the whole pipeline on tiny phantoms, its reuse of finished steps, and its headline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from thoracic.cli import main
from thoracic.reporting.explorer import read_data_script
from thoracic.workflows.demo import (
    CHECK_COLUMNS,
    DEMO_MODELS,
    DEMO_OVERRIDES,
    HEADLINE_COLUMNS,
    DemoResult,
    DemoSettings,
    check_learning,
    check_records,
    check_table,
    format_headline,
    headline_numbers,
    run_demo,
)

ACCURACY_COLUMNS = ["IoU>0.3 model", "IoU>0.3 random", "IoU>0.3 centre", "IoU>0.3 T60", "IoU>0.3 pooled",
                    "IoBB>0.25 model", "IoBB>0.25 random", "IoBB>0.25 centre", "IoBB>0.25 T60", "IoBB>0.25 pooled",
                    "pointing model", "pointing random", "pointing centre"]


def tiny_settings(out_dir: Path) -> DemoSettings:
    """The demo's code path at test size: 120 phantoms at 64 px, the baseline only, one epoch."""
    overrides = {**DEMO_OVERRIDES, "data.image_size": 64, "train.max_epochs": 1}
    return DemoSettings(out_dir=out_dir, num_images=120, image_size=64, models=("baseline",),
                        overrides=overrides, n_bootstrap=20, progress=False, workers=1, explain_images=4)


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
    assert list(headline.columns) == list(HEADLINE_COLUMNS)
    assert list(zip(headline["model"], headline["method"])) == [
        ("baseline", "native"), ("baseline", "gradcam"), ("baseline", "ig")]
    auc = json.loads((run / "evaluation" / "auc_test.json").read_text())["mean_auc"]
    assert headline["mean AUC"].tolist() == [auc, auc, auc]
    # the demo's record (what the README copies) holds the same headline and the conditions
    record = json.loads((settings.out_dir / "demo_results.json").read_text())
    assert [(r["model"], r["method"]) for r in record["headline"]] == list(zip(headline["model"], headline["method"]))
    assert record["output_stride"] == DEMO_OVERRIDES["model.output_stride"] and record["image_size"] == 64
    accuracies = headline[ACCURACY_COLUMNS].to_numpy()
    assert ((accuracies >= 0) & (accuracies <= 1)).all()
    assert (headline["classes"] >= 1).all() and (headline["classes"] <= 8).all()
    assert (headline["IoU>0.3 random sd"] >= 0).all() and (headline["IoU>0.3 FP"] >= 0).all()
    # the baselines do not depend on the heatmap method
    assert headline["IoU>0.3 centre"].nunique() == 1 and headline["IoBB>0.25 random"].nunique() == 1
    assert headline["pointing centre"].nunique() == 1
    assert str(result.report_html) in format_headline(result)
    # subgroup and calibration sections computed on the phantom test split; each run exported to ONNX
    # and checked in onnxruntime against PyTorch
    markdown = result.report_markdown.read_text()
    for heading in ("## Subgroups", "## Calibration", "## Exported models", "| sex | F |", "| view | AP |"):
        assert heading in markdown
    assert (run / "evaluation" / "calibration.json").is_file() and (run / "evaluation" / "subgroups_test.csv").is_file()
    export_info = json.loads((run / "export" / "baseline.onnx.json").read_text())
    assert export_info["calibration"]["fitted_on"] == "val"
    assert max(export_info["verification"]["max_abs_diff"].values()) <= 1e-4
    assert any("[3/5] training baseline" in line and "64 px" in line for line in logged)
    # the heatmap checks (thoracic explain) of the baseline's native maps and Grad-CAM: in the result, the
    # record, the report and the explorer, each the verdicts explain.json holds
    explained = json.loads((run / "evaluation" / "explain.json").read_text())
    assert explained["methods"] == ["native", "gradcam"] and explained["n_images"] == 4
    assert explained["checks"] == ["randomization", "faithfulness", "masks"]
    assert result.checks == {"baseline": explained["verdicts"]}
    assert [(r["model"], r["method"]) for r in record["checks"]] == [("baseline", "native"), ("baseline", "gradcam")]
    for entry in record["checks"]:
        verdicts = explained["verdicts"][entry["method"]]
        assert entry["randomization_flagged"] == verdicts["randomization"]["flagged"]
        assert entry["faithfulness"] == verdicts["faithfulness"]["verdict"]
        assert entry["texts"] == {check: v["text"] for check, v in verdicts.items()}
    assert record["explain_images"] == 4
    assert set(record["steps_seconds"]) >= {"phantom", "cache", "train baseline", "evaluate", "localize native",
                                            "localize ig", "export", "explain", "report"}
    assert "## Can these heatmaps be trusted?" in markdown
    assert "can these heatmaps be trusted?" in format_headline(result)
    for method in ("native", "gradcam"):
        assert verdicts_in(markdown, explained["verdicts"][method])
    # the report's explorer page: every scored box row of every heatmap method the demo localized
    explorer = read_data_script(result.report_html.parent / "explorer" / "data.js")
    assert sorted(s["method"] for s in explorer["sources"]) == ["gradcam", "ig", "native"]
    assert "(explorer/index.html)" in markdown
    assert {s["method"]: [c["check"] for c in s["checks"]] for s in explorer["sources"]} == {
        "native": ["randomization", "faithfulness", "masks"], "gradcam": ["randomization", "faithfulness", "masks"],
        "ig": []}

    # second call: the phantom folder and the finished run are reused, nothing is generated or trained
    phantom_info = settings.out_dir / "phantom" / "phantom.json"
    checkpoint = run / "checkpoints" / "best.ckpt"
    stamps = (phantom_info.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the demo redid a finished step")

    monkeypatch.setattr("thoracic.workflows.demo.generate_phantom_dataset", refuse)
    monkeypatch.setattr("thoracic.workflows.demo.train", refuse)
    logged.clear()
    again = run_demo(settings, log=logged.append)
    assert (phantom_info.stat().st_mtime_ns, checkpoint.stat().st_mtime_ns) == stamps
    assert any("already trained with this config: reused" in line for line in logged)
    pd.testing.assert_frame_equal(again.headline, headline)
    # the heatmap checks are reused part by part (same checkpoint, images and settings)
    parts = json.loads((run / "evaluation" / "explain.json").read_text())["parts"]
    assert parts["computed"] == [] and len(parts["reused"]) >= 6
    assert again.checks == result.checks


def verdicts_in(markdown: str, verdicts: dict) -> bool:
    return all(verdict["text"] in markdown for verdict in verdicts.values())


def write_run(folder: Path, mean_auc: float, tables: dict[str, pd.DataFrame]) -> Path:
    evaluation = folder / "evaluation"
    evaluation.mkdir(parents=True)
    (evaluation / "auc_test.json").write_text(json.dumps({"mean_auc": mean_auc}))
    for method, table in tables.items():
        table.to_csv(evaluation / f"localization_{method}.csv", index=False, float_format="%.6f")
    return folder


def localization_table(method: str, model: dict[str, float]) -> pd.DataFrame:
    """Rows like ``localize_run`` writes: the model per heatmap threshold (60, 180, pooled "all") and its
    pointing game, the baselines without threshold. The headline reads the "Mean" rows at IoU>0.3 and
    IoBB>0.25; every other row holds 0.99 and must be ignored."""
    columns = ["source", "threshold", "metric", "t", "class_name", "accuracy", "accuracy_sd", "n_draws", "n_boxes",
               "n_localized", "false_positives_per_image", "n_classes"]
    rows = []

    def add(source: str, threshold: str, metric: str, t: float, value: float, sd: float = math.nan,
            fp: float = math.nan) -> None:
        rows.append((source, threshold, metric, t, "Mean", value, sd, 1, 7, 0, fp, 2))
        for name in ("Mass", "Nodule"):  # per-class rows: not the headline
            rows.append((source, threshold, metric, t, name, 0.99, sd, 1, 3, 0, 0.99, 1))

    for threshold in ("60", "180", "all"):
        for metric, t in (("IoU", 0.3), ("IoBB", 0.25)):
            add(method, threshold, metric, t, model[f"{metric} {threshold}"], fp=model[f"{metric} FP {threshold}"])
        add(method, threshold, "IoU", 0.1, 0.99)  # other T: not the headline
    add(method, "", "pointing", math.nan, model["pointing"])
    for metric, t, random, centre in (("IoU", 0.3, 0.05, 0.2), ("IoBB", 0.25, 0.1, 0.4)):
        add("random box", "", metric, t, random, sd=0.01, fp=1.0)
        add("centre box", "", metric, t, centre, fp=1.0)
    add("random box", "", "pointing", math.nan, 0.11, sd=0.02)
    add("centre box", "", "pointing", math.nan, 0.12)
    return pd.DataFrame(rows, columns=columns)


def model_numbers(iou: float, iobb: float, pointing: float) -> dict[str, float]:
    numbers = {"pointing": pointing}
    for metric, value in (("IoU", iou), ("IoBB", iobb)):
        numbers.update({f"{metric} 180": value, f"{metric} 60": value / 2, f"{metric} all": value / 4,
                        f"{metric} FP 180": 1.5, f"{metric} FP 60": 9.0, f"{metric} FP all": 9.0})
    return numbers


def test_headline_numbers_reads_threshold_180_mean_rows_and_baselines(tmp_path: Path) -> None:
    baseline = write_run(tmp_path / "baseline", 0.93, {
        "native": localization_table("native", model_numbers(0.4, 0.5, 0.6)),
        "gradcam": localization_table("gradcam", model_numbers(0.0, 0.6, 0.2)),
    })
    gated = write_run(tmp_path / "attention_gated", 0.85,
                      {"native": localization_table("native", model_numbers(1.0, 0.0, 0.3))})
    headline = headline_numbers({"baseline": baseline, "attention_gated": gated},
                                {"baseline": ("native", "gradcam")})  # gated: native by default
    assert list(headline.columns) == list(HEADLINE_COLUMNS)

    def expected(model: str, method: str, auc: float, iou: float, iobb: float, pointing: float) -> list[object]:
        values: list[object] = [model, method, auc, 2.0]
        for value, random, centre in ((iou, 0.05, 0.2), (iobb, 0.1, 0.4)):
            values += [value, 1.5, random, 0.01, centre, value / 2, value / 4]
        return values + [pointing, 0.11, 0.12]

    frame = pd.DataFrame([expected("baseline", "native", 0.93, 0.4, 0.5, 0.6),
                          expected("baseline", "gradcam", 0.93, 0.0, 0.6, 0.2),
                          expected("attention_gated", "native", 0.85, 1.0, 0.0, 0.3)], columns=list(HEADLINE_COLUMNS))
    pd.testing.assert_frame_equal(headline, frame, atol=1e-9, check_dtype=False)


def headline_row(model: str, method: str, auc: float, iou: float, iobb: float) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(HEADLINE_COLUMNS, 0.5)
    row.update({"model": model, "method": method, "mean AUC": auc, "classes": 8.0,
                "IoU>0.3 model": iou, "IoU>0.3 random": 0.05, "IoU>0.3 random sd": 0.02, "IoU>0.3 centre": 0.2,
                "IoBB>0.25 model": iobb, "IoBB>0.25 random": 0.1, "IoBB>0.25 random sd": 0.03,
                "IoBB>0.25 centre": 0.4, "IoU>0.3 FP": 1.25})
    return row


def test_check_learning_names_each_shortfall() -> None:
    good = pd.DataFrame([headline_row("baseline", "native", 0.95, 0.3, 0.5)])
    assert check_learning(good) == []
    bad = pd.DataFrame([
        headline_row("baseline", "native", 0.95, 0.3, 0.5),
        headline_row("space_attention", "native", 0.85, 0.3, 0.5),           # AUC under 0.9
        headline_row("attention_gated", "native", 0.95, 0.2, 0.5),           # IoU equal to the centre box
        headline_row("baseline", "gradcam", math.nan, math.nan, 0.41),       # NaN is never good enough
    ])
    problems = check_learning(bad)
    assert problems == [
        "space_attention: mean AUC 0.850 < 0.9",
        "attention_gated native: IoU>0.3 accuracy 0.200 (heatmap threshold 180) not above random 0.050 "
        "(mean of draws) / centre 0.200",
        "baseline: mean AUC nan < 0.9",
        "baseline gradcam: IoU>0.3 accuracy nan (heatmap threshold 180) not above random 0.050 (mean of draws) "
        "/ centre 0.200",
    ]
    assert check_learning(bad, min_auc=0.8)[0].startswith("attention_gated native: IoU>0.3")
    # the heatmap checks: a method flagged by the randomization test, or not more faithful than a random order
    checks = {"baseline": {"native": {"randomization": {"flagged": False, "text": "passes"},
                                      "faithfulness": {"verdict": "faithful", "text": "faithful"}},
                           "gradcam": {"randomization": {"flagged": True, "text": "FLAGGED: rho 0.9"},
                                       "faithfulness": {"verdict": "not better than a random order", "text": "no"}}}}
    assert check_learning(good, checks=checks) == [
        "baseline gradcam: flagged by the model randomization test (FLAGGED: rho 0.9)",
        "baseline gradcam: maps not more faithful than a random order (no)"]


def test_the_heatmap_checks_summary_reads_explain_verdicts() -> None:
    checks = {"baseline": {"native": {
        "randomization": {"flagged": False, "spearman_median": 0.071, "text": "passes: ..."},
        "faithfulness": {"verdict": "faithful", "deletion_gain": 0.123, "insertion_gain": 0.3, "road": 0.05,
                         "text": "faithful: ..."},
        "masks": {"miou": 0.2, "miou_otsu": 0.31, "miou_tuned": float("nan"), "hit_rate": 0.75, "text": "mIoU ..."}}},
        "space_attention": {"native": {"randomization": {"flagged": True, "spearman_median": 0.8, "text": "FLAGGED"}}}}
    records = check_records(checks)
    assert records[0]["miou_tuned"] is None and records[0]["hit_rate"] == 0.75  # NaN: null in the JSON record
    json.dumps(records, allow_nan=False)
    table = check_table(records)
    assert list(table.columns) == list(CHECK_COLUMNS)
    assert table.iloc[0].tolist() == ["baseline", "native", "passes (rho 0.07)", "faithful (deletion +0.12, insertion +0.30)",
                                      "0.20", "0.31", "n/a", "0.75"]
    assert table.iloc[1].tolist() == ["space_attention", "native", "FLAGGED (rho 0.80)", "not run", "n/a", "n/a",
                                      "n/a", "n/a"]


def test_format_headline_says_where_the_report_is_and_which_threshold(tmp_path: Path) -> None:
    headline = pd.DataFrame([headline_row("baseline", "native", 0.9712, 0.2, 0.34)])
    result = DemoResult(tmp_path / "report.md", tmp_path / "report.html", {}, headline, 90.0)
    text = format_headline(result)
    assert "1.5 min" in text and str(tmp_path / "report.html") in text and "0.971" in text
    assert "heatmap threshold 180" in text and "over 8 of 8 box classes" in text
    assert "0.200 (1.250)" in text and "0.050 ± 0.020" in text  # accuracy (FP/image), random mean ± sd


def test_demo_command_passes_every_option_to_run_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``thoracic demo`` options reach :func:`run_demo`; the headline and any shortfall are printed."""
    calls: list[DemoSettings] = []
    headline = pd.DataFrame([headline_row("baseline", "native", 0.5, 0.0, 0.3)])

    def fake_run_demo(settings: DemoSettings, log=print) -> DemoResult:
        calls.append(settings)
        log("[1/4] a progress line")
        return DemoResult(tmp_path / "report.md", tmp_path / "report.html", {}, headline, 30.0)

    monkeypatch.setattr("thoracic.workflows.demo.run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path / "d"), "--num-images", "50", "--image-size", "48", "--seed", "3",
                 "--models", "baseline", "attention_gated", "--epochs", "2", "--no-progress", "--no-explain"]) == 0
    settings = calls[-1]
    assert settings.explain_methods is None
    assert (settings.out_dir, settings.num_images, settings.image_size, settings.seed) == (tmp_path / "d", 50, 48, 3)
    assert settings.models == ("baseline", "attention_gated") and settings.progress is False
    assert settings.overrides == {**DEMO_OVERRIDES, "train.max_epochs": 2}
    captured = capsys.readouterr()
    out = captured.out
    assert "[1/4] a progress line" in captured.err and "[1/4]" not in out  # progress on stderr, results on stdout
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


def test_each_model_gets_the_shared_then_its_own_overrides(tmp_path: Path) -> None:
    from thoracic.workflows.demo import DEMO_MODEL_OVERRIDES, demo_configs

    settings = DemoSettings(out_dir=tmp_path / "d")
    configs = demo_configs(settings, tmp_path / "phantom")
    assert list(configs) == list(DEMO_MODELS)
    for name, cfg in configs.items():
        assert (cfg.data.image_size, cfg.model.output_stride) == (DEMO_OVERRIDES["data.image_size"],
                                                                  DEMO_OVERRIDES["model.output_stride"])
        assert cfg.data.root == str(tmp_path / "phantom") and cfg.output_dir == str(tmp_path / "d" / "runs")
    # the attention-gated network with per-level classifiers; the other configs keep their own value
    assert DEMO_MODEL_OVERRIDES["attention_gated"]["model.aggregation"] == "mean"
    assert configs["attention_gated"].model.aggregation == "mean"
    assert configs["baseline"].model.aggregation == "concat"
    # a model's own overrides win over the shared ones
    custom = DemoSettings(out_dir=tmp_path / "d", models=("baseline",),
                          model_overrides={"baseline": {"model.output_stride": 32}})
    assert demo_configs(custom, tmp_path / "phantom")["baseline"].model.output_stride == 32

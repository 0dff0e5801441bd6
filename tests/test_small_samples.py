"""Small samples are marked, not hidden: positives beside every AUC, warnings for classes with few
positives, small subgroups and temperatures at their bound (in evaluate, the report and predict),
probabilities written with the digits that show their side of a threshold, figures that say which classes
they leave out, report columns named by run folder, Table 1 written without the reporting layer."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import make_run

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES
from thoracic.evaluation.calibration import TEMPERATURE_BOUNDS, fit_temperature, temperature_at_bound
from thoracic.evaluation.formatting import decision_digits, format_decision
from thoracic.evaluation.sample_size import MIN_POSITIVES, MIN_SUBGROUP_IMAGES, fitted_on_few_warnings
from thoracic.evaluation.sample_size import positives_warnings, small_subgroups, subgroup_warnings, temperature_warnings
from thoracic.prediction import ImagePrediction, Thresholds, build_prediction_figure, prediction_warnings, probability_table

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------------
# Pure functions: the thresholds, the messages, the digits
# --------------------------------------------------------------------------------------------------------

def test_positives_below_the_threshold_are_named_with_their_counts() -> None:
    counts = [MIN_POSITIVES - 1, MIN_POSITIVES, 0, 250]
    names = ("A", "B", "C", "D")
    (warning,) = positives_warnings(names, counts, "test", 300)
    assert warning.startswith(f"2 of 4 classes have fewer than {MIN_POSITIVES} positive images on the test split "
                              "of 300 images (A 9, C 0)")
    assert positives_warnings(names, [MIN_POSITIVES] * 4, "test") == []
    (fitted,) = fitted_on_few_warnings(names, {"A": 3, "B": 40, "C": 12, "D": 9}, "temperatures")
    assert "2 of 4 classes were fitted on fewer than 10 positive val-split images (A 3, D 9)" in fitted


def test_small_subgroups_are_the_non_empty_groups_under_the_threshold() -> None:
    groups = pd.DataFrame([
        {"attribute": "age_band", "group": "80+", "class_name": "Mean", "n_images": 2},
        {"attribute": "age_band", "group": "80+", "class_name": "Hernia", "n_images": 2},
        {"attribute": "age_band", "group": "0-19", "class_name": "Mean", "n_images": 0},
        {"attribute": "sex", "group": "F", "class_name": "Mean", "n_images": MIN_SUBGROUP_IMAGES},
        {"attribute": "sex", "group": "M", "class_name": "Mean", "n_images": MIN_SUBGROUP_IMAGES - 1},
    ])
    assert list(small_subgroups(groups).itertuples(index=False, name=None)) == [
        ("age_band", "80+", 2), ("sex", "M", MIN_SUBGROUP_IMAGES - 1)]
    (warning,) = subgroup_warnings(groups)
    assert warning.startswith(f"2 subgroup(s) have fewer than {MIN_SUBGROUP_IMAGES} images (age_band 80+ (2), "
                              f"sex M ({MIN_SUBGROUP_IMAGES - 1}))")
    assert subgroup_warnings(groups[groups["n_images"] >= MIN_SUBGROUP_IMAGES]) == []


def test_a_temperature_fitted_on_uninformative_logits_sits_at_the_upper_bound_and_is_warned() -> None:
    rng = np.random.default_rng(0)
    signal = rng.integers(0, 2, 40)
    # class 1: half of the images at each logit are positive: the best probability is 0.5 everywhere, which
    # only T -> infinity gives (the fit stops at the bound); class 2: informative logits
    labels = np.column_stack([np.tile([1, 0, 1, 0], 10), signal])
    logits = np.column_stack([np.tile([5.0, 5.0, -5.0, -5.0], 10), (signal * 2 - 1) * 1.0 + rng.normal(0, 1.5, 40)])
    temperature, notes = fit_temperature(logits, labels, "per_class", ("Noise", "Signal"))
    assert temperature[0] == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3) and "at the bound" in notes["Noise"]
    assert temperature_at_bound(temperature).tolist() == [True, False]
    (warning,) = temperature_warnings(("Noise", "Signal"), temperature, 40)
    assert "the temperature of 1 class(es) sits at a bound" in warning and "Noise T = 20" in warning
    assert "Signal" not in warning and "~0.5 on every image" in warning
    assert temperature_warnings(("Noise", "Signal"), [1.0, 2.0]) == []


@pytest.mark.parametrize("probability, threshold, expected", [
    (0.4996, 0.5, "p=0.4996 < 0.5000"),
    (0.50004, 0.5, "p=0.50004 ≥ 0.50000"),  # 4 digits would write both as 0.5000
    (0.499996, 0.5, "p=0.499996 < 0.500000"),
    (0.5, 0.5, "p=0.5000 ≥ 0.5000"),  # at the threshold is positive
    (0.9, 0.4, "p=0.9000 ≥ 0.4000"),
    (0.12345678, 0.7, "p=0.1235 < 0.7000"),
])
def test_a_probability_is_written_with_the_digits_that_show_its_side(probability, threshold, expected) -> None:
    assert format_decision(probability, threshold) == expected
    digits = decision_digits(probability, threshold)
    shown_p, shown_t = float(f"{probability:.{digits}f}"), float(f"{threshold:.{digits}f}")
    assert (shown_p >= shown_t) == (probability >= threshold)  # the written values are on the true sides


def test_the_probability_table_marks_values_at_or_above_their_threshold() -> None:
    thresholds = {n: 0.5 for n in CLASS_NAMES}
    probabilities = {n: 0.5 for n in CLASS_NAMES} | {"Atelectasis": 0.49996, "Cardiomegaly": 0.50004}
    header, row, legend = probability_table([ImagePrediction(Path("x.png"), probabilities=probabilities,
                                                             thresholds=thresholds)]).splitlines()
    cells = row.split()[1:]
    assert cells[:3] == ["0.5000", "0.5000*", "0.5000*"]  # 0.49996 rounds to 0.5000 but is below
    assert len(row) == len(header) and legend.startswith("* at or above")


def test_prediction_warnings_name_thresholds_and_temperatures_resting_on_few_images() -> None:
    points = Thresholds({n: 0.5 for n in CLASS_NAMES}, "operating_points", "the run's")
    positives = {n: 50 for n in CLASS_NAMES} | {"Hernia": 2}
    temperature = [1.0] * len(CLASS_NAMES)
    temperature[CLASS_NAMES.index("Edema")] = TEMPERATURE_BOUNDS[1]
    calibration = {"temperature": temperature, "n_images_fitted": 55,
                   "per_class": {n: {"n_positive_fitted": positives[n]} for n in CLASS_NAMES}}
    thresholds_warning, bound, fitted = prediction_warnings(points, calibration, positives)
    assert "operating-point thresholds of 1 of 14 classes" in thresholds_warning and "Hernia 2" in thresholds_warning
    assert "Edema T = 20" in bound and "fitted on 55 images" in bound
    assert "temperatures of 1 of 14" in fitted
    # a --threshold given on the command line rests on nothing the run fitted: no thresholds warning
    given = Thresholds({n: 0.3 for n in CLASS_NAMES}, "command line", "--threshold 0.3")
    assert prediction_warnings(given, None, positives) == []


def test_a_figure_with_more_classes_above_threshold_than_panels_names_those_left_out() -> None:
    heatmap = np.zeros((4, 4))
    probabilities = {n: 0.1 + 0.05 * k for k, n in enumerate(CLASS_NAMES)}
    above = CLASS_NAMES[-8:]  # the 8 most probable
    result = ImagePrediction(Path("chest.png"), probabilities=probabilities, original_size=(64, 64),
                             heatmaps={n: heatmap for n in above}, thresholds={n: 0.3 for n in CLASS_NAMES})
    figure = build_prediction_figure(result, np.zeros((64, 64), np.uint8), max_panels=6)
    titles = [ax.get_title() for ax in figure.axes]
    caption = next(t for t in titles if t.startswith("chest.png"))
    left_out = sorted(above, key=lambda n: -probabilities[n])[6:]
    assert "8 classes at or above their threshold, 6 shown; 2 left out" in caption.replace("\n", " ")
    assert all(name in caption for name in left_out)
    assert sum(1 for t in titles if "≥ 0.3000" in t) == 6
    everything = build_prediction_figure(result, np.zeros((64, 64), np.uint8), max_panels=8)
    assert not any("left out" in ax.get_title() for ax in everything.axes)


def test_roc_figure_names_the_classes_without_a_curve_and_the_positives_of_the_others() -> None:
    from thoracic.evaluation.figures import roc_figure

    curve = (np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0]))
    figure = roc_figure({"Mass": curve}, {"Mass": 0.7}, positives={"Mass": 3},
                        left_out={"Hernia": "AUC undefined: all 20 images are negative for Hernia"})
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Mass (0.700, 3 pos.)"]
    assert any("1 of 2 classes left out" in t.get_text() and "Hernia" in t.get_text() for t in ax.texts)


def test_report_columns_are_named_by_run_folder_with_the_model_beside_it() -> None:
    from thoracic.reporting.runs import RunSummary, group_runs

    def summary(path: str, lr: float, seed: int = 0) -> RunSummary:
        config = {"model": {"name": "baseline", "backbone": "resnet10"}, "data": {"image_size": 64},
                  "optim": {"lr": lr}, "seed": seed}
        return RunSummary(Path(path), config, None)

    groups = group_runs([summary("runs/a/seed0", 0.1), summary("runs/b/seed0", 0.2), summary("runs/lr3", 0.3),
                         summary("runs/exp/seed0", 0.4, 0), summary("runs/exp/seed1", 0.4, 1)])
    assert [g.label for g in groups] == ["a/seed0: baseline (resnet10, 64 px)", "b/seed0: baseline (resnet10, 64 px)",
                                         "lr3: baseline (resnet10, 64 px)",
                                         "exp: baseline (resnet10, 64 px) x2 seeds"]
    seeds = groups[-1]
    assert [seeds.run_label(r) for r in seeds.runs] == ["exp/seed0: baseline (resnet10, 64 px)",
                                                        "exp/seed1: baseline (resnet10, 64 px)"]


def test_table1_is_written_by_the_evaluation_layer_without_the_reporting_layer(tmp_path: Path) -> None:
    """The evaluate workflow and Table 1 load no module of thoracic.reporting (a fresh interpreter)."""
    auc = {"per_class": {n: {"auc": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n_positive": 3 + k, "n_negative": 90 - k}
                         for k, n in enumerate(CLASS_NAMES)},
           "mean_auc": 0.6, "mean_ci": [0.55, 0.65], "n_images": 93}
    (tmp_path / "auc.json").write_text(json.dumps(auc))
    code = ("import json, sys; import thoracic.workflows.evaluate; from thoracic.evaluation.table1 import write_table1; "
            f"write_table1(json.load(open({str(tmp_path / 'auc.json')!r})), 'baseline', {str(tmp_path)!r}); "
            "print(sorted(m for m in sys.modules if m.startswith('thoracic.reporting')))")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr[-2000:]
    assert process.stdout.strip() == "[]"
    table = pd.read_csv(tmp_path / "table1_test.csv", index_col="class", dtype=str)
    assert list(table.columns[:4]) == ["positives", "Wang 2017 ResNet-50", "baseline", "Paper BL ResNet-34"]
    assert table.loc["Atelectasis", "positives"] == "3 (fewer than 10 positives)"
    assert table.loc["Hernia", "positives"] == "16" and table.loc["Mean", "positives"] == "93 images"
    assert table.loc["Mass", "baseline"] == "0.6000 [0.500, 0.700]"


# --------------------------------------------------------------------------------------------------------
# End to end on the tiny phantom: evaluate, predict and report warn; the Setup says what the run saw
# --------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """An untrained baseline on the session's phantoms (48 test, 5 validation images), evaluated with a
    temperature fit; its stdout and stderr."""
    run = make_run(tmp_path_factory.mktemp("small") / "tiny", phantom_dir, "baseline", 0)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["evaluate", str(run), "--bootstrap", "20", "--no-progress", "--calibrate"]) == 0
    return run, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_evaluate_prints_positives_and_warns_about_small_samples(evaluated) -> None:
    run, out, err = evaluated
    evaluation = run / "evaluation"
    auc = json.loads((evaluation / "auc_test.json").read_text())
    few = {n: e["n_positive"] for n, e in auc["per_class"].items() if e["n_positive"] < MIN_POSITIVES}
    assert few  # the phantom's 48 test images hold fewer than 10 positives of most classes
    # the printed table: the positives beside every AUC, the small ones marked
    for name, entry in auc["per_class"].items():
        line = next(line for line in out.splitlines() if line.startswith(f"{name} "))
        assert re.search(rf"\]?\s+{entry['n_positive']} 0\.\d{{4}} ", line) or entry["auc"] is None, line
        assert ("fewer than 10 positives" in line) == (name in few)
    # stderr: one warning per kind, naming the classes and their counts
    listing = ", ".join(f"{n} {k}" for n, k in few.items())
    assert f"warning: {len(few)} of 14 classes have fewer than 10 positive images on the test split of " \
           f"{auc['n_images']} images ({listing})" in err
    val = auc["n_val_positive"]
    assert sum(val.values()) == pd.read_csv(evaluation / "predictions_val.csv").filter(like="label_").to_numpy().sum()
    assert "warning: the operating-point thresholds of" in err
    # subgroups under 30 images: marked in stdout, warned on stderr
    groups = pd.read_csv(evaluation / "subgroups_test.csv")
    small = small_subgroups(groups)
    assert len(small)
    for attribute, group, n in small.itertuples(index=False):
        assert re.search(rf"{attribute}\s+{re.escape(group)}\s.*n={n} \(fewer than 30 images\)", out)
        assert f"{attribute} {group} ({n})" in err
    # temperatures at the bound of the search interval (5 validation images cannot determine them)
    stored = json.loads((evaluation / "calibration.json").read_text())
    at_bound = [n for n, t in zip(CLASS_NAMES, stored["temperature"]) if temperature_at_bound(t)]
    assert at_bound and "sits at a bound of its search interval" in err
    assert all(f"{name} T = " in err for name in at_bound)
    assert stored["per_class"]["Atelectasis"]["n_positive_fitted"] == val["Atelectasis"]
    assert auc["warnings"] and all(w in err for w in auc["warnings"])


@pytest.mark.slow
def test_subgroups_get_the_operating_points_in_memory(phantom_dir: Path, phantom_cache: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluate workflow hands its chosen thresholds to the subgroups: the file is never read back."""
    import thoracic.evaluation.operating_points as operating_points
    import thoracic.evaluation.subgroups as subgroups
    from thoracic.workflows.evaluate import evaluate_run

    def refuse(*args, **kwargs):
        raise AssertionError("operating_points.json read back")

    monkeypatch.setattr(operating_points, "load_operating_points", refuse)
    monkeypatch.setattr(subgroups, "load_operating_points", refuse)
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    evaluate_run(run, bootstrap=0, progress=False, operating_point="f1")
    points = json.loads((run / "evaluation" / "operating_points.json").read_text())
    stored = json.loads((run / "evaluation" / "subgroups_test.json").read_text())
    assert stored["thresholds"] == points["thresholds"]
    assert stored["threshold_source"].startswith("operating points of operating_points.json (f1 on val)")


@pytest.mark.slow
def test_predict_warns_about_thresholds_and_temperatures_fitted_on_few_images(evaluated, phantom_dir: Path,
                                                                            tmp_path: Path, capsys) -> None:
    run, _, _ = evaluated
    image = sorted((phantom_dir / "images").glob("*.png"))[0]
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning: the operating-point thresholds of" in captured.err
    assert "sits at a bound of its search interval" in captured.err
    assert "warning" not in captured.out  # results on stdout, messages on stderr
    header, row, legend = captured.out.splitlines()[:3]
    record = json.loads((tmp_path / "p" / "predictions.json").read_text())["images"][0]
    marked = [name for name, cell in zip(CLASS_NAMES, row.split()[1:]) if cell.endswith("*")]
    assert marked == record["above_threshold"] and legend.startswith("*")


@pytest.mark.slow
def test_report_marks_small_samples_and_says_what_the_runs_saw(evaluated, phantom_dir: Path, tmp_path: Path) -> None:
    run, _, _ = evaluated
    # a second run of the same model, another learning rate: two columns, each named by its folder
    other = make_run(tmp_path / "lr_high", phantom_dir, "baseline", 0)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["optim"]["lr"] = 0.5
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    assert main(["evaluate", str(other), "--bootstrap", "0", "--no-progress"]) == 0
    assert main(["report", str(run), str(other), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()

    # columns by run folder, the model beside it; never "#2"
    assert "| tiny: baseline (resnet10, 64 px) | lr_high: baseline (resnet10, 64 px) |" in markdown
    assert "#2" not in markdown
    # Table 1: the positives column, marked below 10 (the two runs saw the same test images: one column)
    auc = json.loads((run / "evaluation" / "auc_test.json").read_text())
    table1 = markdown[markdown.index("**Per-class ROC AUC"):]
    assert "| class | positives | Wang 2017 ResNet-50 |" in table1
    for name, entry in auc["per_class"].items():
        n = entry["n_positive"]
        assert f"| {name} | {n}{' (fewer than 10 positives)' if n < 10 else ''} |" in table1
    # the warnings, in the sections they concern (shown once when every run shares them)
    classification = markdown[markdown.index("## Classification"):markdown.index("## Subgroups")]
    assert f"> Warning: {auc['warnings'][0]}" in classification
    subgroups = markdown[markdown.index("## Subgroups"):markdown.index("## Calibration")]
    groups = pd.read_csv(run / "evaluation" / "subgroups_test.csv")
    (subgroup_warning,) = subgroup_warnings(groups)
    assert f"> Warning: {subgroup_warning}" in subgroups
    for attribute, group, n in small_subgroups(groups).itertuples(index=False):
        assert f"| {attribute} | {group} | {n} (fewer than 30 images) |" in subgroups
    calibration = markdown[markdown.index("## Calibration"):]
    assert "sits at a bound of its search interval" in calibration and "(at bound)" in calibration
    assert '<ul class="warnings"' in html and "<strong>Warning:</strong>" in html
    # the Setup says how many of the full dataset's test images the runs saw
    n_test = len(pd.read_csv(run / "evaluation" / "predictions_test.csv"))
    setup = markdown[markdown.index("## Setup"):markdown.index("## Classification")]
    share = f"{n_test / 25_596:.1%}"
    assert (f"| of the full dataset | test images {n_test} of 25,596 ({share}) (phantom images, not a part of "
            "ChestX-ray14) |") in setup

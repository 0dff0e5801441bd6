"""End to end: phantom run folders (untrained checkpoints) -> evaluate -> localize -> report.

The pipeline runs once per module (:func:`pipeline`); each test checks one of its outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_table_recomputes, make_run

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Pipeline:
    """Three evaluated and localized runs (two seeds of an experiment, one space-attention run) and the
    report over them."""

    root: Path
    runs: tuple[Path, Path, Path]
    markdown: str
    html: str

    @property
    def evaluation(self) -> Path:
        """The first seed's evaluation folder."""
        return self.runs[0] / "evaluation"

    def section(self, anchor: str, until: str | None = None) -> str:
        """The HTML of the report's section ``anchor`` (up to the section ``until``, else to the end)."""
        start = self.html.index(f'<section id="{anchor}">')
        return self.html[start:self.html.index(f'<section id="{until}">')] if until else self.html[start:]


@pytest.fixture(scope="module")
def pipeline(phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("pipeline")
    runs = [make_run(root / "experiment" / f"seed{s}", phantom_dir, "baseline", s) for s in (0, 1)]
    runs.append(make_run(root / "space", phantom_dir, "space_attention", 0))
    for run in runs:
        assert main(["evaluate", str(run), "--bootstrap", "50", "--no-progress"]) == 0
    assert main(["localize", str(runs[0]), "--no-progress", "--examples", "3"]) == 0
    assert main(["localize", str(runs[1]), "--no-progress", "--examples", "3"]) == 0
    assert main(["localize", str(runs[2]), "--method", "gradcam", "--no-progress", "--examples", "2"]) == 0
    out = root / "report"
    assert main(["report", str(root / "experiment"), str(runs[2]), "--out", str(out)]) == 0
    return Pipeline(root, tuple(runs), (out / "report.md").read_text(), (out / "report.html").read_text())


def test_evaluate_writes_predictions_auc_and_roc(pipeline: Pipeline) -> None:
    predictions = pd.read_csv(pipeline.evaluation / "predictions_test.csv")
    assert list(predictions.columns[:2]) == ["image_id", f"prob_{CLASS_NAMES[0]}"]
    assert predictions.shape[1] == 1 + 2 * len(CLASS_NAMES)
    auc = json.loads((pipeline.evaluation / "auc_test.json").read_text())
    assert set(auc["per_class"]) == set(CLASS_NAMES) and auc["bootstrap"]["n_resamples"] == 50
    assert (pipeline.evaluation / "roc_test.png").stat().st_size > 0


def test_table1_sets_each_run_beside_the_published_columns(pipeline: Pipeline) -> None:
    auc = json.loads((pipeline.evaluation / "auc_test.json").read_text())
    table1 = pd.read_csv(pipeline.evaluation / "table1_test.csv", index_col="class", dtype=str)
    assert list(table1.index) == [*CLASS_NAMES, "Mean"]
    assert list(table1.columns[:4]) == ["positives", "Wang 2017 ResNet-50", "baseline", "Paper BL ResNet-34"]
    assert table1.loc["Mean", "baseline"].startswith(f"{auc['mean_auc']:.4f} [")
    assert table1.loc["Atelectasis", "Wang 2017 ResNet-50"] == "0.7003"  # Wang et al. 2017, Table 4
    table1_md = (pipeline.evaluation / "table1_test.md").read_text()
    assert "| class | positives | Wang 2017 ResNet-50 | baseline | Paper BL ResNet-34 |" in table1_md
    space_table1 = pd.read_csv(pipeline.runs[2] / "evaluation" / "table1_test.csv", index_col="class", dtype=str)
    assert list(space_table1.columns[:4]) == ["positives", "Wang 2017 ResNet-50", "space_attention", "Paper S.Att."]


def test_table1_marks_the_positives_behind_every_auc(pipeline: Pipeline) -> None:
    auc = json.loads((pipeline.evaluation / "auc_test.json").read_text())
    table1 = pd.read_csv(pipeline.evaluation / "table1_test.csv", index_col="class", dtype=str)
    for name in CLASS_NAMES:  # marked below 10
        n = auc["per_class"][name]["n_positive"]
        assert table1.loc[name, "positives"] == (str(n) if n >= 10 else f"{n} (fewer than 10 positives)")
    assert table1.loc["Mean", "positives"] == f"{auc['n_images']} images"


def test_localize_scores_every_box_row_and_its_tables_recompute(pipeline: Pipeline) -> None:
    scores = pd.read_csv(pipeline.evaluation / "scores_native.csv")
    boxes = pd.read_csv(pipeline.evaluation / "boxes_native.csv")
    assert list(boxes.columns) == ["image_id", "class_name", "threshold", "x", "y", "w", "h", "score", "area"]
    # every box row of the phantom test images is scored, at both thresholds and pooled
    assert set(scores["threshold"].astype(str)) == {"60", "180", "all"}
    assert scores.groupby("threshold")["box_row"].nunique().nunique() == 1
    table = pd.read_csv(pipeline.evaluation / "localization_native.csv")
    assert {"native", "random box", "centre box"} <= set(table["source"])
    # every number of the localization tables recomputes from the exported boxes, scores and baselines
    assert_table_recomputes(pipeline.evaluation, "native")
    assert_table_recomputes(pipeline.runs[2] / "evaluation", "gradcam")
    assert (pipeline.runs[2] / "evaluation" / "overlays_gradcam.png").is_file()


def test_operating_points_are_chosen_on_val_in_the_contract_format(pipeline: Pipeline) -> None:
    points = json.loads((pipeline.evaluation / "operating_points.json").read_text())
    assert set(points) == {"method", "split", "thresholds", "checkpoint"}
    auc = json.loads((pipeline.evaluation / "auc_test.json").read_text())
    assert points["checkpoint"] == auc["checkpoint"]  # the weights the thresholds were chosen for
    assert points["method"] == "youden" and points["split"] == "val"
    assert list(points["thresholds"]) == list(CLASS_NAMES)
    assert all(isinstance(t, float) and 0 <= t <= 1 for t in points["thresholds"].values())
    table = pd.read_csv(pipeline.evaluation / "operating_points_test.csv")
    assert list(table["class_name"]) == list(CLASS_NAMES)
    assert {"auc", "threshold", "sensitivity", "specificity"} <= set(table.columns)
    assert (pipeline.evaluation / "predictions_val.csv").is_file()


def test_report_names_each_run_and_every_table(pipeline: Pipeline) -> None:
    markdown = pipeline.markdown
    # what was trained, at a glance: model, backbone and input size in every column label
    assert "baseline (resnet10, 64 px) x2 seeds" in markdown and "±" in markdown  # the two seeds aggregated
    assert "Wang 2017 ResNet-50" in markdown and "Paper BL ResNet-34" in markdown and "Paper S.Att." in markdown
    for heading in ["IoU > 0.1", "IoU > 0.7", "IoBB > 0.25", "IoBB > 0.9", "random box", "centre box",
                    "Localization headline", "Pointing game", "heatmap threshold 180"]:
        assert heading in markdown
    assert "on the test split" in markdown
    assert "compare_overlays.png" in markdown and "every run and heatmap method side by side" in markdown.lower()


def test_report_sections_are_linked_with_figures_first_and_details_folded(pipeline: Pipeline) -> None:
    for anchor in ("setup", "classification", "localization"):
        assert f'<section id="{anchor}">' in pipeline.html and f'href="#{anchor}"' in pipeline.html
        assert f"](#{anchor})" in pipeline.markdown
    classification = pipeline.section("classification", until="localization")
    assert classification.index("<figure") < classification.index("<table")
    assert "<details>" in classification  # the operating points, folded
    localization = pipeline.section("localization")
    headline = localization[:localization.index("<details>")]
    assert "Localization accuracy at IoU &gt; 0.3" in headline and "IoU &gt; 0.1" not in headline


def test_report_setup_has_one_filled_column_per_run(pipeline: Pipeline) -> None:
    setup = pipeline.section("setup", until="classification")
    for field in ("backbone", "input size", "none (trained from scratch)", "epochs run", "best epoch",
                  "images train / val / test", "box rows (test)", "phantom (synthetic)", "sha256"):
        assert field in setup
    runs_table = setup[:setup.index("</table>")]
    assert runs_table.count('<th scope="col">') == 1 + 3  # "setting" + the three runs


def test_report_names_runs_by_folder_and_counts_against_the_full_dataset(pipeline: Pipeline) -> None:
    setup = pipeline.section("setup", until="classification")
    runs_table = setup[:setup.index("</table>")]
    # columns named by run folder (the experiment's for its seeds), the model beside it
    assert "experiment/seed0: baseline (resnet10, 64 px)" in runs_table
    assert "space: space_attention (resnet10, 64 px)" in pipeline.markdown and "#2" not in pipeline.markdown
    # what the runs saw against the full ChestX-ray14: test images and box rows (on how many images)
    scores = pd.read_csv(pipeline.evaluation / "scores_native.csv")
    n_rows, n_images = scores["box_row"].nunique(), scores["image_id"].nunique()
    n_test = len(pd.read_csv(pipeline.evaluation / "predictions_test.csv"))
    assert (f"test images {n_test} of 25,596 ({n_test / 25_596:.1%}); box rows {n_rows} of 984 "
            f"({n_rows / 984:.1%}) on {n_images} of 880 images (phantom images, not a part of ChestX-ray14)") in setup


def test_report_localization_means_name_how_many_classes_they_average(pipeline: Pipeline) -> None:
    scored = pd.read_csv(pipeline.evaluation / "localization_native.csv")
    per_class = scored[(scored["source"] == "native") & (scored["class_name"] != "Mean")].drop_duplicates("class_name")
    k = int((per_class["n_boxes"] > 0).sum())
    assert f"Mean over {k} of 8 classes" in pipeline.markdown
    assert f"| Atelectasis | {int(per_class.iloc[0]['n_boxes'])} |" in pipeline.markdown  # the box rows column


def test_report_html_embeds_compressed_figures_and_no_raw_markdown(pipeline: Pipeline) -> None:
    html = pipeline.html
    assert "data:image/webp;base64," in html and "data:image/png" not in html
    assert "**" not in html and "](" not in html and "|---" not in html
    # no unnamed index columns, no empty rows
    assert "<th></th>" not in html and '<th scope="col"></th>' not in html
    assert "<tr></tr>" not in html.replace("\n", "")


def test_the_val_split_is_evaluated_and_reported_as_such(pipeline: Pipeline) -> None:
    run = pipeline.runs[2]
    assert main(["evaluate", str(run), "--split", "val", "--bootstrap", "0", "--no-progress"]) == 0
    assert "on the val split" in (run / "evaluation" / "table1_val.md").read_text()
    out = pipeline.root / "val_report"
    assert main(["report", str(run), "--split", "val", "--out", str(out)]) == 0
    val_markdown = (out / "report.md").read_text()
    assert "on the val split" in val_markdown and "test split" not in val_markdown.replace("test-split", "")

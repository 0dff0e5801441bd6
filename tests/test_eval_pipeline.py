"""End to end: phantom run folders (untrained checkpoints) -> evaluate -> localize -> report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_table_recomputes, make_run

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES


@pytest.mark.slow
def test_evaluate_localize_report(phantom_dir: Path, phantom_cache: Path, tmp_path: Path) -> None:
    runs = [make_run(tmp_path / "experiment" / f"seed{s}", phantom_dir, "baseline", s) for s in (0, 1)]
    runs.append(make_run(tmp_path / "space", phantom_dir, "space_attention", 0))
    for run in runs:
        assert main(["evaluate", str(run), "--bootstrap", "50", "--no-progress"]) == 0
    assert main(["localize", str(runs[0]), "--no-progress", "--examples", "3"]) == 0
    assert main(["localize", str(runs[1]), "--no-progress", "--examples", "3"]) == 0
    assert main(["localize", str(runs[2]), "--method", "gradcam", "--no-progress", "--examples", "2"]) == 0

    evaluation = runs[0] / "evaluation"
    predictions = pd.read_csv(evaluation / "predictions_test.csv")
    assert list(predictions.columns[:2]) == ["image_id", f"prob_{CLASS_NAMES[0]}"]
    assert predictions.shape[1] == 1 + 2 * len(CLASS_NAMES)
    auc = json.loads((evaluation / "auc_test.json").read_text())
    assert set(auc["per_class"]) == set(CLASS_NAMES) and auc["bootstrap"]["n_resamples"] == 50
    assert (evaluation / "roc_test.png").stat().st_size > 0
    # Table 1 of the single run: its AUCs (with CIs) beside Wang et al. 2017 and the paper's column
    table1 = pd.read_csv(evaluation / "table1_test.csv", index_col="class", dtype=str)
    assert list(table1.index) == [*CLASS_NAMES, "Mean"]
    assert list(table1.columns[:4]) == ["positives", "Wang 2017 ResNet-50", "baseline", "Paper BL ResNet-34"]
    assert table1.loc["Mean", "baseline"].startswith(f"{auc['mean_auc']:.4f} [")
    assert table1.loc["Atelectasis", "Wang 2017 ResNet-50"] == "0.7003"  # Wang et al. 2017, Table 4
    # the positives behind every AUC, marked below 10
    for name in CLASS_NAMES:
        n = auc["per_class"][name]["n_positive"]
        assert table1.loc[name, "positives"] == (str(n) if n >= 10 else f"{n} (fewer than 10 positives)")
    assert table1.loc["Mean", "positives"] == f"{auc['n_images']} images"
    table1_md = (evaluation / "table1_test.md").read_text()
    assert "| class | positives | Wang 2017 ResNet-50 | baseline | Paper BL ResNet-34 |" in table1_md
    space_table1 = pd.read_csv(runs[2] / "evaluation" / "table1_test.csv", index_col="class", dtype=str)
    assert list(space_table1.columns[:4]) == ["positives", "Wang 2017 ResNet-50", "space_attention", "Paper S.Att."]

    # every box row of the phantom test images is scored, at both thresholds and pooled
    scores = pd.read_csv(evaluation / "scores_native.csv")
    boxes = pd.read_csv(evaluation / "boxes_native.csv")
    assert list(boxes.columns) == ["image_id", "class_name", "threshold", "x", "y", "w", "h", "score", "area"]
    assert set(scores["threshold"].astype(str)) == {"60", "180", "all"}
    assert scores.groupby("threshold")["box_row"].nunique().nunique() == 1
    table = pd.read_csv(evaluation / "localization_native.csv")
    assert {"native", "random box", "centre box"} <= set(table["source"])
    # every number of the localization tables recomputes from the exported boxes, scores and baselines
    assert_table_recomputes(evaluation, "native")
    assert_table_recomputes(runs[2] / "evaluation", "gradcam")
    assert (runs[2] / "evaluation" / "overlays_gradcam.png").is_file()

    # operating points: chosen on the validation split, stored in the contract format, reported on test
    points = json.loads((evaluation / "operating_points.json").read_text())
    assert set(points) == {"method", "split", "thresholds"}
    assert points["method"] == "youden" and points["split"] == "val"
    assert list(points["thresholds"]) == list(CLASS_NAMES)
    assert all(isinstance(t, float) and 0 <= t <= 1 for t in points["thresholds"].values())
    table = pd.read_csv(evaluation / "operating_points_test.csv")
    assert list(table["class_name"]) == list(CLASS_NAMES)
    assert {"auc", "threshold", "sensitivity", "specificity"} <= set(table.columns)
    assert (evaluation / "predictions_val.csv").is_file()

    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "experiment"), str(runs[2]), "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    # what was trained, at a glance: model, backbone and input size in every column label
    assert "baseline (resnet10, 64 px) x2 seeds" in markdown and "±" in markdown  # the two seeds aggregated
    assert "Wang 2017 ResNet-50" in markdown and "Paper BL ResNet-34" in markdown and "Paper S.Att." in markdown
    for heading in ["IoU > 0.1", "IoU > 0.7", "IoBB > 0.25", "IoBB > 0.9", "random box", "centre box",
                    "Localization headline", "Pointing game", "heatmap threshold 180"]:
        assert heading in markdown
    assert "on the test split" in markdown
    # contents list, section anchors, figures first then tables, secondary tables folded
    for anchor in ("setup", "classification", "localization"):
        assert f'<section id="{anchor}">' in html and f'href="#{anchor}"' in html
        assert f"](#{anchor})" in markdown
    classification = html[html.index('<section id="classification">'):html.index('<section id="localization">')]
    assert classification.index("<figure") < classification.index("<table")
    assert "<details>" in classification  # the operating points, folded
    localization = html[html.index('<section id="localization">'):]
    headline = localization[:localization.index("<details>")]
    assert "Localization accuracy at IoU &gt; 0.3" in headline and "IoU &gt; 0.1" not in headline
    # the setup table: one column per run, every field filled
    setup = html[html.index('<section id="setup">'):html.index('<section id="classification">')]
    for field in ("backbone", "input size", "none (trained from scratch)", "epochs run", "best epoch",
                  "images train / val / test", "box rows (test)", "phantom (synthetic)", "sha256"):
        assert field in setup
    runs_table = setup[:setup.index("</table>")]
    assert runs_table.count('<th scope="col">') == 1 + 3  # "setting" + the three runs
    # columns named by run folder (the experiment's for its seeds), the model beside it
    assert "experiment/seed0: baseline (resnet10, 64 px)" in runs_table
    assert "space: space_attention (resnet10, 64 px)" in markdown and "#2" not in markdown
    # what the runs saw against the full ChestX-ray14: test images and box rows (on how many images)
    n_rows, n_images = scores["box_row"].nunique(), scores["image_id"].nunique()
    n_test = len(pd.read_csv(evaluation / "predictions_test.csv"))
    assert (f"test images {n_test} of 25,596 ({n_test / 25_596:.1%}); box rows {n_rows} of 984 "
            f"({n_rows / 984:.1%}) on {n_images} of 880 images (phantom images, not a part of ChestX-ray14)") in setup
    # localization means name how many classes they average, with the box rows per class
    scored = pd.read_csv(evaluation / "localization_native.csv")
    per_class = scored[(scored["source"] == "native") & (scored["class_name"] != "Mean")].drop_duplicates("class_name")
    k = int((per_class["n_boxes"] > 0).sum())
    assert f"Mean over {k} of 8 classes" in markdown
    assert f"| Atelectasis | {int(per_class.iloc[0]['n_boxes'])} |" in markdown  # the box rows column
    # figures embedded, compressed; no raw Markdown, no unnamed index columns, no empty rows
    assert "data:image/webp;base64," in html and "data:image/png" not in html
    assert "**" not in html and "](" not in html and "|---" not in html
    assert "<th></th>" not in html and '<th scope="col"></th>' not in html
    assert "<tr></tr>" not in html.replace("\n", "")
    assert "compare_overlays.png" in markdown and "every run and heatmap method side by side" in markdown.lower()

    # --split val: evaluated, tabled and reported as the validation split, never called "test"
    assert main(["evaluate", str(runs[2]), "--split", "val", "--bootstrap", "0", "--no-progress"]) == 0
    assert "on the val split" in (runs[2] / "evaluation" / "table1_val.md").read_text()
    assert main(["report", str(runs[2]), "--split", "val", "--out", str(tmp_path / "val_report")]) == 0
    val_markdown = (tmp_path / "val_report" / "report.md").read_text()
    assert "on the val split" in val_markdown and "test split" not in val_markdown.replace("test-split", "")

"""End to end on phantoms of other label spaces: a run trains on its dataset's labels, and every file of
every command (train, evaluate, localize, explain, report, predict, export, predict from the export)
carries that run's class names, never ChestX-ray14's.

CheXpert: its own 14 observations, blank and uncertain cells (NaN labels), no boxes. RSNA Pneumonia: one
label, with boxes. Tiny settings (64 px, resnet10, one epoch); slow tests (``-m "not slow"`` skips them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES
from thoracic.data.datasets import load_dataset
from thoracic.spec import ModelSpec

pytestmark = pytest.mark.slow

#: ChestX-ray14 names no other phantom layout writes: none may appear in another run's files.
NIH_ONLY = ("Hernia", "Infiltration", "Pleural_Thickening", "Emphysema", "Fibrosis")


def pipeline(root: Path, dataset: str, boxes: bool) -> dict[str, Path]:
    """synth, prepare, train (one epoch), evaluate (calibrated), [localize, explain], report, export, and
    predict from the run and from the export: every command through the command line."""
    data, runs, images = root / "data", root / "runs", root / "images"
    runs.mkdir()

    def run(*argv: str) -> None:
        assert main(list(argv)) == 0, argv

    run("synth", "--out", str(data), "--dataset", dataset, "--num-images", "120", "--image-size", "64",
        "--no-progress")
    run("prepare", "--data", str(data), "--image-size", "64", "--num-workers", "1", "--no-progress")
    run("train", "--config", "baseline", "--data", str(data), "--image-size", "64", "--num-workers", "0",
        "model.backbone=resnet10", "--no-model.pretrained", "train.max_epochs=1", "train.batch_size=16",
        "--no-train.progress_bar", "--device", "cpu", f"output_dir={runs}", "run_name=r")
    folder = runs / "r"
    options = ("--num-workers", "0", "--device", "cpu", "--no-progress")
    run("evaluate", str(folder), "--bootstrap", "20", "--calibrate", *options)
    if boxes:
        run("localize", str(folder), "--num-examples", "2", *options)
        run("explain", str(folder), "--method", "native", "--num-images", "4", "--bootstrap", "10", *options)
    run("report", str(folder), "--out", str(root / "report"))
    run("export", str(folder), "--format", "onnx")
    table = load_dataset(data, dataset).table
    images.mkdir()
    for k, path in enumerate([p for p in table["path"] if p][:2]):
        (images / f"{k}{Path(path).suffix}").write_bytes(Path(path).read_bytes())
    run("predict", str(folder), str(images), "--out", str(root / "from_run"), "--device", "cpu", "--no-progress")
    run("predict", str(folder / "export" / "baseline.onnx"), str(images), "--out", str(root / "from_export"),
        "--device", "cpu", "--no-progress")
    return {"data": data, "run": folder, "root": root}


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pipeline(tmp_path_factory.mktemp("chexpert"), "chexpert", boxes=False)


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return pipeline(tmp_path_factory.mktemp("rsna"), "rsna", boxes=True)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_every_file_carries(names: tuple[str, ...], dataset: str, paths: dict[str, Path]) -> None:
    """The label space of the run in every artefact of every command."""
    run, root = paths["run"], paths["root"]
    assert names != CLASS_NAMES
    # training: the model, its spec, the run's files
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    spec = ModelSpec.from_dict(checkpoint["hyper_parameters"]["spec"])
    assert spec.class_names == names and spec.dataset == dataset and spec.image_size == 64
    assert spec.uncertain == "ignore" and spec.views == ("frontal",) and spec.heatmap_grid.shape == (2, 2)
    assert checkpoint["hyper_parameters"]["class_names"] == list(names)
    assert len(checkpoint["hyper_parameters"]["class_frequencies"]) == len(names)  # the loss's weights
    assert checkpoint["state_dict"]["model.classifier.weight"].shape[0] == len(names)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["num_classes"] == len(names)
    assert read_json(run / "run_info.json")["class_names"] == list(names)
    summary = read_json(run / "summary.json")
    assert summary["class_names"] == list(names)
    assert {f"val_auc/{n}" for n in names} <= set(summary["metrics"])
    assert not any(k.startswith("val_auc/") and k[len("val_auc/"):] not in names for k in summary["metrics"])
    # evaluate
    evaluation = run / "evaluation"
    predictions = pd.read_csv(evaluation / "predictions_test.csv")
    assert list(predictions.columns) == ["image_id", *[f"prob_{n}" for n in names], *[f"label_{n}" for n in names]]
    auc = read_json(evaluation / "auc_test.json")
    assert auc["class_names"] == list(names) == list(auc["per_class"]) and auc["dataset"] == dataset
    assert list(read_json(evaluation / "operating_points.json")["thresholds"]) == list(names)
    assert list(pd.read_csv(evaluation / "operating_points_test.csv")["class_name"]) == list(names)
    if (evaluation / "subgroups_test.json").is_file():  # (RSNA records no sex, age or view: no subgroups)
        subgroups = read_json(evaluation / "subgroups_test.json")
        assert subgroups["class_names"] == list(names) == list(subgroups["thresholds"])
        assert {g["class_name"] for g in subgroups["groups"]} == {*names, "Mean"}
    assert read_json(evaluation / "calibration.json")["class_names"] == list(names)
    calibration = pd.read_csv(evaluation / "calibration_test.csv")
    assert list(calibration["class_name"]) == [*names, "Mean"]
    table1 = pd.read_csv(evaluation / "table1_test.csv", index_col=0)
    assert list(table1.index) == [*names, "Mean"] and not any("Wang" in c for c in table1.columns)
    # report, predict (from the run and from its export), export
    report = (root / "report" / "report.md").read_text()
    assert all(n in report for n in names)
    exported = read_json(run / "export" / "baseline.onnx.json")
    assert ModelSpec.from_dict(exported["spec"]) == spec and exported["class_names"] == list(names)
    assert exported["outputs"]["logits"] == ["batch", len(names)]
    for folder in ("from_run", "from_export"):
        document = read_json(root / folder / "predictions.json")
        assert document["class_names"] == list(names) == list(document["thresholds"])
        assert ModelSpec.from_dict(document["spec"]) == spec
        for image in document["images"]:
            assert image["error"] is None and list(image["probabilities"]) == list(names)
            assert set(image["above_threshold"]) <= set(names) and set(image["boxes"]) <= set(names)
    # and nothing of ChestX-ray14's label space anywhere
    written = [p for p in [*run.rglob("*"), *(root / "report").rglob("*"), *(root / "from_run").rglob("*"),
                           *(root / "from_export").rglob("*")]
               if p.is_file() and p.suffix in (".csv", ".json", ".md", ".yaml", ".html")]
    leaked = [str(p) for p in written if any(n in p.read_text(errors="replace") for n in NIH_ONLY)]
    assert not leaked, leaked


def test_a_chexpert_run_carries_its_own_fourteen_labels(chexpert: dict[str, Path]) -> None:
    names = load_dataset(chexpert["data"], "chexpert").class_names
    assert len(names) == 14 and "Pleural Effusion" in names and "No Finding" in names
    assert_every_file_carries(names, "chexpert", chexpert)
    assert (chexpert["run"] / "evaluation" / "subgroups_test.json").is_file()  # its sex, age and views
    labels = pd.read_csv(chexpert["run"] / "evaluation" / "predictions_test.csv")
    assert labels.filter(like="label_").isna().to_numpy().any()  # blank / uncertain cells stay missing
    auc = read_json(chexpert["run"] / "evaluation" / "auc_test.json")
    counted = {n: e["n_positive"] + e["n_negative"] for n, e in auc["per_class"].items()}
    assert min(counted.values()) < auc["n_images"]  # each AUC over the images labelled for its class


def test_an_rsna_run_has_one_label_and_localizes_its_boxes(rsna: dict[str, Path]) -> None:
    names = ("Pneumonia",)
    assert load_dataset(rsna["data"], "rsna").class_names == names
    assert_every_file_carries(names, "rsna", rsna)
    evaluation = rsna["run"] / "evaluation"
    table = pd.read_csv(evaluation / "localization_native.csv")
    assert set(table["class_name"]) == {"Pneumonia", "Mean"}
    assert set(pd.read_csv(evaluation / "scores_native.csv")["class_name"]) == {"Pneumonia"}
    assert read_json(rsna["run"] / "run_info.json")["box_rows"].keys() == {"Pneumonia"}
    assert read_json(evaluation / "explain.json")["checkpoint"]["sha256"]  # explain: the run's box class
    assert set(pd.read_csv(evaluation / "masks.csv")["class_name"]) == {"Pneumonia"}
    assert set(pd.read_csv(evaluation / "faithfulness.csv")["class_name"]) == {"Pneumonia", "All"}
    report = (rsna["root"] / "report" / "report.md").read_text()
    assert "over the 1 of 1 box classes" in report
    with np.load(evaluation / "heatmaps_native.npz") as maps:
        assert {key.split("|")[1] for key in maps.files if "|" in key} == {"Pneumonia"}

"""Scoring a run on other datasets: the label mapping, the ground-truth policies of several readers and the
human row (by hand), shared-image mappings, and end to end on phantoms (a ChestX-ray14 run evaluated on
CheXpert, localized on VinDr-CXR under every policy and on RSNA Pneumonia, the report's tables)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from thoracic.constants import CLASS_NAMES
from thoracic.data.datasets.chexpert import OBSERVATIONS
from thoracic.data.harmonisation import label_mapping
from thoracic.data.shared_images import read_image_mapping, shared_summary, shared_test_images
from thoracic.errors import DataError
from thoracic.evaluation.readers import (
    HUMAN_SOURCE,
    ground_truth_rows,
    human_agreement,
    image_readers,
    match_findings,
)

# --------------------------------------------------------------------------------------------------------
# The label mapping
# --------------------------------------------------------------------------------------------------------


def test_chestxray14_run_meets_chexpert_on_seven_findings_only() -> None:
    mapping = label_mapping("chestxray14", CLASS_NAMES, "chexpert", OBSERVATIONS)
    pairs = dict(zip(mapping.run_labels, mapping.test_labels))
    assert pairs == {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
                     "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation",
                     "Edema": "Edema"}
    # the indices pick the same names on both sides, in the run's output order
    assert [CLASS_NAMES[i] for i in mapping.run_indices] == list(mapping.run_labels)
    assert [OBSERVATIONS[i] for i in mapping.test_indices] == list(mapping.test_labels)
    assert list(mapping.run_indices) == sorted(mapping.run_indices)
    # nothing broader or narrower: Infiltration is not Lung Opacity, Mass / Nodule are not Lung Lesion
    assert "Infiltration" not in pairs and "Mass" not in pairs and "Nodule" not in pairs


def test_vindr_and_rsna_mappings_and_no_common_label() -> None:
    from thoracic.data.synth.layouts import VINDR_LABELS

    mapping = label_mapping("chestxray14", CLASS_NAMES, "vindr", VINDR_LABELS)
    vindr = dict(zip(mapping.run_labels, mapping.test_labels))
    assert vindr["Fibrosis"] == "Pulmonary fibrosis" and vindr["Pleural_Thickening"] == "Pleural thickening"
    assert vindr["Effusion"] == "Pleural effusion" and "Nodule" not in vindr and "Mass" not in vindr
    assert label_mapping("chestxray14", CLASS_NAMES, "rsna", ["Pneumonia"]).run_labels == ("Pneumonia",)
    with pytest.raises(DataError, match="no common finding"):
        label_mapping("chexpert", ["Fracture", "Support Devices"], "rsna", ["Pneumonia"])


# --------------------------------------------------------------------------------------------------------
# Ground-truth policies and the human row, by hand
# --------------------------------------------------------------------------------------------------------


def _boxes(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "class_name", "reader_id", "x", "y", "w", "h"]).assign(
        original_width=100, original_height=100)


def test_policies_on_a_hand_made_table() -> None:
    boxes = _boxes([
        ("i1", "A", "R1", 0, 0, 10, 10),
        ("i1", "A", "R2", 2, 0, 10, 10),    # IoU with R1's = 80 / 120 = 0.667 > 0.4: the same finding
        ("i1", "A", "R2", 50, 50, 10, 10),  # R2 alone
        ("i1", "B", "R1", 20, 20, 10, 10),
        ("i1", "B", "R2", 25, 20, 10, 10),  # IoU 50 / 150 = 0.333: not matched
    ])
    assert match_findings(boxes).tolist() == [0, 0, 1, 2, 3]
    two = image_readers(boxes)
    assert two == {"i1": ("R1", "R2")}
    each = ground_truth_rows(boxes, "each", two)
    assert len(each) == 5 and each["box_row"].tolist() == [0, 1, 2, 3, 4] and set(each["n_marked"]) == {1}
    anyone = ground_truth_rows(boxes, "any", two)
    assert anyone[["class_name", "x", "y", "w", "h", "n_marked"]].values.tolist() == [
        ["A", 1.0, 0.0, 10.0, 10.0, 2], ["A", 50.0, 50.0, 10.0, 10.0, 1],
        ["B", 20.0, 20.0, 10.0, 10.0, 1], ["B", 25.0, 20.0, 10.0, 10.0, 1]]
    assert anyone["reader_id"].tolist()[0] == "R1 R2"
    # two readers: a majority is both
    consensus = ground_truth_rows(boxes, "consensus", two)
    assert consensus[["class_name", "x", "w", "n_marked", "n_readers"]].values.tolist() == [["A", 1.0, 10.0, 2, 2]]
    # a third reader who drew nothing (the dataset's table lists every reader): 2 of 3 is still a majority
    three = image_readers(boxes, pd.DataFrame({"image_id": ["i1"], "reader_ids": ["R1 R2 R3"]}))
    assert three == {"i1": ("R1", "R2", "R3")}
    assert ground_truth_rows(boxes, "consensus", three)["n_readers"].tolist() == [3]
    # four readers: 2 of 4 is not a majority
    four = {"i1": ("R1", "R2", "R3", "R4")}
    assert ground_truth_rows(boxes, "consensus", four).empty
    with pytest.raises(DataError, match="ground-truth policy"):
        ground_truth_rows(boxes, "majority", two)


def test_human_row_recomputed_by_hand() -> None:
    """Two readers, known IoUs: A boxes overlap with IoU 1/3 and IoBB 1/2 both ways; only R1 boxed B."""
    boxes = _boxes([
        ("i1", "A", "R1", 0, 0, 10, 10),
        ("i1", "A", "R2", 5, 0, 10, 10),
        ("i1", "B", "R1", 20, 20, 10, 10),
    ])
    human = human_agreement(boxes, "each", image_readers(boxes), ["A", "B"])
    assert human.defined and human.n_pairs == 2 and human.readers == ("R1", "R2")
    table = human.accuracy.assign(t=human.accuracy["t"].round(2))
    assert set(table["source"]) == {HUMAN_SOURCE} and set(table["threshold"]) == {""}

    def value(metric: str, t: float | None, name: str, column: str = "accuracy") -> float:
        rows = table[(table["metric"] == metric) & (table["class_name"] == name)]
        rows = rows[rows["t"].isna()] if t is None else rows[rows["t"] == t]
        return float(rows[column].iloc[0])

    # A: R2's box localizes R1's row and the reverse at IoU > 0.3 (1/3), not at 0.4; IoBB 1/2 > 0.25, not > 0.5
    assert value("IoU", 0.3, "A") == 1.0 and value("IoU", 0.4, "A") == 0.0
    assert value("IoBB", 0.25, "A") == 1.0 and value("IoBB", 0.5, "A") == 0.0
    # B: R2 drew no B box, so R1's B row is missed; R1's own B box meets no ground truth of R2: not counted
    assert value("IoU", 0.1, "B") == 0.0 and value("IoU", 0.1, "B", "false_positives_per_image") == 0.0
    assert value("IoU", 0.3, "Mean") == 0.5 and value("IoU", 0.3, "Mean", "n_boxes") == 3
    # false positives of A at IoU 0.4: each reader's box, one per (image, reader) pair
    assert value("IoU", 0.4, "A", "false_positives_per_image") == 1.0
    assert value("IoU", 0.3, "A", "false_positives_per_image") == 0.0
    # pointing: R1's centre (5, 5) lies in R2's box [5, 15); R2's (10, 5) not in R1's [0, 10); R2 has no B point
    assert value("pointing", None, "A") == 0.5 and value("pointing", None, "B") == 0.0
    scores = human.scores.sort_values(["class_name", "reader_id"])
    assert scores[["reader_id", "class_name", "x", "best_iou", "best_iobb", "pointing"]].values.tolist() == [
        ["R1", "A", 5, pytest.approx(1 / 3), 0.5, 1], ["R2", "A", 0, pytest.approx(1 / 3), 0.5, 0],
        ["R2", "B", 20, 0.0, 0.0, 0]]


def test_human_row_undefined_without_two_readers() -> None:
    unnamed = _boxes([("i1", "A", "", 0, 0, 10, 10)])
    assert "name no readers" in human_agreement(unnamed, "each", image_readers(unnamed), ["A"]).reason
    consensus = _boxes([("i1", "A", "consensus", 0, 0, 10, 10)])
    assert "consensus" in human_agreement(consensus, "each", image_readers(consensus), ["A"]).reason
    # one reference per image: every policy reads the same rows
    single = _boxes([("i1", "A", "", 0, 0, 10, 10), ("i1", "A", "", 1, 0, 10, 10)])
    rows = [ground_truth_rows(single, p, image_readers(single))[["x", "y", "w", "h"]].values.tolist()
            for p in ("each", "any", "consensus")]
    assert rows[0] == rows[1] == rows[2] and len(rows[0]) == 2


# --------------------------------------------------------------------------------------------------------
# Shared images
# --------------------------------------------------------------------------------------------------------


def test_image_mappings_in_every_accepted_form(tmp_path: Path) -> None:
    records = [{"subset_img_id": "p1", "img_id": "00000001_000.png", "subset_group": "train",
                "orig_labels": ["Pneumonia"]}, {"subset_img_id": "p2", "img_id": "00000002_000.png"}]
    (tmp_path / "map.json").write_text(json.dumps(records))
    (tmp_path / "map.csv").write_text("subset_img_id,img_id\np1,00000001_000.png\np2,00000002_000\n")
    (tmp_path / "kinds.csv").write_text("chestxray14,rsna\n00000001_000.png,p1\n00000002_000.png,p2\n")
    expected = [["p1", "00000001_000.png"], ["p2", "00000002_000.png"]]
    for name in ("map.json", "map.csv", "kinds.csv"):
        table = read_image_mapping(tmp_path / name, "rsna", "chestxray14")
        assert table[["rsna", "chestxray14"]].values.tolist() == expected, name
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="bad.csv.*subset_img_id"):
        read_image_mapping(tmp_path / "bad.csv", "rsna", "chestxray14")
    with pytest.raises(DataError, match="maps rsna and chestxray14 images, not vindr"):
        read_image_mapping(tmp_path / "map.json", "vindr", "chestxray14")
    (tmp_path / "empty.csv").write_text("subset_img_id,img_id\np1,\n")
    with pytest.raises(DataError, match="line 2 has an empty"):
        read_image_mapping(tmp_path / "empty.csv", "rsna", "chestxray14")
    shared = shared_test_images(read_image_mapping(tmp_path / "map.csv", "rsna", "chestxray14"), "rsna",
                                ["p1", "p2", "p3"], "chestxray14",
                                {"train": ["00000001_000.png"], "val": [], "test": ["00000002_000.png"]})
    assert shared.values.tolist() == [["p1", "00000001_000.png", "train"], ["p2", "00000002_000.png", "test"]]
    assert shared_summary(shared, 3) == {"n_test_images": 3, "n_mapped": 2, "n_train": 1, "n_val": 0, "n_test": 1}


# --------------------------------------------------------------------------------------------------------
# End to end on phantoms
# --------------------------------------------------------------------------------------------------------


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def scored(phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A ChestX-ray14 phantom run (untrained resnet10, 64 px), evaluated and localized on its own data, then
    on CheXpert, VinDr-CXR (every image, under each policy) and RSNA phantoms; the own evaluation folder's
    files before and after."""
    from helpers import make_run

    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.synth import generate_layout
    from thoracic.workflows.evaluate import evaluate_run
    from thoracic.workflows.localize import localize_run

    base = tmp_path_factory.mktemp("crossdata")
    roots = {}
    for kind in ("chexpert", "vindr", "rsna"):
        roots[kind] = generate_layout(base / kind, kind, 90, 64, seed=5, test_fraction=0.4, progress=False)
        prepare_cache(roots[kind], 64, num_workers=1, progress=False)
    run = make_run(base / "runs" / "bl", phantom_dir, "baseline", 0)
    common = {"device": "cpu", "progress": False}
    evaluate_run(run, bootstrap=20, **common)
    localize_run(run, draws=3, **common)
    own = _digests(run / "evaluation")
    # a mapping of shared images: three RSNA test images are the run's training images, one its test image
    from thoracic.data.datasets import load_dataset
    from thoracic.workflows.common import run_splits
    from thoracic.training.checkpoints import load_run

    splits = run_splits(load_run(run))
    rsna = load_dataset(roots["rsna"], "rsna")
    rsna_test = rsna.table.loc[rsna.table["split"] == "test", "image_id"].tolist()
    mapping = base / "rsna_to_nih.csv"
    pd.DataFrame({"rsna": rsna_test[:4], "chestxray14": [*splits["train"][:3], splits["test"][0]]}).to_csv(mapping,
                                                                                                         index=False)
    results = {"evaluate": {kind: evaluate_run(run, data=roots[kind], dataset=kind, bootstrap=20, **common)
                            for kind in ("chexpert", "rsna")}}
    results["evaluate"]["rsna_shared"] = evaluate_run(run, data=roots["rsna"], dataset="rsna", bootstrap=0,
                                                      shared_images=mapping, **common)
    results["localize"] = {policy: localize_run(run, data=roots["vindr"], dataset="vindr", split="all", draws=3,
                                                ground_truth=policy, method="native", **common)
                           for policy in ("each", "any", "consensus")}
    results["localize"]["rsna"] = localize_run(run, data=roots["rsna"], dataset="rsna", split="all", draws=3, **common)
    return {"run": run, "roots": roots, "own_before": own, "own_after": _digests(run / "evaluation"),
            "mapping": mapping, "splits": splits, **results}


@pytest.mark.slow
def test_other_datasets_never_touch_the_own_evaluation(scored: dict) -> None:
    assert scored["own_before"] == scored["own_after"]
    folders = sorted(p.name for p in (scored["run"] / "evaluation").iterdir() if p.is_dir())
    assert folders == ["chexpert-chexpert", "rsna-rsna", "vindr-vindr"]


@pytest.mark.slow
def test_evaluated_on_chexpert_over_the_shared_labels(scored: dict) -> None:
    from thoracic.data.datasets import load_dataset, metadata_fingerprint

    root = scored["roots"]["chexpert"]
    folder = scored["run"] / "evaluation" / "chexpert-chexpert"
    record = json.loads((folder / "test_set.json").read_text())
    assert record["kind"] == "chexpert" and record["root"] == str(root.resolve())
    assert record["metadata_sha256"] == metadata_fingerprint(root, "chexpert")[1]
    assert record["train_dataset"]["kind"] == "chestxray14"
    mapping = pd.read_csv(folder / "label_mapping.csv")
    assert dict(zip(mapping["run_label"], mapping["test_label"]))["Effusion"] == "Pleural Effusion"
    # the labels in the predictions are CheXpert's own (read independently), column by column
    dataset = load_dataset(root, "chexpert")
    test = dataset.subset(dataset.split_indices("test"))
    predictions = pd.read_csv(folder / "predictions_test.csv")
    assert predictions["image_id"].tolist() == test.table["image_id"].tolist()
    auc = json.loads((folder / "auc_test.json").read_text())
    assert auc["test_dataset"]["label_mapping"] == record["label_mapping"]
    assert list(auc["per_class"]) == mapping["run_label"].tolist()
    for run_label, test_label in zip(mapping["run_label"], mapping["test_label"]):
        truth = test.labels[:, test.class_names.index(test_label)]
        written = predictions[f"label_{run_label}"].to_numpy(dtype=float)
        np.testing.assert_array_equal(np.isnan(written), np.isnan(truth))
        np.testing.assert_array_equal(written[~np.isnan(truth)], truth[~np.isnan(truth)])
        labelled = ~np.isnan(written)
        y, p = written[labelled], predictions[f"prob_{run_label}"].to_numpy()[labelled]
        expected = roc_auc_score(y, p) if len(set(y)) == 2 else None
        assert auc["per_class"][run_label]["auc"] == (pytest.approx(expected, abs=1e-9) if expected is not None
                                                      else None)
    # operating points: the run's own validation split (its operating_points.json, this checkpoint)
    own = json.loads((scored["run"] / "evaluation" / "operating_points.json").read_text())
    assert auc["operating_points"]["thresholds"] == {n: own["thresholds"][n] for n in mapping["run_label"]}
    assert "own validation split" in auc["operating_points"]["source"]
    points = pd.read_csv(folder / "operating_points_test.csv").set_index("class_name")
    for name in mapping["run_label"]:
        labelled = predictions[f"label_{name}"].notna()
        y = predictions.loc[labelled, f"label_{name}"].to_numpy()
        called = predictions.loc[labelled, f"prob_{name}"].to_numpy() >= own["thresholds"][name]
        if (y == 1).any():
            assert points.loc[name, "sensitivity"] == pytest.approx(called[y == 1].mean())
    # subgroups where the dataset records them (sex, age, view; CheXpert has no follow-up numbers)
    subgroups = json.loads((folder / "subgroups_test.json").read_text())
    assert "follow_up" not in subgroups["attributes"] and "sex" in subgroups["attributes"]
    assert (folder / "calibration_test.json").is_file() and not (folder / "calibration.json").exists()


@pytest.mark.slow
def test_shared_images_are_counted_listed_and_warned(scored: dict) -> None:
    result = scored["evaluate"]["rsna_shared"]
    folder = scored["run"] / "evaluation" / "rsna-rsna"
    shared = pd.read_csv(folder / "shared_images.csv")
    assert shared["run_split"].tolist() == ["train", "train", "train", "test"]
    assert set(shared["run_image_id"]) <= {*scored["splits"]["train"], *scored["splits"]["test"]}
    assert result.shared_images["n_train"] == 3 and result.shared_images["n_mapped"] == 4
    assert any("3 of the" in w and "training split" in w for w in result.warnings)
    assert json.loads((folder / "auc_test.json").read_text())["shared_images"]["n_train"] == 3
    # without the mapping, the known overlap of RSNA and ChestX-ray14 is named
    assert any("share images" in w for w in scored["evaluate"]["rsna"].warnings)


@pytest.mark.slow
def test_localized_on_vindr_under_each_policy_with_the_human_row(scored: dict) -> None:
    from helpers import assert_table_recomputes

    from thoracic.data.datasets import load_dataset

    root = scored["roots"]["vindr"]
    dataset = load_dataset(root, "vindr")
    results = scored["localize"]
    mapped = {m["test_label"]: m["run_label"] for m in results["each"].box_set["label_mapping"]}
    reader_boxes = dataset.boxes[dataset.boxes["class_name"].isin(list(mapped))]
    # each: every reader's box of the run's classes is a row (training images: three readers each)
    assert results["each"].box_set["ground_truth"]["n_rows"] == len(reader_boxes)
    rows = {p: results[p].box_set["ground_truth"]["n_rows"] for p in ("each", "any", "consensus")}
    assert rows["each"] > rows["any"] >= rows["consensus"] > 0
    assert "Nodule" not in results["each"].box_classes and "Fibrosis" in results["each"].box_classes
    folder = scored["run"] / "evaluation" / "vindr-vindr"
    # the folder holds the last policy's files (consensus), which recompute from its CSVs
    info = json.loads((folder / "localization_native.json").read_text())
    assert info["box_set"]["ground_truth"]["policy"] == "consensus" and info["human"]["defined"]
    truth = pd.read_csv(folder / "ground_truth_native.csv")
    assert len(truth) == rows["consensus"] and (truth["n_marked"] * 2 > truth["n_readers"]).all()
    assert_table_recomputes(folder, "native", tuple(info["box_classes"]))
    # the human row: every policy defines it on the training images; its table recomputes from its rows
    for policy in ("each", "any", "consensus"):
        human = results[policy].human
        assert human.defined and human.n_pairs > 0
    human = pd.read_csv(folder / "human_native.csv")
    scores = pd.read_csv(folder / "human_scores_native.csv")
    mean = human[(human["class_name"] == "Mean") & (human["metric"] == "IoU") & np.isclose(human["t"], 0.3)]
    per_class = scores.assign(hit=scores["best_iou"] > 0.3).groupby("class_name")["hit"].mean()
    assert float(mean["accuracy"].iloc[0]) == pytest.approx(per_class.mean(), abs=1e-6)


@pytest.mark.slow
def test_localized_on_rsna_without_readers(scored: dict) -> None:
    result = scored["localize"]["rsna"]
    assert result.box_classes == ("Pneumonia",)
    assert not result.human.defined and "name no readers" in result.human.reason
    assert any("share images" in w for w in result.warnings)


@pytest.mark.slow
def test_report_shows_the_train_by_test_table_and_the_human_row(scored: dict, tmp_path: Path) -> None:
    from thoracic.workflows.report import build_report

    markdown, _ = build_report([scored["run"]], tmp_path / "report", explorer=False)
    text = markdown.read_text()
    assert "## Cross-dataset validation" in text
    chexpert = json.loads((scored["run"] / "evaluation" / "chexpert-chexpert" / "auc_test.json").read_text())
    header = next(line for line in text.splitlines() if line.startswith("| run [train dataset]"))
    assert "own test split" in header and "chexpert (chexpert)" in header and "rsna (rsna)" in header
    row = next(line for line in text.splitlines() if "[trained on chestxray14]" in line)
    assert f"{chexpert['mean_auc']:.3f} [{chexpert['mean_ci'][0]:.3f}, {chexpert['mean_ci'][1]:.3f}]" in row
    assert "| Pleural Effusion |" in text  # the per-finding table, by harmonised name
    setup = next(line for line in text.splitlines() if line.startswith("| test sets |"))
    assert "chexpert (chexpert)" in setup and "vindr (vindr)" in setup and "rsna (rsna)" in setup
    human = next(line for line in text.splitlines() if "| human readers (" in line)
    assert "vindr (vindr) (all images)" in human and "| consensus |" in human
    assert "test images were in the run's training split" in text  # the shared-image warning


@pytest.mark.slow
def test_cli_prints_the_mapping_and_the_human_row(scored: dict, capsys: pytest.CaptureFixture) -> None:
    from thoracic.cli import main

    run, roots = scored["run"], scored["roots"]
    assert main(["localize", str(run), "--data", str(roots["vindr"]), "--dataset", "vindr", "--split", "all",
                 "--ground-truth", "any", "--draws", "2", "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ground truth any" in out and "Effusion = Pleural effusion" in out
    assert "human readers (each reader's boxes against the other readers'" in out
    assert main(["localize", str(run), "--split", "all", "--device", "cpu", "--no-progress"]) == 2
    assert "another dataset" in capsys.readouterr().err
    # bad combinations are named errors, before anything is written
    for arguments, message in ((["--dataset", "chexpert"], "give the chexpert folder with --data"),
                               (["--shared-images", str(scored["mapping"])], "its own dataset"),
                               (["--data", str(roots["chexpert"]), "--dataset", "chexpert", "--calibrate"],
                                "--calibrate"),
                               (["--data", str(roots["chexpert"]), "--dataset", "chexpert", "--split", "val"],
                                "test split")):
        assert main(["evaluate", str(run), "--device", "cpu", "--no-progress", *arguments]) == 2
        assert message in capsys.readouterr().err
    assert main(["evaluate", str(run), "--data", str(roots["rsna"]), "--dataset", "rsna", "--bootstrap", "0",
                 "--device", "cpu", "--no-progress", "--no-subgroups"]) == 0
    out = capsys.readouterr().out
    assert "labels shared" in out and "Pneumonia = Pneumonia" in out and "own validation split" in out

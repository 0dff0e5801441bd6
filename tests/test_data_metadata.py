"""Reading ChestX-ray14 folders: the real metadata, the real sample folder, phantoms, format variants."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from thoracic.constants import CLASS_INDEX, CLASS_NAMES
from thoracic.data.boxes import scale_boxes, xywh_to_xyxy, xyxy_to_xywh
from thoracic.data.metadata import load_chestxray14, parse_label_strings
from thoracic.data.splits import make_splits

TRUE_BOX_COUNTS = {
    "Atelectasis": 180, "Cardiomegaly": 146, "Effusion": 153, "Infiltration": 123,
    "Mass": 85, "Nodule": 79, "Pneumonia": 120, "Pneumothorax": 98,
}


@pytest.fixture(scope="module")
def nih(nih_dir):
    """The real metadata, loaded once (benchmarks/bench_library.py measures how long this takes)."""
    return load_chestxray14(nih_dir)


@pytest.mark.nih
def test_real_metadata_counts(nih, nih_dir):
    dataset = nih
    assert len(dataset.table) == 112_120 and dataset.labels.shape == (112_120, 14)
    assert len(dataset.train_val_ids) == 86_524 and len(dataset.test_ids) == 25_596
    assert (dataset.table["split"] == "test").sum() == 25_596
    assert len(dataset.boxes) == 984
    assert dataset.boxes["image_id"].nunique() == 880
    assert (dataset.boxes.groupby("image_id").size() > 1).sum() == 93
    assert dict(Counter(dataset.boxes["class_name"])) == TRUE_BOX_COUNTS
    assert list(dataset.boxes["box_row"]) == list(range(984))
    assert list(dataset.boxes["csv_line"]) == list(range(2, 986))  # header on line 1, no blank lines
    test = set(dataset.test_ids)
    assert set(dataset.boxes["image_id"]) <= test
    patients_test = set(dataset.table.loc[dataset.table["split"] == "test", "patient_id"])
    patients_train = set(dataset.table.loc[dataset.table["split"] == "train_val", "patient_id"])
    assert not patients_test & patients_train


@pytest.mark.nih
def test_real_labels_match_an_independent_count(nih, nih_dir):
    dataset = nih
    counts = Counter()
    with open(nih_dir / "metadata" / "Data_Entry_2017_v2020.csv", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        first_rows = []
        for row in reader:
            names = row[1].split("|")
            counts.update(n for n in names if n != "No Finding")
            if len(first_rows) < 4:
                first_rows.append(names)
    assert {name: int(dataset.labels[:, CLASS_INDEX[name]].sum()) for name in CLASS_NAMES} == dict(counts)
    # rows 0-3 are Cardiomegaly / Cardiomegaly|Emphysema / Cardiomegaly|Effusion / No Finding
    expected = np.zeros((4, 14), np.uint8)
    for i, names in enumerate(first_rows):
        for n in names:
            if n != "No Finding":
                expected[i, CLASS_INDEX[n]] = 1
    np.testing.assert_array_equal(dataset.labels[:4], expected)
    assert expected[3].sum() == 0 and expected[1, CLASS_INDEX["Emphysema"]] == 1
    row = dataset.table.iloc[0]
    assert (row["image_id"], row["patient_id"], row["follow_up"], row["age"], row["sex"], row["view"]) == (
        "00000001_000.png", 1, 0, 57, "M", "PA")
    assert (row["original_width"], row["original_height"]) == (2682, 2749)


@pytest.mark.nih
def test_real_official_split_and_validation_split(nih):
    dataset = nih
    splits = make_splits(dataset, val_fraction=0.1, seed=0)
    assert len(splits.test) == 25_596 and len(splits.train) + len(splits.val) == 86_524
    patients = dataset.table["patient_id"].to_numpy()
    sets = [set(patients[s]) for s in (splits.train, splits.val, splits.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert abs(len(sets[1]) / (len(sets[0]) + len(sets[1])) - 0.1) < 0.001
    again = make_splits(dataset, val_fraction=0.1, seed=0)
    np.testing.assert_array_equal(splits.val, again.val)
    assert set(dataset.table["image_id"].to_numpy()[splits.test]) >= set(dataset.boxes["image_id"])


@pytest.mark.nih
def test_real_sample_folder(nih_sample_dir):
    dataset = load_chestxray14(nih_sample_dir, require_images=True)
    assert len(dataset) == 40 and dataset.table["path"].notna().all()
    assert (dataset.table["split"] == "test").sum() == 12
    assert sorted(dataset.box_image_ids) == ["00001369_000.png", "00002578_000.png", "00013125_000.png",
                                             "00022084_000.png"]
    assert dict(zip(dataset.boxes["image_id"], dataset.boxes["class_name"]))["00002578_000.png"] == "Nodule"


@pytest.mark.nih
def test_cli_subset_then_prepare_on_the_real_sample(nih, nih_dir, tmp_path, capsys):
    """`thoracic subset` + `thoracic prepare` on a folder built from the real NIH metadata and sample images."""
    from thoracic.cli import main as cli_main
    from thoracic.data.cache import ImageCache

    out = tmp_path / "nih_sample"
    assert cli_main(["subset", "--source", str(nih_dir), "--images", str(nih_dir / "sample" / "images"),
                     "--out", str(out)]) == 0
    assert cli_main(["prepare", "--data", str(out), "--size", "32", "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "wrote 40 images" in text and "4 box rows on 4 images" in text and "40 of 40 images at 32 px" in text
    subset, full = load_chestxray14(out, require_images=True), nih
    assert sorted(subset.image_ids) == sorted(p.name for p in (nih_dir / "sample" / "images").glob("*.png"))
    rows = full.index_of(subset.image_ids)
    np.testing.assert_array_equal(subset.labels, full.labels[rows])  # rows copied verbatim
    assert list(subset.table["split"]) == list(full.table["split"].to_numpy()[rows])
    assert all((out / "images" / i).is_symlink() for i in subset.image_ids)
    cache = ImageCache.open(out / "cache_32", expected_root=out, expected_size=32)
    assert cache.available.all() and (cache.original_sizes == 1024).all()
    # refuses to write into a non-empty folder
    assert cli_main(["subset", "--source", str(nih_dir), "--images", str(nih_dir / "sample" / "images"),
                     "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_phantom_folder_reads(phantom_dir):
    dataset = load_chestxray14(phantom_dir, require_images=True)
    assert len(dataset) == 120
    assert set(dataset.table["split"]) == {"train_val", "test"}
    assert dataset.table["path"].map(lambda p: Path(p).is_file()).all()
    rows = dataset.index_of(list(dataset.boxes["image_id"]))
    # every box row's class is among its image's labels
    assert all(dataset.labels[r, c] == 1 for r, c in zip(rows, dataset.boxes["class_index"]))
    assert dataset.index_of(dataset.table["image_id"].iat[7]) == 7


def _copy(phantom_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(phantom_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("cache_*")))


def test_2017_header_trailing_columns_newlines_and_tarball_layout(phantom_dir, tmp_path):
    """Data_Entry_2017.csv with a trailing empty column and 'NNNY' ages, lists with a trailing newline,
    box rows with trailing empty fields, images in images_001/images: same content as the original."""
    reference = load_chestxray14(phantom_dir)
    root = _copy(phantom_dir, tmp_path)
    lines = (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()
    (root / "Data_Entry_2017_v2020.csv").unlink()
    fields = [line.split(",") for line in lines[1:]]
    rows = [",".join(f[:4] + [f"{int(f[4]):03d}Y"] + f[5:]) + "," for f in fields]
    (root / "Data_Entry_2017.csv").write_text("\n".join([lines[0] + ","] + rows) + "\n")
    for name in ("train_val_list.txt", "test_list.txt"):
        (root / name).write_text((root / name).read_text() + "\n")
    box_lines = (root / "BBox_List_2017.csv").read_text().splitlines()
    (root / "BBox_List_2017.csv").write_text("\n".join(box_lines[:1] + [b + ",,," for b in box_lines[1:]]) + "\n")
    (root / "images_001").mkdir()
    shutil.move(root / "images", root / "images_001" / "images")

    dataset = load_chestxray14(root, require_images=True)
    cols = ["image_id", "patient_id", "follow_up", "age", "sex", "view", "original_width", "split"]
    assert dataset.table[cols].equals(reference.table[cols])
    np.testing.assert_array_equal(dataset.labels, reference.labels)
    assert dataset.boxes.equals(reference.boxes)
    assert all("images_001" in p for p in dataset.table["path"])


def test_label_parsing_by_hand():
    import pandas as pd

    labels = parse_label_strings(pd.Series(["No Finding", "Hernia", "Mass|Nodule", "Infiltrate|Atelectasis"]))
    expected = np.zeros((4, 14), np.uint8)
    expected[1, 13] = 1
    expected[2, [4, 5]] = 1
    expected[3, [3, 0]] = 1
    np.testing.assert_array_equal(labels, expected)


def test_views_and_only_present(phantom_dir, tmp_path, caplog):
    dataset = load_chestxray14(phantom_dir, views=("pa",))
    assert len(dataset) > 0 and set(dataset.table["view"]) == {"PA"}
    full = load_chestxray14(phantom_dir)
    assert len(dataset) == (full.table["view"] == "PA").sum()
    np.testing.assert_array_equal(dataset.labels, full.labels[(full.table["view"] == "PA").to_numpy()])
    root = _copy(phantom_dir, tmp_path)
    gone = sorted((root / "images").iterdir())[:3]
    for path in gone:
        path.unlink()
    with caplog.at_level("WARNING"):
        present = load_chestxray14(root, only_present=True)
    assert len(present) == 117 and set(present.missing_ids) == {p.name for p in gone}
    assert "3 of 120 images are not on disk" in caplog.text
    everything = load_chestxray14(root)
    assert len(everything) == 120 and everything.table["path"].isna().sum() == 3


def test_splits_are_seeded_and_patient_disjoint(phantom_dir):
    dataset = load_chestxray14(phantom_dir)
    a, b, c = (make_splits(dataset, 0.2, seed) for seed in (0, 0, 1))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split], b[split])
    assert not np.array_equal(a.val, c.val)
    patients = dataset.table["patient_id"].to_numpy()
    groups = [set(patients[s]) for s in (a.train, a.val, a.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sorted(np.concatenate([a.train, a.val, a.test]).tolist()) == list(range(len(dataset)))
    n_patients = len(groups[0] | groups[1])
    assert len(groups[1]) == round(0.2 * n_patients)
    np.testing.assert_array_equal(a.test, dataset.split_indices("test"))
    assert len(make_splits(dataset, 0.0).val) == 0


def test_scale_boxes_by_hand():
    np.testing.assert_allclose(scale_boxes([100, 200, 50, 40], (1024, 1024), (256, 256)), [25, 50, 12.5, 10])
    np.testing.assert_allclose(scale_boxes([[0, 0, 1024, 512]], (1024, 512), (256, 256)), [[0, 0, 256, 256]])
    boxes = np.array([[10.0, 20.0, 30.0, 40.0], [1, 2, 3, 4]])
    np.testing.assert_allclose(scale_boxes(scale_boxes(boxes, (64, 32), (100, 300)), (100, 300), (64, 32)), boxes)
    np.testing.assert_allclose(xywh_to_xyxy(boxes[0]), [10, 20, 40, 60])
    np.testing.assert_allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)
    with pytest.raises(ValueError):
        scale_boxes([1, 2, 3], (1, 1), (2, 2))

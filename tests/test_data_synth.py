"""The phantom generator: NIH layout, determinism, exact boxes on visible findings, speed."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
from thoracic.data.images import read_image
from thoracic.data.metadata import BBOX_HEADER, DATA_ENTRY_HEADER, load_chestxray14
from thoracic.data.synth import TRUTH_FILE, generate_phantom_dataset, render_phantom
from thoracic.errors import DataError


def test_layout_headers_and_lists(phantom_dir):
    assert (phantom_dir / "Data_Entry_2017_v2020.csv").read_text().splitlines()[0] == DATA_ENTRY_HEADER
    assert (phantom_dir / "BBox_List_2017.csv").read_text().splitlines()[0] == BBOX_HEADER
    for name in ("train_val_list.txt", "test_list.txt"):
        text = (phantom_dir / name).read_text()
        assert text and not text.endswith("\n")
    dataset = load_chestxray14(phantom_dir, require_images=True)
    table = dataset.table
    assert len(table) == 120 and (table["original_width"] == 64).all()
    test_patients = set(table.loc[table["split"] == "test", "patient_id"])
    assert test_patients and not test_patients & set(table.loc[table["split"] == "train_val", "patient_id"])
    assert table.groupby("patient_id").size().max() > 1  # follow-ups
    assert (table.groupby("patient_id")["follow_up"].apply(lambda f: sorted(f) == list(range(len(f))))).all()
    modes = {Image.open(p).mode for p in table["path"]}
    assert {"L", "RGBA", "I;16"} <= modes


def test_labels_boxes_and_truth_agree(phantom_dir):
    dataset = load_chestxray14(phantom_dir)
    assert (dataset.labels.sum(axis=0) > 0).all(), "every class occurs in the 120-image set"
    no_finding = (dataset.labels.sum(axis=1) == 0).mean()
    assert 0.2 < no_finding < 0.6
    truth = pd.read_csv(phantom_dir / TRUTH_FILE)
    rows = dataset.index_of(list(truth["Image Index"]))
    label_from_truth = np.zeros_like(dataset.labels)
    label_from_truth[rows, [CLASS_NAMES.index(n) for n in truth["Finding Label"]]] = 1
    np.testing.assert_array_equal(label_from_truth, dataset.labels)
    assert ((truth["x"] >= 0) & (truth["y"] >= 0) & (truth["x"] + truth["w"] <= 64) & (truth["y"] + truth["h"] <= 64)).all()
    boxes = dataset.boxes
    assert len(boxes) > 0 and set(boxes["class_name"]) <= set(BOX_CLASS_NAMES)
    assert set(boxes["image_id"]) <= set(dataset.test_ids)
    text = (phantom_dir / "BBox_List_2017.csv").read_text()
    assert ",Infiltration," not in text  # the real file's spelling is Infiltrate
    merged = boxes.merge(truth, left_on=["image_id", "class_name"], right_on=["Image Index", "Finding Label"])
    assert len(merged) == len(boxes)
    np.testing.assert_allclose(merged[["x_x", "y_x", "w_x", "h_x"]].to_numpy(), merged[["x_y", "y_y", "w_y", "h_y"]].to_numpy())


def test_deterministic_and_order_independent(phantom_dir, tmp_path):
    again = generate_phantom_dataset(tmp_path / "again", 40, 64, 0, workers=2, progress=False)
    dataset = load_chestxray14(phantom_dir)
    for name in ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", "test_list.txt"):
        assert (again / name).read_text() == (again / name).read_text()
    small = load_chestxray14(again)
    # an image depends on (seed, index, patient) only: same pixels as when drawn alone
    row = small.table.iloc[5]
    alone = render_phantom(64, 0, 5, int(row["patient_id"]))
    np.testing.assert_array_equal(read_image(row["path"]), alone.pixels)
    first = dataset.table.iloc[5]
    if first["patient_id"] == row["patient_id"]:
        np.testing.assert_array_equal(read_image(first["path"]), alone.pixels)
    other = render_phantom(64, 1, 5, int(row["patient_id"]))
    assert not np.array_equal(other.pixels, alone.pixels)


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_each_finding_is_visible_inside_its_box(name):
    """The same image with and without the finding differs mostly inside the finding's box."""
    with_it = render_phantom(96, 3, 11, 4, {name: 1.0})
    without = render_phantom(96, 3, 11, 4, {name: 0.0})
    assert [n for n, _ in with_it.findings] == [name] and not without.findings
    x, y, w, h = with_it.findings[0][1]
    diff = np.abs(with_it.pixels.astype(float) - without.pixels.astype(float))
    # acquisition (shift, noise, contrast) comes from its own stream, so only the finding differs
    inside = np.zeros_like(diff, dtype=bool)
    inside[y : y + h, x : x + w] = True
    assert diff[inside].mean() > max(8.0, 10 * diff[~inside].mean()), name


def test_small_sets_are_fast(tmp_path):
    start = time.process_time()  # CPU time of this process (workers=1)
    generate_phantom_dataset(tmp_path / "fast", 60, 64, 7, progress=False)
    assert time.process_time() - start < 2.0


def test_refuses_non_empty_folder(phantom_dir):
    with pytest.raises(DataError, match="not empty"):
        generate_phantom_dataset(phantom_dir, 5, 32, 0, progress=False)


def test_tarball_layout(tmp_path):
    root = generate_phantom_dataset(tmp_path / "t", 25, 32, 2, tarball_layout=True, images_per_folder=10,
                                    progress=False)
    assert sorted(p.name for p in root.glob("images_*")) == ["images_001", "images_002", "images_003"]
    assert load_chestxray14(root, require_images=True).table["path"].notna().all()

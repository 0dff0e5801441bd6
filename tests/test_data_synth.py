"""The phantom generator: NIH layout, determinism, exact boxes on visible findings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES
from thoracic.data.images import read_image
from thoracic.data.metadata import BBOX_HEADER, DATA_ENTRY_HEADER, load_chestxray14
from thoracic.data.synth import PREVALENCE, TRUTH_FILE, generate_phantom_dataset, render_phantom
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


def test_demographics_for_subgroups(phantom_dir):
    """The data-entry columns subgroup evaluation reads: sex, age, view, follow-up, varied in the test split."""
    table = load_chestxray14(phantom_dir).table
    test = table[table["split"] == "test"]
    assert set(test["sex"]) == {"M", "F"} and set(test["view"]) == {"PA", "AP"}
    assert (test["follow_up"] == 0).any() and (test["follow_up"] > 0).any()
    assert test["age"].between(18, 95).all() and test["age"].max() - test["age"].min() >= 40
    # a patient keeps their sex across follow-ups and does not get younger
    assert (table.groupby("patient_id")["sex"].nunique() == 1).all()
    assert table.sort_values("follow_up").groupby("patient_id")["age"].apply(lambda a: a.is_monotonic_increasing).all()


def test_labels_boxes_and_truth_agree(phantom_dir):
    dataset = load_chestxray14(phantom_dir)
    assert (dataset.labels.sum(axis=0) > 0).all(), "every class occurs in the 120-image set"
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


def test_prevalence_like_nih(tmp_path):
    """Most images without finding (NIH: 54%), every class still present, NIH's most frequent first."""
    dataset = load_chestxray14(generate_phantom_dataset(tmp_path / "p", 300, 32, 1, progress=False))
    no_finding = (dataset.labels.sum(axis=1) == 0).mean()
    assert 0.5 < no_finding < 0.62, no_finding
    positives = dict(zip(CLASS_NAMES, dataset.labels.sum(axis=0)))
    assert min(positives.values()) >= 0.03 * 300 - 2  # the rarest class keeps ~3%
    assert positives["Infiltration"] == max(positives.values())
    assert positives["Infiltration"] > positives["Effusion"] > positives["Hernia"]
    assert np.prod([1 - p for p in PREVALENCE.values()]) == pytest.approx(0.546, abs=0.01)


def _folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_whatever_the_workers(tmp_path):
    """The same N / size / seed gives the same folder byte for byte, with 1 or 2 processes."""
    one = generate_phantom_dataset(tmp_path / "one", 40, 48, 5, num_workers=1, progress=False)
    two = generate_phantom_dataset(tmp_path / "two", 40, 48, 5, num_workers=2, progress=False)
    files_one, files_two = _folder_bytes(one), _folder_bytes(two)
    assert sorted(files_one) == sorted(files_two)
    names = set(files_one)
    assert {"Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", TRUTH_FILE, "train_val_list.txt",
            "test_list.txt", "phantom.json"} <= names
    assert sum(name.endswith(".png") for name in names) == 40
    for name in files_one:  # every CSV, split list and PNG
        assert files_one[name] == files_two[name], name
    other = generate_phantom_dataset(tmp_path / "other", 40, 48, 6, num_workers=1, progress=False)
    assert (other / "Data_Entry_2017_v2020.csv").read_bytes() != files_one["Data_Entry_2017_v2020.csv"]


def test_an_image_depends_on_seed_index_and_patient_only(phantom_dir, tmp_path):
    small = load_chestxray14(generate_phantom_dataset(tmp_path / "small", 40, 64, 0, progress=False))
    dataset = load_chestxray14(phantom_dir)
    # same pixels as when drawn alone, and in the 120-image set when the patient is the same
    row = small.table.iloc[5]
    alone = render_phantom(64, 0, 5, int(row["patient_id"]))
    np.testing.assert_array_equal(read_image(row["path"]), alone.pixels)
    first = dataset.table.iloc[5]
    assert first["patient_id"] == row["patient_id"]  # the plan of the first patients does not depend on N
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


def test_512_px_images_have_their_size_and_boxes_inside(tmp_path):
    """The size the docs time (benchmarks/bench_library.py): every file is 512 x 512 and every box of the
    truth file lies inside it."""
    root = generate_phantom_dataset(tmp_path / "big", 3, 512, 0, progress=False, prevalence={"Mass": 1.0})
    dataset = load_chestxray14(root, require_images=True)
    assert {Image.open(p).size for p in dataset.table["path"]} == {(512, 512)}
    truth = pd.read_csv(root / TRUTH_FILE)
    assert (truth["Finding Label"] == "Mass").sum() == 3
    assert ((truth["x"] >= 0) & (truth["y"] >= 0) & (truth["x"] + truth["w"] <= 512)
            & (truth["y"] + truth["h"] <= 512)).all()
    assert (truth.loc[truth["Finding Label"] == "Mass", "w"] > 512 / 64).all()  # drawn at this scale, not 64 px


def test_refuses_non_empty_folder(phantom_dir):
    with pytest.raises(DataError, match="not empty"):
        generate_phantom_dataset(phantom_dir, 5, 32, 0, progress=False)


def test_tarball_layout(tmp_path):
    root = generate_phantom_dataset(tmp_path / "t", 25, 32, 2, tarball_layout=True, images_per_folder=10,
                                    progress=False)
    assert sorted(p.name for p in root.glob("images_*")) == ["images_001", "images_002", "images_003"]
    assert load_chestxray14(root, require_images=True).table["path"].notna().all()


def _boxes_of(name: str, family: str, n: int = 6, size: int = 128) -> np.ndarray:
    prevalence = {c: 0.0 for c in PREVALENCE}
    prevalence[name] = 1.0
    boxes = []
    for index in range(n):
        phantom = render_phantom(size, 3, index, index, prevalence, family=family)
        boxes += [box for finding, box in phantom.findings if finding == name]
    return np.asarray(boxes, dtype=float) / size  # x, y, w, h as fractions of the side


def test_family_b_draws_the_box_classes_elsewhere_and_otherwise() -> None:
    a = {n: _boxes_of(n, "A") for n in ("Pneumothorax", "Nodule", "Effusion", "Pneumonia")}
    b = {n: _boxes_of(n, "B") for n in a}
    for name in a:
        assert len(a[name]) == len(b[name]) == 6, name
        assert np.all((b[name][:, :2] >= 0) & (b[name][:, :2] + b[name][:, 2:] <= 1)), name
    centre_y = {f: {n: float(np.mean(d[n][:, 1] + d[n][:, 3] / 2)) for n in d} for f, d in (("A", a), ("B", b))}
    assert centre_y["A"]["Pneumothorax"] < 0.45 < 0.55 < centre_y["B"]["Pneumothorax"]  # apical vs basal
    assert centre_y["B"]["Pneumonia"] < centre_y["A"]["Pneumonia"]  # upper lobe vs lower zone
    area = {f: {n: float(np.mean(d[n][:, 2] * d[n][:, 3])) for n in d} for f, d in (("A", a), ("B", b))}
    assert area["B"]["Nodule"] < 0.75 * area["A"]["Nodule"]
    assert np.all(b["Effusion"][:, 2] > 0.4) and np.all(a["Effusion"][:, 2] < 0.3)  # both lungs vs one
    # the same image index and seed: anatomy and acquisition are shared, only the findings differ
    prevalence = {c: 0.0 for c in PREVALENCE}
    plain_a = render_phantom(64, 3, 1, 1, prevalence, family="A").pixels
    plain_b = render_phantom(64, 3, 1, 1, prevalence, family="B").pixels
    assert np.array_equal(plain_a, plain_b)


def test_family_is_recorded_and_checked(tmp_path) -> None:
    import json

    out = generate_phantom_dataset(tmp_path / "b", 12, 32, 0, family="B", progress=False)
    assert json.loads((out / "phantom.json").read_text())["family"] == "B"
    with pytest.raises(DataError, match="--family: expected one of"):
        generate_phantom_dataset(tmp_path / "c", 12, 32, 0, family="C", progress=False)

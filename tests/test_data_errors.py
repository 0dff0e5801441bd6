"""Bad input: a DataError that names the file / row / field and what was expected.

Corrupt, truncated and missing PNGs during prepare: tests/test_data_cache.py
(test_bad_images_are_listed_and_the_rest_finished) and tests/test_data_images.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from thoracic.data.metadata import load_chestxray14
from thoracic.data.splits import make_splits
from thoracic.errors import DataError

ENTRY = "Data_Entry_2017_v2020.csv"


@pytest.fixture()
def root(phantom_dir, tmp_path) -> Path:
    return Path(shutil.copytree(phantom_dir, tmp_path / "bad", ignore=shutil.ignore_patterns("cache_*")))


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, count))


def test_csv_missing_a_required_column(root):
    _edit(root / ENTRY, "Patient ID", "Patient")
    with pytest.raises(DataError, match=rf"{ENTRY}: missing required column\(s\) 'Patient ID'.*expected the header"):
        load_chestxray14(root)


def test_bbox_csv_with_a_wrong_header(root):
    _edit(root / "BBox_List_2017.csv", "Finding Label", "Label")
    with pytest.raises(DataError, match="BBox_List_2017.csv: header .* lacks the required columns"):
        load_chestxray14(root)


def test_unknown_label_name(root):
    lines = (root / ENTRY).read_text().splitlines()
    fields = lines[5].split(",")
    fields[1] = "Pneumonia|Flu"
    lines[5] = ",".join(fields)
    (root / ENTRY).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"unknown label 'Flu' in data row 5 \(CSV line 6, image {fields[0]}\)"):
        load_chestxray14(root)


def test_unknown_box_label(root):
    lines = (root / "BBox_List_2017.csv").read_text().splitlines()
    image = lines[1].split(",")[0]
    lines[1] = ",".join([image, "Tumour"] + lines[1].split(",")[2:])
    (root / "BBox_List_2017.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"line 2 \(image {image}\) has unknown label 'Tumour'"):
        load_chestxray14(root)


def test_box_outside_the_image(root):
    lines = (root / "BBox_List_2017.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[2] = "60.0"  # x + w now beyond the 64-pixel image
    lines[2] = ",".join(fields)
    (root / "BBox_List_2017.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"line 3 \(image {fields[0]}, .*\): box .* lies outside the 64 x 64 image"):
        load_chestxray14(root)
    fields[2] = "-5"
    lines[2] = ",".join(fields)
    (root / "BBox_List_2017.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3 .* lies outside the image; expected x, y >= 0"):
        load_chestxray14(root)


def test_box_errors_name_the_true_csv_line_after_blank_lines(root):
    """box_row counts data rows; errors name the file's own line (blank lines included)."""
    path = root / "BBox_List_2017.csv"
    lines = path.read_text().splitlines()
    assert len(lines) >= 4
    lines[2:2] = ["", ",,,,,"]  # a blank line and an all-empty row before the third data row
    fields = lines[4].split(",")  # file line 5, data row 2 (0-based)
    intact = load_chestxray14(root_with(path, lines))
    assert intact.boxes["box_row"].tolist() == list(range(len(lines) - 3))
    assert intact.boxes["csv_line"].tolist()[:3] == [2, 5, 6]
    fields[2], fields[4] = "50.0", "20.0"  # x + w = 70 beyond the 64-pixel image (checked against its file)
    lines[4] = ",".join(fields)
    with pytest.raises(DataError, match=rf"line 5 \(image {fields[0]}, .*\): box .* lies outside the 64 x 64 image"):
        load_chestxray14(root_with(path, lines))
    fields[2], fields[4] = "1.0", "0"  # a malformed box is caught while parsing, with the same line
    lines[4] = ",".join(fields)
    with pytest.raises(DataError, match=r"line 5 .* lies outside the image; expected x, y >= 0 and w, h > 0"):
        load_chestxray14(root_with(path, lines))


def root_with(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path.parent


def test_box_for_an_image_absent_from_the_csv(root):
    with open(root / "BBox_List_2017.csv", "a") as handle:
        handle.write("99999999_000.png,Mass,1,1,5,5\n")
    with pytest.raises(DataError, match="boxes for image\\(s\\) absent from .*99999999_000.png"):
        load_chestxray14(root)


def test_split_list_naming_images_absent_from_the_csv(root):
    path = root / "test_list.txt"
    path.write_text(path.read_text() + "\n12345678_000.png\n12345678_001.png")
    with pytest.raises(DataError, match="test_list.txt names 2 image\\(s\\) absent from .*12345678_000.png"):
        load_chestxray14(root)


def test_image_in_neither_split_list(root):
    path = root / "train_val_list.txt"
    names = path.read_text().split("\n")
    path.write_text("\n".join(names[1:]))
    with pytest.raises(DataError, match=f"1 image\\(s\\) in neither train_val_list.txt nor test_list.txt: {names[0]}"):
        load_chestxray14(root)


def test_empty_dataset(root):
    lines = (root / ENTRY).read_text().splitlines()
    (root / ENTRY).write_text(lines[0] + "\n")
    (root / "train_val_list.txt").write_text("")
    (root / "test_list.txt").write_text("")
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    with pytest.raises(DataError, match=f"{ENTRY}: no data rows \\(empty dataset\\)"):
        load_chestxray14(root)


def test_views_that_leave_nothing(root):
    with pytest.raises(DataError, match="no image has view position in \\['LL'\\].*would be empty"):
        load_chestxray14(root, views=("LL",))


def test_missing_images_are_named(root):
    (root / "images" / "00000002_000.png").unlink()
    with pytest.raises(DataError, match="1 of 120 image\\(s\\) .* are not under .*00000002_000.png"):
        load_chestxray14(root, require_images=True)


def test_missing_metadata_file(root):
    (root / "test_list.txt").unlink()
    with pytest.raises(DataError, match="none of test_list.txt found"):
        load_chestxray14(root)


def test_non_numeric_field(root):
    lines = (root / ENTRY).read_text().splitlines()
    fields = lines[3].split(",")
    fields[4] = "old"
    lines[3] = ",".join(fields)
    (root / ENTRY).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="column 'Patient Age' of data row 3 .* is 'old'; expected a number"):
        load_chestxray14(root)


def test_patient_in_both_official_lists(root):
    lines = (root / ENTRY).read_text().splitlines()
    dataset = load_chestxray14(root)
    test_patient = int(dataset.table.loc[dataset.table["split"] == "test", "patient_id"].iat[0])
    train_row = int((dataset.table["split"] == "train_val").to_numpy().argmax())
    fields = lines[train_row + 1].split(",")
    fields[3] = str(test_patient)
    lines[train_row + 1] = ",".join(fields)
    (root / ENTRY).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="both train_val and test lists"):
        make_splits(load_chestxray14(root))

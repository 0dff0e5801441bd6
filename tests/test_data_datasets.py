"""Every dataset reader on a phantom folder in its layout: exact label matrices (NaN where blank or uncertain,
under each policy), boxes in file pixels with reader ids, splits, views, label subsets, wrong-layout errors
with the layout's guess, the harmonisation table, prepare on JPEG / 16-bit PNG / DICOM and the cache
manifest, and a data module over a non-NIH dataset giving samples with NaN labels.

Expected values are computed here from the phantom's files with the csv module, independently of the readers.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from thoracic.constants import CLASS_NAMES, DATASET_KINDS, UNCERTAIN_POLICIES
from thoracic.data.datasets import (
    READERS,
    detect_dataset_kind,
    load_dataset,
    metadata_fingerprint,
    resolve_dataset_kind,
)
from thoracic.data.datasets.base import seeded_patient_split
from thoracic.data.datasets.chexpert import OBSERVATIONS
from thoracic.data.harmonisation import (
    HARMONISED_LABELS,
    dataset_label,
    harmonised_name,
    label_suggestions,
    shared_labels,
)
from thoracic.data.metadata import load_chestxray14
from thoracic.data.splits import make_splits
from thoracic.data.synth import generate_layout
from thoracic.errors import CacheMismatchError, DataError
from thoracic.provenance import file_sha256

SIZE = 48
POLICY_VALUE = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small phantom folder per layout (read-only for tests: copy before changing one)."""
    base = tmp_path_factory.mktemp("layouts")
    return {kind: generate_layout(base / kind, kind, 36, SIZE, seed=1, progress=False) for kind in DATASET_KINDS}


def _rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def _cell(text: str, policy: str) -> float:
    if text == "":
        return np.nan
    value = float(text)
    return POLICY_VALUE[policy] if value == -1 else value


def _no_finding(row: dict[str, float]) -> dict[str, float]:
    """CheXpert's rule, written out: No Finding = 1 makes the blank pathologies 0 (not Support Devices)."""
    if row["No Finding"] == 1:
        return {k: (0.0 if np.isnan(v) and k not in ("No Finding", "Support Devices") else v) for k, v in row.items()}
    return row


# --------------------------------------------------------------------------------------------------
# Readers: labels, splits, views
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", UNCERTAIN_POLICIES)
def test_chexpert_labels_split_and_views(layouts, policy):
    root = layouts["chexpert"]
    dataset = load_dataset(root, "chexpert", uncertain=policy, views=())
    expected, ids, splits, views = [], [], [], []
    for name, split in (("train.csv", "train_val"), ("valid.csv", "test")):
        for row in _rows(root / name):
            cells = _no_finding({o: _cell(row[o], policy) for o in OBSERVATIONS})
            expected.append([cells[o] for o in OBSERVATIONS])
            ids.append(row["Path"].split("/", 1)[1])
            splits.append(split)
            views.append("LATERAL" if row["Frontal/Lateral"] == "Lateral" else row["AP/PA"])
    assert dataset.class_names == OBSERVATIONS and dataset.labels.dtype == np.float32
    np.testing.assert_array_equal(dataset.labels, np.array(expected, dtype=np.float32))
    assert list(dataset.table["image_id"]) == ids and list(dataset.table["split"]) == splits
    assert list(dataset.table["view"]) == views and dataset.uncertain == policy
    raw = np.array([[row[o] for o in OBSERVATIONS] for n in ("train.csv", "valid.csv") for row in _rows(root / n)])
    assert (raw == "-1.0").any() and (raw == "").any()  # the phantom has both kinds of missing label
    if policy == "ignore":  # blanks and uncertain cells are the NaN entries, nothing else
        healthy = (raw[:, 0] == "1.0")[:, None] & (np.arange(len(OBSERVATIONS)) != 13) & (np.arange(14) != 0)
        np.testing.assert_array_equal(np.isnan(dataset.labels), ((raw == "") & ~healthy) | (raw == "-1.0"))
    paths = [Path(p) for p in dataset.table["path"]]
    assert all(p.is_file() and p.suffix == ".jpg" for p in paths)
    frontal = load_dataset(root, "chexpert", uncertain=policy)  # the default view filter: frontal only
    assert len(frontal) == sum(v != "LATERAL" for v in views) < len(dataset)
    np.testing.assert_array_equal(frontal.labels, dataset.labels[np.array(views) != "LATERAL"])


@pytest.mark.parametrize("policy", UNCERTAIN_POLICIES)
def test_mimic_labels_per_study_official_split_and_gzip(layouts, policy):
    root = layouts["mimic"]
    assert all(p.suffix == ".gz" for p in root.glob("mimic-cxr-2.0.0-*"))
    dataset = load_dataset(root, "mimic", uncertain=policy, views=())
    studies = {row["study_id"]: _no_finding({o: _cell(row[o], policy) for o in OBSERVATIONS})
               for row in _rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz")}
    split_of = {row["dicom_id"]: row["split"] for row in _rows(root / "mimic-cxr-2.0.0-split.csv.gz")}
    meta = _rows(root / "mimic-cxr-2.0.0-metadata.csv.gz")
    expected = [[studies[m["study_id"]][o] for o in OBSERVATIONS] if m["study_id"] in studies
                else [np.nan] * len(OBSERVATIONS) for m in meta]
    np.testing.assert_array_equal(dataset.labels, np.array(expected, dtype=np.float32))
    assert any(m["study_id"] not in studies for m in meta)  # a study without labels: an all-NaN row
    assert list(dataset.table["image_id"]) == [m["dicom_id"] for m in meta]
    names = {"train": "train", "validate": "val", "test": "test"}
    assert list(dataset.table["split"]) == [names[split_of[m["dicom_id"]]] for m in meta]
    m = meta[0]
    assert Path(dataset.table["path"].iat[0]) == root / "files" / f"p{m['subject_id'][:2]}" / f"p{m['subject_id']}" / \
        f"s{m['study_id']}" / f"{m['dicom_id']}.jpg"
    splits = make_splits(dataset, 0.5, seed=3)  # the official validation split, used as it is
    np.testing.assert_array_equal(splits.val, dataset.split_indices("val"))
    np.testing.assert_array_equal(splits.train, dataset.split_indices("train"))
    assert len(splits.val) and len(splits.test)


def test_mimic_plain_csvs_read_the_same(layouts, tmp_path):
    root = Path(shutil.copytree(layouts["mimic"], tmp_path / "mimic"))
    for path in root.glob("*.csv.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    plain, gzipped = load_dataset(root, views=()), load_dataset(layouts["mimic"], views=())
    np.testing.assert_array_equal(plain.labels, gzipped.labels)
    assert plain.table.drop(columns="path").equals(gzipped.table.drop(columns="path"))


def test_padchest_label_lists_unlabelled_rows_and_seeded_split(layouts, tmp_path):
    root = layouts["padchest"]
    rows = _rows(next(root.glob("PADCHEST_*.csv.gz")))
    lists = [set(t.strip() for t in ast.literal_eval(r["Labels"])) if r["Labels"] else set() for r in rows]
    names = sorted(set().union(*lists))
    dataset = load_dataset(root, "padchest", views=())
    assert dataset.class_names == tuple(names) and "normal" in names
    expected = [[float(n in terms) for n in names] if terms else [np.nan] * len(names) for terms in lists]
    np.testing.assert_array_equal(dataset.labels, np.array(expected, dtype=np.float32))
    image = dataset.table.iloc[0]
    assert Path(image["path"]) == root / rows[0]["ImageDir"] / rows[0]["ImageID"]
    assert image["age"] == int(rows[0]["StudyDate_DICOM"][:4]) - int(rows[0]["PatientBirth"])
    # the seeded patient-wise split: patient-disjoint, a pure function of the patient id
    split = dataset.table.groupby("patient_id")["split"].nunique()
    assert (split == 1).all() and set(dataset.table["split"]) == {"train_val", "test"}
    np.testing.assert_array_equal(dataset.table["split"], seeded_patient_split(dataset.table["patient_id"]))
    assert list(seeded_patient_split(["P1", "P2", "P1"])) == list(seeded_patient_split(["P1", "P2", "P1"]))
    assert seeded_patient_split(["P7"])[0] == seeded_patient_split(["P3", "P7"])[1]
    frontal = load_dataset(root, "padchest")
    assert set(frontal.table["view"]) <= {"PA", "AP", "AP_HORIZONTAL"} and "L" in set(dataset.table["view"])


def test_vindr_majority_labels_reader_boxes_and_consensus(layouts):
    root = layouts["vindr"]
    dataset = load_dataset(root, "vindr")
    train_rows = _rows(root / "annotations" / "image_labels_train.csv")
    test_rows = _rows(root / "annotations" / "image_labels_test.csv")
    names = [c for c in train_rows[0] if c not in ("image_id", "rad_id")]
    assert dataset.class_names == tuple(names) and len(names) == 28
    votes, readers = defaultdict(lambda: np.zeros(len(names))), defaultdict(int)
    for row in train_rows:
        votes[row["image_id"]] += [float(row[n]) for n in names]
        readers[row["image_id"]] += 1
    assert set(readers.values()) == {3}
    expected = {i: (v * 2 > readers[i]).astype(np.float32) for i, v in votes.items()}
    expected |= {r["image_id"]: np.array([float(r["Other disease" if n == "Other diseases" else n]) for n in names],
                                         dtype=np.float32) for r in test_rows}
    np.testing.assert_array_equal(dataset.labels, np.stack([expected[i] for i in dataset.table["image_id"]]))
    assert (dataset.labels.sum(axis=0) > 0).sum() >= 5
    # boxes: every coordinate row of both annotation files, in the DICOM's pixels, with its reader
    rows = [(r["image_id"], r.get("rad_id", "consensus"), r["class_name"], *(float(r[k]) for k in
             ("x_min", "y_min", "x_max", "y_max"))) for name in ("annotations_train.csv", "annotations_test.csv")
            for r in _rows(root / "annotations" / name) if r["x_min"]]
    got = [(b.image_id, b.reader_id, b.class_name, b.x, b.y, b.x + b.w, b.y + b.h) for b in dataset.boxes.itertuples()]
    assert got == rows and rows
    assert list(dataset.boxes["class_index"]) == [names.index(c) for c in dataset.boxes["class_name"]]
    test_ids = set(dataset.table.loc[dataset.table["split"] == "test", "image_id"])
    by_reader = dataset.boxes.groupby("image_id")["reader_id"].agg(set)
    assert all(r == {"consensus"} for i, r in by_reader.items() if i in test_ids)
    assert any(len(r) > 1 for i, r in by_reader.items() if i not in test_ids)  # several readers per image
    assert set(dataset.reader_ids) - {"consensus"} <= {f"R{k}" for k in range(1, 18)}
    assert (dataset.table["view"] == "PA").all() and dataset.table["path"].map(lambda p: p.endswith(".dicom")).all()


def test_rsna_target_boxes_and_detailed_class(layouts):
    root = layouts["rsna"]
    dataset = load_dataset(root, "rsna")
    rows = _rows(root / "stage_2_train_labels.csv")
    target = {r["patientId"]: float(r["Target"]) for r in rows}
    assert dataset.class_names == ("Pneumonia",)
    np.testing.assert_array_equal(dataset.labels[:, 0], [target[i] for i in dataset.table["image_id"]])
    boxes = [(r["patientId"], float(r["x"]), float(r["y"]), float(r["width"]), float(r["height"])) for r in rows
             if r["Target"] == "1"]
    assert [(b.image_id, b.x, b.y, b.w, b.h) for b in dataset.boxes.itertuples()] == boxes and boxes
    assert list(dataset.boxes["csv_line"]) == [k + 2 for k, r in enumerate(rows) if r["Target"] == "1"]
    detailed = {r["patientId"]: r["class"] for r in _rows(root / "stage_2_detailed_class_info.csv")}
    assert list(dataset.table["detailed_class"]) == [detailed[i] for i in dataset.table["image_id"]]
    assert (dataset.table["view"] == "FRONTAL").all() and len(load_dataset(root)) == len(dataset)


def test_chestxray14_through_load_dataset_is_load_chestxray14(phantom_dir):
    old, new = load_chestxray14(phantom_dir), load_dataset(phantom_dir)
    assert type(new).__name__ == "ChestXray14" and new.kind == "chestxray14" and new.class_names == CLASS_NAMES
    assert new.table.equals(old.table) and new.boxes.equals(old.boxes) and new.labels.dtype == np.uint8
    np.testing.assert_array_equal(new.labels, old.labels)
    assert new.train_val_ids == old.train_val_ids and new.views == ("frontal",)
    for policy in UNCERTAIN_POLICIES:  # no uncertain labels: every policy reads the same
        np.testing.assert_array_equal(load_dataset(phantom_dir, uncertain=policy).labels, old.labels)
    assert metadata_fingerprint(phantom_dir) == (["Data_Entry_2017_v2020.csv"],
                                                 file_sha256(phantom_dir / "Data_Entry_2017_v2020.csv"))


def test_classes_subset_and_views(layouts):
    dataset = load_dataset(layouts["vindr"], "vindr", classes=["Pleural effusion", "Cardiomegaly"])
    full = load_dataset(layouts["vindr"], "vindr")
    assert dataset.class_names == ("Pleural effusion", "Cardiomegaly")
    np.testing.assert_array_equal(dataset.labels, full.labels[:, [full.class_names.index("Pleural effusion"),
                                                                  full.class_names.index("Cardiomegaly")]])
    assert set(dataset.boxes["class_name"]) <= {"Pleural effusion", "Cardiomegaly"}
    assert list(dataset.boxes["class_index"]) == [dataset.class_names.index(c) for c in dataset.boxes["class_name"]]
    with pytest.raises(DataError, match=r"'Effusion' not among the vindr labels.*did you mean 'Effusion' -> "
                                        r"'Pleural effusion'"):
        load_dataset(layouts["vindr"], classes=["Effusion"])
    with pytest.raises(DataError, match=r"no image has view position in \['LL'\]"):
        load_dataset(layouts["chexpert"], views=["LL"])
    lateral = load_dataset(layouts["chexpert"], views=["lateral"])
    assert set(lateral.table["view"]) == {"LATERAL"}


# --------------------------------------------------------------------------------------------------
# Detecting layouts, wrong-layout errors
# --------------------------------------------------------------------------------------------------


def test_detection_and_wrong_layout_errors_name_the_file_and_guess(layouts, tmp_path):
    for kind, root in layouts.items():
        assert detect_dataset_kind(root) == kind == resolve_dataset_kind(root)
    with pytest.raises(DataError, match=r"train.csv nor valid.csv found; expected the CheXpert layout.*"
                                        r"looks like MIMIC-CXR-JPG \(mimic-cxr-2.0.0-metadata.csv\[.gz\] found\): "
                                        r"pass --dataset mimic"):
        load_dataset(layouts["mimic"], "chexpert")
    with pytest.raises(DataError, match=r"stage_2_train_labels.csv not found.*looks like VinDr-CXR.*--dataset vindr"):
        load_dataset(layouts["vindr"], "rsna")
    with pytest.raises(DataError, match=r"none of Data_Entry_2017_v2020.csv.*looks like PadChest.*--dataset padchest"):
        load_dataset(layouts["padchest"], "chestxray14")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no known dataset layout; expected one of: NIH ChestX-ray14"):
        detect_dataset_kind(empty)
    with pytest.raises(DataError, match=r"none of Data_Entry.*found.*the other layouts thoracic reads"):
        load_dataset(empty)  # auto: the ChestX-ray14 reader's error, with the other layouts named
    both = Path(shutil.copytree(layouts["rsna"], tmp_path / "both"))
    shutil.copy(layouts["chexpert"] / "train.csv", both / "train.csv")
    with pytest.raises(DataError, match=r"several layouts \(chexpert, rsna\); choose one with --dataset"):
        load_dataset(both)
    with pytest.raises(DataError, match="dataset 'nih' unknown; expected one of chestxray14"):
        load_dataset(layouts["rsna"], "nih")
    with pytest.raises(DataError, match="uncertain-label policy 'maybe' unknown"):
        load_dataset(layouts["chexpert"], uncertain="maybe")


def test_missing_columns_and_bad_values_are_named(layouts, tmp_path):
    root = Path(shutil.copytree(layouts["chexpert"], tmp_path / "chexpert"))
    text = (root / "train.csv").read_text()
    (root / "train.csv").write_text(text.replace("Pleural Effusion", "Effusion", 1))
    with pytest.raises(DataError, match=r"train.csv: missing column\(s\) 'Pleural Effusion'; expected the CheXpert"):
        load_dataset(root, "chexpert")
    lines = text.splitlines()
    fields = next(csv.reader([lines[3]]))
    fields[9] = "2.0"  # Lung Lesion
    lines[3] = ",".join(fields)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 'Lung Lesion' of data row 3 \(CSV line 4\) is 2; expected one of "
                                        r"-1, 0, 1 or an empty field"):
        load_dataset(root, "chexpert")
    fields[9] = "yes"
    lines[3] = ",".join(fields)
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 'Lung Lesion' of data row 3 \(CSV line 4\) is 'yes'; expected a "
                                        r"number"):
        load_dataset(root, "chexpert")
    vindr = Path(shutil.copytree(layouts["vindr"], tmp_path / "vindr"))
    path = vindr / "annotations" / "annotations_train.csv"
    lines = path.read_text().splitlines()
    row = next(k for k, line in enumerate(lines) if k and "No finding" not in line)
    fields = lines[row].split(",")
    fields[5] = fields[3]  # x_max = x_min
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"annotations_train.csv: line {row + 1} \(image {fields[0]}, .*\) has a box "
                                        r"with x_max <= x_min"):
        load_dataset(vindr)


# --------------------------------------------------------------------------------------------------
# Harmonisation
# --------------------------------------------------------------------------------------------------


def test_harmonisation_table():
    assert dataset_label("chexpert", harmonised_name("chestxray14", "Effusion")) == "Pleural Effusion"
    assert dataset_label("padchest", harmonised_name("vindr", "Pleural effusion")) == "pleural effusion"
    # nothing merged that is not the same finding
    assert harmonised_name("vindr", "Nodule/Mass") is None and harmonised_name("chestxray14", "Hernia") is None
    assert dataset_label("chexpert", harmonised_name("chestxray14", "Infiltration")) is None
    assert dataset_label("vindr", "No Finding") is None
    shared = {s.finding: (s.name_a, s.name_b) for s in shared_labels("chestxray14", "vindr")}
    assert shared["Pleural Effusion"] == ("Effusion", "Pleural effusion") and "Mass" not in shared
    assert [s.finding for s in shared_labels("chestxray14", "rsna")] == ["Pneumonia"]
    assert {s.name_a for s in shared_labels("chexpert", "mimic")} == set(OBSERVATIONS)
    assert [s.name_b for s in shared_labels("chestxray14", "chexpert", labels_b=["Edema", "Fracture"])] == ["Edema"]
    for names in HARMONISED_LABELS.values():  # every name is a label of its dataset (PadChest: its terms)
        for kind, name in names.items():
            if kind in ("chestxray14", "chexpert", "mimic", "rsna"):
                assert name in (CLASS_NAMES if kind == "chestxray14" else OBSERVATIONS if kind != "rsna"
                                else ("Pneumonia",)), (kind, name)
    assert label_suggestions("chexpert", "Effusion", OBSERVATIONS) == "Pleural Effusion"
    assert label_suggestions("chexpert", "pleural effusion", OBSERVATIONS) == "Pleural Effusion"


def test_harmonised_names_are_labels_of_the_phantom_layouts(layouts):
    """The table's VinDr and PadChest names exist in those layouts' files (their phantoms use the spellings)."""
    vindr = load_dataset(layouts["vindr"], views=()).class_names
    for names in HARMONISED_LABELS.values():
        if "vindr" in names:
            assert names["vindr"] in vindr


# --------------------------------------------------------------------------------------------------
# Prepare, the cache manifest, the data module
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["chexpert", "padchest", "vindr"])
def test_prepare_jpeg_png16_dicom_and_manifest(layouts, kind, tmp_path):
    from thoracic.data.cache import ImageCache
    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.images import load_resized, read_image

    root = layouts[kind]
    cache_dir = prepare_cache(root, 32, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    dataset = load_dataset(root, views=())
    cache = ImageCache.open(cache_dir, expected_root=root, expected_size=32, expected_dataset=kind,
                            expected_class_names=dataset.class_names)
    manifest = cache.manifest
    assert manifest["dataset"] == kind and manifest["class_names"] == list(dataset.class_names)
    assert manifest["uncertain"] == ("ignore" if kind == "chexpert" else None)
    assert manifest["metadata_sha256"] == metadata_fingerprint(root)[1]
    assert list(cache.image_ids) == list(dataset.table["image_id"]) and cache.available.all()
    assert (cache.original_sizes == SIZE).all()
    for row in (0, len(dataset) - 1):
        path = dataset.table["path"].iat[row]
        np.testing.assert_array_equal(cache.images[row], load_resized(path, 32)[0])
        full = read_image(path)
        assert full.shape == (SIZE, SIZE) and full.dtype == np.uint8 and full.std() > 10
    if kind == "vindr":  # MONOCHROME1 files come back with dense tissue bright, like the others
        import pydicom

        ones = [p for p in dataset.table["path"] if pydicom.dcmread(p).PhotometricInterpretation == "MONOCHROME1"]
        twos = [p for p in dataset.table["path"] if p not in ones]
        assert ones and twos
        assert abs(np.mean([read_image(p).mean() for p in ones]) - np.mean([read_image(p).mean() for p in twos])) < 25
    with pytest.raises(CacheMismatchError, match=f"cache of a {kind} dataset, rsna requested"):
        ImageCache.open(cache_dir, expected_dataset="rsna")
    with pytest.raises(CacheMismatchError, match="cache class order"):
        ImageCache.open(cache_dir, expected_class_names=["Edema"])


def test_cache_of_another_policy_is_a_mismatch(layouts, tmp_path):
    from thoracic.data.cache import ImageCache
    from thoracic.data.cache_writer import prepare_cache

    cache_dir = prepare_cache(layouts["chexpert"], 16, cache_dir=tmp_path / "cache", num_workers=1, progress=False,
                              uncertain="ones")
    assert ImageCache.open(cache_dir, expected_uncertain="ones").manifest["uncertain"] == "ones"
    with pytest.raises(CacheMismatchError, match=r"uncertain-label policy ones, zeros requested \(data.uncertain\).*"
                                                 r"--uncertain zeros"):
        ImageCache.open(cache_dir, expected_uncertain="zeros")
    with pytest.raises(CacheMismatchError, match="differs in uncertain"):
        prepare_cache(layouts["chexpert"], 16, cache_dir=cache_dir, num_workers=1, progress=False, uncertain="zeros")


def test_data_module_over_chexpert_gives_nan_labels_and_vindr_reader_boxes(layouts, tmp_path):
    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.dataset import ChestXrayDataModule

    root = Path(shutil.copytree(layouts["chexpert"], tmp_path / "chexpert"))
    prepare_cache(root, 32, num_workers=1, progress=False)
    module = ChestXrayDataModule(root, image_size=32, batch_size=4, num_workers=0, val_fraction=0.25,
                                 classes=["Edema", "Pleural Effusion", "No Finding"])
    module.setup()
    assert module.class_names == ("Edema", "Pleural Effusion", "No Finding")
    assert set(module.dataset.table["view"]) <= {"PA", "AP"}  # frontal only by default
    batch = next(iter(module.dataloader("train")))
    assert batch["labels"].shape == (4, 3) and str(batch["labels"].dtype) == "torch.float32"
    labels = np.concatenate([b["labels"].numpy() for b in module.dataloader("train")])
    assert np.isnan(labels).any() and np.nanmax(labels) == 1
    freq = module.class_frequencies
    train = module.dataset.labels[module.splits.train]
    np.testing.assert_allclose(freq, np.nanmean(train, axis=0))
    # the cache holds images only: a run with another uncertain-label policy shares it, reading its own labels
    ones = ChestXrayDataModule(root, image_size=32, num_workers=0, uncertain="ones",
                               classes=["Edema", "Pleural Effusion", "No Finding"])
    ones.setup()
    uncertain = (ones.dataset.labels == 1) & np.isnan(module.dataset.labels)
    assert uncertain.any() and not np.isnan(ones.dataset.labels[uncertain]).any()

    vindr = Path(shutil.copytree(layouts["vindr"], tmp_path / "vindr"))
    prepare_cache(vindr, 32, num_workers=1, progress=False)
    module = ChestXrayDataModule(vindr, dataset="vindr", image_size=32, batch_size=8, num_workers=0)
    table = module.box_table
    assert len(table) and set(table["reader_id"]) == {"consensus"}  # test images: the consensus boxes
    np.testing.assert_allclose(table["x"], table["x_original"] * 32 / SIZE)
    train_ids = module.dataset.table["image_id"].to_numpy()[module.splits.train]
    from thoracic.data.dataset import box_table

    train_boxes = box_table(module.dataset, module.cache, train_ids)
    assert train_boxes["reader_id"].str.fullmatch(r"R\d+").all()
    sample = module.split_dataset("box")[0]
    assert sample["labels"].shape == (28,) and sample["boxes"].shape[1] == 4


def test_cli_synth_layout_and_prepare_detect_the_dataset(tmp_path, capsys):
    from thoracic.cli import main as cli_main

    out = tmp_path / "mimic"
    assert cli_main(["synth", "--out", str(out), "--dataset", "mimic", "--num-images", "10", "--image-size", "32",
                     "--no-progress", "--num-workers", "1"]) == 0
    assert "in the mimic layout" in capsys.readouterr().out
    assert cli_main(["prepare", "--data", str(out), "--image-size", "16", "--num-workers", "1", "--no-progress"]) == 0
    assert "(mimic: 14 labels)" in capsys.readouterr().out
    assert cli_main(["prepare", "--data", str(out), "--dataset", "vindr", "--image-size", "16", "--no-progress"]) == 2
    assert "looks like MIMIC-CXR-JPG" in capsys.readouterr().err
    # --layout: the old spelling of --dataset, with a warning naming it
    assert cli_main(["synth", "--out", str(tmp_path / "rsna"), "--layout", "rsna", "--num-images", "6",
                     "--image-size", "32", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "in the rsna layout" in captured.out and "--layout is deprecated: use --dataset" in captured.err
    assert set(READERS) == set(DATASET_KINDS)


def test_phantom_layouts_are_reproducible(tmp_path):
    a = generate_layout(tmp_path / "a", "vindr", 8, 24, seed=4, progress=False)
    b = generate_layout(tmp_path / "b", "vindr", 8, 24, seed=4, progress=False, num_workers=2)
    for path in sorted(p for p in a.rglob("*") if p.is_file()):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path
    with pytest.raises(DataError, match="exists and is not empty"):
        generate_layout(a, "rsna", 8, 24, progress=False)
    generate_layout(a, "rsna", 8, 24, progress=False, overwrite=True)  # replaces its own phantom
    assert not (a / "train").exists() and detect_dataset_kind(a) == "rsna"


def test_reader_errors_name_the_csv_line_in_other_readers(layouts, tmp_path):
    root = Path(shutil.copytree(layouts["rsna"], tmp_path / "rsna"))
    path = root / "stage_2_train_labels.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    row = next(k for k, r in enumerate(rows) if k and r[5] == "1")
    rows[row][5] = "0"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())
    with pytest.raises(DataError, match=rf"stage_2_train_labels.csv: line {row + 1} .* has (coordinates with Target 0|"
                                        r"a Target that differs)"):
        load_dataset(root)


def test_the_harmonisation_table_of_the_docs_is_the_module_constant():
    text = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    header = "| finding | " + " | ".join(DATASET_KINDS) + " |"
    lines = text[text.index(header):].splitlines()[2:]
    documented = {}
    for line in lines:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        documented[cells[0]] = {k: c.strip("`") for k, c in zip(DATASET_KINDS, cells[1:]) if c != "-"}
    assert documented == HARMONISED_LABELS


def test_config_keys_of_the_data_layer():
    import typing

    from thoracic.config import ConfigError, DataConfig, load_config

    assert typing.get_args(typing.get_type_hints(DataConfig)["uncertain"]) == UNCERTAIN_POLICIES
    cfg = load_config(None, ["data.dataset=vindr", "data.uncertain=ones", "data.classes=[Edema, Cardiomegaly]"])
    assert (cfg.data.dataset, cfg.data.uncertain, cfg.data.classes, cfg.data.views) == (
        "vindr", "ones", ("Edema", "Cardiomegaly"), ("frontal",))
    with pytest.raises(ConfigError, match="data.dataset: expected one of auto, chestxray14"):
        load_config(None, ["data.dataset=nih"])
    with pytest.raises(ConfigError, match=r"data.uncertain: expected one of \['ignore', 'zeros', 'ones'\]"):
        load_config(None, ["data.uncertain=maybe"])

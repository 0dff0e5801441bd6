"""Phantom folders in every layout thoracic reads: :func:`generate_layout`.

The images are the phantom chest X-rays of :func:`~thoracic.data.synth.render.render_phantom` (the same
anatomy, findings and exact boxes as the ChestX-ray14 phantoms); what changes per layout are the files,
written exactly as each dataset distributes them (the readers of :mod:`thoracic.data.datasets` document
the layouts), so that every reader is tested end to end without the real data:

===========  ==========================================================================================
chestxray14  :func:`~thoracic.data.synth.folder.generate_phantom_dataset` (the NIH layout, PNG)
chexpert     ``train.csv`` / ``valid.csv`` (``CheXpert-v1.0-small/...`` paths, ``1.0`` / ``0.0`` / ``-1.0``
             / blank cells, frontal and lateral views), JPEG under ``train/`` and ``valid/``
mimic        ``mimic-cxr-2.0.0-{metadata,chexpert,split}.csv.gz`` (gzipped as on PhysioNet; plain with
             ``gzip_csv=False``), JPEG under ``files/pXX/pSUBJECT/sSTUDY/``; studies without a label row
padchest     ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz`` (label lists, Projection), 16-bit
             PNG in the ``ImageDir`` folders; a few images without labels
vindr        ``annotations/`` CSVs: each training image read by 3 of 17 readers who each mark a finding
             with probability 0.85 and draw its box with corners jittered by up to 6% of its size; the
             test images' consensus boxes are the exact ones. DICOM (``.dicom``), 12-bit, a quarter
             MONOCHROME1
rsna         ``stage_2_train_labels.csv`` (a row per box, or one without coordinates),
             ``stage_2_detailed_class_info.csv``, DICOM (``.dcm``) under ``stage_2_train_images/``
===========  ==========================================================================================

Labels follow the drawn findings through :data:`PHANTOM_LABELS` (finding -> the layout's label; findings a
layout has no label for are drawn but unlabelled, and labels no finding draws are left blank or
negative). CheXpert and MIMIC-CXR get uncertain (``-1.0``) and blank cells: a drawn finding is written
uncertain with probability 0.2; a label not drawn is blank (0.7), negative (0.25) or uncertain (0.05).
Every random choice comes from ``seed`` and the image index, so a folder is reproducible byte for byte
(JPEG and PNG encoders included, DICOM UIDs derived from the seed). Phantom results say nothing clinical.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from thoracic.data.datasets.chexpert import OBSERVATIONS
from thoracic.data.datasets.mimic import LABEL_COLUMNS as MIMIC_LABEL_COLUMNS
from thoracic.data.synth.folder import (
    INFO_FILE,
    RenderJob,
    generate_phantom_dataset,
    prepare_output,
    render_images,
    write_marker,
)
from thoracic.data.synth.render import FAMILIES, PREVALENCE, PhantomImage
from thoracic.errors import DataError
from thoracic.io import atomic_write, write_bytes_atomic, write_text_atomic

#: The layouts :func:`generate_layout` writes (every dataset kind).
LAYOUTS: tuple[str, ...] = ("chestxray14", "chexpert", "mimic", "padchest", "vindr", "rsna")

_CHEXPERT_FINDINGS = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
                      "Infiltration": "Lung Opacity", "Mass": "Lung Lesion", "Nodule": "Lung Lesion",
                      "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation",
                      "Edema": "Edema", "Pleural_Thickening": "Pleural Other"}
#: layout -> phantom finding -> the label it is written as (a phantom's stand-in, not the harmonisation
#: table: Infiltration patches are written as CheXpert's Lung Opacity, a Mass as its Lung Lesion).
PHANTOM_LABELS: dict[str, dict[str, str]] = {
    "chexpert": _CHEXPERT_FINDINGS,
    "mimic": _CHEXPERT_FINDINGS,
    "padchest": {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural effusion",
                 "Infiltration": "infiltrates", "Mass": "pulmonary mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
                 "Pneumothorax": "pneumothorax", "Consolidation": "consolidation", "Edema": "pulmonary edema",
                 "Emphysema": "emphysema", "Fibrosis": "pulmonary fibrosis", "Pleural_Thickening": "pleural thickening",
                 "Hernia": "hiatal hernia"},
    "vindr": {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural effusion",
              "Infiltration": "Infiltration", "Mass": "Nodule/Mass", "Nodule": "Nodule/Mass",
              "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation",
              "Edema": "Edema", "Emphysema": "Emphysema", "Fibrosis": "Pulmonary fibrosis",
              "Pleural_Thickening": "Pleural thickening"},
    "rsna": {"Pneumonia": "Pneumonia", "Consolidation": "Pneumonia", "Infiltration": "Pneumonia"},
}
#: VinDr-CXR's 28 labels in the order of its image-label CSVs: 22 local (boxed) then 6 global.
VINDR_LABELS: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung Opacity", "Lung cavity", "Lung cyst",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other diseases", "No finding",
)
VINDR_GLOBAL: frozenset[str] = frozenset(VINDR_LABELS[22:])
VINDR_READERS: tuple[str, ...] = tuple(f"R{k}" for k in range(1, 18))
#: Each VinDr phantom reader marks a drawn finding with this probability, and moves its box corners by
#: up to this fraction of the box's size.
READER_SENSITIVITY = 0.85
READER_JITTER = 0.06


@dataclass(frozen=True)
class _Image:
    """One planned image: index, patient, study (1-based within the patient), view, test split."""

    index: int
    patient: int
    study: int
    frontal: bool
    view: str
    test: bool
    age: int
    sex: str


def _plan(num_images: int, seed: int, test_fraction: float, lateral_fraction: float) -> list[_Image]:
    """Patients with 1-3 studies of a frontal image (and, with ``lateral_fraction``, a lateral one)."""
    rng = np.random.default_rng([seed, 10])
    images: list[_Image] = []
    patient = 0
    while len(images) < num_images:
        patient += 1
        test = bool(rng.random() < test_fraction)
        sex, age = ("M" if rng.random() < 0.55 else "F"), int(rng.integers(18, 90))
        for study in range(1, int(rng.integers(1, 4)) + 1):
            if len(images) >= num_images:
                break
            view = "PA" if rng.random() < 0.6 else "AP"
            images.append(_Image(len(images), patient, study, True, view, test, age + study - 1, sex))
            if len(images) < num_images and rng.random() < lateral_fraction:
                images.append(_Image(len(images), patient, study, False, "LATERAL", test, age + study - 1, sex))
    if patient > 1 and len({i.test for i in images}) == 1:  # both splits when there are two patients
        last = images[-1].patient
        images = [_Image(i.index, i.patient, i.study, i.frontal, i.view, not i.test if i.patient == last else i.test,
                         i.age, i.sex) for i in images]
    return images


# --------------------------------------------------------------------------------------------------
# Image writers (module level: render jobs travel to worker processes)
# --------------------------------------------------------------------------------------------------


def write_jpeg(phantom: PhantomImage, path: Path) -> None:
    """8-bit grayscale JPEG (quality 95), as CheXpert and MIMIC-CXR-JPG distribute."""
    with atomic_write(path, "wb") as handle:  # a kill mid-image leaves no truncated file
        Image.fromarray(phantom.pixels).save(handle, format="JPEG", quality=95)


def write_png16(phantom: PhantomImage, path: Path) -> None:
    """16-bit grayscale PNG (``v * 257``), as PadChest distributes."""
    with atomic_write(path, "wb") as handle:
        Image.fromarray(phantom.pixels.astype(np.uint16) * 257).save(handle, format="PNG", compress_level=3)


def write_dicom(phantom: PhantomImage, path: Path, *, uid_seed: str, monochrome1: bool = False,
                bits: int = 12) -> None:
    """A single-frame DICOM (Digital X-Ray for presentation, explicit VR little endian) with ``bits``-bit
    pixels, MONOCHROME2 or (inverted) MONOCHROME1, as VinDr-CXR and RSNA Pneumonia distribute."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    top = 2 ** bits - 1
    values = np.rint(phantom.pixels.astype(np.float64) * (top / 255.0)).astype(np.uint16)
    if monochrome1:
        values = (top - values).astype(np.uint16)
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    instance = generate_uid(entropy_srcs=[uid_seed, "instance"])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = DicomDataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = sop_class, instance
    dataset.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    dataset.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    dataset.Modality, dataset.BodyPartExamined = "DX", "CHEST"
    dataset.PatientID = uid_seed.rsplit(":", 1)[-1]
    dataset.Rows, dataset.Columns = values.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, bits, bits - 1, 0
    dataset.PixelData = values.tobytes()
    with atomic_write(path, "wb") as handle:
        dataset.save_as(handle, enforce_file_format=True)


# --------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], gzip_file: bool = False) -> None:
    """A CSV as the datasets write them (``\\n`` line ends, quoted only where needed), gzipped if asked
    (with a fixed timestamp: the same rows give the same bytes)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    if gzip_file:
        with atomic_write(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle:
            handle.write(data)
    else:
        write_bytes_atomic(path, data)


def _labels_of(phantom: PhantomImage, layout: str) -> list[str]:
    """The layout's labels of a phantom's drawn findings (each once, in finding order)."""
    mapping = PHANTOM_LABELS[layout]
    names: list[str] = []
    for finding, _ in phantom.findings:
        label = mapping.get(finding)
        if label is not None and label not in names:
            names.append(label)
    return names


def _chexpert_cells(present: Sequence[str], drawn_any: bool, rng: np.random.Generator,
                    columns: Sequence[str]) -> list[str]:
    """One row of CheXpert-labeler cells (``1.0``, ``0.0``, ``-1.0``, blank) for the given columns."""
    cells = []
    for name in columns:
        if name == "No Finding":
            cells.append("1.0" if not drawn_any else "")
        elif name == "Support Devices":
            cells.append("1.0" if rng.random() < 0.1 else "")
        elif name in present:
            cells.append("-1.0" if rng.random() < 0.2 else "1.0")
        elif not drawn_any:
            cells.append("")  # a normal study: the labeler leaves the pathologies blank
        else:
            draw = rng.random()
            cells.append("" if draw < 0.7 else "0.0" if draw < 0.95 else "-1.0")
    return cells


def _jobs(images: Sequence[_Image], paths: Sequence[Path], image_size: int, seed: int, family: str,
          writer: object, options: Sequence[Mapping[str, object]] | None = None) -> list[RenderJob]:
    kwargs = {"special_fraction": 0.0, "box_fraction": 1.0, "all_boxes_fraction": 1.0, "family": family}
    return [RenderJob(i.index, i.patient, image_size, seed, PREVALENCE, kwargs, path, writer,  # type: ignore[arg-type]
                      options[i.index] if options is not None else {})
            for i, path in zip(images, paths)]


def _finish(out: Path, layout: str, num_images: int, image_size: int, seed: int, family: str) -> None:
    info = {"generator": "thoracic.data.synth", "layout": layout, "num_images": num_images, "image_size": image_size,
            "seed": seed, "family": family, "note": "phantom images: results on them say nothing clinical"}
    write_text_atomic(out / INFO_FILE, json.dumps(info, indent=2) + "\n")  # last: the folder is complete


def _hex(rng: np.random.Generator, digits: int) -> str:
    return "".join(f"{int(v):x}" for v in rng.integers(0, 16, size=digits))


# --------------------------------------------------------------------------------------------------
# The layouts
# --------------------------------------------------------------------------------------------------


def _chexpert(out: Path, images: list[_Image], image_size: int, seed: int, family: str, num_workers: int | None,
              progress: bool, gzip_csv: bool) -> None:
    folders = {True: "valid", False: "train"}
    relative = [f"{folders[i.test]}/patient{i.patient:05d}/study{i.study}/view{1 if i.frontal else 2}_"
                f"{'frontal' if i.frontal else 'lateral'}.jpg" for i in images]
    write_marker(out, [*relative, "train.csv", "valid.csv", INFO_FILE], "a phantom CheXpert folder: results on it "
                 "say nothing clinical")
    paths = [out / r for r in relative]
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    phantoms = render_images(_jobs(images, paths, image_size, seed, family, write_jpeg), out, num_workers, progress)
    rows: dict[bool, list[list[object]]] = {True: [], False: []}
    study_cells: dict[tuple[int, int], list[str]] = {}
    for image, rel, phantom in zip(images, relative, phantoms):
        key = (image.patient, image.study)
        if key not in study_cells:  # the labels of a study come from its report: the frontal image's findings
            rng = np.random.default_rng([seed, 11, image.index])
            study_cells[key] = _chexpert_cells(_labels_of(phantom, "chexpert"), bool(phantom.findings), rng,
                                               OBSERVATIONS)
        rows[image.test].append([f"CheXpert-v1.0-small/{rel}", "Male" if image.sex == "M" else "Female", image.age,
                                 "Frontal" if image.frontal else "Lateral", image.view if image.frontal else "",
                                 *study_cells[key]])
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
    _write_csv(out / "train.csv", header, rows[False])
    _write_csv(out / "valid.csv", header, rows[True])


def _mimic(out: Path, images: list[_Image], image_size: int, seed: int, family: str, num_workers: int | None,
           progress: bool, gzip_csv: bool) -> None:
    rng = np.random.default_rng([seed, 12])
    # distinct 8-digit ids starting with 1 (subjects) and 5 (studies), as MIMIC's are
    subjects = {p: 10_000_000 + p * 7919 % 9_000_000 for p in sorted({i.patient for i in images})}
    studies = {(i.patient, i.study): 50_000_000 + (i.patient * 37 + i.study * 101) % 9_000_000 for i in images}
    dicoms = [f"{_hex(rng, 8)}-{_hex(rng, 8)}-{_hex(rng, 8)}-{_hex(rng, 8)}-{_hex(rng, 8)}" for _ in images]
    relative = [f"files/p{str(subjects[i.patient])[:2]}/p{subjects[i.patient]}/s{studies[(i.patient, i.study)]}/"
                f"{d}.jpg" for i, d in zip(images, dicoms)]
    suffix = ".gz" if gzip_csv else ""
    names = [f"mimic-cxr-2.0.0-{n}.csv{suffix}" for n in ("metadata", "chexpert", "split")]
    write_marker(out, [*relative, *names, INFO_FILE], "a phantom MIMIC-CXR-JPG folder: results on it say nothing "
                 "clinical")
    paths = [out / r for r in relative]
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    phantoms = render_images(_jobs(images, paths, image_size, seed, family, write_jpeg), out, num_workers, progress)
    # patient-wise official split: test patients of the plan, and every fifth other patient validates
    split_of = {p: ("test" if any(i.test for i in images if i.patient == p) else
                    "validate" if p % 5 == 0 else "train") for p in subjects}
    metadata_rows, split_rows, label_rows = [], [], {}
    for image, dicom, phantom in zip(images, dicoms, phantoms):
        subject, study = subjects[image.patient], studies[(image.patient, image.study)]
        metadata_rows.append([dicom, subject, study, f"CHEST ({image.view} AND LAT)", image.view, image_size,
                              image_size, 21800101 + image.study, "120000.000"])
        split_rows.append([dicom, study, subject, split_of[image.patient]])
        if (subject, study) not in label_rows and image.frontal:
            label_rng = np.random.default_rng([seed, 13, image.index])
            if label_rng.random() >= 0.05:  # 5% of the studies have no label row, as some real ones
                label_rows[(subject, study)] = [subject, study, *_chexpert_cells(
                    _labels_of(phantom, "mimic"), bool(phantom.findings), label_rng, MIMIC_LABEL_COLUMNS)]
    _write_csv(out / names[0], ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                                "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime"], metadata_rows, gzip_csv)
    _write_csv(out / names[1], ["subject_id", "study_id", *MIMIC_LABEL_COLUMNS], list(label_rows.values()), gzip_csv)
    _write_csv(out / names[2], ["dicom_id", "study_id", "subject_id", "split"], split_rows, gzip_csv)


def _padchest(out: Path, images: list[_Image], image_size: int, seed: int, family: str, num_workers: int | None,
              progress: bool, gzip_csv: bool) -> None:
    rng = np.random.default_rng([seed, 14])
    image_ids = [f"{int(rng.integers(10**17, 10**18))}{int(rng.integers(10**17, 10**18))}{i.index:09d}_"
                 f"{int(rng.integers(0, 99)):02d}-{int(rng.integers(0, 999)):03d}-{int(rng.integers(0, 999)):03d}.png"
                 for i in images]
    image_dirs = [str(i.index % 3) for i in images]
    relative = [f"{d}/{name}" for d, name in zip(image_dirs, image_ids)]
    name = f"PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv{'.gz' if gzip_csv else ''}"
    write_marker(out, [*relative, name, INFO_FILE], "a phantom PadChest folder: results on it say nothing clinical")
    for folder in set(image_dirs):
        (out / folder).mkdir(parents=True, exist_ok=True)
    phantoms = render_images(_jobs(images, [out / r for r in relative], image_size, seed, family, write_png16),
                             out, num_workers, progress)
    rows = []
    for image, image_id, image_dir, phantom in zip(images, image_ids, image_dirs, phantoms):
        draw = np.random.default_rng([seed, 15, image.index])
        projection = ("L" if not image.frontal else "PA" if image.view == "PA" else
                      "AP_horizontal" if draw.random() < 0.4 else "AP")
        terms = _labels_of(phantom, "padchest") or (["normal"] if not phantom.findings else [])
        labels = "" if draw.random() < 0.03 else str(terms)  # a few reports were not labelled
        rows.append([image_id, image_dir, 20120101 + image.study, f"S{image.patient:06d}{image.study}",
                     f"P{image.patient:08d}", 2012 - image.age, image.sex, "POSTEROANTERIOR" if image.view == "PA" else
                     image.view, projection, "Manual review of DICOM fields", "No", "CR",
                     "Physician" if draw.random() < 0.27 else "RNN_model", labels, "[]"])
    header = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
              "ViewPosition_DICOM", "Projection", "MethodProjection", "Pediatric", "Modality_DICOM", "MethodLabel",
              "Labels", "Localizations"]
    _write_csv(out / name, header, rows, gzip_csv)


def _vindr(out: Path, images: list[_Image], image_size: int, seed: int, family: str, num_workers: int | None,
           progress: bool, gzip_csv: bool) -> None:
    rng = np.random.default_rng([seed, 16])
    image_ids = [_hex(rng, 32) for _ in images]
    relative = [f"{'test' if i.test else 'train'}/{image_id}.dicom" for i, image_id in zip(images, image_ids)]
    csvs = ["annotations/image_labels_train.csv", "annotations/image_labels_test.csv",
            "annotations/annotations_train.csv", "annotations/annotations_test.csv"]
    write_marker(out, [*relative, *csvs, INFO_FILE], "a phantom VinDr-CXR folder: results on it say nothing clinical")
    for folder in ("train", "test", "annotations"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    options = [{"uid_seed": f"{seed}:vindr:{image_id}", "monochrome1": i.index % 4 == 3}
               for i, image_id in zip(images, image_ids)]
    phantoms = render_images(_jobs(images, [out / r for r in relative], image_size, seed, family, write_dicom, options),
                             out, num_workers, progress)
    mapping = PHANTOM_LABELS["vindr"]
    train_labels, test_labels, train_boxes, test_boxes = [], [], [], []
    for image, image_id, phantom in zip(images, image_ids, phantoms):
        findings = [(mapping[f], box) for f, box in phantom.findings if f in mapping]
        draw = np.random.default_rng([seed, 17, image.index])
        if image.test:  # the consensus: every finding, its exact box
            marked = findings
            test_labels.append([image_id, *_vindr_cells([n for n, _ in marked])])
            test_boxes += [[image_id, n, *_corners(box)] for n, box in marked if n not in VINDR_GLOBAL] or (
                [[image_id, "No finding", "", "", "", ""]] if not marked else [])
            continue
        for reader in sorted(draw.choice(len(VINDR_READERS), size=3, replace=False)):
            marked = [(n, box) for n, box in findings if draw.random() < READER_SENSITIVITY]
            rad = VINDR_READERS[int(reader)]
            train_labels.append([image_id, rad, *_vindr_cells([n for n, _ in marked])])
            boxed = [(n, _jitter(box, draw, image_size)) for n, box in marked if n not in VINDR_GLOBAL]
            train_boxes += [[image_id, rad, n, *corners] for n, corners in boxed]
            if not marked:
                train_boxes.append([image_id, rad, "No finding", "", "", "", ""])
    coords = ["x_min", "y_min", "x_max", "y_max"]
    _write_csv(out / csvs[0], ["image_id", "rad_id", *VINDR_LABELS], train_labels)
    # the test file spells one label differently, as the distributed one does
    _write_csv(out / csvs[1], ["image_id", *[("Other disease" if n == "Other diseases" else n) for n in VINDR_LABELS]],
               test_labels)
    _write_csv(out / csvs[2], ["image_id", "rad_id", "class_name", *coords], train_boxes)
    _write_csv(out / csvs[3], ["image_id", "class_name", *coords], test_boxes)


def _vindr_cells(marked: Sequence[str]) -> list[int]:
    return [1 if (n in marked or (n == "No finding" and not marked)) else 0 for n in VINDR_LABELS]


def _corners(box: tuple[int, int, int, int]) -> list[float]:
    x, y, w, h = box
    return [float(x), float(y), float(x + w), float(y + h)]


def _jitter(box: tuple[int, int, int, int], rng: np.random.Generator, size: int) -> list[float]:
    """A reader's version of a box: each corner moved by up to :data:`READER_JITTER` of the box's size,
    kept inside the image and at least a pixel wide."""
    x0, y0, x1, y1 = _corners(box)
    dx, dy = READER_JITTER * (x1 - x0), READER_JITTER * (y1 - y0)
    x0, x1 = (float(np.clip(v + rng.uniform(-dx, dx), 0, size)) for v in (x0, x1))
    y0, y1 = (float(np.clip(v + rng.uniform(-dy, dy), 0, size)) for v in (y0, y1))
    x0, x1 = min(x0, x1 - 1.0), max(x1, x0 + 1.0)
    y0, y1 = min(y0, y1 - 1.0), max(y1, y0 + 1.0)
    return [round(max(x0, 0.0), 2), round(max(y0, 0.0), 2), round(min(x1, size), 2), round(min(y1, size), 2)]


def _rsna(out: Path, images: list[_Image], image_size: int, seed: int, family: str, num_workers: int | None,
          progress: bool, gzip_csv: bool) -> None:
    rng = np.random.default_rng([seed, 18])
    ids = [f"{_hex(rng, 8)}-{_hex(rng, 4)}-4{_hex(rng, 3)}-{'89ab'[int(rng.integers(0, 4))]}{_hex(rng, 3)}-"
           f"{_hex(rng, 12)}" for _ in images]
    relative = [f"stage_2_train_images/{i}.dcm" for i in ids]
    names = ["stage_2_train_labels.csv", "stage_2_detailed_class_info.csv"]
    write_marker(out, [*relative, *names, INFO_FILE], "a phantom RSNA Pneumonia folder: results on it say nothing "
                 "clinical")
    (out / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    options = [{"uid_seed": f"{seed}:rsna:{i}", "bits": 8} for i in ids]
    phantoms = render_images(_jobs(images, [out / r for r in relative], image_size, seed, family, write_dicom, options),
                             out, num_workers, progress)
    label_rows, class_rows = [], []
    mapping = PHANTOM_LABELS["rsna"]
    for patient_id, phantom in zip(ids, phantoms):
        boxes = [box for finding, box in phantom.findings if finding in mapping]
        label_rows += [[patient_id, *(float(v) for v in box), 1] for box in boxes] or [[patient_id, "", "", "", "", 0]]
        detailed = "Lung Opacity" if boxes else "No Lung Opacity / Not Normal" if phantom.findings else "Normal"
        class_rows += [[patient_id, detailed]] * max(1, len(boxes))  # the real file repeats it per box row
    _write_csv(out / names[0], ["patientId", "x", "y", "width", "height", "Target"], label_rows)
    _write_csv(out / names[1], ["patientId", "class"], class_rows)


_WRITERS = {"chexpert": _chexpert, "mimic": _mimic, "padchest": _padchest, "vindr": _vindr, "rsna": _rsna}


def generate_layout(
    out_dir: str | Path,
    dataset: str,
    num_images: int,
    image_size: int,
    seed: int = 0,
    *,
    family: str = "A",
    test_fraction: float = 0.25,
    lateral_fraction: float = 0.3,
    gzip_csv: bool = True,
    num_workers: int | None = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a phantom folder in the layout ``dataset`` (a kind of :data:`LAYOUTS`) and return it (see the
    module docs).

    Args:
        num_images, image_size, seed: how many images (laterals included), their side, the seed.
        family: the finding design (``A`` or ``B``, :data:`~thoracic.data.synth.render.FAMILIES`).
        test_fraction: fraction of patients in the test split (CheXpert's valid.csv, MIMIC's test, VinDr's
            test set; PadChest and RSNA have no official split: their readers draw one).
        lateral_fraction: fraction of studies with a lateral image too (CheXpert, MIMIC-CXR, PadChest).
        gzip_csv: MIMIC-CXR's and PadChest's CSVs gzipped, as distributed (False: plain CSV).
        num_workers, overwrite, progress: as :func:`~thoracic.data.synth.folder.generate_phantom_dataset`.
    """
    if dataset not in LAYOUTS:
        raise DataError(f"--dataset: layout {dataset!r} unknown; expected one of {', '.join(LAYOUTS)}")
    if dataset == "chestxray14":
        return generate_phantom_dataset(out_dir, num_images, image_size, seed, test_fraction=test_fraction,
                                        family=family, num_workers=num_workers, overwrite=overwrite,
                                        progress=progress)
    if num_images < 1:
        raise DataError(f"--num-images: expected at least 1 image, got {num_images}")
    if image_size < 16:
        raise DataError(f"--image-size: expected at least 16 pixels, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"--test-fraction: expected a fraction of patients strictly between 0 and 1, got {test_fraction}")
    if family not in FAMILIES:
        raise DataError(f"--family: expected one of {list(FAMILIES)}, got {family!r}")
    out = Path(out_dir)
    prepare_output(out, overwrite)
    laterals = lateral_fraction if dataset in ("chexpert", "mimic", "padchest") else 0.0
    images = _plan(num_images, seed, test_fraction, laterals)
    _WRITERS[dataset](out, images, image_size, seed, family, num_workers, progress, gzip_csv)
    _finish(out, dataset, num_images, image_size, seed, family)
    return out

"""`thoracic predict`: PNG / JPEG / DICOM in any mode, bad files reported per file, figures and JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_run
from PIL import Image

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES
from thoracic.data.images import read_image
from thoracic.prediction import Predictor, collect_image_paths, predict_images, preprocess

TEST_DATA = Path(__file__).resolve().parent / "data"


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None) -> Path:
    """A minimal valid DICOM file (explicit VR little endian, secondary capture) with 16-bit pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "baseline", Path("unused"), "baseline", 0)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A folder with a grayscale PNG, an RGBA PNG, a JPEG, a MONOCHROME1 DICOM and a 16-bit PNG."""
    folder = tmp_path / "in"
    folder.mkdir()
    for src in sorted(TEST_DATA.glob("*.png")):
        shutil.copy(src, folder / src.name)
    gray = np.asarray(Image.open(sorted(TEST_DATA.glob("*_l_*.png"))[0]).convert("L"))
    Image.fromarray(gray).save(folder / "photo.jpg", quality=90)
    Image.fromarray((gray.astype(np.uint16) * 257)).save(folder / "sixteen.png")
    ramp = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (60, 1))  # 60 x 100, values 0..3960
    write_dicom(folder / "scan.dcm", ramp, photometric="MONOCHROME1")
    return folder


def test_dicom_monochrome1_is_inverted_and_windowed(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (60, 1))
    plain = read_image(write_dicom(tmp_path / "a.dcm", ramp))
    inverted = read_image(write_dicom(tmp_path / "b.dcm", ramp, photometric="MONOCHROME1"))
    assert plain.shape == (60, 100) and plain.dtype == np.uint8
    assert plain[0, 0] == 0 and plain[0, -1] == 255  # min-max without a window
    np.testing.assert_array_equal(inverted, 255 - plain)
    windowed = read_image(write_dicom(tmp_path / "c.dcm", ramp, window=(2000.0, 1000.0)))
    assert windowed[0, 0] == 0 and windowed[0, -1] == 255  # outside the window: clipped
    inside = windowed[0, (ramp[0] > 1600) & (ramp[0] < 2400)]
    assert np.all(np.diff(inside.astype(int)) > 0)  # linear ramp inside the window


def test_preprocess_matches_training_normalisation() -> None:
    image = np.full((300, 200), 128, dtype=np.uint8)
    tensor = preprocess(image, 64)
    assert tensor.shape == (3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(tensor, ((128 / 255.0) - mean) / std * torch.ones(3, 64, 64))


def test_predict_folder_with_a_bad_file(run_dir: Path, images: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (images / "notes.png").write_text("this is not an image")
    truncated = (TEST_DATA / sorted(p.name for p in TEST_DATA.glob("*.png"))[0]).read_bytes()
    (images / "cut.png").write_bytes(truncated[: len(truncated) // 3])
    out = tmp_path / "out"
    code = main(["predict", str(images), "--checkpoint", str(run_dir), "--out", str(out),
                 "--threshold", "0", "--no-progress"])
    assert code == 1  # some files failed
    captured = capsys.readouterr()
    assert "notes.png" in captured.err and "cut.png" in captured.err
    report = json.loads((out / "predictions.json").read_text())
    by_name = {Path(r["path"]).name: r for r in report["images"]}
    good = [n for n, r in by_name.items() if r["error"] is None]
    assert sorted(good) == sorted(["photo.jpg", "scan.dcm", "sixteen.png",
                                   *[p.name for p in TEST_DATA.glob("*.png")]])
    for name in good:
        probabilities = by_name[name]["probabilities"]
        assert list(probabilities) == list(CLASS_NAMES)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        # threshold 0: every class gets a heatmap and its boxes lie inside the original image
        height, width = by_name[name]["original_size"]
        for boxes in by_name[name]["boxes"].values():
            for x, y, w, h in boxes:
                assert 0 <= x and 0 <= y and x + w <= width + 0.5 and y + h <= height + 0.5
        assert Path(by_name[name]["figure"]).stat().st_size > 0
    assert by_name["scan.dcm"]["original_size"] == [60, 100]
    assert "FAILED" in captured.out and "photo.jpg" in captured.out


def test_predict_json_and_all_good_exit_code(run_dir: Path, images: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    dicom = images / "scan.dcm"
    code = main(["predict", str(dicom), "--checkpoint", str(run_dir / "checkpoints" / "best.ckpt"),
                 "--out", str(tmp_path / "o"), "--json", "--method", "gradcam", "--threshold", "0.0",
                 "--no-progress"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == 1 and printed[0]["error"] is None
    assert set(printed[0]["boxes"]) == set(CLASS_NAMES)


def test_same_probabilities_as_a_direct_forward(run_dir: Path, images: Path, tmp_path: Path) -> None:
    results = predict_images([images / "photo.jpg"], run_dir, out_dir=tmp_path / "p", threshold=1.1,
                             progress=False)
    from thoracic.training.checkpoints import load_run

    model = load_run(run_dir).model
    with torch.no_grad():
        expected = torch.sigmoid(model(preprocess(read_image(images / "photo.jpg"), 64)[None]).logits)[0]
    np.testing.assert_allclose([results[0].probabilities[n] for n in CLASS_NAMES], expected.numpy(), rtol=1e-5)
    assert results[0].heatmaps == {}  # nothing above a threshold of 1.1


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    from thoracic.errors import DataError

    with pytest.raises(DataError, match="no such file"):
        collect_image_paths([tmp_path / "nope.png"])
    with pytest.raises(DataError, match="no image files"):
        collect_image_paths([tmp_path])


def test_real_sample_images(run_dir: Path, nih_dir: Path, tmp_path: Path) -> None:
    """The real 1024 x 1024 NIH PNGs (RGBA ones included) go through predict."""
    sample = sorted((nih_dir / "sample" / "images").glob("*.png"))[:4]
    results = predict_images(sample, run_dir, out_dir=tmp_path / "real", threshold=0.5, progress=False)
    assert [r.error for r in results] == [None] * len(sample)
    assert all(r.original_size == (1024, 1024) for r in results)


def test_predictor_rejects_unknown_method(run_dir: Path) -> None:
    from thoracic.errors import ThoracicError
    from thoracic.training.checkpoints import load_run

    with pytest.raises(ThoracicError, match="native or gradcam"):
        Predictor(load_run(run_dir).model, 64, method="lime")

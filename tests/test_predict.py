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
from thoracic.errors import DataError
from thoracic.prediction import (
    CLASS_ABBREVIATIONS,
    ImagePrediction,
    Predictor,
    collect_image_paths,
    figure_names,
    preprocess,
    probability_table,
)
from thoracic.workflows.predict import predict_images

TEST_DATA = Path(__file__).resolve().parent / "data"


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                window: tuple[float, float] | None = None) -> Path:
    """A minimal valid DICOM file (explicit VR little endian, secondary capture) with 16-bit pixels;
    ``pixels`` of shape (frames, rows, columns) makes a multi-frame file."""
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
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
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
    ramp = np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (60, 1))
    write_dicom(images / "palette.dcm", ramp, photometric="PALETTE COLOR")  # unsupported DICOMs
    write_dicom(images / "cine.dcm", np.stack([ramp, ramp[:, ::-1]]))
    out = tmp_path / "out"
    code = main(["predict", str(images), "--checkpoint", str(run_dir), "--out", str(out),
                 "--threshold", "0", "--no-progress"])
    assert code == 1  # some files failed
    captured = capsys.readouterr()
    assert "notes.png" in captured.err and "cut.png" in captured.err
    n_good = len(list(TEST_DATA.glob("*.png"))) + 3  # + photo.jpg, sixteen.png, scan.dcm
    assert f"4 of {n_good + 4} file(s) failed" in captured.err
    report = json.loads((out / "predictions.json").read_text())
    by_name = {Path(r["path"]).name: r for r in report["images"]}
    assert "PhotometricInterpretation PALETTE COLOR" in by_name["palette.dcm"]["error"]
    assert "multi-frame DICOM (2 frames)" in by_name["cine.dcm"]["error"]
    for name in ("notes.png", "cut.png", "palette.dcm", "cine.dcm"):
        assert name in by_name[name]["error"] and by_name[name]["probabilities"] == {}
        assert by_name[name]["figure"] is None
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
            for box in boxes:
                x, y, w, h = (box[k] for k in "xywh")
                assert 0 <= x and 0 <= y and x + w <= width + 0.5 and y + h <= height + 0.5
                assert box["threshold"] in (60.0, 180.0) and 0.0 <= box["score"] <= 1.0
                assert box["whole_image"] == (w * h >= 0.9 * width * height)
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
    document = json.loads(capsys.readouterr().out)
    printed = document["images"]
    assert len(printed) == 1 and printed[0]["error"] is None
    assert set(printed[0]["boxes"]) == set(CLASS_NAMES)
    # --json carries what predictions.json carries: source, checkpoint hash, thresholds and where from, calibration
    assert document == json.loads((tmp_path / "o" / "predictions.json").read_text())
    from thoracic.provenance import file_sha256

    assert document["checkpoint_sha256"] == file_sha256(run_dir / "checkpoints" / "best.ckpt")
    assert document["threshold_source"] == "command line" and document["threshold"] == 0.0
    assert document["method"] == "gradcam" and document["calibration"]["applied"] is False


def test_same_probabilities_as_a_direct_forward(run_dir: Path, images: Path, tmp_path: Path) -> None:
    results = predict_images(run_dir, [images / "photo.jpg"], out=tmp_path / "p", threshold=1.0,
                             progress=False)
    from thoracic.training.checkpoints import load_run

    model = load_run(run_dir).model
    with torch.no_grad():
        expected = torch.sigmoid(model(preprocess(read_image(images / "photo.jpg"), 64)[None]).logits)[0]
    np.testing.assert_allclose([results[0].probabilities[n] for n in CLASS_NAMES], expected.numpy(), rtol=1e-5)
    assert results[0].heatmaps == {}  # nothing reaches a threshold of 1.0


def test_missing_path_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        collect_image_paths([tmp_path / "nope.png"])
    with pytest.raises(DataError, match="no such file"):
        collect_image_paths([tmp_path / "nope.png", tmp_path / "gone.dcm"])
    with pytest.raises(DataError, match="no image files"):
        collect_image_paths([tmp_path])
    # an empty folder and a missing file: still nothing to process
    with pytest.raises(DataError, match=r"nope.png: no such file.*no image files .* in " + str(tmp_path)):
        collect_image_paths([tmp_path, tmp_path / "nope.png"])


def test_a_missing_file_among_others_fails_alone(tmp_path: Path) -> None:
    present = tmp_path / "present.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(present)
    assert collect_image_paths([tmp_path / "nope.png", present]) == [tmp_path / "nope.png", present]


def test_predict_a_list_of_files_with_a_missing_one(run_dir: Path, images: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Files named one by one (not a folder): each processed in order, the missing one fails alone."""
    named = [images / "photo.jpg", tmp_path / "missing.png", images / "scan.dcm", images / "sixteen.png"]
    out = tmp_path / "out"
    code = main(["predict", *map(str, named), "--checkpoint", str(run_dir), "--out", str(out), "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    assert "missing.png" in captured.err and "does not exist" in captured.err
    assert "1 of 4 file(s) failed" in captured.err
    report = json.loads((out / "predictions.json").read_text())["images"]
    assert [r["path"] for r in report] == [str(p) for p in named]
    assert [r["error"] is None for r in report] == [True, False, True, True]
    assert sorted(p.name for p in out.glob("*.png")) == ["photo_native.png", "scan_native.png",
                                                          "sixteen_native.png"]


def test_an_error_after_decoding_fails_only_that_file(run_dir: Path, images: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A DataError / ValueError from box extraction (or anything after decoding) fails one file, not the run."""
    import thoracic.prediction as prediction

    real = prediction.boxes_from_heatmaps

    def failing_for_the_dicom(heatmap, thresholds, original_size, **kwargs):  # the only 60 x 100 image
        if tuple(original_size) == (60, 100):
            raise DataError("boxes: broken heatmap")
        return real(heatmap, thresholds, original_size, **kwargs)

    monkeypatch.setattr(prediction, "boxes_from_heatmaps", failing_for_the_dicom)
    named = [images / "photo.jpg", images / "scan.dcm", images / "sixteen.png"]
    results = predict_images(run_dir, named, out=tmp_path / "o", threshold=0.0, progress=False)
    assert [r.error for r in results][0::2] == [None, None]
    assert results[1].error == f"{images / 'scan.dcm'}: boxes: broken heatmap"
    assert results[1].probabilities == {} and results[1].boxes == {}
    assert all(r.figure is not None and r.figure.is_file() for r in results[0::2])

    def value_error(*args, **kwargs):
        raise ValueError("bad value")

    monkeypatch.setattr(prediction, "boxes_from_heatmaps", value_error)
    results = predict_images(run_dir, named[:1], out=tmp_path / "v", threshold=0.0, progress=False)
    assert results[0].error == f"{named[0]}: bad value"


def test_probability_table_has_fourteen_distinct_readable_columns() -> None:
    probabilities = {name: k / 20 for k, name in enumerate(CLASS_NAMES)}
    results = [ImagePrediction(Path("a/one.png"), probabilities=probabilities),
               ImagePrediction(Path("two.dcm"), error="two.dcm: not an image")]
    header, first, second = probability_table(results).splitlines()
    labels = header.split()[1:]
    assert len(labels) == len(set(labels)) == 14
    assert "Pneumon" in labels and "Pneumoth" in labels
    for name, label in zip(CLASS_NAMES, labels):
        assert label == CLASS_ABBREVIATIONS[name] and label[:4].lower() == name[:4].lower()
    values = first.split()
    assert values[0] == "one.png" and [float(v) for v in values[1:]] == pytest.approx([k / 20 for k in range(14)])
    assert len(first) == len(header)  # columns line up
    assert second.split()[:2] == ["two.dcm", "FAILED:"]


def test_figure_names_never_collide() -> None:
    paths = [Path("a/x.png"), Path("b/x.png"), Path("x.dcm"), Path("y.png"), Path("x-2.png")]
    names = figure_names(paths)
    assert names[:4] == ["x", "x-2", "x-3", "y"] and len(set(names)) == len(names)


def test_real_sample_images(run_dir: Path, nih_dir: Path, tmp_path: Path) -> None:
    """The real 1024 x 1024 NIH PNGs (RGBA ones included) go through predict."""
    sample = sorted((nih_dir / "sample" / "images").glob("*.png"))[:4]
    results = predict_images(run_dir, sample, out=tmp_path / "real", threshold=0.5, progress=False)
    assert [r.error for r in results] == [None] * len(sample)
    assert all(r.original_size == (1024, 1024) for r in results)


def test_predictor_rejects_unknown_method(run_dir: Path) -> None:
    from thoracic.errors import ThoracicError
    from thoracic.training.checkpoints import load_run

    with pytest.raises(ThoracicError, match="--method must be one of"):
        Predictor(load_run(run_dir).model, 64, method="lime")
    with pytest.raises(ThoracicError, match="--registration must be one of"):
        Predictor(load_run(run_dir).model, 64, registration="nearest")


def test_predict_registers_each_method_on_its_grid(run_dir: Path, images: Path, tmp_path: Path) -> None:
    """Every method's boxes come from its own grid; the registration is recorded in predictions.json."""
    import json

    from thoracic.heatmaps.boxes import boxes_from_heatmaps
    from thoracic.geometry import make_registration
    from thoracic.training.checkpoints import load_run

    model = load_run(run_dir).model
    grids = {}
    for method in ("gradcam-layer3", "ig"):
        results = predict_images(run_dir, [images / "photo.jpg"], out=tmp_path / method, method=method,
                                 threshold=0.0, progress=False)
        info = json.loads((tmp_path / method / "predictions.json").read_text())
        assert info["registration"]["registration"] == "geometric"
        grids[method] = tuple(info["registration"]["stride"])
        result = results[0]
        name, heatmap = next(iter(result.heatmaps.items()))
        assert heatmap.shape == tuple(info["registration"]["shape"])
        # the boxes are those of the geometric registration, not of the align_corners=False one
        predictor = Predictor(model, 64, method=method)
        expected = boxes_from_heatmaps(heatmap, (60, 180), result.original_size,
                                       cell_centres=predictor.registration(heatmap.shape, result.original_size))
        got = np.array([[box.x, box.y, box.w, box.h] for box in result.boxes[name]]).reshape(-1, 4)
        np.testing.assert_array_equal(got, np.concatenate([e.boxes for e in expected.values()]))
        assert predictor.registration == make_registration("geometric", predictor.registration.grid)
    assert grids == {"gradcam-layer3": (16.0, 16.0), "ig": (1.0, 1.0)}


def _with_operating_points(run: Path, thresholds: dict[str, float]) -> Path:
    from thoracic.evaluation.operating_points import save_operating_points

    save_operating_points(run / "evaluation" / "operating_points.json", "f1", thresholds)
    return run


def test_predict_uses_the_runs_operating_points_and_says_which(tmp_path: Path, images: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", Path("unused"), "baseline", 0)
    # 0 for the first four classes (always shown), 1.0 for the others (never reached by a sigmoid here)
    thresholds = {n: (0.0 if k < 4 else 1.0) for k, n in enumerate(CLASS_NAMES)}
    _with_operating_points(run, thresholds)
    out = tmp_path / "out"
    assert main(["predict", str(images / "photo.jpg"), "--checkpoint", str(run), "--out", str(out),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "per-class thresholds of the run (F1 on the val split" in err and "operating_points.json" in err
    report = json.loads((out / "predictions.json").read_text())
    assert report["threshold_source"] == "operating_points" and report["threshold"] is None
    assert report["thresholds"] == thresholds
    image = report["images"][0]
    assert image["above_threshold"] == list(CLASS_NAMES[:4]) and set(image["boxes"]) == set(CLASS_NAMES[:4])

    # --threshold overrides the file, for every class, and says so
    assert main(["predict", str(images / "photo.jpg"), "--checkpoint", str(run), "--out", str(out),
                 "--threshold", "0.99", "--no-progress"]) == 0
    assert "--threshold 0.99 for every class" in capsys.readouterr().err
    report = json.loads((out / "predictions.json").read_text())
    assert report["threshold_source"] == "command line" and report["threshold"] == 0.99
    assert report["images"][0]["above_threshold"] == []  # an untrained model's probabilities are near 0.5

    # a run without operating points: 0.5, and the user is told how to get per-class thresholds
    bare = make_run(tmp_path / "bare", Path("unused"), "baseline", 0)
    assert main(["predict", str(images / "photo.jpg"), "--checkpoint", str(bare), "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "0.5 for every class: no operating_points.json" in err and "thoracic evaluate" in err
    assert json.loads((tmp_path / "b" / "predictions.json").read_text())["threshold_source"] == "default"


def test_a_broken_operating_points_file_is_named(tmp_path: Path, images: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "run", Path("unused"), "baseline", 0)
    (run / "evaluation").mkdir()
    path = run / "evaluation" / "operating_points.json"
    path.write_text(json.dumps({"method": "youden", "split": "val", "thresholds": {"Atelectasis": 0.3}}))
    assert main(["predict", str(images / "photo.jpg"), "--checkpoint", str(run), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "no threshold for Cardiomegaly" in err


def test_a_checkpoint_trained_on_phantoms_gets_a_warning(tmp_path: Path, images: Path, phantom_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    phantom_run = make_run(tmp_path / "phantom_run", phantom_dir, "baseline", 0)
    out = tmp_path / "o"
    assert main(["predict", str(phantom_run), str(images / "photo.jpg"), "--out", str(out),
                 "--threshold", "1", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "phantom (synthetic) images" in captured.err
    assert "warning" not in captured.out  # results on stdout, messages on stderr
    report = json.loads((out / "predictions.json").read_text())
    assert report["trained_on"] == "phantom" and "phantom" in report["warning"]
    from thoracic.provenance import file_sha256

    assert report["checkpoint_sha256"] == file_sha256(phantom_run / "checkpoints" / "best.ckpt")

    real_root = tmp_path / "real_data"  # a folder without phantom.json
    real_root.mkdir()
    real_run = make_run(tmp_path / "real_run", real_root, "baseline", 0)
    out = tmp_path / "o2"  # one folder holds the outputs of one model
    assert main(["predict", str(real_run), str(images / "photo.jpg"), "--out", str(out),
                 "--threshold", "1", "--no-progress"]) == 0
    assert "warning" not in capsys.readouterr().err
    report = json.loads((out / "predictions.json").read_text())
    assert report["trained_on"] == "real" and report["warning"] is None


def test_prediction_figure_title_colour_bar_box_styles_and_legend() -> None:
    from matplotlib.patches import Rectangle

    from thoracic.prediction import PredictedBox, build_prediction_figure

    heatmap = np.zeros((8, 8))
    heatmap[2:4, 2:4] = 1.0
    result = ImagePrediction(
        Path("chest.png"), probabilities={n: 0.1 for n in CLASS_NAMES} | {"Effusion": 0.9},
        original_size=(100, 100), heatmaps={"Effusion": heatmap}, thresholds={n: 0.4 for n in CLASS_NAMES},
        boxes={"Effusion": [PredictedBox(20, 20, 20, 20, 180.0, 0.9, False),
                            PredictedBox(0, 0, 100, 98, 60.0, 0.3, True)]})
    image = np.full((100, 100), 100, dtype=np.uint8)

    def boxes_drawn(figure):
        panel = [ax for ax in figure.axes if ax.get_title().startswith("Effusion")][0]
        return [(p.get_linestyle(), p.get_width()) for p in panel.patches if isinstance(p, Rectangle)]

    title = "Grad-CAM of baseline (CAM) (resnet34, 256 px); checkpoint runs/x/checkpoints/best.ckpt"
    figure = build_prediction_figure(result, image, method="gradcam", title=title, all_boxes=True)
    assert figure.get_suptitle() == title
    assert any(ax.get_ylabel() == "heatmap (min-max normalised per map)" for ax in figure.axes)  # colour bar
    assert sorted(boxes_drawn(figure)) == [("-", 20.0), ("--", 100.0)]  # 180 solid, 60 dashed
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["box: heatmap > 180", "box: heatmap > 60", "box covering >= 90% of the image"]
    panel = [ax for ax in figure.axes if ax.get_title().startswith("Effusion")][0]
    assert "p=0.9000 ≥ 0.4000" in panel.get_title()
    assert [t.get_text() for t in panel.texts] == ["whole image"]
    # by default only the boxes of the highest heatmap threshold
    default = build_prediction_figure(result, image, method="gradcam", title=title)
    assert boxes_drawn(default) == [("-", 20.0)]
    assert "box: heatmap > 60" not in [t.get_text() for t in default.legends[0].get_texts()]


def test_operating_points_moved_onto_calibrated_probabilities_make_the_same_decisions() -> None:
    from thoracic.prediction import Thresholds, calibrated_thresholds

    rng = np.random.default_rng(0)
    temperature = rng.uniform(0.3, 3.0, len(CLASS_NAMES))
    given = Thresholds({n: float(t) for n, t in zip(CLASS_NAMES, rng.uniform(0.05, 0.95, len(CLASS_NAMES)))},
                       "operating_points", "test")
    moved = calibrated_thresholds(given, temperature)
    logits = rng.normal(0, 3, (500, len(CLASS_NAMES)))
    raw = 1 / (1 + np.exp(-logits))
    calibrated = 1 / (1 + np.exp(-logits / temperature))
    for k, name in enumerate(CLASS_NAMES):
        assert ((raw[:, k] >= given.values[name]) == (calibrated[:, k] >= moved.values[name])).mean() >= 0.998
    assert moved.source == "operating_points" and "calibrated" in moved.description

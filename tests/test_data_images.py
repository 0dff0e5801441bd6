"""Decoding PNG / JPEG in every PIL mode and DICOM to 8-bit grayscale; bad files; the resize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from thoracic.data.images import read_image, resize_image
from thoracic.errors import DataError

TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    values = (np.arange(40 * 30).reshape(30, 40) * 7 % 256).astype(np.uint8)
    values[0, 0], values[0, 1] = 0, 255
    return values


def _save(tmp_path: Path, image: Image.Image, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def test_png_modes_decode_to_the_same_gray(tmp_path, gray):
    rgb = np.stack([gray] * 3, axis=-1)
    alpha = np.full_like(gray, 255)
    images = {
        "L": Image.fromarray(gray),
        "LA": Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha // 2)]),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(np.dstack([rgb, alpha])),
        "I;16": Image.fromarray(gray.astype(np.uint16) * 257),
        "I": Image.fromarray(gray.astype(np.int32)),
        "P": Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
    }
    for mode, image in images.items():
        assert image.mode == mode
        decoded = read_image(_save(tmp_path, image, f"{mode.replace(';', '')}.png") if mode != "I" else
                             _save(tmp_path, image, "I.tif"))
        assert decoded.dtype == np.uint8 and decoded.shape == gray.shape, mode
        if mode == "P":  # a palette of the image's own gray levels reproduces them
            assert np.abs(decoded.astype(int) - gray).max() <= 1
        else:
            np.testing.assert_array_equal(decoded, gray, err_msg=mode)


def test_16_bit_full_range_and_32_bit_scaling(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    decoded = read_image(_save(tmp_path, Image.fromarray(values), "16.png"))
    np.testing.assert_array_equal(decoded, [[0, 1, 128, 255]])  # round(v * 255 / 65535)
    big = Image.fromarray(np.array([[-100, 0, 100, 155]], dtype=np.int32))
    np.testing.assert_array_equal(read_image(_save(tmp_path, big, "32.tif")), [[0, 100, 200, 255]])


def test_jpeg(tmp_path, gray):
    smooth = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    decoded = read_image(_save(tmp_path, Image.fromarray(smooth), "x.jpg"))
    assert decoded.shape == smooth.shape and np.abs(decoded.astype(int) - smooth).mean() < 3


def _dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **extra) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_min_max_window_and_monochrome1(tmp_path):
    pixels = np.array([[0, 1000, 2000, 4000]], dtype=np.uint16)
    np.testing.assert_array_equal(read_image(_dicom(tmp_path / "a.dcm", pixels)), [[0, 64, 128, 255]])
    inverted = read_image(_dicom(tmp_path / "b.dcm", pixels, "MONOCHROME1"))
    np.testing.assert_array_equal(inverted, [[255, 191, 127, 0]])
    # window centre 2000.5, width 2001: [1000, 3000] -> [0, 255] (DICOM linear window)
    windowed = read_image(_dicom(tmp_path / "c", pixels, WindowCenter=2000.5, WindowWidth=2001))
    np.testing.assert_array_equal(windowed, [[0, 0, 128, 255]])
    # the modality LUT applies before the window: slope 2 makes stored 1000 a value of 2000
    rescaled = read_image(_dicom(tmp_path / "d.dcm", pixels, RescaleSlope=2, RescaleIntercept=0,
                                 WindowCenter=4000.5, WindowWidth=4001))
    np.testing.assert_array_equal(rescaled, [[0, 0, 128, 255]])


def test_bad_files_raise_data_errors_naming_them(tmp_path, gray):
    with pytest.raises(DataError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(DataError, match="notes.png: not an image"):
        read_image(text)
    whole = _save(tmp_path, Image.fromarray(gray), "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="cut.png: truncated or corrupt"):
        read_image(cut)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 50)
    with pytest.raises(DataError, match="broken.dcm: cannot read DICOM"):
        read_image(broken)


def test_project_test_images_rgba_and_gray():
    rgba = Image.open(TEST_DATA / "00002578_000_rgba_128.png")
    assert rgba.mode == "RGBA"
    decoded = read_image(TEST_DATA / "00002578_000_rgba_128.png")
    channels = np.asarray(rgba)
    np.testing.assert_array_equal(channels[..., 0], channels[..., 1])
    np.testing.assert_array_equal(decoded, channels[..., 0])  # R = G = B: the gray is R
    gray = read_image(TEST_DATA / "00002123_000_l_128.png")
    np.testing.assert_array_equal(gray, np.asarray(Image.open(TEST_DATA / "00002123_000_l_128.png")))


@pytest.mark.nih
def test_real_sample_images(nih_dir):
    paths = sorted((nih_dir / "sample" / "images").glob("*.png"))
    assert len(paths) == 40
    modes: dict[str, int] = {}
    for path in paths:
        with Image.open(path) as image:
            mode = image.mode
        modes[mode] = modes.get(mode, 0) + 1
        if mode == "RGBA" or path == paths[0]:
            decoded = read_image(path)
            assert decoded.shape == (1024, 1024) and decoded.dtype == np.uint8
            rgb = np.asarray(Image.open(path))
            expected = rgb[..., 0] if rgb.ndim == 3 else rgb
            np.testing.assert_array_equal(decoded, expected)
    assert modes == {"L": 36, "RGBA": 4}


def test_resize_is_antialiased(gray):
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = resize_image(checker, 16)
    assert small.shape == (16, 16) and np.abs(small.astype(int) - 127.5).max() < 8  # not aliased to 0/255
    np.testing.assert_array_equal(resize_image(gray[:30, :30], 30), gray[:30, :30])
    assert resize_image(gray, 8).shape == (8, 8)


def test_load_resized_fast_path_equals_read_then_resize(tmp_path) -> None:
    """The cache's path for 8-bit grayscale PNGs gives exactly resize_image(read_image(...))."""
    from PIL import Image

    from thoracic.data.images import load_resized, read_image, resize_image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (300, 257), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    Image.fromarray(gray).save(tmp_path / "l.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    for name in ("l.png", "rgba.png"):
        for size in (64, 300):
            pixels, original = load_resized(tmp_path / name, size)
            expected = resize_image(read_image(tmp_path / name), size)
            assert original == (257, 300)
            assert pixels.dtype == np.uint8
            np.testing.assert_array_equal(pixels, expected)


def test_jpeg_is_decoded_at_a_reduced_size_then_resized(tmp_path) -> None:
    """A large JPEG for a small cache: decoded in the DCT domain at the largest reduction keeping twice the
    target (1/4 of 1,600 x 1,280 for 160 px), then the same antialiased resize: within a couple of grey
    levels of a full decode + resize, and the file's own size as the box frame."""
    from thoracic.data.images import JPEG_MARGIN, _decode_pil, load_resized
    from thoracic.data.synth import render_phantom

    pixels = render_phantom(320, 0, 5, 5).pixels
    path = tmp_path / "large.jpg"
    Image.fromarray(pixels).resize((1600, 1280), Image.Resampling.BICUBIC).save(path, quality=95)
    decoded, original = _decode_pil(path, keep_gray=True, draft_size=JPEG_MARGIN * 160)
    assert original == (1600, 1280) and decoded.size == (400, 320)  # 1/4: both sides >= 320
    fast, size = load_resized(path, 160)
    full, full_size = load_resized(path, 160, draft=False)
    assert size == full_size == (1600, 1280) and fast.shape == (160, 160)
    difference = np.abs(fast.astype(int) - full.astype(int))
    assert difference.max() <= 3 and difference.mean() < 0.5
    np.testing.assert_array_equal(full, resize_image(read_image(path), 160))  # draft=False is the plain path
    small, _ = load_resized(path, 1024)  # no reduction possible: the plain decode
    np.testing.assert_array_equal(small, resize_image(read_image(path), 1024))
    png = tmp_path / "large.png"
    Image.fromarray(pixels).save(png)
    np.testing.assert_array_equal(load_resized(png, 40)[0], load_resized(png, 40, draft=False)[0])  # PNG: no draft

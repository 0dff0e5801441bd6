"""Decoding any chest X-ray file to one 8-bit grayscale array, and the one resize.

PNG / JPEG go through Pillow in every mode ChestX-ray14 and other collections use:

- ``L``: as is. ``LA`` / ``RGBA``: the alpha channel is ignored (the RGBA files of ChestX-ray14 carry a
  constant alpha of 255 and identical R, G, B). ``RGB``, ``P``, ``1``, ``CMYK``, ``YCbCr``: Pillow's
  ITU-R 601-2 luma conversion (``convert("L")``), exact for gray images stored as colour.
- ``I;16*`` (16-bit): the full 16-bit range maps linearly to 0-255 (``round(v * 255 / 65535)``, so an
  8-bit image stored as ``v * 257`` comes back exactly). ``I`` (32-bit integer): values up to 255 are
  kept, up to 65535 treated as 16-bit, anything larger min-max scaled. ``F``: min-max scaled.

DICOM goes through pydicom: the modality LUT (rescale slope/intercept), then the VOI LUT sequence or
the first WindowCenter/WindowWidth of the file (DICOM PS3.3 C.11.2.1.2 linear window) when present,
else min-max to 0-255; MONOCHROME1 is inverted so that dense tissue is bright as in the PNGs.

The one resize (:func:`resize_image`) is Pillow's ``Image.resize(..., BILINEAR)`` without
``reducing_gap``: a separable triangle filter whose support widens with the reduction factor, i.e.
antialiased (the same filter torchvision's ``Resize`` applies to PIL images).

JPEG at a reduced size (:func:`load_resized`, the cache's decoder): a JPEG much larger than the target
is decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (Pillow's ``Image.draft``: libjpeg's scaled
IDCT), the largest reduction that keeps both sides at least **twice** the target's, then resized by the
same antialiased resize. A 2,500 x 2,048 CheXpert-sized image for a 256 px cache is decoded at 1/4
(625 x 512). The margin of two keeps the result within a grey level or two of a full decode + resize
(tests/test_data_images.py): at 1/8 libjpeg keeps only each 8 x 8 block's mean, a box filter, whose
edges would differ by up to 16 grey levels from the antialiased resize's; with the margin the resize
does the last low-pass. The meaning (an antialiased S x S version of the image) is the same; decoding
is about twice as fast (BENCHMARKS.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from thoracic.errors import DataError

#: Recorded in cache manifests: how images were resized.
RESIZE_METHOD = "PIL.Image.resize BILINEAR (antialiased), reducing_gap=None, no aspect ratio kept"
#: A JPEG is decoded at a reduced scale keeping both sides at least this many times the target's.
JPEG_MARGIN = 2
#: Recorded in cache manifests: how JPEG files are decoded before the resize (:func:`load_resized`).
JPEG_DECODING = ("PIL Image.draft: DCT-domain scaling by 1/2, 1/4 or 1/8 keeping both sides >= "
                 f"{JPEG_MARGIN} x the cache size, then the resize")

_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``-like suffix or the ``DICM`` magic at byte 128."""
    path = Path(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def to_uint8_gray(image: Image.Image) -> np.ndarray:
    """A decoded PIL image in any mode -> 2-D uint8 grayscale (see the module docstring)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8).copy()
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float64)
        return np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
    if mode == "I":
        values = np.asarray(image).astype(np.int64)
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 255:
            return values.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return _min_max(values.astype(np.float64))
    if mode == "F":
        return _min_max(np.asarray(image, dtype=np.float64))
    if mode == "RGBA":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _decode_pil(path: Path, keep_gray: bool = False,
                draft_size: int | None = None) -> tuple[np.ndarray | Image.Image, tuple[int, int]]:
    """Decode a Pillow-readable file to a uint8 2-D array, with the errors :func:`read_image` documents;
    returns it with the file's (width, height).

    With ``keep_gray``, an 8-bit grayscale (mode ``L``) image comes back as the PIL image itself (no
    copy to numpy and back: the cache's fast path); any other mode is converted as usual. With
    ``draft_size``, a JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 of its size that keeps both
    sides at least ``draft_size`` (``Image.draft``, in the DCT domain; see the module docs).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                original = (int(image.width), int(image.height))
                if draft_size is not None and image.format == "JPEG":
                    image.draft(None, (draft_size, draft_size))
                image.load()
                if keep_gray and image.mode == "L" and image.width > 0 and image.height > 0:
                    return image.copy(), original
                array = to_uint8_gray(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read; expected a PNG, JPEG or DICOM file") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        # not a damaged file: Pillow refuses images this large as a protection against decompression bombs
        raise DataError(
            f"{path}: too large to decode ({exc}); Pillow refuses images above {Image.MAX_IMAGE_PIXELS:,} pixels "
            "(about 9,459 x 9,459) as a protection against decompression bombs. Expected a chest X-ray "
            "(NIH's are 1024 x 1024): downscale the file first"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc}); expected a complete PNG/JPEG") from None
    if array.ndim != 2 or array.size == 0:
        raise DataError(f"{path}: decoded to shape {array.shape}; expected a 2-D grayscale image")
    return array, original


def read_image(path: str | Path) -> np.ndarray:
    """Decode a PNG / JPEG (any PIL mode) or DICOM file to a 2-D uint8 grayscale array.

    Returns ``(height, width)`` uint8 in 0-255 at the file's own size (no resizing): 16-bit and RGB(A)
    PNGs are converted to 8-bit grayscale; DICOM is windowed (its VOI LUT or window, else min-max) and
    MONOCHROME1 inverted (see the README's prediction section).

    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> folder = tempfile.TemporaryDirectory()
    >>> path = Path(folder.name) / "chest.png"
    >>> Image.fromarray(np.full((20, 30), 4096, dtype=np.uint16)).save(path)  # 16-bit grayscale
    >>> pixels = read_image(path)
    >>> pixels.shape, pixels.dtype.name, int(pixels[0, 0])  # 4096 / 65535 * 255 = 15.9
    ((20, 30), 'uint8', 16)
    >>> folder.cleanup()

    Raises:
        DataError: naming the file, when it does not exist, is not an image, is truncated or corrupt,
            or has an unsupported layout.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    if is_dicom(path):
        return _read_dicom(path)
    return _decode_pil(path)[0]  # type: ignore[return-value]


def _read_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pragma: no cover - pydicom is a dependency
        raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many types for bad files and missing codecs
        raise DataError(f"{path}: cannot read DICOM pixel data ({type(exc).__name__}: {exc})") from None
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{path}: multi-frame DICOM ({dataset.NumberOfFrames} frames); expected one image")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        if pixels.ndim == 3 and pixels.shape[-1] == 3:
            rgb = pixels.astype(np.float64)
            gray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            return _min_max(gray) if gray.max() > 255 else np.rint(gray).astype(np.uint8)
        raise DataError(f"{path}: unsupported PhotometricInterpretation {photometric}")
    if pixels.ndim != 2:
        raise DataError(f"{path}: pixel data of shape {pixels.shape}; expected a 2-D image")
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{path}: the DICOM modality transform gives non-finite values (RescaleSlope "
                        f"{dataset.get('RescaleSlope')!r}, RescaleIntercept {dataset.get('RescaleIntercept')!r}); "
                        "expected finite numbers: the file's header is damaged")
    if "VOILUTSequence" in dataset:
        out = _min_max(np.asarray(apply_voi_lut(pixels, dataset, prefer_lut=True), dtype=np.float64))
    elif "WindowCenter" in dataset and "WindowWidth" in dataset:
        center = _first(dataset.WindowCenter)
        width = max(_first(dataset.WindowWidth), 1.0)
        if not (np.isfinite(center) and np.isfinite(width)):
            raise DataError(f"{path}: DICOM window centre {dataset.WindowCenter!r} / width {dataset.WindowWidth!r}; "
                            "expected finite numbers: the file's header is damaged")
        # DICOM PS3.3 C.11.2.1.2.1 (LINEAR): maps [c - 0.5 - (w-1)/2, c - 0.5 + (w-1)/2] onto the output.
        scaled = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
        out = np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    else:
        out = _min_max(values)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _first(value: object) -> float:
    try:
        return float(value[0])  # type: ignore[index]
    except TypeError:
        return float(value)  # type: ignore[arg-type]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased resize of a uint8 grayscale image to ``size x size`` (see :data:`RESIZE_METHOD`)."""
    if image.shape == (size, size):
        return np.ascontiguousarray(image, dtype=np.uint8)
    resized = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.uint8)


def load_resized(path: str | Path, size: int, draft: bool = True) -> tuple[np.ndarray, tuple[int, int]]:
    """``resize_image(read_image(path), size)`` and the file's (width, height): what the cache stores.

    8-bit grayscale files (most of ChestX-ray14) are resized as the decoded PIL image, skipping a copy to
    numpy and back (~5% of the per-image time); the pixels are identical (tested). A JPEG is decoded at a
    reduced size first when ``size`` allows (``draft``; the module docs); the (width, height) returned is
    the file's own, the frame of its boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist")
    if is_dicom(path):
        image = _read_dicom(path)
    else:
        decoded, original = _decode_pil(path, keep_gray=True, draft_size=JPEG_MARGIN * size if draft else None)
        if isinstance(decoded, Image.Image):
            if decoded.size != (size, size):
                decoded = decoded.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(decoded, dtype=np.uint8), original
        return resize_image(decoded, size), original
    return resize_image(image, size), (int(image.shape[1]), int(image.shape[0]))

"""Prediction on new images: probabilities, heatmaps and boxes for PNG / JPEG / DICOM files.

Every image goes through exactly the preprocessing of training: decoded to 8-bit grayscale
(:func:`thoracic.data.images.read_image`: any PIL mode; DICOM with MONOCHROME1 inverted and the file's
window or min-max), resized with antialiasing to the run's ``data.image_size``
(:func:`thoracic.data.images.resize_image`, the function the cache uses) and normalised like the
training batches (:func:`thoracic.data.dataset.normalize_images`). Heatmaps are the model's native
maps, Grad-CAM or Integrated Gradients (:func:`thoracic.heatmaps.create_heatmap_method`); boxes come from
:func:`thoracic.evaluation.localization.boxes_from_heatmaps` at the original image size with the heatmap
cells registered as in localization (:class:`thoracic.geometry.Registration`: geometric by default).

A file that cannot be processed (missing, not an image, truncated, unsupported DICOM, or any
:class:`~thoracic.errors.ThoracicError` / ``ValueError`` later on) fails with its own message; the
others are still processed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from thoracic.constants import CLASS_NAMES
from thoracic.data.dataset import normalize_images
from thoracic.data.images import is_dicom, read_image, resize_image
from thoracic.errors import DataError, ThoracicError
from thoracic.evaluation.localization import HEATMAP_THRESHOLDS, boxes_from_heatmaps
from thoracic.geometry import REGISTRATIONS, Registration, make_registration
from thoracic.heatmaps import HEATMAP_METHOD_NAMES, create_heatmap_method

#: File name endings taken from a folder (any file named explicitly is tried whatever its name).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")


@dataclass
class ImagePrediction:
    """Result for one file: probabilities per class, and heatmaps/boxes for the classes shown."""

    path: Path
    probabilities: dict[str, float] = field(default_factory=dict)
    original_size: tuple[int, int] = (0, 0)
    """(height, width) of the decoded image."""
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    """class -> heatmap in [0, 1] on the method's grid (classes above the threshold)."""
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    """class -> (K, 4) boxes (x, y, w, h) in original pixels, all heatmap thresholds pooled."""
    figure: Path | None = None
    """The figure written for this image (None when it failed or none was asked for)."""
    error: str | None = None
    """Why this file failed, naming it (None when it was processed); a failed file has no probabilities."""

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "error": self.error,
            "original_size": list(self.original_size),
            "probabilities": self.probabilities,
            "boxes": {k: np.asarray(v).round(1).tolist() for k, v in self.boxes.items()},
            "figure": str(self.figure) if self.figure else None,
        }


def collect_image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the image files (by suffix, or DICOM by content) inside named folders.

    A named path that does not exist stays in the list (its prediction then fails with its own message,
    and the other files are still processed), unless nothing at all was found.

    Raises:
        DataError: when no image file exists among ``inputs`` (every path missing, or empty folders).
    """
    inputs = [Path(item) for item in inputs]
    paths: list[Path] = []
    found = 0
    for item in inputs:
        if item.is_dir():
            for child in sorted(p for p in item.rglob("*") if p.is_file()):
                if child.suffix.lower() in IMAGE_SUFFIXES or (child.suffix == "" and is_dicom(child)):
                    paths.append(child)
                    found += 1
        else:
            paths.append(item)
            found += item.exists()
    if not found:
        missing = [str(item) for item in inputs if not item.exists()]
        folders = [str(item) for item in inputs if item.is_dir()]
        problems = [f"{', '.join(missing)}: no such file or folder"] if missing else []
        if folders:
            problems.append(f"no image files (PNG, JPEG, DICOM) found in {', '.join(folders)}")
        raise DataError("; ".join(problems) or "no input images given")
    return paths


def preprocess(image: np.ndarray, image_size: int, normalize: str = "imagenet") -> torch.Tensor:
    """A decoded uint8 grayscale image -> ``(3, S, S)`` float tensor, exactly as training saw images."""
    resized = torch.from_numpy(np.array(resize_image(image, image_size), copy=True)).unsqueeze(0)
    return normalize_images(resized, normalize)


class Predictor:
    """A trained model plus its preprocessing; ``predict(paths)`` yields one :class:`ImagePrediction` each.

    Args:
        model: a thoracic model (``forward(x, return_maps=...) -> ModelOutput``), put in eval mode here.
        image_size: input side the model was trained at (the run's ``data.image_size``).
        normalize: the run's ``data.normalize``.
        method: a heatmap method name (``native``, ``gradcam``, ``gradcam-layer3``, ``gradcam-layer2``,
            ``ig``).
        threshold: classes whose probability reaches this get a heatmap, boxes and a figure panel.
        heatmap_thresholds: 0-255 thresholds for box extraction (Wang et al.: 60 and 180).
        device: where the forward pass runs.
        registration: ``geometric`` or ``legacy`` (:mod:`thoracic.geometry`).
    """

    def __init__(self, model: torch.nn.Module, image_size: int, normalize: str = "imagenet",
                 method: str = "native", threshold: float = 0.5,
                 heatmap_thresholds: Sequence[float] = HEATMAP_THRESHOLDS, device: str = "cpu",
                 registration: str = "geometric") -> None:
        if method not in HEATMAP_METHOD_NAMES:
            raise ThoracicError(f"--method must be one of {list(HEATMAP_METHOD_NAMES)}, got {method!r}")
        if registration not in REGISTRATIONS:
            raise ThoracicError(f"--registration must be one of {list(REGISTRATIONS)}, got {registration!r}")
        self.model = model.to(device).eval()
        self.image_size = int(image_size)
        self.normalize = normalize
        self.method = method
        self.threshold = float(threshold)
        self.heatmap_thresholds = tuple(heatmap_thresholds)
        self.device = device
        self.registration: Registration = make_registration(
            registration, create_heatmap_method(method, self.model).grid(self.image_size))

    def _heatmaps(self, batch: torch.Tensor, class_indices: Sequence[int]) -> dict[int, np.ndarray]:
        if not class_indices:
            return {}
        with create_heatmap_method(self.method, self.model) as method:
            if self.method == "native":
                maps = method.all_classes(batch)[0]
                return {k: maps[k].detach().cpu().numpy() for k in class_indices}
            return {k: method(batch, k)[0].detach().cpu().numpy() for k in class_indices}

    def predict_image(self, image: np.ndarray, path: Path) -> ImagePrediction:
        """Probabilities, heatmaps and boxes for a decoded uint8 grayscale ``image`` read from ``path``."""
        result = ImagePrediction(path=path, original_size=(int(image.shape[0]), int(image.shape[1])))
        batch = preprocess(image, self.image_size, self.normalize).unsqueeze(0).to(self.device)
        with torch.no_grad():
            logits = self.model(batch).logits
        probabilities = torch.sigmoid(logits.float())[0].cpu().numpy()
        result.probabilities = {name: float(p) for name, p in zip(CLASS_NAMES, probabilities)}
        shown = [k for k, p in enumerate(probabilities) if p >= self.threshold]
        for k, heatmap in self._heatmaps(batch, shown).items():
            name = CLASS_NAMES[k]
            result.heatmaps[name] = heatmap
            extracted = boxes_from_heatmaps(heatmap, self.heatmap_thresholds, result.original_size,
                                            cell_centres=self.registration(heatmap.shape, result.original_size))
            boxes = [e.boxes for e in extracted.values() if len(e)]
            result.boxes[name] = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        return result

    def predict_one(self, path: Path, figure: Path | None = None) -> ImagePrediction:
        """Read ``path``, predict, and (with ``figure``) save the figure there.

        Any :class:`~thoracic.errors.ThoracicError` or ``ValueError`` on the way (unreadable, truncated or
        unsupported file, box extraction, the figure) fails this file only: the result carries ``error``
        and no probabilities.
        """
        path = Path(path)
        try:
            image = read_image(path)
            result = self.predict_image(image, path)
            if figure is not None:
                result.figure = prediction_figure(result, image, figure, registration=self.registration)
        except (ThoracicError, ValueError) as exc:
            message = str(exc)
            return ImagePrediction(path=path, error=message if str(path) in message else f"{path}: {message}")
        return result


def prediction_figure(result: ImagePrediction, image: np.ndarray, path: Path, max_panels: int = 6,
                      registration: Registration | None = None) -> Path:
    """The image, then one overlay per shown class (heatmap placed by ``registration``, boxes in green),
    titled with its probability."""
    from thoracic.evaluation.figures import OverlayPanel, OverlayRow, overlay_figure, save_figure

    names = sorted(result.heatmaps, key=lambda n: -result.probabilities[n])[:max_panels]
    panels = [OverlayPanel(f"{n} p={result.probabilities[n]:.2f}", result.heatmaps[n], result.boxes[n],
                           registration) for n in names]
    top = max(result.probabilities, key=result.probabilities.get)
    label = (f"{result.path.name}" if panels
             else f"{result.path.name}\nno class >= threshold (top: {top} {result.probabilities[top]:.2f})")
    row = OverlayRow(image=image, label=label, ground_truth_boxes=np.zeros((0, 4)), panels=panels)
    return save_figure(overlay_figure([row], legend="predicted boxes: green"), path)


#: Column labels of the probability table: readable, unique, at most 8 characters (a 6-character cut
#: made Pneumonia and Pneumothorax both "Pneumo").
CLASS_ABBREVIATIONS: dict[str, str] = {
    "Atelectasis": "Atelect", "Cardiomegaly": "Cardiom", "Effusion": "Effusion", "Infiltration": "Infiltr",
    "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumon", "Pneumothorax": "Pneumoth",
    "Consolidation": "Consolid", "Edema": "Edema", "Emphysema": "Emphys", "Fibrosis": "Fibrosis",
    "Pleural_Thickening": "PleurThk", "Hernia": "Hernia",
}


def probability_table(results: Sequence[ImagePrediction]) -> str:
    """Plain-text table: one row per image, one column per class (abbreviated names, see
    :data:`CLASS_ABBREVIATIONS`; ``--json`` has the full ones), a failed file's error on its row."""
    column = max(len(a) for a in CLASS_ABBREVIATIONS.values())
    width = max([len(r.path.name) for r in results] + [5])
    lines = [f"{'image':<{width}} " + " ".join(f"{CLASS_ABBREVIATIONS[n]:>{column}}" for n in CLASS_NAMES)]
    for r in results:
        if r.error:
            lines.append(f"{r.path.name:<{width}} FAILED: {r.error}")
        else:
            lines.append(f"{r.path.name:<{width}} "
                         + " ".join(f"{r.probabilities[n]:{column}.3f}" for n in CLASS_NAMES))
    return "\n".join(lines)


def figure_names(paths: Sequence[Path]) -> list[str]:
    """One figure name per input: its stem, with ``-2``, ``-3`` ... added when stems repeat (``a/x.png``
    and ``b/x.png``, or ``x.png`` and ``x.dcm``), so no figure overwrites another."""
    names: list[str] = []
    used: set[str] = set()
    for path in paths:
        name, k = path.stem, 1
        while name in used:
            k += 1
            name = f"{path.stem}-{k}"
        used.add(name)
        names.append(name)
    return names


def predict_images(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    method: str = "native",
    threshold: float = 0.5,
    device: str = "cpu",
    progress: bool = True,
    registration: str = "geometric",
) -> list[ImagePrediction]:
    """Load a run's model and predict every image; writes a figure per image and ``predictions.json``.

    Args:
        inputs: files and/or folders (see :func:`collect_image_paths`).
        checkpoint: a run folder (its best checkpoint) or a ``.ckpt`` file.
        out_dir: where figures (``<stem>_<method>.png``, see :func:`figure_names`) and ``predictions.json``
            go (default ``predictions/`` in the working folder).

    Returns:
        One result per file, in input order; a file that failed has ``error`` set (the others are still
        processed).

    Raises:
        DataError: when no input image exists at all.
    """
    from tqdm.auto import tqdm

    from thoracic.training.checkpoints import load_run

    paths = collect_image_paths(inputs)
    loaded = load_run(checkpoint, which="best", map_location=device)
    predictor = Predictor(loaded.model, loaded.config.data.image_size, loaded.config.data.normalize,
                          method=method, threshold=threshold, device=device, registration=registration)
    out = Path(out_dir) if out_dir is not None else Path("predictions")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in zip(tqdm(paths, desc="predict", unit="image", disable=not progress), figure_names(paths)):
        results.append(predictor.predict_one(path, figure=out / f"{name}_{method}.png"))
    (out / "predictions.json").write_text(json.dumps(
        {"checkpoint": str(loaded.checkpoint_path), "method": method, "threshold": threshold,
         "registration": predictor.registration.describe(),
         "class_names": list(CLASS_NAMES), "images": [r.to_dict() for r in results]}, indent=1))
    return results

"""Prediction on new images: probabilities, heatmaps and boxes for PNG / JPEG / DICOM files.

Every image goes through exactly the preprocessing of training: decoded to 8-bit grayscale
(:func:`thoracic.data.images.read_image`: any PIL mode; DICOM with MONOCHROME1 inverted and the file's
window or min-max), resized with antialiasing to the run's ``data.image_size``
(:func:`thoracic.data.images.resize_image`, the function the cache uses) and normalised like the
training batches (:func:`thoracic.data.dataset.normalize_images`). Heatmaps are the model's native
maps or Grad-CAM; boxes come from :func:`thoracic.evaluation.localization.boxes_from_heatmaps` at the
original image size, as in localization.

A file that cannot be read is reported with its own message; the others are still processed.
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
    """class -> heatmap in [0, 1] at the model's native resolution (classes above the threshold)."""
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    """class -> (K, 4) boxes (x, y, w, h) in original pixels, all heatmap thresholds pooled."""
    figure: Path | None = None
    error: str | None = None

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

    Raises:
        DataError: when a named path does not exist, or nothing at all was found.
    """
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for child in sorted(p for p in item.rglob("*") if p.is_file()):
                if child.suffix.lower() in IMAGE_SUFFIXES or (child.suffix == "" and is_dicom(child)):
                    paths.append(child)
        elif item.exists():
            paths.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not paths:
        raise DataError(f"no image files (PNG, JPEG, DICOM) found in {', '.join(map(str, inputs))}")
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
        method: ``native`` (the model's own maps) or ``gradcam``.
        threshold: classes whose probability reaches this get a heatmap, boxes and a figure panel.
        heatmap_thresholds: 0-255 thresholds for box extraction (Wang et al.: 60 and 180).
        device: where the forward pass runs.
    """

    def __init__(self, model: torch.nn.Module, image_size: int, normalize: str = "imagenet",
                 method: str = "native", threshold: float = 0.5,
                 heatmap_thresholds: Sequence[float] = HEATMAP_THRESHOLDS, device: str = "cpu") -> None:
        if method not in ("native", "gradcam"):
            raise ThoracicError(f"--method must be native or gradcam, got {method!r}")
        self.model = model.to(device).eval()
        self.image_size = int(image_size)
        self.normalize = normalize
        self.method = method
        self.threshold = float(threshold)
        self.heatmap_thresholds = tuple(heatmap_thresholds)
        self.device = device

    def _heatmaps(self, batch: torch.Tensor, class_indices: Sequence[int]) -> dict[int, np.ndarray]:
        from thoracic.heatmaps import GradCAM, NativeHeatmap

        if not class_indices:
            return {}
        method_class = NativeHeatmap if self.method == "native" else GradCAM
        with method_class(self.model) as method:
            if self.method == "native":
                maps = method.all_classes(batch)[0]
                return {k: maps[k].detach().cpu().numpy() for k in class_indices}
            return {k: method(batch, k)[0].detach().cpu().numpy() for k in class_indices}

    def predict_one(self, path: Path) -> ImagePrediction:
        """Probabilities, heatmaps and boxes for one file; a bad file gives a result with ``error`` set."""
        result = ImagePrediction(path=path)
        try:
            image = read_image(path)
        except DataError as exc:
            result.error = str(exc)
            return result
        result.original_size = (int(image.shape[0]), int(image.shape[1]))
        batch = preprocess(image, self.image_size, self.normalize).unsqueeze(0).to(self.device)
        with torch.no_grad():
            logits = self.model(batch).logits
        probabilities = torch.sigmoid(logits.float())[0].cpu().numpy()
        result.probabilities = {name: float(p) for name, p in zip(CLASS_NAMES, probabilities)}
        shown = [k for k, p in enumerate(probabilities) if p >= self.threshold]
        for k, heatmap in self._heatmaps(batch, shown).items():
            name = CLASS_NAMES[k]
            result.heatmaps[name] = heatmap
            extracted = boxes_from_heatmaps(heatmap, self.heatmap_thresholds, result.original_size)
            boxes = [e.boxes for e in extracted.values() if len(e)]
            result.boxes[name] = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        result.image = image  # type: ignore[attr-defined]  # kept for the figure, dropped after it
        return result


def prediction_figure(result: ImagePrediction, image: np.ndarray, path: Path, max_panels: int = 6) -> Path:
    """The image, then one overlay per shown class (heatmap, boxes in green), titled with its probability."""
    from thoracic.evaluation.figures import OverlayPanel, OverlayRow, overlay_figure, save_figure

    names = sorted(result.heatmaps, key=lambda n: -result.probabilities[n])[:max_panels]
    panels = [OverlayPanel(f"{n} p={result.probabilities[n]:.2f}", result.heatmaps[n], result.boxes[n])
              for n in names]
    top = max(result.probabilities, key=result.probabilities.get)
    label = (f"{result.path.name}" if panels
             else f"{result.path.name}\nno class >= threshold (top: {top} {result.probabilities[top]:.2f})")
    row = OverlayRow(image=image, label=label, ground_truth_boxes=np.zeros((0, 4)), panels=panels)
    return save_figure(overlay_figure([row]), path)


def probability_table(results: Sequence[ImagePrediction]) -> str:
    """Plain-text table: one row per image, one column per class (probabilities), errors on their own line."""
    short = [n[:6] for n in CLASS_NAMES]
    width = max([len(r.path.name) for r in results] + [5])
    lines = [f"{'image':<{width}} " + " ".join(f"{s:>6}" for s in short)]
    for r in results:
        if r.error:
            lines.append(f"{r.path.name:<{width}} FAILED: {r.error}")
        else:
            lines.append(f"{r.path.name:<{width}} " + " ".join(f"{r.probabilities[n]:6.3f}" for n in CLASS_NAMES))
    return "\n".join(lines)


def predict_images(
    inputs: Sequence[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
    method: str = "native",
    threshold: float = 0.5,
    device: str = "cpu",
    progress: bool = True,
) -> list[ImagePrediction]:
    """Load a run's model and predict every image; writes a figure per image and ``predictions.json``.

    Args:
        inputs: files and/or folders.
        checkpoint: a run folder (its best checkpoint) or a ``.ckpt`` file.
        out_dir: where figures and ``predictions.json`` go (default ``predictions/`` in the working folder).
    """
    from tqdm.auto import tqdm

    from thoracic.training.checkpoints import load_run

    paths = collect_image_paths(inputs)
    loaded = load_run(checkpoint, which="best", map_location=device)
    predictor = Predictor(loaded.model, loaded.config.data.image_size, loaded.config.data.normalize,
                          method=method, threshold=threshold, device=device)
    out = Path(out_dir) if out_dir is not None else Path("predictions")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path in tqdm(paths, desc="predict", unit="image", disable=not progress):
        result = predictor.predict_one(path)
        image = getattr(result, "image", None)
        if image is not None:
            result.figure = prediction_figure(result, image, out / f"{path.stem}_{method}.png")
            del result.image  # type: ignore[attr-defined]
        results.append(result)
    (out / "predictions.json").write_text(json.dumps(
        {"checkpoint": str(loaded.checkpoint_path), "method": method, "threshold": threshold,
         "class_names": list(CLASS_NAMES), "images": [r.to_dict() for r in results]}, indent=1))
    return results

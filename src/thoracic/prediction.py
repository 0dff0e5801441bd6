"""Prediction on new images: probabilities, heatmaps and boxes for PNG / JPEG / DICOM files.

Every image goes through exactly the preprocessing of training: decoded to 8-bit grayscale
(:func:`thoracic.data.images.read_image`: any PIL mode; DICOM with MONOCHROME1 inverted and the file's
window or min-max), resized with antialiasing to the model's input size
(:func:`thoracic.data.images.resize_image`, the function the cache uses) and normalised like the
training batches (:func:`thoracic.data.transforms.normalize_images`), both read from the model's
:class:`~thoracic.spec.ModelSpec` (:meth:`Predictor.from_spec`), whose class names label the outputs.
Heatmaps are the model's native maps, Grad-CAM or Integrated Gradients
(:func:`thoracic.heatmaps.create_heatmap_method`); boxes come from
:func:`thoracic.heatmaps.boxes.boxes_from_heatmaps` at the original image size with the heatmap cells
registered as in localization (:class:`thoracic.geometry.Registration`: geometric by default).

Decision thresholds: by default each class uses the run's operating point
(``<run>/evaluation/operating_points.json``, chosen on the validation split by ``thoracic evaluate``);
``threshold=P`` applies one value to every class; a run without the file falls back to 0.5 and says so.
Classes at or above their threshold get a heatmap and boxes. Boxes carry the heatmap threshold they
come from (60 or 180) and a score (the peak of the normalised heatmap inside the region); a box that
covers nearly the whole image is flagged (``whole_image``): a threshold that keeps almost every pixel
draws a frame, not a finding.

Figures write each probability beside its threshold with the digits that show its side
(``p=0.4996 < 0.5000``) and name the classes above threshold they leave out; the probability table marks
values at or above their threshold with ``*``. :func:`prediction_warnings` says when the thresholds or the
temperature applied rest on few validation positives, or the temperature sits at its bound.

A file that cannot be processed (missing, not an image, truncated, unsupported DICOM, or any
:class:`~thoracic.errors.ThoracicError` / ``ValueError`` later on) fails with its own message; the
others are still processed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thoracic.constants import METHOD_LABELS
from thoracic.data.transforms import normalize_images
from thoracic.data.images import is_dicom, read_image, resize_image
from thoracic.errors import DataError, ThoracicError
from thoracic.evaluation.formatting import DECISION_DIGITS, format_decision
from thoracic.evaluation.figures import covers_whole_image
from thoracic.evaluation.predictions import load_predictions
from thoracic.evaluation.sample_size import fitted_on_few_warnings, temperature_warnings
from thoracic.evaluation.operating_points import (
    DEFAULT_THRESHOLD,
    OPERATING_POINTS_FILE,
    check_operating_points_checkpoint,
    load_operating_points,
)
from thoracic.geometry import REGISTRATIONS, FeatureGrid, Registration, make_registration
from thoracic.heatmaps import HEATMAP_METHOD_NAMES, create_heatmap_method
from thoracic.evaluation.figures import OverlayPanel, OverlayRow, box_legend_handles, overlay_figure
from thoracic.evaluation.figures import save_figure
from thoracic.heatmaps.boxes import HEATMAP_THRESHOLDS, boxes_from_heatmaps
from thoracic.metrics import label_counts
from thoracic.safety import listed_outputs
from thoracic.spec import ModelSpec, legacy_class_names

#: File name endings taken from a folder (any file named explicitly is tried whatever its name).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class PredictedBox:
    """One box of one class: ``x, y, w, h`` in original pixels, the heatmap threshold (0-255) it came
    from, its score (peak normalised heat in the region, [0, 1]) and whether it covers at least
    :data:`~thoracic.evaluation.figures.WHOLE_IMAGE_FRACTION` of the image."""

    x: float
    y: float
    w: float
    h: float
    threshold: float
    score: float
    whole_image: bool

    def to_dict(self) -> dict:
        return {"x": round(self.x, 1), "y": round(self.y, 1), "w": round(self.w, 1), "h": round(self.h, 1),
                "threshold": float(self.threshold), "score": round(float(self.score), 4),
                "whole_image": bool(self.whole_image)}


@dataclass(frozen=True)
class Thresholds:
    """The per-class probability thresholds predict applies, and where they come from (said to the user)."""

    values: dict[str, float]
    source: str
    """``operating_points`` (the run's file), ``command line`` (``--threshold``) or ``default``."""
    description: str
    """One sentence for the user, naming the file or the option."""
    checkpoint: dict[str, Any] | None = None
    """The checkpoint the operating points were chosen for, as their file records it."""

    @property
    def uniform(self) -> float | None:
        """The common value when every class has the same threshold, else None."""
        distinct = set(self.values.values())
        return distinct.pop() if len(distinct) == 1 else None


def resolve_thresholds(threshold: float | None, run_dir: Path | None,
                       checkpoint: dict[str, Any] | None = None, *, class_names: Sequence[str]) -> Thresholds:
    """``threshold`` for every class of ``class_names`` (the model's labels) when given; else the run's
    ``evaluation/operating_points.json``; else :data:`~thoracic.evaluation.operating_points.DEFAULT_THRESHOLD`
    for every class.

    ``checkpoint`` (the :func:`~thoracic.training.checkpoints.checkpoint_info` of the weights predicting):
    operating points chosen for other weights are refused
    (:func:`~thoracic.evaluation.operating_points.check_operating_points_checkpoint`).
    """
    if threshold is not None:
        value = float(threshold)
        return Thresholds({n: value for n in class_names}, "command line",
                          f"--threshold {value:g} for every class")
    path = run_dir / "evaluation" / OPERATING_POINTS_FILE if run_dir is not None else None
    if path is not None and path.is_file():
        points = load_operating_points(path, class_names)
        note = check_operating_points_checkpoint(points, path, checkpoint) if checkpoint is not None else ""
        criterion = {"youden": "Youden's J", "f1": "F1"}.get(points["method"], points["method"])
        return Thresholds(points["thresholds"], "operating_points",
                          f"per-class thresholds of the run ({criterion} on the {points['split']} split, {path})"
                          + (f"; caution: {note}" if note else ""),
                          checkpoint=points.get("checkpoint"))
    where = f"{run_dir}/evaluation" if run_dir is not None else "beside the checkpoint"
    return Thresholds({n: DEFAULT_THRESHOLD for n in class_names}, "default",
                      f"{DEFAULT_THRESHOLD:g} for every class: no {OPERATING_POINTS_FILE} in {where} "
                      "(`thoracic evaluate RUN` chooses one threshold per class)")



def exported_thresholds(threshold: float | None, metadata: dict, path: str | Path,
                        class_names: Sequence[str]) -> Thresholds:
    """:func:`resolve_thresholds` for an exported model of labels ``class_names`` (its spec's): ``--threshold``,
    else the operating points stored in its metadata (``operating_points``, the run's ``operating_points.json``
    at export time), else :data:`~thoracic.evaluation.operating_points.DEFAULT_THRESHOLD`."""
    if threshold is not None:
        return resolve_thresholds(threshold, None, class_names=class_names)
    points = metadata.get("operating_points")
    if isinstance(points, dict) and isinstance(points.get("thresholds"), dict):
        given = points["thresholds"]
        values = {}
        for name in class_names:
            value = given.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise DataError(f"{path}: metadata operating_points.thresholds[{name!r}] is {value!r}; "
                                "expected a probability in [0, 1]")
            values[name] = float(value)
        method = points.get("method", "?")
        criterion = {"youden": "Youden's J", "f1": "F1"}.get(method, method)
        return Thresholds(values, "operating_points",
                          f"per-class thresholds stored in {path} ({criterion} on the {points.get('split', '?')} split)")
    return Thresholds({n: DEFAULT_THRESHOLD for n in class_names}, "default",
                      f"{DEFAULT_THRESHOLD:g} for every class: {path} carries no operating points")


def calibrated_thresholds(thresholds: Thresholds, temperature: np.ndarray) -> Thresholds:
    """Operating points chosen on uncalibrated probabilities, moved onto calibrated ones.

    Temperature scaling is monotonic per class, so the image set a threshold ``t`` selects on
    ``sigmoid(z)`` is the one ``sigmoid(logit(t) / T)`` selects on ``sigmoid(z / T)``.
    """
    values = {}
    for k, name in enumerate(thresholds.values):  # in the order of the model's outputs, as the temperatures
        t = min(max(float(thresholds.values[name]), 1e-12), 1.0 - 1e-12)
        values[name] = float(1.0 / (1.0 + np.exp(-np.log(t / (1.0 - t)) / float(temperature[k]))))
    return Thresholds(values, thresholds.source,
                      thresholds.description + "; mapped onto calibrated probabilities (same decisions)",
                      checkpoint=thresholds.checkpoint)


def validation_positives(run_dir: Path | None, class_names: Sequence[str] | None = None) -> dict[str, int] | None:
    """Positive images per class of the validation split the run's operating points were chosen on
    (``evaluation/predictions_val.csv``, written by ``thoracic evaluate``; ``class_names``: the model's labels,
    default the file's); None when there is none."""
    path = run_dir / "evaluation" / "predictions_val.csv" if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    try:
        predictions = load_predictions(path, class_names)
    except (ThoracicError, ValueError, KeyError):  # a damaged side file only loses the warning
        return None
    # NaN: not labelled
    return {name: int(n) for name, n in zip(predictions.class_names, label_counts(predictions.labels)[0])}


def prediction_warnings(thresholds: Thresholds, calibration: dict | None,
                        positives: dict[str, int] | None = None) -> list[str]:
    """What the user of ``thoracic predict`` must know about small samples behind its decisions
    (:mod:`thoracic.evaluation.sample_size`): operating points chosen on few validation positives
    (``positives``: :func:`validation_positives`, else the calibration's ``n_positive_fitted``), and a
    calibration (``calibration.json`` content, or the export's) whose temperature sits at its bound or was
    fitted on few positives."""
    per_class = (calibration or {}).get("per_class") or {}
    fitted = {name: entry["n_positive_fitted"] for name, entry in per_class.items()
              if isinstance(entry, dict) and entry.get("n_positive_fitted") is not None}
    warnings = []
    names = list(thresholds.values)  # the model's labels, in order
    if thresholds.source == "operating_points" and (positives or fitted):
        warnings += fitted_on_few_warnings(names, positives or fitted, "operating-point thresholds")
    if calibration is not None:
        warnings += temperature_warnings(names, calibration.get("temperature"),
                                         calibration.get("n_images_fitted"))
        warnings += fitted_on_few_warnings(names, fitted, "temperatures")
    return warnings


@dataclass
class ImagePrediction:
    """Result for one file: probabilities per class, and heatmaps/boxes for the classes shown."""

    path: Path
    probabilities: dict[str, float] = field(default_factory=dict)
    original_size: tuple[int, int] = (0, 0)
    """(height, width) of the decoded image."""
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    """class -> heatmap in [0, 1] on the method's grid (classes above the threshold)."""
    boxes: dict[str, list[PredictedBox]] = field(default_factory=dict)
    """class -> its boxes at every heatmap threshold (classes above their threshold)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """class -> the probability threshold applied."""
    figure: Path | None = None
    """The figure written for this image (None when it failed or none was asked for)."""
    error: str | None = None
    """Why this file failed, naming it (None when it was processed); a failed file has no probabilities."""
    threshold_source: str | None = None
    """Where :attr:`thresholds` come from: ``operating_points`` (the run's, or those stored in an export),
    ``command line`` (one value for every class) or ``default`` (set by the run's predictor)."""

    def to_dict(self) -> dict:
        """The image's entry of ``predictions.json`` (boxes rounded to 0.1 pixel, scores to 4 digits)."""
        return {
            "path": str(self.path),
            "error": self.error,
            "original_size": list(self.original_size),
            "probabilities": self.probabilities,
            "above_threshold": [n for n in self.probabilities if n in self.heatmaps],
            "boxes": {k: [b.to_dict() for b in v] for k, v in self.boxes.items()},
            "figure": str(self.figure) if self.figure else None,
        }


def _thoracic_output(path: Path, listed: dict[Path, set[str]]) -> bool:
    """Whether ``path`` is a file thoracic wrote (listed in its folder's output manifest)."""
    folder = path.parent
    if folder not in listed:
        listed[folder] = listed_outputs(folder)
    return path.name in listed[folder]


def collect_image_paths(inputs: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files named directly, plus the image files (by suffix, or DICOM by content) inside named folders.

    A named path that does not exist stays in the list (its prediction then fails with its own message,
    and the other files are still processed), unless nothing at all was found. Files thoracic wrote itself
    (figures of an earlier ``thoracic predict``, listed in their folder's ``thoracic_outputs.json``) are
    never inputs: they are left out, and appended to ``skipped`` when given.

    Raises:
        DataError: when no image file exists among ``inputs`` (every path missing, or empty folders).
    """
    inputs = [Path(item) for item in inputs]
    paths: list[Path] = []
    found = 0
    listed: dict[Path, set[str]] = {}
    left_out: list[Path] = []
    for item in inputs:
        if item.is_dir():
            for child in sorted(p for p in item.rglob("*") if p.is_file()):
                if child.suffix.lower() in IMAGE_SUFFIXES or (child.suffix == "" and is_dicom(child)):
                    if _thoracic_output(child, listed):
                        left_out.append(child)
                        continue
                    paths.append(child)
                    found += 1
        elif item.is_file() and _thoracic_output(item, listed):
            left_out.append(item)
        else:
            paths.append(item)
            found += item.exists()
    if not found:
        missing = [str(item) for item in inputs if not item.exists()]
        folders = [str(item) for item in inputs if item.is_dir()]
        problems = [f"{', '.join(missing)}: no such file or folder"] if missing else []
        if folders:
            problems.append(f"no image files (PNG, JPEG, DICOM) found in {', '.join(folders)}")
        if left_out:
            problems.append(f"{len(left_out)} file(s) left out because thoracic wrote them (e.g. {left_out[0]})")
        raise DataError("; ".join(problems) or "no input images given")
    if skipped is not None:
        skipped.extend(left_out)
    return paths


def preprocess(image: np.ndarray, image_size: int, normalize: str = "imagenet") -> torch.Tensor:
    """A decoded uint8 grayscale image -> ``(3, S, S)`` float tensor, exactly as training saw images."""
    resized = torch.from_numpy(np.array(resize_image(image, image_size), copy=True)).unsqueeze(0)
    return normalize_images(resized, normalize)


class Predictor:
    """A trained model plus its preprocessing; ``predict(paths)`` yields one :class:`ImagePrediction` each.

    Args:
        model: a thoracic model (``forward(x, return_maps=...) -> ModelOutput``), put in eval mode here.
        image_size: input side the model was trained at (its spec's ``image_size``).
        normalize: its spec's ``normalize``.
        method: a heatmap method name (``native``, ``gradcam``, ``gradcam-layer3``, ``gradcam-layer2``,
            ``ig``).
        threshold: classes whose probability reaches their threshold get a heatmap, boxes and a figure
            panel: one value for every class, or ``class -> value``.
        heatmap_thresholds: 0-255 thresholds for box extraction (Wang et al.: 60 and 180).
        device: where the forward pass runs.
        figure_title: first line(s) of every figure's title (method, checkpoint, warnings).
        all_boxes: draw the boxes of every heatmap threshold in figures (lower ones dashed), not only
            those of the highest one.
        temperature: ``(C,)`` temperatures of the run's calibration (probability = sigmoid(logit / T)),
            or None for uncalibrated probabilities.
        registration: ``geometric`` or ``legacy`` (:mod:`thoracic.geometry`).
        grid: where the heatmap cells sit in the model input (:class:`thoracic.geometry.FeatureGrid`);
            None: derived from the model and the method (an exported model passes its stored grid).
        class_names: the labels of the model's outputs, in order; default ChestX-ray14's (a model without
            a spec). :meth:`from_spec` takes them, the input size, the normalisation and the grid from the
            model's :class:`~thoracic.spec.ModelSpec`.
    """

    def __init__(self, model: torch.nn.Module, image_size: int, normalize: str = "imagenet",
                 method: str = "native", threshold: float | dict[str, float] = DEFAULT_THRESHOLD,
                 heatmap_thresholds: Sequence[float] = HEATMAP_THRESHOLDS, device: str = "cpu",
                 figure_title: str = "", all_boxes: bool = False,
                 temperature: np.ndarray | None = None, registration: str = "geometric",
                 grid: FeatureGrid | None = None, class_names: Sequence[str] | None = None) -> None:
        if method not in HEATMAP_METHOD_NAMES:
            raise ThoracicError(f"--method must be one of {list(HEATMAP_METHOD_NAMES)}, got {method!r}")
        if registration not in REGISTRATIONS:
            raise ThoracicError(f"--registration must be one of {list(REGISTRATIONS)}, got {registration!r}")
        self.model = model.to(device).eval()
        self.image_size = int(image_size)
        self.normalize = normalize
        self.method = method
        self.class_names = legacy_class_names(class_names)
        outputs = getattr(model, "num_classes", None)
        if isinstance(outputs, int) and outputs != len(self.class_names):
            raise ThoracicError(f"the model has {outputs} outputs for {len(self.class_names)} class names")
        if isinstance(threshold, dict):
            self.thresholds = {n: float(threshold[n]) for n in self.class_names}
        else:
            self.thresholds = {n: float(threshold) for n in self.class_names}
        self.heatmap_thresholds = tuple(heatmap_thresholds)
        self.device = device
        self.figure_title = figure_title
        self.all_boxes = all_boxes
        self.temperature = None if temperature is None else np.asarray(temperature, dtype=np.float32)
        if grid is None:
            grid = create_heatmap_method(method, self.model).grid(self.image_size)
        self.registration: Registration = make_registration(registration, grid)

    @classmethod
    def from_spec(cls, model: torch.nn.Module, spec: ModelSpec, **options: Any) -> Predictor:
        """A predictor of ``model`` whose input size, normalisation, class names and (native) heatmap grid
        are those of its :class:`~thoracic.spec.ModelSpec`; ``options`` are the other arguments."""
        if options.get("method", "native") == "native" and spec.heatmap_grid is not None:
            options.setdefault("grid", spec.heatmap_grid)
        return cls(model, spec.image_size, spec.normalize, class_names=spec.class_names, **options)

    def _heatmaps(self, batch: torch.Tensor, class_indices: Sequence[int]) -> dict[int, np.ndarray]:
        if not class_indices:
            return {}
        with create_heatmap_method(self.method, self.model) as method:
            maps = method.selected(batch, [(0, k) for k in class_indices])
            return {k: maps[(0, k)].detach().cpu().numpy() for k in class_indices}

    def predict_image(self, image: np.ndarray, path: Path) -> ImagePrediction:
        """Probabilities, heatmaps and boxes for a decoded uint8 grayscale ``image`` read from ``path``."""
        result = ImagePrediction(path=path, original_size=(int(image.shape[0]), int(image.shape[1])),
                                 thresholds=dict(self.thresholds))
        batch = preprocess(image, self.image_size, self.normalize).unsqueeze(0).to(self.device)
        with torch.no_grad():
            logits = self.model(batch).logits
        if self.temperature is not None:
            logits = logits.float() / torch.as_tensor(self.temperature, device=logits.device)
        probabilities = torch.sigmoid(logits.float())[0].cpu().numpy()
        names = self.class_names
        result.probabilities = {name: float(p) for name, p in zip(names, probabilities)}
        shown = [k for k, p in enumerate(probabilities) if p >= self.thresholds[names[k]]]
        for k, heatmap in self._heatmaps(batch, shown).items():
            name = names[k]
            result.heatmaps[name] = heatmap
            extracted = boxes_from_heatmaps(heatmap, self.heatmap_thresholds, result.original_size,
                                            cell_centres=self.registration(heatmap.shape, result.original_size))
            result.boxes[name] = [
                PredictedBox(*(float(v) for v in box), threshold=float(t), score=float(score), whole_image=bool(whole))
                for t, found in extracted.items()
                for box, score, whole in zip(found.boxes, found.scores,
                                             covers_whole_image(found.boxes, result.original_size))]
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
                result.figure = prediction_figure(result, image, figure, method=self.method,
                                                  title=self.figure_title, all_boxes=self.all_boxes,
                                                  registration=self.registration)
        except (ThoracicError, ValueError) as exc:
            message = str(exc)
            return ImagePrediction(path=path, error=message if str(path) in message else f"{path}: {message}")
        return result


def prediction_figure(result: ImagePrediction, image: np.ndarray, path: Path, max_panels: int = 6,
                      method: str = "native", title: str = "", all_boxes: bool = False,
                      registration: Registration | None = None) -> Path:
    """Save :func:`build_prediction_figure` as a PNG at ``path``."""
    return save_figure(build_prediction_figure(result, image, max_panels, method, title, all_boxes, registration),
                       path)


def build_prediction_figure(result: ImagePrediction, image: np.ndarray, max_panels: int = 6,
                            method: str = "native", title: str = "", all_boxes: bool = False,
                            registration: Registration | None = None) -> Any:
    """The image, then one overlay per class above its threshold (the ``max_panels`` most probable; the
    image's caption names those left out): heatmap with a colour bar, boxes of the highest heatmap
    threshold solid (and, with ``all_boxes``, lower ones dashed), boxes covering the whole image in orange,
    a legend; titled with ``title`` (method, checkpoint, warnings); ``registration`` places each heatmap's
    cells in the image. Every probability is written beside its threshold with the digits that show its side
    (:func:`~thoracic.evaluation.formatting.format_decision`). Returns a matplotlib ``Figure``."""
    top_threshold = max((b.threshold for boxes in result.boxes.values() for b in boxes), default=None)
    above = sorted(result.heatmaps, key=lambda n: -result.probabilities[n])
    names = above[:max_panels]
    panels = []
    for n in names:
        boxes = [b for b in result.boxes.get(n, []) if all_boxes or b.threshold == top_threshold]
        panels.append(OverlayPanel(
            f"{n}\n{format_decision(result.probabilities[n], result.thresholds.get(n, float('nan')))}",
            result.heatmaps[n], np.array([[b.x, b.y, b.w, b.h] for b in boxes]).reshape(-1, 4),
            np.array([b.threshold for b in boxes]), registration=registration))
    top = max(result.probabilities, key=result.probabilities.get)
    label = (f"{result.path.name}" if panels
             else f"{result.path.name}\nno class at or above its threshold\n(top: {top} "
                  f"{format_decision(result.probabilities[top], result.thresholds.get(top, float('nan')))})")
    if len(above) > len(names):
        left_out = above[len(names):]
        label += (f"\n{len(above)} classes at or above their threshold, {len(names)} shown; "
                  f"{len(left_out)} left out: {', '.join(left_out)}")
    row = OverlayRow(image=image, label=label, ground_truth_boxes=np.zeros((0, 4)), panels=panels)
    heatmap_thresholds = sorted({b.threshold for boxes in result.boxes.values() for b in boxes})
    low = [t for t in heatmap_thresholds if t != top_threshold]
    legend = box_legend_handles(
        ground_truth=False,
        solid_label=f"box: heatmap > {top_threshold:g}" if top_threshold is not None else "box",
        dashed_label=f"box: heatmap > {', '.join(f'{t:g}' for t in low)}" if all_boxes and low else None,
    ) if panels else ""
    method_label = METHOD_LABELS.get(method, method)
    return overlay_figure([row], legend=legend, title=title or f"{method_label} heatmaps",
                          colorbar=bool(panels), panel_size=2.8)


#: Column labels of the probability table: readable, unique, at most 8 characters (a 6-character cut
#: made Pneumonia and Pneumothorax both "Pneumo").
CLASS_ABBREVIATIONS: dict[str, str] = {
    "Atelectasis": "Atelect", "Cardiomegaly": "Cardiom", "Effusion": "Effusion", "Infiltration": "Infiltr",
    "Mass": "Mass", "Nodule": "Nodule", "Pneumonia": "Pneumon", "Pneumothorax": "Pneumoth",
    "Consolidation": "Consolid", "Edema": "Edema", "Emphysema": "Emphys", "Fibrosis": "Fibrosis",
    "Pleural_Thickening": "PleurThk", "Hernia": "Hernia",
}


#: The longest column label of the probability table.
ABBREVIATION_WIDTH = 8


def abbreviate_class_names(names: Sequence[str], width: int = ABBREVIATION_WIDTH) -> dict[str, str]:
    """Unique column labels of at most ``width`` characters: :data:`CLASS_ABBREVIATIONS` for ChestX-ray14's
    names; others keep the start of each word (``Pleural Effusion`` -> ``PleuEffu``), a number added where
    two would read the same."""
    labels: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        label = CLASS_ABBREVIATIONS.get(name)
        if label is None:
            words = [w for w in "".join(c if c.isalnum() else " " for c in str(name)).split() if w] or ["class"]
            share = max(1, width // len(words))
            label = "".join(w[:1].upper() + w[1:share] for w in words)[:width] if len(words) > 1 else words[0][:width]
        base, k = label, 1
        while label in used:
            k += 1
            label = f"{base[:width - len(str(k))]}{k}"
        used.add(label)
        labels[name] = label
    return labels


def probability_table(results: Sequence[ImagePrediction]) -> str:
    """Plain-text table: one row per image, one column per class of the model (abbreviated names, see
    :func:`abbreviate_class_names`; ``--json`` has the full ones), a failed file's error on its row.

    Probabilities have :data:`~thoracic.evaluation.formatting.DECISION_DIGITS` digits; one at or above
    its class's threshold is followed by ``*`` (so the side of the threshold shows even where the digits
    round to it), explained under the table."""
    names = list(next((r.probabilities for r in results if not r.error and r.probabilities), {}))
    labels = abbreviate_class_names(names)
    column = max([len(a) for a in labels.values()] + [ABBREVIATION_WIDTH])
    width = max([len(r.path.name) for r in results] + [5])
    lines = [f"{'image':<{width}} " + " ".join(f"{labels[n]:>{column}}" for n in names)]
    marked = False
    for r in results:
        if r.error:
            lines.append(f"{r.path.name:<{width}} FAILED: {r.error}")
            continue
        cells = []
        for n in names:
            p, threshold = r.probabilities[n], r.thresholds.get(n)
            mark = "*" if threshold is not None and p >= threshold else " "
            marked |= threshold is not None
            cells.append(f"{p:{column - 1}.{DECISION_DIGITS}f}{mark}")
        lines.append(f"{r.path.name:<{width}} " + " ".join(cells))
    if marked:
        lines.append("* at or above the class's threshold (predictions.json has every threshold)")
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




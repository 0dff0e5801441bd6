"""``thoracic predict``: a run's (or an exported file's) model on new images, figures and ``predictions.json``.

The command only parses arguments. What one image goes through (preprocessing, thresholds, heatmaps,
boxes, figures) is :mod:`thoracic.prediction`; an exported file runs through :mod:`thoracic.runtime`
without Lightning or the model code (this module imports :mod:`thoracic.training` only for a checkpoint).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from thoracic.constants import CHECKPOINT_NAMES, METHOD_LABELS, MODEL_LABELS
from thoracic.deprecation import deprecation_message, renamed_keywords
from thoracic.errors import DataError, OutputPathError, ThoracicError
from thoracic.evaluation.calibration import calibration_for_run, calibration_from_dict
from thoracic.evaluation.figures import WHOLE_IMAGE_FRACTION
from thoracic.evaluation.operating_points import DEFAULT_THRESHOLD
from thoracic.prediction import (
    ImagePrediction,
    Predictor,
    Thresholds,
    calibrated_thresholds,
    collect_image_paths,
    exported_thresholds,
    figure_names,
    prediction_warnings,
    resolve_thresholds,
    validation_positives,
)
from thoracic.io import write_text_atomic
from thoracic.provenance import SHORT_HASH, checkpoint_source, file_sha256
from thoracic.runtime import ExportedModule, load_exported, resolve_device
from thoracic.safety import OUTPUT_MANIFEST, OutputSource, is_within, output_folder
from thoracic.spec import ModelSpec

#: The file of :func:`predict_images` beside its figures.
PREDICTIONS_FILE = "predictions.json"


def exported_predictor(path: str | Path, method: str = "native", threshold: float | dict[str, float] = 0.5,
                       device: str = "cpu", calibrate: bool = True, registration: str = "geometric"
                       ) -> tuple[Any, str, dict | None]:
    """A :class:`~thoracic.prediction.Predictor` over an exported file (:func:`thoracic.runtime.load_exported`),
    set up from its :class:`~thoracic.spec.ModelSpec` (class names, input size, normalisation, heatmap grid).

    Returns ``(predictor, calibration message, calibration dict or None)``: the metadata's calibration
    (temperature scaling fitted on the run's validation split) is applied unless ``calibrate`` is False.

    Raises:
        ThoracicError: ``method`` other than ``native`` (Grad-CAM needs the PyTorch model: use
            the run), or an unreadable file.
    """
    if method != "native":
        raise ThoracicError(f"--method {method}: an exported model carries its native class maps only; "
                            "Grad-CAM needs the PyTorch model (give the run folder or its .ckpt as RUN)")
    exported = load_exported(path, device)
    spec = exported.spec
    info = exported.metadata.get("calibration")
    temperature = None
    if info and calibrate:
        calibration = calibration_from_dict(info, f"{path} metadata 'calibration'", spec.class_names)
        temperature = calibration.temperature
        message = f"applied {calibration.describe()} stored in {path}"
    elif info:
        message = "calibration stored in the export not applied (--no-calibration): uncalibrated probabilities"
    else:
        message = f"no calibration in {path}: uncalibrated probabilities"
    grid = spec.heatmap_grid
    if grid is None:
        raise ThoracicError(f"{path}: its metadata holds no heatmap grid ('heatmap_geometry'); export the run "
                            "again with thoracic export")
    predictor = Predictor.from_spec(ExportedModule(exported), spec, method=method, threshold=threshold,
                                    device=device, temperature=temperature, registration=registration, grid=grid)
    return predictor, message, info if temperature is not None else None


@dataclass
class RunPredictor:
    """What ``thoracic predict`` does to one image, set up once for a run, a checkpoint or an exported model
    (:func:`open_predictor`): the :class:`~thoracic.prediction.Predictor` with the model's spec, the
    per-class thresholds and where they come from, the calibration applied, and the run-level fields of
    ``predictions.json``.

    ``predict(image)`` takes a file (PNG, JPEG, DICOM) or a decoded uint8 grayscale array and returns the
    :class:`~thoracic.prediction.ImagePrediction` the command computes for it (the same numbers).
    """

    predictor: Predictor
    spec: ModelSpec
    thresholds: Thresholds
    calibration: dict | None
    """The calibration applied (``calibration.json``'s content, or the export's), None when none is."""
    calibration_note: str
    provenance: dict | None
    """:func:`~thoracic.training.checkpoints.checkpoint_info` of the weights (an export: as it recorded them)."""
    source: dict[str, Any]
    """``checkpoint`` (and, for an export, ``model``): where the weights come from, as predictions.json names it."""
    title: str
    """The first line(s) of every figure."""
    warnings: list[str]
    """What the user must know (small samples behind the thresholds or the temperature; phantom data)."""
    phantom_warning: str | None
    run: Path
    exported: bool

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's labels, in the order of its outputs (its spec's)."""
        return self.spec.class_names

    def predict(self, image: str | Path | np.ndarray, figure: str | Path | None = None,
                name: str | None = None) -> ImagePrediction:
        """Probabilities (calibrated when the run has a calibration), thresholds, heatmaps and boxes of one
        image: a file (read as ``thoracic predict`` reads it; a file that fails gives a result with ``error``)
        or a 2-D uint8 grayscale array (``name``: the path its result names, default ``image``).
        ``figure``: also save the figure there (a file only)."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 2:
                raise DataError(f"predict: expected a 2-D uint8 grayscale image (as read_image returns), got "
                                f"{image.dtype} of shape {image.shape}")
            result = self.predictor.predict_image(image, Path(name or "image"))
        else:
            result = self.predictor.predict_one(Path(image), figure=Path(figure) if figure is not None else None)
        result.threshold_source = self.thresholds.source
        return result

    def document(self, results: Sequence[ImagePrediction]) -> dict[str, Any]:
        """``predictions.json``: the run-level fields and one entry per image."""
        provenance = self.provenance
        return {
            **self.source, "checkpoint_sha256": provenance["sha256"] if provenance else None,
            "checkpoint_epoch": provenance["epoch"] if provenance else None,
            "trained_on": provenance["data_kind"] if provenance else None,
            "warning": self.phantom_warning, "method": self.predictor.method, "threshold": self.thresholds.uniform,
            "thresholds": self.thresholds.values, "threshold_source": self.thresholds.source,
            "threshold_description": self.thresholds.description, "thresholds_checkpoint": self.thresholds.checkpoint,
            "calibration": {"applied": self.calibration is not None, "note": self.calibration_note,
                            "temperature": self.calibration.get("temperature") if self.calibration else None},
            "heatmap_thresholds": [float(t) for t in self.predictor.heatmap_thresholds],
            "whole_image_fraction": WHOLE_IMAGE_FRACTION, "checkpoint_info": provenance,
            "registration": self.predictor.registration.describe(),
            "class_names": list(self.class_names), "spec": self.spec.to_dict(),
            "images": [r.to_dict() for r in results]}


def _check_options(run: Path, checkpoint: str | Path, threshold: float | None) -> bool:
    """Whether ``run`` is an exported model, once ``threshold`` and ``checkpoint`` are checked against it.

    Raises:
        DataError: ``threshold`` outside [0, 1] (or NaN), or ``checkpoint`` given with an exported model.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:  # also rejects nan
        raise DataError(f"--threshold: expected a probability between 0 and 1, got {threshold}")
    exported = is_exported_model(run)
    if exported and str(checkpoint) != "best":
        raise DataError(f"--checkpoint {checkpoint}: {run} is an exported model; a checkpoint is chosen in a run "
                        "folder")
    return exported


def open_predictor(run: str | Path, checkpoint: str | Path = "best", method: str = "native",
                   threshold: float | None = None, device: str = "auto", calibrate: bool = True,
                   registration: str = "geometric", all_boxes: bool = False, *,
                   trust_checkpoint: bool = False) -> RunPredictor:
    """Set up what ``thoracic predict RUN`` does to each image (the same keywords as :func:`predict_images`).

    ``run`` is a run folder (``checkpoint``: ``best``, ``last`` or a ``.ckpt`` path), a ``.ckpt`` file, or a
    model written by ``thoracic export`` (``.onnx``, TorchScript ``.pt``; native heatmaps only). The input
    size, normalisation, class names and heatmap grid come from the model's spec; the thresholds from
    ``threshold``, else the run's operating points (an export's stored ones), else 0.5; the run's
    calibration is applied unless ``calibrate`` is False.

    Raises:
        DataError: ``threshold`` outside [0, 1], or ``checkpoint`` given with an exported model.
        RunError: operating points chosen for another checkpoint; every error of loading the model.
    """
    run = Path(run)
    exported = _check_options(run, checkpoint, threshold)
    device = resolve_device(device)
    run_dir = None
    if exported:
        predictor, message, calibration = exported_predictor(run, method, DEFAULT_THRESHOLD, device, calibrate,
                                                             registration)
        metadata = predictor.model.exported.metadata
        spec = predictor.model.exported.spec
        thresholds = exported_thresholds(threshold, metadata, run, spec.class_names)
        provenance = metadata.get("checkpoint_info")
        source = {"model": str(run), "checkpoint": metadata.get("checkpoint")}
        title = f"{METHOD_LABELS.get(method, method)} of exported model {run}"
        if provenance is not None:
            title += f" (checkpoint sha256 {provenance['sha256'][:SHORT_HASH]})"
    else:
        # Imported here, not at the top: an exported model runs without the model code and Lightning
        # (``thoracic predict FILE IMAGE...`` on a machine that has only onnxruntime / TorchScript).
        from thoracic.training.checkpoints import load_run

        loaded = load_run(run, checkpoint=checkpoint, map_location=device, trust_checkpoint=trust_checkpoint)
        spec, provenance, run_dir = loaded.spec, loaded.info, loaded.run_dir  # read from the checkpoint itself
        thresholds = resolve_thresholds(threshold, run_dir, provenance, class_names=spec.class_names)
        stored, message = calibration_for_run(loaded) if calibrate else (None, "calibration not applied")
        calibration = stored.info if stored is not None else None
        config = loaded.config
        title = (f"{METHOD_LABELS.get(method, method)} of {MODEL_LABELS.get(config.model.name, config.model.name)} "
                 f"({config.model.backbone}, {spec.image_size} px); checkpoint {loaded.checkpoint_path} "
                 f"(epoch {provenance['epoch']}, sha256 {provenance['sha256'][:SHORT_HASH]})")
        predictor = Predictor.from_spec(loaded.model, spec, method=method, device=device,
                                        temperature=stored.temperature if stored is not None else None,
                                        registration=registration)
        source = {"checkpoint": str(loaded.checkpoint_path)}
    if predictor.temperature is not None and thresholds.source == "operating_points":
        thresholds = calibrated_thresholds(thresholds, predictor.temperature)
    predictor.thresholds = dict(thresholds.values)
    notes = prediction_warnings(thresholds, calibration, validation_positives(run_dir, spec.class_names))
    phantom = None
    if provenance is not None and provenance.get("data_kind") == "phantom":
        phantom = (f"{source.get('checkpoint') or run} was trained on phantom (synthetic) images "
                   f"({provenance['data_root']}): its probabilities and heatmaps say nothing about real X-rays")
        notes.append(phantom)
        title += "\nWARNING: trained on phantom (synthetic) images, not a clinical prediction"
    predictor.figure_title = title
    predictor.all_boxes = all_boxes
    return RunPredictor(predictor, spec, thresholds, calibration, message, provenance, source, title, notes,
                        phantom, run, exported)


def predict_image(run: str | Path | RunPredictor, image: str | Path | np.ndarray, *,
                  checkpoint: str | Path = "best", method: str = "native", threshold: float | None = None,
                  device: str = "auto", calibrate: bool = True, registration: str = "geometric",
                  trust_checkpoint: bool = False) -> ImagePrediction:
    """What ``thoracic predict RUN IMAGE`` computes for one image, as one call: the same preprocessing (from
    the model's spec), calibration, registration, per-class thresholds (and their source,
    ``threshold_source``) and boxes; the numbers of its ``predictions.json``.

    Args:
        run: a run folder, a ``.ckpt`` file, a model written by ``thoracic export``, or a
            :class:`RunPredictor` (:func:`open_predictor`; set up once for many images).
        image: an image file (PNG, JPEG, DICOM) or a decoded 2-D uint8 grayscale array.
        checkpoint, method, threshold, device, calibrate, registration, trust_checkpoint: as
            :func:`predict_images` (ignored with a :class:`RunPredictor`).

    Returns:
        :class:`~thoracic.prediction.ImagePrediction`: ``probabilities``, ``thresholds``, ``heatmaps`` and
        ``boxes`` of the classes at or above their threshold (``error`` set for a file that failed).
    """
    predictor = run if isinstance(run, RunPredictor) else open_predictor(
        run, checkpoint, method, threshold, device, calibrate, registration, trust_checkpoint=trust_checkpoint)
    return predictor.predict(image)


#: Suffixes of the files ``thoracic export`` writes (ONNX, TorchScript): a model that runs without Lightning.
EXPORTED_SUFFIXES: tuple[str, ...] = (".onnx", ".pt")


class PredictionResults(list):
    """What :func:`predict_images` returns: one :class:`~thoracic.prediction.ImagePrediction` per file (a
    list), plus ``document``, what ``predictions.json`` holds (the run-level fields: source, checkpoint
    hash, thresholds and where they come from, calibration ..., and ``images``), and ``out``."""

    document: dict[str, Any]
    out: Path


def _source(run: Path, exported: bool, provenance: dict | None) -> OutputSource:
    """What the outputs come from: the checkpoint (its SHA-256), or the exported file (its own SHA-256)."""
    if exported:
        digest = file_sha256(run)
        return OutputSource(digest, f"exported model {run} (sha256 {digest[:SHORT_HASH]})",
                            {"kind": "exported model", "path": str(Path(run).resolve()), "sha256": digest})
    assert provenance is not None
    return checkpoint_source(provenance)


def _check_out(out: Path, images: Sequence[str | Path]) -> None:
    """``--out`` must not lie inside an input folder: its figures would be read as X-rays next time."""
    for item in map(Path, images):
        if item.is_dir() and is_within(out, item):
            home = item.resolve()
            raise OutputPathError(
                f"--out {out} lies inside the input folder {home}: its figures would be taken for X-rays by the "
                f"next run over that folder. Choose an --out outside it (e.g. --out "
                f"{home.parent / (home.name + '-predictions')})")


def is_exported_model(path: str | Path) -> bool:
    """Whether ``path`` is a model written by ``thoracic export`` (by its suffix) rather than a run or a
    checkpoint."""
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


@renamed_keywords(inputs="images", out_dir="out")
def predict_images(
    run: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    checkpoint: str | Path = "best",
    out: str | Path | None = None,
    method: str = "native",
    threshold: float | None = None,
    device: str = "auto",
    progress: bool = True,
    all_boxes: bool = False,
    model: str | Path | None = None,
    calibrate: bool = True,
    log: Callable[[str], None] | None = None,
    registration: str = "geometric",
    *,
    trust_checkpoint: bool = False,
) -> PredictionResults:
    """``thoracic predict RUN IMAGE...``: load a run's model and predict every image; writes a figure per
    image and ``predictions.json``.

    Args:
        run: a run folder, a ``.ckpt`` file, or a model written by ``thoracic export`` (``.onnx`` or
            TorchScript ``.pt``; runs without Lightning or the model code; native heatmaps only).
        images: files and/or folders (see :func:`collect_image_paths`; files thoracic wrote itself, listed in
            a ``thoracic_outputs.json``, are skipped).
        checkpoint: which checkpoint of a run folder: ``best`` (default), ``last`` or a ``.ckpt`` path.
        out: where figures (``<stem>_<method>.png``, see :func:`figure_names`) and ``predictions.json``
            go (default ``predictions/`` in the working folder). It must lie outside the input folders; it
            holds the outputs of one checkpoint (or exported model): another one's are refused, this one's
            earlier files are replaced (figures of images not predicted this time are removed), and a file
            thoracic did not write is never replaced (its ``thoracic_outputs.json`` lists what it wrote).
        calibrate: apply the run's temperature scaling (``evaluation/calibration.json`` of the checkpoint, or
            the export's metadata) when there is one.
        threshold: one probability threshold for every class; None (default) uses the run's operating
            points (:func:`resolve_thresholds`), which must have been chosen for this checkpoint.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda:N``.
        all_boxes: figures also show the boxes of the lower heatmap threshold (dashed).
        model: deprecated (an exported model is given as ``run``).
        log: receives the messages for the user (calibration, which thresholds, phantom-data warning, skipped
            files); the CLI prints them on stderr.
        trust_checkpoint: open the checkpoint with full pickle (it may run code).

    The old call ``predict_images(inputs, checkpoint_or_run, out_dir=..., model=...)`` still works for one
    release, with a :class:`FutureWarning`.

    Returns:
        One result per file, in input order (a file that failed has ``error`` set; the others are still
        processed), with the ``predictions.json`` document (:class:`PredictionResults`).

    Raises:
        DataError: when no input image exists at all.
        OutputPathError: ``out`` inside an input folder, holding another model's outputs, or a file there
            that thoracic did not write in the way of one it writes.
        RunError: the run's operating points were chosen for another checkpoint.
    """
    run, images, checkpoint = _predict_call(run, images, checkpoint, model)
    _check_options(run, checkpoint, threshold)  # before any image is looked for
    say = log or (lambda message: None)
    out = Path(out) if out is not None else Path("predictions")
    _check_out(out, images)
    skipped: list[Path] = []
    paths = collect_image_paths(images, skipped=skipped)
    if skipped:
        say(f"skipped {len(skipped)} file(s) that thoracic wrote itself (listed in a {OUTPUT_MANIFEST}), e.g. "
            f"{skipped[0]}")
    opened = open_predictor(run, checkpoint, method, threshold, device, calibrate, registration, all_boxes,
                            trust_checkpoint=trust_checkpoint)
    say(opened.calibration_note)
    say(f"thresholds: {opened.thresholds.description}")
    for note in opened.warnings:
        say(f"warning: {note}")
    names = [f"{name}_{method}.png" for name in figure_names(paths)]
    with output_folder(out, "predict", _source(run, opened.exported, opened.provenance), exclusive=True) as outputs:
        outputs.claim(*names, PREDICTIONS_FILE)
        results = PredictionResults(
            opened.predict(path, figure=out / name)
            for path, name in zip(tqdm(paths, desc="predict", unit="image", disable=not progress), names))
        results.out = out
        results.document = opened.document(results)
        write_text_atomic(out / PREDICTIONS_FILE, json.dumps(results.document, indent=1))
        removed = outputs.remove_previous()
    if removed:
        say(f"removed {len(removed)} earlier file(s) of this model in {out} that this run did not rewrite "
            f"(e.g. {removed[0]}): the folder holds this run's predictions only")
    return results


def _predict_call(run: Any, images: Any, checkpoint: Any, model: Any) -> tuple[Path, list, Any]:
    """``(run, images, checkpoint)`` of a call; the old calls (``predict_images(inputs, run_or_ckpt)``,
    ``checkpoint=RUN``, ``model=FILE``) are turned into the new one with a :class:`FutureWarning`."""
    old_order = run is not None and not isinstance(run, (str, os.PathLike))  # predict_images(inputs, run)
    if old_order or model is not None or run is None:
        warnings.warn(deprecation_message("predict_images(inputs, checkpoint=RUN, model=FILE)",
                                          "predict_images(run, images, checkpoint=best|last|PATH)"),
                      FutureWarning, stacklevel=4)
        if old_order:
            images, source = run, images
        else:
            source = run if run is not None else None if str(checkpoint) in CHECKPOINT_NAMES else checkpoint
        if (source is None) == (model is None):
            raise DataError("give either a run (a run folder or a .ckpt file) or an exported model, not both")
        run, checkpoint = (model if model is not None else source), "best"
    images = [] if images is None else [images] if isinstance(images, (str, os.PathLike)) else list(images)
    return Path(run), images, checkpoint


__all__ = ["EXPORTED_SUFFIXES", "PREDICTIONS_FILE", "PredictionResults", "RunPredictor", "exported_predictor",
           "is_exported_model", "open_predictor", "predict_image", "predict_images"]

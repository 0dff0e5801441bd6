"""Export a trained run to ONNX or TorchScript: a model that runs without thoracic's training stack.

The exported graph takes a normalised image batch ``image`` ``(B, 3, S, S)`` float32 (``B`` dynamic,
``S`` the run's input size) and returns ``logits`` ``(B, C)`` and ``class_maps`` ``(B, C, h, w)`` (``C``: the
run's labels): the raw native class maps (CAM, space-attention class maps or the attention-gated
combined map) before any min-max normalisation, exactly ``ModelOutput.logits`` / ``.class_maps`` of
``model(image, return_maps=True)``.

Everything needed to use the file travels with it, as JSON (:func:`export_metadata`): the model's
:class:`~thoracic.spec.ModelSpec` (``spec``: the class names and order, input size, normalisation, heatmap grid,
registration, dataset, label policy and views, read back by :func:`thoracic.runtime.export_spec`), the class
order and input size again as plain keys, the preprocessing (decoding, resize, normalisation constants), the
post-processing (sigmoid, optional temperature, heatmap min-max and upsampling), the run's operating points
(``operating_points.json``) and calibration (``calibration.json``) when present, and the heatmap geometry (the grid's shape, stride,
the input pixel of cell (0, 0)'s centre and the input size: :meth:`thoracic.geometry.FeatureGrid.to_dict`). It is stored inside the file (ONNX ``metadata_props`` key
:data:`METADATA_KEY`; TorchScript extra file ``thoracic.json``) and beside it as ``<file>.json``.

ONNX goes through ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter; the TorchScript
based one is deprecated). TorchScript is traced (``torch.jit.trace``); PyTorch marks TorchScript as
deprecated, so its warnings are silenced here: the format is offered for libtorch (C++) deployments that
still load it. Every export is checked at once: the file is run (onnxruntime / ``torch.jit.load``) on a
random batch of another size than the traced one, and the largest absolute difference from the PyTorch
model is stored in the metadata.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from thoracic.deprecation import renamed_keywords
from thoracic.errors import RunError
from thoracic import __version__
from thoracic.config import to_dict
from thoracic.evaluation.calibration import calibration_for_run
from thoracic.evaluation.operating_points import OPERATING_POINTS_FILE, check_operating_points_checkpoint
from thoracic.geometry import heatmap_grid
from thoracic.spec import SPEC_KEY, FeatureGrid, normalization_constants
from thoracic.runtime import load_exported
from thoracic.safety import ensure_output_file, output_folder, read_json
from thoracic.provenance import checkpoint_source
from thoracic.training.checkpoints import load_run
from thoracic.io import atomic_path, write_text_atomic

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
SUFFIXES: dict[str, str] = {"onnx": ".onnx", "torchscript": ".pt"}
#: Key of the metadata JSON in an ONNX file's ``metadata_props``; TorchScript holds it as ``thoracic.json``.
METADATA_KEY = "thoracic"
TORCHSCRIPT_METADATA_FILE = "thoracic.json"
INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, str] = ("logits", "class_maps")
#: Largest absolute difference (relative to the outputs' scale, at least 1) tolerated by the export check.
VERIFY_TOLERANCE = 1e-3


class LogitsAndMaps(nn.Module):
    """The exported graph: ``image (B, 3, S, S) -> (logits (B, C), class_maps (B, C, h, w))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(image, return_maps=True)
        return output.logits, output.class_maps


def heatmap_geometry_metadata(model: nn.Module, image_size: int, grid: FeatureGrid | None = None) -> dict[str, Any]:
    """Where the cells of a model's native class map lie on its input (:func:`thoracic.geometry.heatmap_grid`:
    stride and receptive-field centre of cell (0, 0), derived from the network's layers).

    The grid's one JSON form, :meth:`thoracic.geometry.FeatureGrid.to_dict` (``shape``, ``stride``,
    ``offset``, ``input_size``), plus the convention in words: cell ``(i, j)`` is centred at input pixel
    ``(offset[0] + i * stride[0], offset[1] + j * stride[1])`` (pixel centres at integer coordinates);
    prediction from the exported file registers maps by it (:meth:`FeatureGrid.from_dict`, which also reads
    the ``map_size`` / ``cell_centre_offset`` names of files exported by earlier versions). ``grid``: the
    spec's, when known (else traced from ``model``).
    """
    grid = grid if grid is not None else heatmap_grid(model, int(image_size))
    return {
        **grid.to_dict(),
        "convention": "cell (i, j) centre at input pixel (offset + i * stride, offset + j * stride), pixel centres "
                      "at integer coordinates (receptive-field centres traced from the network's layers); maps are "
                      "upsampled linearly between the cell centres (thoracic.geometry)",
    }


def preprocessing_metadata(image_size: int, normalize: str) -> dict[str, Any]:
    """How to turn an image file into the model's input (what ``thoracic predict`` does)."""
    mean, std = (list(values) for values in normalization_constants(normalize))
    return {
        "decode": "8-bit grayscale: PNG/JPEG in any mode converted to L; DICOM with MONOCHROME1 inverted, the file's "
                  "VOI LUT or window centre/width, else min-max to 0-255 (thoracic.data.images.read_image)",
        "resize": f"PIL bilinear (antialiased) resize to {image_size} x {image_size} (thoracic.data.images.resize_image)",
        "channels": "the grayscale image repeated to 3 channels",
        "scale": "x / 255",
        "normalize": normalize, "mean": mean, "std": std,
        "formula": "image[c] = (x / 255 - mean[c]) / std[c], float32, layout (B, 3, S, S)",
    }


def _operating_points(path: Path, checkpoint: dict | None) -> tuple[dict | None, str]:
    """The run's operating points when they were chosen for the exported checkpoint, and a note."""
    if not path.is_file():
        return None, "no operating_points.json in the run: 0.5"
    points = read_json(path, "the run's operating points", RunError)
    if checkpoint is not None and isinstance(points, dict):
        try:
            caution = check_operating_points_checkpoint(points, path, checkpoint, "the export")
        except RunError as exc:
            return None, f"not embedded: {exc}"
        if caution:
            return points, f"thresholds on sigmoid(logits) (uncalibrated probabilities); caution: {caution}"
    return points, "thresholds on sigmoid(logits) (uncalibrated probabilities)"


def export_metadata(loaded: Any, fmt: str, model: nn.Module | None = None) -> dict[str, Any]:
    """The JSON stored with an export of ``loaded`` (a :class:`~thoracic.training.checkpoints.LoadedRun`)."""
    config, spec = loaded.config, loaded.spec
    size = spec.image_size
    base = loaded.run_dir if loaded.run_dir is not None else loaded.checkpoint_path.parent
    evaluation = base / "evaluation"
    operating_points, operating_points_note = _operating_points(evaluation / OPERATING_POINTS_FILE,
                                                                getattr(loaded, "info", None))
    calibration = None
    calibration_note = "no calibration.json in the run"
    if (evaluation / "calibration.json").is_file():
        stored, calibration_note = calibration_for_run(loaded)
        calibration = stored.info if stored is not None else None
    geometry = heatmap_geometry_metadata(model if model is not None else loaded.model, size, spec.heatmap_grid)
    return {
        "format": fmt, "thoracic_version": __version__, "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(loaded.run_dir) if loaded.run_dir is not None else None,
        "checkpoint": str(loaded.checkpoint_path),
        "checkpoint_info": getattr(loaded, "info", None),
        "model": to_dict(config.model),
        SPEC_KEY: spec.to_dict(),
        "class_names": list(spec.class_names),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32"},
        "outputs": {OUTPUT_NAMES[0]: ["batch", spec.num_classes],
                    OUTPUT_NAMES[1]: ["batch", spec.num_classes, *geometry["shape"]]},
        "image_size": size,
        "preprocessing": preprocessing_metadata(size, spec.normalize),
        "postprocessing": {
            "probabilities": "sigmoid(logits), or sigmoid(logits / temperature) with the calibration below",
            "heatmap": "min-max normalise each class map to [0, 1] (a constant map becomes zeros), upsample "
                       "bilinearly (align_corners=False) to the original image size",
        },
        "heatmap_geometry": geometry,
        "operating_points": operating_points,
        "operating_points_note": operating_points_note,
        "calibration": calibration,
        "calibration_note": calibration_note,
    }


@dataclass(frozen=True)
class ExportResult:
    """The exported file, its metadata JSON beside it, and the check against PyTorch."""

    path: Path
    metadata_path: Path
    metadata: dict
    max_abs_diff: dict[str, float]


def default_export_path(loaded: Any, fmt: str) -> Path:
    """``<run>/export/<model name><suffix>`` (``export/`` beside a bare checkpoint file)."""
    base = loaded.run_dir if loaded.run_dir is not None else loaded.checkpoint_path.parent
    return base / "export" / f"{loaded.config.model.name}{SUFFIXES[fmt]}"


def _export_onnx(wrapper: nn.Module, example: torch.Tensor, path: Path, metadata: dict, opset: int | None) -> None:
    import onnx

    import inspect

    kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
    with warnings.catch_warnings():
        # the exporter's own progress messages and torch.export notes are not the user's concern
        warnings.simplefilter("ignore")
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            batch = torch.export.Dim("batch", min=1, max=65536)
            program = torch.onnx.export(wrapper, (example,), input_names=[INPUT_NAME],
                                        output_names=list(OUTPUT_NAMES), dynamic_shapes={"image": {0: batch}},
                                        dynamo=True, verbose=False, **kwargs)
            program.save(str(path))
        else:  # pragma: no cover - PyTorch < 2.5 has only the TorchScript-based exporter
            axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
            torch.onnx.export(wrapper, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=axes, **kwargs)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    proto.doc_string = "thoracic export: image (B, 3, S, S) -> logits (B, C), class_maps (B, C, h, w)"
    onnx.save(proto, str(path))


def _trace(wrapper: nn.Module, example: torch.Tensor) -> Any:
    with warnings.catch_warnings():
        # torch.jit is deprecated upstream (warned on every call) and tracing warns about shape values
        # turned into constants: they are, on purpose, for the fixed input size; the export check
        # runs another batch size to prove the batch dimension stayed dynamic
        warnings.simplefilter("ignore")
        return torch.jit.trace(wrapper, example, check_trace=False)


def _save_torchscript(traced: Any, path: Path, metadata: dict) -> None:
    buffer = io.BytesIO()  # serialised in memory, written by Python: a full disk is an OSError naming the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.save's deprecation warning (see _trace)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})
    with open(path, "wb") as handle:  # the temporary file of atomic_path
        handle.write(buffer.getbuffer())


@renamed_keywords(fmt="format", which="checkpoint")
def export_run(run: str | Path, format: str = "onnx", out: str | Path | None = None,  # noqa: A002 - the CLI's name
               checkpoint: str = "best", opset: int | None = None, verify_batch: int = 3, *,
               trust_checkpoint: bool = False) -> ExportResult:
    """Export the model of a run (or a ``.ckpt`` file) and check the file against PyTorch.

    Args:
        run: run folder or checkpoint file.
        format: ``onnx`` or ``torchscript``.
        out: the file to write (default :func:`default_export_path`); its metadata goes to ``<out>.json``.
            An existing file there that thoracic did not write (not in the folder's ``thoracic_outputs.json``)
            is refused, never replaced.
        checkpoint: ``best``, ``last`` or the path of a ``.ckpt`` file of a run folder.
        opset: ONNX opset (default: the exporter's).
        verify_batch: batch size of the check (differs from the traced batch of 2, so a batch dimension
            frozen by mistake fails the check).
        trust_checkpoint: open the checkpoint with full pickle (it may run code).

    The file is exported and checked under a temporary name and moved into place only when it passed:
    a failed or killed export leaves the previous file intact. Operating points chosen for another
    checkpoint are not embedded (the metadata's ``operating_points_note`` says why).

    Raises:
        RunError: unknown format, or the exported file's outputs differ from PyTorch's.
        OutputPathError: ``out`` is a folder, or a file thoracic did not write.
    """
    fmt = format
    if fmt not in EXPORT_FORMATS:
        raise RunError(f"--format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    loaded = load_run(run, checkpoint=checkpoint, map_location="cpu", trust_checkpoint=trust_checkpoint)
    path = Path(out) if out is not None else default_export_path(loaded, fmt)
    ensure_output_file(path, "--out")
    metadata_path = path.with_name(path.name + ".json")
    # the default export folder of a run is thoracic's by name (it wrote these two files there before
    # output folders kept a list)
    legacy = (path.name, metadata_path.name) if out is None and loaded.run_dir is not None else ()
    with output_folder(path.parent, "export", checkpoint_source(loaded.info), option="--out",
                       legacy=legacy) as outputs:
        outputs.claim(path.name, metadata_path.name)
        return _export(loaded, fmt, path, metadata_path, opset, verify_batch)


def _export(loaded: Any, fmt: str, path: Path, metadata_path: Path, opset: int | None,
            verify_batch: int) -> ExportResult:
    """:func:`export_run` once the output is checked: export under a temporary name, check, move into place."""
    model = loaded.model.cpu().eval()
    size = loaded.spec.image_size
    metadata = export_metadata(loaded, fmt, model)
    wrapper = LogitsAndMaps(model).eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, size, size, generator=generator)
    with atomic_path(path) as temporary:
        diffs = _export_and_check(wrapper, example, temporary, metadata, fmt, opset, verify_batch, generator, size,
                                  path)
    write_text_atomic(metadata_path, json.dumps(metadata, indent=1))
    return ExportResult(path, metadata_path, metadata, diffs)


def _export_and_check(wrapper: nn.Module, example: torch.Tensor, path: Path, metadata: dict, fmt: str,
                      opset: int | None, verify_batch: int, generator: torch.Generator, size: int,
                      target: Path) -> dict[str, float]:
    """Export to ``path`` (a temporary file), run it as a user would on another batch size, store the
    check in its metadata; returns the largest differences from PyTorch."""
    traced = None
    if fmt == "onnx":
        _export_onnx(wrapper, example, path, metadata, opset)
    else:
        traced = _trace(wrapper, example)
        _save_torchscript(traced, path, metadata)

    # the check: the file as a user loads it, on another batch size
    check = torch.randn(verify_batch, 3, size, size, generator=generator)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(check)]
    exported = load_exported(path)
    got = exported.run(check.numpy())
    diffs = {name: float(np.max(np.abs(a - b))) for name, a, b in zip(OUTPUT_NAMES, got, expected)}
    scale = max(1.0, max(float(np.max(np.abs(e))) for e in expected))
    metadata["verification"] = {
        "batch_size": int(verify_batch), "runtime": exported.runtime, "max_abs_diff": diffs,
        "output_scale": scale, "input": "standard normal noise, seed 0",
    }
    if max(diffs.values()) > VERIFY_TOLERANCE * scale:
        raise RunError(f"exported {target} does not reproduce the PyTorch model: max abs differences {diffs} "
                       f"(outputs up to {scale:.3g}); nothing was written")
    # the check's numbers go into the file's metadata too, so the file alone says how it was verified
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path))
        onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
        onnx.save(proto, str(path))
    else:
        _save_torchscript(traced, path, metadata)
    return diffs


__all__ = [
    "EXPORT_FORMATS", "ExportResult", "LogitsAndMaps", "METADATA_KEY", "default_export_path", "export_metadata",
    "export_run", "heatmap_geometry_metadata", "preprocessing_metadata",
]

"""Where and how things run: ``--device auto``, data-loader worker counts, library noise, exported models.

- :func:`resolve_device` turns ``auto`` into ``cuda`` when a GPU is visible, else ``cpu``; every command
  that runs a network (evaluate, localize, predict, experiment's evaluation) takes ``--device auto`` by
  default, and training's ``train.accelerator: auto`` does the same through Lightning.
- :func:`resolve_num_workers` turns ``data.num_workers: auto`` into ``min(8, usable cores)``.
- :func:`quiet_libraries` switches off what Lightning and PyTorch print that a user cannot act on
  (device banners, the logger "Tip", model summaries, worker-count hints, deprecation notices of
  Lightning's own internals); the CLI calls it unless ``--verbose`` is given.

Running an exported model (``thoracic export``): ONNX in onnxruntime, TorchScript in ``torch.jit``.
This module and what it imports stay clear of Lightning and of thoracic's model and training code:
``thoracic predict FILE IMAGE...`` (an exported FILE) needs only the file, its metadata (its
:class:`~thoracic.spec.ModelSpec`: class names and order, input size, normalisation, heatmap grid; calibration
and operating points) and the preprocessing of :mod:`thoracic.prediction`. :func:`export_spec` reads the spec
back, or derives it for a file exported before specs were stored.

:class:`ExportedModule` lets an exported file stand where :class:`~thoracic.prediction.Predictor` expects
a thoracic model (``module(x, return_maps=...)`` returning an object with ``logits`` and ``class_maps``),
so predictions, heatmaps, boxes and figures are computed by the same code for both.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thoracic.errors import DataError, GeometryError, SpecError, ThoracicError
from thoracic.spec import SPEC_KEY, FeatureGrid, ModelSpec, legacy_class_names

#: Upper bound of ``data.num_workers: auto``: decoding from the uint8 cache is cheap, and more workers
#: than this only cost memory (benchmarks: one worker feeds thousands of samples per second).
MAX_AUTO_WORKERS = 8

#: Lightning/PyTorch warnings hidden unless ``--verbose`` (regular expressions on the message).
NOISY_WARNINGS: tuple[str, ...] = (
    r".*does not have many workers.*",                    # Lightning: consider more num_workers
    r".*worker processes in total.*",                     # torch DataLoader: more workers than cores
    r".*is smaller than the logging interval.*",          # Lightning: few batches per epoch
    r".*LeafSpec.*",                                      # Lightning's own use of a torch deprecation
    r".*`Trainer\(limit_\w+_batches=1\.0\)` was configured.*",
    r".*GPU available but not used.*",
)

#: Loggers whose INFO messages (device banners, "Tip", model summaries, "Trainer.fit stopped") are hidden.
#: The modules' own loggers are named because ``import lightning.pytorch`` resets its package logger to
#: INFO, while a level set on a child logger stays.
NOISY_LOGGERS: tuple[str, ...] = (
    "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.callbacks.model_summary", "lightning.pytorch.accelerators.cuda",
    "lightning.fabric.accelerators.cuda", "lightning.pytorch.trainer.connectors.signal_connector",
)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_num_workers(value: int | str) -> int:
    """``data.num_workers``: an integer >= 0 as given, or ``auto`` = ``min(8, usable cores)``."""
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise ThoracicError(f"data.num_workers: expected an integer >= 0 or auto, got {value!r}")
        return min(MAX_AUTO_WORKERS, usable_cores())
    if int(value) < 0:
        raise ThoracicError(f"data.num_workers: expected an integer >= 0 or auto, got {value!r}")
    return int(value)


def resolve_device(device: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else is checked and kept.

    Raises:
        ThoracicError: not a torch device string, a CUDA device asked for on a machine without one (or
            an index past its last GPU), MPS where there is none.
    """
    import torch

    name = "auto" if device is None else str(device).strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ThoracicError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ThoracicError(f"--device {name}: no CUDA GPU is visible on this machine (use --device auto or cpu)")
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ThoracicError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 .. cuda:{count - 1}")
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ThoracicError(f"--device {name}: MPS is not available on this machine (use --device auto or cpu)")
    elif parsed.type != "cpu":
        raise ThoracicError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return name


def quiet_libraries(verbose: bool = False) -> None:
    """Hide Lightning's and PyTorch's noise (see :data:`NOISY_WARNINGS`, :data:`NOISY_LOGGERS`).

    With ``verbose`` nothing is hidden (the libraries' defaults). Warnings and errors of thoracic
    itself, and every exception, are never hidden.
    """
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


METADATA_KEY = "thoracic"  # same as thoracic.workflows.export.METADATA_KEY (not imported: that module imports the models)
TORCHSCRIPT_METADATA_FILE = "thoracic.json"


def _format_of(path: Path) -> str:
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if zipfile.is_zipfile(path):  # a TorchScript archive is a zip file
        return "torchscript"
    raise DataError(f"{path}: neither an ONNX file (.onnx) nor a TorchScript archive (.pt) written by `thoracic export`")


@dataclass
class ExportedModel:
    """An exported file ready to run: ``run(images) -> (logits, class_maps)`` as numpy arrays.

    Attributes:
        path, format: the file and ``onnx`` / ``torchscript``.
        metadata: the JSON stored with the export (see :func:`thoracic.workflows.export.export_metadata`).
        runtime: what runs it, in words (e.g. ``onnxruntime 1.20.1 (CPUExecutionProvider)``).
        spec: the model's :class:`~thoracic.spec.ModelSpec` (:func:`export_spec`).
    """

    path: Path
    format: str
    metadata: dict
    runtime: str
    spec: ModelSpec
    _session: Any = None
    _module: Any = None
    _device: str = "cpu"

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def normalize(self) -> str:
        return self.spec.normalize

    @property
    def class_names(self) -> tuple[str, ...]:
        """The labels of the logits and class maps, in order (the spec's)."""
        return self.spec.class_names

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(B, 3, S, S)`` float32 normalised images -> ``(logits (B, C), class_maps (B, C, h, w))``."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise DataError(f"{self.path}: expects images of shape (B, 3, {size}, {size}), got {images.shape}")
        if self._session is not None:
            logits, maps = self._session.run(None, {self._session.get_inputs()[0].name: images})
            return np.asarray(logits), np.asarray(maps)
        import torch

        with torch.no_grad():
            logits, maps = self._module(torch.from_numpy(images).to(self._device))
        return logits.float().cpu().numpy(), maps.float().cpu().numpy()


def read_export_metadata(path: str | Path, session: Any = None) -> dict:
    """The metadata of an exported file: from inside the file, else from ``<file>.json`` beside it.

    ``session``: an onnxruntime session of the file, if one is open (its metadata is read from it instead
    of parsing the file a second time).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"exported model {path} does not exist")
    fmt = _format_of(path)
    text = None
    if fmt == "onnx":
        if session is None:
            session = _onnx_session(path, ["CPUExecutionProvider"])
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    else:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"extra/{TORCHSCRIPT_METADATA_FILE}")), None)
            text = archive.read(name).decode() if name else None
    beside = path.with_name(path.name + ".json")
    if text is None and beside.is_file():
        text = beside.read_text()
    if text is None:
        raise DataError(f"{path}: no thoracic metadata inside the file nor in {beside}; export it with `thoracic export`")
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: its metadata is not valid JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise DataError(f"{path}: its metadata is a {type(metadata).__name__}, expected a JSON object")
    if SPEC_KEY not in metadata:  # exported before specs were stored: the fields a spec is derived from
        for key in ("class_names", "image_size", "preprocessing"):
            if key not in metadata:
                raise DataError(f"{path}: metadata lacks {key!r}; export it again with `thoracic export`")
    return metadata


#: How the spec of a file exported before specs were stored says where it comes from.
DERIVED_EXPORT_SPEC = ("derived: exported before specs were stored (class names, input size, normalisation and "
                       "heatmap grid from the export's metadata; ChestX-ray14's dataset)")


def export_spec(metadata: dict, path: str | Path) -> ModelSpec:
    """The :class:`~thoracic.spec.ModelSpec` of an exported file from its metadata (:func:`read_export_metadata`):
    the stored ``spec``, or one derived from the fields earlier exports wrote (``class_names``,
    ``image_size``, ``preprocessing.normalize``, ``heatmap_geometry``; those versions trained on
    ChestX-ray14 only).

    Raises:
        SpecError: a stored spec that is not one (the field named); DataError: a derived field that is wrong.
    """
    if SPEC_KEY in metadata:
        spec = ModelSpec.from_dict(metadata[SPEC_KEY], f"{path} (metadata '{SPEC_KEY}')")
        outputs = (metadata.get("outputs") or {}).get("logits") or [None, spec.num_classes]
        if outputs[-1] != spec.num_classes:
            raise SpecError(f"{path}: its spec names {spec.num_classes} class(es), but the model outputs "
                            f"{outputs[-1]} (metadata 'outputs'); export the run again with thoracic export")
        return spec
    info = metadata.get("heatmap_geometry")
    try:
        grid = FeatureGrid.from_dict(info) if info else None
    except GeometryError as exc:
        raise DataError(f"{path}: metadata 'heatmap_geometry': {exc}; export the run again with thoracic export"
                        ) from None
    try:
        preprocessing = metadata["preprocessing"]
        normalize = preprocessing.get("normalize", "imagenet") if isinstance(preprocessing, dict) else "imagenet"
        return ModelSpec(legacy_class_names(metadata.get("class_names")), int(metadata["image_size"]), normalize,
                         heatmap_grid=grid, dataset="chestxray14", derived=DERIVED_EXPORT_SPEC)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: metadata of an earlier export is not what thoracic export wrote ({exc}); "
                        "export the run again with thoracic export") from None


def load_exported(path: str | Path, device: str = "cpu") -> ExportedModel:
    """Open an exported ONNX (onnxruntime) or TorchScript (``torch.jit.load``) file with its metadata.

    ``device``: ``cpu`` or a CUDA device (onnxruntime's CUDA provider when installed, else CPU).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"exported model {path} does not exist")
    fmt = _format_of(path)
    if fmt == "onnx":
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = _onnx_session(path, providers)
        metadata = read_export_metadata(path, session)
        runtime = f"onnxruntime {onnxruntime.__version__} ({session.get_providers()[0]})"
        return ExportedModel(path, fmt, metadata, runtime, export_spec(metadata, path), _session=session)
    import torch

    metadata = read_export_metadata(path)
    spec = export_spec(metadata, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated upstream; the format is what was asked
        try:
            module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # noqa: BLE001 - any unreadable archive gets the same clear message
            raise DataError(f"{path}: torch.jit.load cannot load it ({exc})") from exc
    module.eval()
    return ExportedModel(path, fmt, metadata, f"torch.jit {torch.__version__} ({device})", spec, _module=module,
                         _device=device)


def _onnx_session(path: Path, providers: list[str]) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes about unused initialisers
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DataError(f"{path}: onnxruntime cannot load it ({exc})") from exc


@dataclass(frozen=True)
class _Output:
    """Duck-typed ``ModelOutput`` (importing thoracic.models would load every model)."""

    logits: Any
    class_maps: Any = None


class ExportedModule:
    """An :class:`ExportedModel` called like a thoracic model: ``module(x, return_maps=False)`` on torch
    tensors returns an object with ``logits`` and ``class_maps`` (torch tensors on ``x``'s device).

    The file computes logits and maps in one pass; the last result is reused when the same tensor comes
    again (``Predictor`` asks for logits, then for the maps of the same batch).
    """

    def __init__(self, exported: ExportedModel) -> None:
        self.exported = exported
        self._last: tuple[Any, Any, Any] | None = None

    def __call__(self, x: Any, return_maps: bool = False) -> _Output:
        import torch

        if self._last is not None and self._last[0] is x:
            logits, maps = self._last[1], self._last[2]
        else:
            logits_np, maps_np = self.exported.run(x.detach().float().cpu().numpy())
            logits, maps = torch.from_numpy(logits_np).to(x.device), torch.from_numpy(maps_np).to(x.device)
            self._last = (x, logits, maps)
        return _Output(logits, maps if return_maps else None)

    def to(self, device: Any) -> ExportedModule:
        return self

    def eval(self) -> ExportedModule:
        return self




__all__ = ["DERIVED_EXPORT_SPEC", "MAX_AUTO_WORKERS", "NOISY_LOGGERS", "NOISY_WARNINGS", "ExportedModel",
           "ExportedModule", "export_spec", "load_exported", "quiet_libraries", "read_export_metadata",
           "resolve_device", "resolve_num_workers", "usable_cores"]

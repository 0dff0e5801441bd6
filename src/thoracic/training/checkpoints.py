"""Reading run folders and checkpoints back: the contract between training and everything after it.

A run folder (written by ``thoracic train``) holds::

    <run>/config.yaml            the resolved Config
    <run>/run_info.json          library versions, git commit, seed, class order, command line
    <run>/checkpoints/best.ckpt  best validation loss (Lightning checkpoint)
    <run>/checkpoints/last.ckpt  end of the last finished epoch (what `thoracic train RUN` continues from)
    <run>/logs/                  CSV and TensorBoard logs
    <run>/evaluation/            written by evaluate / localize

Every checkpoint is a Lightning checkpoint whose ``hyper_parameters`` hold ``config`` (the resolved
Config as a dict), ``class_names`` and ``spec`` (the :class:`~thoracic.spec.ModelSpec` as plain data: the
label names and order, input size, normalisation, heatmap grid, registration, dataset, label policy and
views), and whose ``state_dict`` holds the model under ``model.``. Checkpoints written since data
provenance was recorded also hold ``thoracic_data`` (``kind``: ``phantom`` or ``real``, and the
data-entry CSV's SHA-256); :func:`checkpoint_info` is what every evaluation artefact records about the
checkpoint it came from. A checkpoint written before specs were stored still opens: :func:`checkpoint_spec`
derives its spec (class names from ``hyper_parameters["class_names"]``, else ChestX-ray14's, the only label
space of those versions; input and normalisation from its config; heatmap grid traced from the model).

Opening a checkpoint never runs code. A ``.ckpt`` file is a pickle, and unpickling can call any Python
function the file names (``os.system``...). :func:`read_checkpoint`, the one function that reads every
checkpoint (evaluate, localize, export, predict, ``train --resume`` and Lightning's own resume through
:class:`thoracic.training.factory.AtomicCheckpointIO`), unpickles with ``torch.load(weights_only=True)``:
tensors, numbers, strings, lists, dicts and the few types in :data:`SAFE_CHECKPOINT_GLOBALS`, nothing
callable. A checkpoint that needs more is refused with :class:`~thoracic.errors.UnsafeCheckpointError`;
``trust=True`` (``--trust-checkpoint``) opens it the old way, which runs whatever the file holds.
"""

from __future__ import annotations

import json
import pickle
import re
from contextlib import nullcontext
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from thoracic.config import Config, config_from_dict, replace
from thoracic.constants import CHECKPOINT_NAMES
from thoracic.deprecation import renamed_keywords
from thoracic.errors import GeometryError, RunError, ThoracicError, UnsafeCheckpointError
from thoracic.geometry import heatmap_grid
from thoracic.provenance import file_sha256
from thoracic.data.synth import folder_kind
from thoracic.models import build_model
from thoracic.runtime import resolve_device
from thoracic.spec import SPEC_KEY, ModelSpec, legacy_class_names


@dataclass(frozen=True)
class LoadedRun:
    """A checkpoint opened for inference: the model (eval mode, on its device), its config, its spec and
    where it came from."""

    model: torch.nn.Module
    config: Config
    checkpoint_path: Path
    run_dir: Path | None
    info: dict[str, Any] | None = None
    """:func:`checkpoint_info` of the checkpoint (what every evaluation artefact records)."""
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    """The checkpoint's ``hyper_parameters`` (``config``, ``class_names`` ...)."""
    data_provenance: dict[str, Any] | None = None
    """The checkpoint's ``thoracic_data``: the data it was trained on (``root``, ``dataset``, ``metadata_sha256``
    ...; :func:`thoracic.training.run_folder.data_provenance`); None for checkpoints written before it."""
    spec: ModelSpec | None = None
    """The model's :class:`~thoracic.spec.ModelSpec` (stored in the checkpoint, or derived for one written
    before specs were: :func:`checkpoint_spec`)."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """The labels the model scores, in the order of its logits: the spec's (every consumer's source; a
        ``LoadedRun`` built without one: its ``hyper_parameters``' ``class_names``, else ChestX-ray14's)."""
        if self.spec is None:
            return legacy_class_names(self.hyper_parameters.get("class_names"))
        return self.spec.class_names


#: How a derived spec says where it comes from.
DERIVED_SPEC = ("derived: the checkpoint predates stored specs (class names from its hyper_parameters, else "
                "ChestX-ray14's; input and normalisation from its config; heatmap grid traced from the model)")


def model_grid(model: torch.nn.Module, image_size: int) -> Any:
    """The native heatmap grid of ``model`` at ``image_size`` (None for a model whose grid cannot be traced)."""
    try:
        return heatmap_grid(model, int(image_size))
    except GeometryError:
        return None


def training_spec(config: Config, class_names: Sequence[str], model: torch.nn.Module,
                  dataset: str | None = None) -> ModelSpec:
    """The spec a run stores: its labels, ``config``'s input size, normalisation, label policy and views,
    ``model``'s heatmap grid, the geometric registration and the dataset layout trained on."""
    return ModelSpec(tuple(class_names), int(config.data.image_size), config.data.normalize,
                     heatmap_grid=model_grid(model, config.data.image_size), registration="geometric",
                     dataset=dataset, uncertain=config.data.uncertain, views=tuple(config.data.views))


def checkpoint_spec(checkpoint: dict, config: Config, model: torch.nn.Module | None, path: str | Path
                    ) -> ModelSpec:
    """The :class:`~thoracic.spec.ModelSpec` of a loaded checkpoint: the stored one, or one derived for a
    checkpoint written before specs were stored (:data:`DERIVED_SPEC`; ``model`` gives its heatmap grid).

    Raises:
        SpecError: a stored spec that is not one (the field named).
        RunError: the class names do not fit the model's outputs (``model``'s, else ``model.num_classes`` of
            its config).
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    if SPEC_KEY in hparams:
        spec = ModelSpec.from_dict(hparams[SPEC_KEY], f"checkpoint {path} (hyper_parameters['{SPEC_KEY}'])")
    else:
        data = checkpoint.get("thoracic_data") or {}
        spec = ModelSpec(legacy_class_names(hparams.get("class_names")), int(config.data.image_size),
                         config.data.normalize,
                         heatmap_grid=model_grid(model, config.data.image_size) if model is not None else None,
                         dataset=data.get("dataset") or "chestxray14", uncertain=config.data.uncertain,
                         views=tuple(config.data.views), derived=DERIVED_SPEC)
    outputs = getattr(model, "num_classes", None) if model is not None else config.model.num_classes
    if outputs is not None and outputs != spec.num_classes:
        raise RunError(f"checkpoint {path}: its {spec.num_classes} class names do not fit the model's "
                       f"{outputs} outputs (model.num_classes); expected a checkpoint written by thoracic train")
    return spec


@renamed_keywords(which="checkpoint")
def find_checkpoint(run: str | Path, checkpoint: str | Path = "best") -> Path:
    """The checkpoint file of a run: ``checkpoint`` ``best`` or ``last`` of a run folder, or a ``.ckpt`` path
    (absolute, from the working folder or from the run folder); ``run`` itself if it is a file."""
    run = Path(run)
    name = str(checkpoint)
    if run.is_file():
        if name != "best":
            raise RunError(f"--checkpoint {name}: {run} is a checkpoint file already; a checkpoint of a run is "
                           "chosen in a run folder (give the run folder)")
        return run
    if not run.is_dir():
        raise RunError(f"run {run} does not exist (expected a run folder or a .ckpt file)")
    if name not in CHECKPOINT_NAMES:
        for path in (Path(name), run / name):
            if path.is_file():
                return path
        raise RunError(f"--checkpoint {name}: no such file (expected best, last or the path of a .ckpt file, "
                       f"from the working folder or from {run})")
    path = run / "checkpoints" / f"{name}.ckpt"
    if not path.is_file():
        raise RunError(f"run {run} has no {name} checkpoint: {path} is missing (did training finish an epoch?)")
    return path


#: Python types (beyond tensors and plain data) that ``torch.load(weights_only=True)`` may rebuild from a
#: checkpoint. Found by loading the checkpoints of tiny runs of every model (32-bit, bf16-mixed and 16-mixed
#: precision, with and without the step schedule) with weights_only=True and listing
#: ``torch.serialization.get_unsafe_globals_in_checkpoint``: Lightning 2.6's checkpoints of thoracic's
#: modules need none (hyper-parameters, callback, loop, optimizer and scheduler states are plain data), so
#: the list is empty; tests/test_reliability_checkpoints.py keeps it so. A type added here must build
#: plain data only, never call anything the file names.
SAFE_CHECKPOINT_GLOBALS: tuple[Any, ...] = ()

TRUST_HINT = ("if you trust whoever made this file, rerun with --trust-checkpoint (Python API: "
              "trust_checkpoint=True), which opens it with pickle and runs any code it holds")


def _needed_globals(path: Path, message: str) -> list[str]:
    """The Python objects a refused checkpoint names (``module.name``)."""
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    if finder is not None:
        try:
            found = [str(name) for name in finder(str(path))]
            if found:
                return found
        except Exception:  # noqa: BLE001 - only for the message; fall back to torch's own words
            pass
    return re.findall(r"GLOBAL ([\w.]+)", message) or ["an object that is not plain data"]


def read_checkpoint(path: str | Path, *, trust: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """The one reader of checkpoint files: ``torch.load`` without running code (see the module docstring).

    Args:
        path: a ``.ckpt`` file.
        trust: open it with full pickle (``weights_only=False``): only for files from a trusted source,
            since unpickling runs any function the file names.
        map_location: as ``torch.load``'s.

    Returns:
        The checkpoint (a dict for every checkpoint thoracic writes).

    Raises:
        UnsafeCheckpointError: the file needs Python objects a thoracic checkpoint never holds (names the
            file, the objects and ``--trust-checkpoint``).
        RunError: the file is missing or is not a checkpoint at all.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"checkpoint {path} does not exist (expected a .ckpt file written by thoracic train)")
    if trust:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise RunError(f"cannot read checkpoint {path}: {exc}") from None
    allowed = (torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS))
               if SAFE_CHECKPOINT_GLOBALS and hasattr(torch.serialization, "safe_globals") else nullcontext())
    try:
        with allowed:
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "GLOBAL" in message:  # a pickled reference to a Python object: what a code-running file needs
            needed = ", ".join(_needed_globals(path, message))
            raise UnsafeCheckpointError(
                f"refused to open checkpoint {path}: it needs the Python object(s) {needed}, which a checkpoint "
                f"written by thoracic never holds; unpickling it could run code hidden in the file. Only "
                f"{TRUST_HINT}") from None
        detail = message.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0] or message
        raise RunError(f"cannot read checkpoint {path}: not a checkpoint, or a damaged one ({detail})") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise RunError(f"cannot read checkpoint {path}: {exc}") from None


def load_checkpoint_config(path: str | Path, *, trust: bool = False) -> tuple[Config, dict]:
    """Config and raw checkpoint dict (:func:`read_checkpoint`)."""
    ckpt = read_checkpoint(path, trust=trust)
    if not isinstance(ckpt, dict):
        raise RunError(f"checkpoint {path} holds a {type(ckpt).__name__}, expected a Lightning checkpoint dict")
    hparams = ckpt.get("hyper_parameters") or {}
    if "config" not in hparams:
        raise RunError(f"checkpoint {path} holds no thoracic config (hyper_parameters['config'] missing)")
    try:
        return config_from_dict(hparams["config"]), ckpt
    except ThoracicError as exc:
        raise RunError(f"checkpoint {path}: its stored config is invalid: {exc}") from None


@renamed_keywords(which="checkpoint")
def load_run(run: str | Path, checkpoint: str | Path = "best", map_location: str | torch.device = "cpu", *,
             trust_checkpoint: bool = False) -> LoadedRun:
    """Rebuild the model of a run (no pretrained download: the weights come from the checkpoint).

    ``run`` is a run folder or a ``.ckpt`` file; ``checkpoint`` picks one of a run folder: ``best``,
    ``last`` or the path of a ``.ckpt`` file (its results still go to the run folder given).
    ``trust_checkpoint``: open the checkpoint with full pickle (:func:`read_checkpoint`).

    Raises:
        UnsafeCheckpointError: the checkpoint needs more than plain data (and is not trusted).
        RunError: no such run or checkpoint, an unreadable one, weights that do not fit the model the
            checkpoint's config names, or a device this machine does not have.
    """
    device = resolve_device(map_location) if isinstance(map_location, str) else map_location
    path = find_checkpoint(run, checkpoint)
    config, ckpt = load_checkpoint_config(path, trust=trust_checkpoint)
    # strict=False: a checkpoint written before misplaced model options were refused still opens
    model = build_model(replace(config.model, pretrained=False, weights=None), strict=False)
    state = {k[len("model."):]: v for k, v in ckpt.get("state_dict", {}).items() if k.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        first = str(exc).split("size mismatch for ", 1)[-1].split("\n")[0][:200]
        raise RunError(f"checkpoint {path}: its weights do not fit the model its config names "
                       f"({config.model.name}, backbone {config.model.backbone}): size mismatch for {first}; "
                       "expected a checkpoint written by thoracic train for that model") from None
    if missing or unexpected:
        raise RunError(f"checkpoint {path}: its weights do not fit the model its config names "
                       f"({config.model.name}, backbone {config.model.backbone}): missing {missing[:5]}, "
                       f"unexpected {unexpected[:5]}; expected a checkpoint written by thoracic train for that model")
    model.eval()
    spec = checkpoint_spec(ckpt, config, model, path)  # (a derived spec traces the model on the CPU)
    model.to(device)
    run_dir = Path(run) if Path(run).is_dir() else path.parent.parent if path.parent.name == "checkpoints" else None
    return LoadedRun(model=model, config=config, checkpoint_path=path, run_dir=run_dir,
                     info=checkpoint_info(path, ckpt), hyper_parameters=dict(ckpt.get("hyper_parameters") or {}),
                     data_provenance=ckpt.get("thoracic_data"), spec=spec)


def checkpoint_info(path: str | Path, checkpoint: dict | None = None) -> dict[str, Any]:
    """Provenance of a checkpoint, as every evaluation artefact records it.

    Args:
        path: a ``.ckpt`` file (or a run folder: its ``best.ckpt``).
        checkpoint: the already loaded checkpoint dict (saves a second ``torch.load``).

    Returns:
        ``{"path", "epoch", "global_step", "sha256", "model_name", "backbone", "image_size", "data_root",
        "data_kind"}``: the model fields come from the config stored in the checkpoint (not from the
        folder it sits in); ``data_kind`` is ``"phantom"`` or ``"real"`` as recorded at training time, or,
        for a checkpoint without that record, what the data folder holds now (``"unknown"`` when the
        folder no longer exists).

    Raises:
        RunError: missing or unreadable checkpoint, or one without a thoracic config.
    """
    path = find_checkpoint(path, "best")
    if checkpoint is None:
        config, checkpoint = load_checkpoint_config(path)
    else:
        config = config_from_dict(checkpoint["hyper_parameters"]["config"])
    kind = (checkpoint.get("thoracic_data") or {}).get("kind")
    run_info = path.parent.parent / "run_info.json" if path.parent.name == "checkpoints" else None
    if kind is None and run_info is not None and run_info.is_file():  # recorded by an earlier version
        try:
            kind = json.loads(run_info.read_text()).get("data_kind")
        except (OSError, ValueError, AttributeError):
            kind = None
    if kind is None:
        kind = folder_kind(config.data.root)
    return {
        "path": str(path.resolve()),
        "epoch": int(checkpoint.get("epoch", -1)),
        "global_step": int(checkpoint.get("global_step", -1)),
        "sha256": file_sha256(path),
        "model_name": config.model.name,
        "backbone": config.model.backbone,
        "image_size": int(config.data.image_size),
        "data_root": str(config.data.root),
        "data_kind": kind,
    }


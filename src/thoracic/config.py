"""Experiment configuration: frozen dataclasses loaded from YAML with dotted command-line overrides.

A config file is a YAML mapping whose sections mirror :class:`Config`. Unknown keys and values of the
wrong type are errors that name the offending key. Overrides are ``section.key=value`` tokens (the value
is parsed as YAML, so ``1e-4``, ``true``, ``[PA, AP]`` and ``null`` work), and for booleans the flag
forms ``--section.key`` / ``--no-section.key`` as well; ``true/false``, ``yes/no``, ``on/off`` and
``1/0`` are all accepted for booleans and nothing else is.

The resolved config is written into every run folder (``config.yaml``) and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from thoracic.constants import DATASET_KINDS
from thoracic.errors import ThoracicError
from thoracic.io import write_text_atomic


class ConfigError(ThoracicError, ValueError):
    """A configuration file or override is invalid; the message names the key and what was expected."""


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


#: Precisions Lightning accepts that make sense here (``32-true`` default; mixed precision on GPUs).
PRECISIONS: tuple[str, ...] = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true",
                               "64", "16", "bf16")
#: Lightning accelerators.
ACCELERATORS: tuple[str, ...] = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")
#: Smallest input side the models take (five stride-2 stages leave a 1 x 1 map at 32 px).
MIN_IMAGE_SIZE = 32
#: Largest Adam learning rate accepted: far above any value that trains (the paper: 1e-4; its grid
#: 1e-6..1e-3); larger ones only overflow or diverge.
MAX_LR = 1.0


# --------------------------------------------------------------------------------------------------
# Sections (each checks its values: a key, what was expected and the value in every error)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset folder and its image cache are, which labels and views, how samples are drawn."""

    root: str = "data/phantom"
    """The dataset folder as distributed (ChestX-ray14: images/ or images_0XX/images/, the CSVs, split lists)."""
    dataset: str = "auto"
    """The layout of ``root``: ``chestxray14``, ``chexpert``, ``mimic``, ``padchest``, ``vindr``, ``rsna``, or
    ``auto`` (detected from its files; docs/data.md)."""
    uncertain: Literal["ignore", "zeros", "ones"] = "ignore"
    """What an uncertain label (CheXpert, MIMIC-CXR) becomes: missing (NaN), 0 or 1 (U-Ignore / U-Zeros /
    U-Ones of Irvin et al. 2019)."""
    classes: tuple[str, ...] = ()
    """The label names to train on, in this order; empty: every label of the dataset."""
    cache: str | None = None
    """Image cache folder written by ``thoracic prepare``; default ``<root>/cache_<image_size>``."""
    image_size: int = 256
    val_fraction: float = 0.1
    """Fraction of the train_val *patients* held out for validation (seeded, patient-disjoint)."""
    split_seed: int = 0
    views: tuple[str, ...] = ("frontal",)
    """Keep these view positions (e.g. ``[PA]``); ``frontal`` (the default) is every frontal position (PA,
    AP, ...); empty keeps every view, laterals included."""
    allow_missing_images: bool = False
    """Use only the images present in the cache (a count of the missing ones is printed)."""
    num_workers: int | Literal["auto"] = "auto"
    """Loader worker processes per training process; ``auto`` = min(8, usable CPU cores)."""
    augment: bool = False
    """Random horizontal flips and small shifts for training (the paper used no augmentation)."""
    normalize: Literal["imagenet", "none"] = "imagenet"

    def __post_init__(self) -> None:
        _check(isinstance(self.image_size, int) and self.image_size >= MIN_IMAGE_SIZE, "data.image_size",
               f"an image side of at least {MIN_IMAGE_SIZE} pixels (the models' smallest input)", self.image_size)
        _check(_finite(self.val_fraction) and 0 < self.val_fraction < 1, "data.val_fraction",
               "a fraction of the train_val patients strictly between 0 and 1", self.val_fraction)
        _check(self.num_workers == "auto" or self.num_workers >= 0, "data.num_workers",
               "auto, 0 (load in the main process) or more", self.num_workers)
        _check(str(self.root).strip() != "", "data.root", "a dataset folder", self.root)
        _check(self.dataset in ("auto", *DATASET_KINDS), "data.dataset",
               f"one of auto, {', '.join(DATASET_KINDS)}", self.dataset)
        _check(len(set(self.classes)) == len(self.classes), "data.classes", "distinct label names", self.classes)


@dataclass(frozen=True)
class ModelConfig:
    """Which model of the registry, on which backbone, and its options. An option of another model must stay at
    its default (``thoracic.models.check_model_config`` refuses it otherwise: it would do nothing)."""

    name: str = "baseline"
    backbone: str = "resnet34"
    pretrained: bool = True
    """ImageNet weights through torchvision's weights API (needs the torch cache or internet)."""
    weights: str | None = None
    """Path to a local backbone state dict; takes precedence over ``pretrained``."""
    freeze_backbone: bool = False
    num_classes: int | None = None
    """Outputs of the model: null (the default) follows the data, one per label trained on (the dataset's,
    or ``data.classes``); a number must equal that count. The resolved count is what a run stores."""
    output_stride: Literal[32, 16, 8] = 32
    """Input pixels per cell of the final feature map: 32 (the paper), or 16 / 8 with the last stage(s) of a
    ResNet dilated instead of strided (finer heatmaps, same weights; DenseNet-121: 32 only)."""
    # baseline
    transition_channels: int | None = None
    pooling: Literal["max", "avg", "lse"] = "max"
    lse_r: float = 10.0
    # attention-gated
    gating: Literal["global", "grid"] = "global"
    attention_normalization: Literal["sigmoid", "softmax"] = "sigmoid"
    aggregation: Literal["concat", "mean", "deep_supervision"] = "concat"
    attention_pooling: Literal["auto", "sum", "mean"] = "auto"
    """Attention-weighted pooling per level: sum (published code), mean, auto (mean if sigmoid, sum if softmax)."""

    def __post_init__(self) -> None:
        _check(self.num_classes is None or self.num_classes >= 1, "model.num_classes",
               "null (one output per label of the data) or at least 1", self.num_classes)
        _check(self.transition_channels is None or self.transition_channels >= 1, "model.transition_channels",
               "null (the backbone's width) or a positive channel count", self.transition_channels)
        _check(_finite(self.lse_r) and self.lse_r > 0, "model.lse_r", "a positive number", self.lse_r)


@dataclass(frozen=True)
class LossConfig:
    """The training loss: Eq. 1's weighted cross-entropy by default."""

    name: Literal["wcel", "wcel_per_class", "bce", "focal"] = "wcel"
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        _check(_finite(self.focal_gamma) and self.focal_gamma >= 0, "loss.focal_gamma", "a number >= 0",
               self.focal_gamma)


@dataclass(frozen=True)
class OptimConfig:
    """Adam and the step schedule of the paper (lr / 10 every ``lr_step_epochs`` epochs; 0 = constant)."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    lr_step_epochs: int = 0
    lr_gamma: float = 0.1

    def __post_init__(self) -> None:
        _check(_finite(self.lr) and 0 < self.lr <= MAX_LR, "optim.lr",
               f"a learning rate > 0 and <= {MAX_LR:g} (the paper used 1e-4)", self.lr)
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "optim.weight_decay", "a number >= 0",
               self.weight_decay)
        _check(self.lr_step_epochs >= 0, "optim.lr_step_epochs", "0 (constant) or a number of epochs",
               self.lr_step_epochs)
        _check(_finite(self.lr_gamma) and 0 < self.lr_gamma <= 1, "optim.lr_gamma",
               "a factor > 0 and <= 1", self.lr_gamma)


@dataclass(frozen=True)
class TrainConfig:
    """The Lightning trainer: epochs, early stopping, precision and devices."""

    batch_size: int = 128
    max_epochs: int = 30
    patience: int = 3
    """Early stopping: epochs without validation-loss improvement of at least ``min_delta``."""
    min_delta: float = 0.001
    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed, 16-mixed."""
    channels_last: bool = False
    accelerator: str = "auto"
    devices: str = "auto"
    """Number of devices, a list like ``0,1``, or ``auto``."""
    num_nodes: int = 1
    strategy: str = "auto"
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    deterministic: bool = True
    log_every_n_steps: int = 10
    progress_bar: bool = True

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "train.batch_size", "at least 1 image per batch", self.batch_size)
        _check(self.max_epochs >= 1, "train.max_epochs", "at least 1 epoch", self.max_epochs)
        _check(self.patience >= 0, "train.patience", "0 or more epochs", self.patience)
        _check(_finite(self.min_delta) and self.min_delta >= 0, "train.min_delta", "a number >= 0", self.min_delta)
        _check(self.precision in PRECISIONS, "train.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        _check(self.accelerator in ACCELERATORS, "train.accelerator", f"one of {', '.join(ACCELERATORS)}",
               self.accelerator)
        _check(self.num_nodes >= 1, "train.num_nodes", "at least 1", self.num_nodes)
        _check(self.log_every_n_steps >= 1, "train.log_every_n_steps", "at least 1", self.log_every_n_steps)
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            _check(_finite(value) and value > 0 and (value <= 1 or float(value).is_integer()), f"train.{key}",
                   "a fraction in (0, 1] or a whole number of batches", value)


@dataclass(frozen=True)
class Config:
    """One experiment: the sections above plus the seed and where the run folder goes."""

    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        name = self.run_name
        # the run folder is <output_dir>/<run_name>: a name with a path in it would write elsewhere
        _check(name is None or (isinstance(name, str) and name.strip() not in ("", ".", "..")
                                and not any(c in name for c in ("/", "\\", "\0"))),
               "run_name", "a folder name inside output_dir (no '/', '\\' or '..'; output_dir says where)", name)


# --------------------------------------------------------------------------------------------------
# Typed conversion
# --------------------------------------------------------------------------------------------------

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}

T = typing.TypeVar("T")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: expected {_describe(annotation)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected a boolean (true/false), got {value!r}")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if annotation is Any:
        return value
    raise ConfigError(f"{key}: unsupported annotation {annotation!r}")


def _describe(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return " or ".join(getattr(a, "__name__", str(a)) for a in args) + " or null"


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + str(k) for k in unknown)}; "
            f"valid keys of {prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(known))}"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML and checkpoints."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [convert(v) for v in value]
        return value

    return convert(cfg)


def parse_overrides(tokens: Sequence[str]) -> dict[str, Any]:
    """Turn ``a.b=value``, ``--a.b=value``, ``--a.b`` and ``--no-a.b`` tokens into a dotted-key dict."""
    result: dict[str, Any] = {}
    for token in tokens:
        body = token[2:] if token.startswith("--") else token
        if "=" in body:
            key, raw = body.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as exc:
                raise ConfigError(f"override {token!r}: cannot parse value {raw!r}: {exc}") from None
        elif token.startswith("--no-"):
            key, value = body[3:], False
        elif token.startswith("--"):
            key, value = body, True
        else:
            raise ConfigError(f"override {token!r}: expected key=value, --key (true) or --no-key (false)")
        if not key:
            raise ConfigError(f"override {token!r}: empty key")
        result[key] = value
    return result


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def merge_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of ``data`` with the dotted-key ``overrides`` applied."""
    tree = yaml.safe_load(yaml.safe_dump(dict(data))) or {}
    for key, value in overrides.items():
        _set_dotted(tree, key, value)
    return tree


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    # The file alone first, so that an error is blamed on what holds the bad value: the file, or the
    # override the user typed on the command line.
    try:
        from_dict(Config, data)
    except ConfigError as exc:
        key = str(exc).split(":", 1)[0]
        if key in overrides:  # the value came from the command line, not from the file
            where = "command-line override: "
        else:
            where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None
    try:
        return from_dict(Config, merge_overrides(data, overrides))
    except ConfigError as exc:
        named = {k: v for k, v in overrides.items() if k in str(exc)} or overrides
        raise ConfigError(f"command line: {format_overrides(named)}: {exc}") from None


def format_overrides(overrides: Mapping[str, Any]) -> str:
    """``a.b=1 c.d=x`` as typed (values in YAML flow style)."""
    def show(value: Any) -> str:
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()

    return " ".join(f"{key}={show(value)}" for key, value in overrides.items())


#: The folder of the configs shipped inside the package (copies of the repository's ``configs/``).
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def load_config_by_name(name_or_path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """``load_config`` that also accepts the name of a packaged config (``baseline``, ``space_attention``...).

    A path to an existing file is loaded as is; otherwise a bare name (``baseline`` or ``baseline.yaml``)
    is looked up in :data:`PACKAGED_CONFIGS`, so ``--config baseline`` works from any folder.

    Raises:
        ConfigError: neither a file nor a packaged config (the message lists the packaged names), or
            any error of :func:`load_config`.
    """
    path = Path(name_or_path)
    if not path.is_file():
        packaged = PACKAGED_CONFIGS / f"{path.stem}.yaml"
        if path.suffix in ("", ".yaml") and len(path.parts) == 1 and packaged.is_file():
            path = packaged
        elif not path.exists():
            available = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))
            raise ConfigError(f"config {name_or_path}: no such file, and not a packaged config "
                              f"(packaged: {', '.join(available)})")
    return load_config(path, overrides)


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """The inverse of :func:`to_dict` for a whole :class:`Config`."""
    return from_dict(Config, data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML (``load_config(path)`` reads back an equal config)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` with dotted keys: ``replace(cfg, **{"model.pretrained": False})``."""
    return from_dict(type(cfg), merge_overrides(to_dict(cfg), changes))  # type: ignore[arg-type]

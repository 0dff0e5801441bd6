"""What a trained model carries with it: its label space and the way its inputs and heatmaps are made.

:class:`ModelSpec` is written once, when a run starts training, into every checkpoint (its
``hyper_parameters["spec"]``) and every export (the metadata inside the ONNX / TorchScript file and the JSON
beside it), and read back by every command that uses the model (evaluate, localize, explain, predict,
export, report): nothing after training guesses the class names, their order, the input size or the
normalisation from a constant or from the config of the day.

======================  ==================================================================================
field                   what it is
======================  ==================================================================================
``class_names``         the labels the model scores, in the order of its logits and class maps
``image_size``          the side of the square model input, in pixels (``data.image_size``)
``normalize``           ``imagenet`` or ``none`` (``data.normalize``), with its ``mean`` / ``std``
``heatmap_grid``        where the cells of the native class maps sit on the input (:class:`FeatureGrid`)
``registration``        how heatmap cells are placed in the image by default (``geometric``)
``dataset``             the layout the run was trained on (``chestxray14``, ``chexpert``, ...)
``uncertain``           the uncertain-label policy of the run (``ignore``, ``zeros``, ``ones``)
``views``               the view filter of the run (``frontal``, or positions; empty: every view)
======================  ==================================================================================

:meth:`ModelSpec.to_dict` is plain data only (str, int, float, list, dict, None), because checkpoints are
read with ``torch.load(weights_only=True)``; :meth:`ModelSpec.from_dict` reads it back and checks every
field, naming the file and the field when one is wrong (:class:`~thoracic.errors.SpecError`). A checkpoint
or export written before specs were stored gets a derived one (``derived`` says how:
:func:`thoracic.training.checkpoints.checkpoint_spec`, :func:`thoracic.runtime.export_spec`).

:class:`FeatureGrid`, the heatmap grid, is plain data too (numpy only); :mod:`thoracic.geometry` derives
grids from a network and re-exports it. This module imports neither torch nor any other layer.

>>> spec = ModelSpec(("Mass", "Nodule"), 256, heatmap_grid=FeatureGrid((8, 8), (32.0, 32.0), (0.0, 0.0), (256, 256)))
>>> spec.num_classes, spec.index("Nodule"), spec.mean
(2, 1, (0.485, 0.456, 0.406))
>>> ModelSpec.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from thoracic.constants import (
    CLASS_NAMES,
    DATASET_KINDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    REGISTRATIONS,
    UNCERTAIN_POLICIES,
)
from thoracic.errors import GeometryError, SpecError

__all__ = ["LEGACY_CLASS_NAMES", "SPEC_KEY", "SPEC_VERSION", "FeatureGrid", "ModelSpec", "legacy_class_names",
           "normalization_constants"]

#: Key of the spec in a checkpoint's ``hyper_parameters`` and in an export's metadata.
SPEC_KEY = "spec"
#: Version of :meth:`ModelSpec.to_dict`'s layout (stored as ``version``).
SPEC_VERSION = 1
#: The labels of a file written before specs were stored that does not name its own (a checkpoint, an export,
#: a run folder's files): ChestX-ray14's, the only label space thoracic trained on then.
LEGACY_CLASS_NAMES: tuple[str, ...] = CLASS_NAMES


def legacy_class_names(names: Any = None) -> tuple[str, ...]:
    """The class names an old file records (``names``: its ``class_names``, or None when it records none),
    else :data:`LEGACY_CLASS_NAMES`."""
    return tuple(str(n) for n in names) if names else LEGACY_CLASS_NAMES


def normalization_constants(name: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` per channel of a normalisation: ImageNet's (torchvision) or ``(0, 0, 0), (1, 1, 1)``
    for ``none``; a model input is ``(x / 255 - mean) / std``."""
    if name == "imagenet":
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)  # type: ignore[return-value]
    if name == "none":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    raise SpecError(f"normalize: expected one of {', '.join(NORMALIZATIONS)}, got {name!r}")


# --------------------------------------------------------------------------------------------------
# The heatmap grid
# --------------------------------------------------------------------------------------------------


def _numbers(values: Any, kind: type) -> tuple[Any, Any]:
    """A pair of ``kind`` from a JSON list of two numbers (a pair of rows, columns)."""
    first, second = values  # exactly two: raises ValueError / TypeError otherwise
    return kind(first), kind(second)


@dataclass(frozen=True)
class FeatureGrid:
    """A feature map's cells in model-input pixels: cell ``(i, j)`` is centred at
    ``(offset[0] + stride[0] * i, offset[1] + stride[1] * j)`` (pixel ``p``'s centre at ``p``).

    Attributes:
        shape: ``(h, w)`` cells at ``input_size``.
        stride: input pixels per cell along rows and columns.
        offset: input-pixel coordinate of cell ``(0, 0)``'s receptive-field centre (rows, columns).
        input_size: ``(height, width)`` of the model input this grid was derived for.
    """

    shape: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]
    input_size: tuple[int, int]

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Input-pixel coordinates of the cell centres along rows and columns (two 1-D arrays)."""
        return tuple(o + s * np.arange(n, dtype=np.float64)  # type: ignore[return-value]
                     for n, s, o in zip(self.shape, self.stride, self.offset))

    def to_dict(self) -> dict[str, list[int] | list[float]]:
        """The one JSON form of a grid, in every file that stores one (localization results, model specs,
        export metadata): ``{"shape": [h, w], "stride": [sr, sc], "offset": [or, oc], "input_size": [H, W]}``.

        >>> FeatureGrid((8, 8), (32.0, 32.0), (0.0, 0.0), (256, 256)).to_dict()
        {'shape': [8, 8], 'stride': [32.0, 32.0], 'offset': [0.0, 0.0], 'input_size': [256, 256]}
        """
        return {"shape": [int(v) for v in self.shape], "stride": [float(v) for v in self.stride],
                "offset": [float(v) for v in self.offset], "input_size": [int(v) for v in self.input_size]}

    @classmethod
    def from_dict(cls, info: Mapping[str, Any]) -> FeatureGrid:
        """Inverse of :meth:`to_dict`. Also reads the names that export metadata written by earlier versions
        used (``map_size`` for ``shape``, ``cell_centre_offset`` for ``offset``).

        Raises:
            GeometryError: a key is missing or a value is not a pair of numbers.
        """
        try:
            shape = info["shape"] if "shape" in info else info["map_size"]
            offset = info["offset"] if "offset" in info else info["cell_centre_offset"]
            grid = cls(_numbers(shape, int), _numbers(info["stride"], float), _numbers(offset, float),
                       _numbers(info["input_size"], int))
        except (KeyError, TypeError, ValueError) as exc:
            raise GeometryError(f"not a heatmap grid: {dict(info) if isinstance(info, Mapping) else info!r}; "
                                f"expected the keys shape, stride, offset, input_size (pairs of numbers), "
                                f"problem: {exc!r}") from None
        return grid


# --------------------------------------------------------------------------------------------------
# The model spec
# --------------------------------------------------------------------------------------------------


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise SpecError(f"{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A trained model's label space, input and heatmap conventions (see the module docstring).

    Attributes:
        class_names: the labels, in the order of the model's logits and class maps.
        image_size: the side of the square model input (pixels).
        normalize: ``imagenet`` or ``none`` (:attr:`mean` / :attr:`std` follow from it).
        heatmap_grid: where the native class maps' cells sit on the input (None when unknown).
        registration: the default placement of heatmap cells in the image (``geometric`` / ``legacy``).
        dataset: the layout the run was trained on (None when unknown).
        uncertain: the run's uncertain-label policy (None when unknown).
        views: the run's view filter (empty: every view).
        derived: empty for a spec stored with the model; otherwise how it was derived for a file written
            before specs were stored (not part of :meth:`to_dict`, not compared).
    """

    class_names: tuple[str, ...]
    image_size: int
    normalize: str = "imagenet"
    heatmap_grid: FeatureGrid | None = None
    registration: str = "geometric"
    dataset: str | None = None
    uncertain: str | None = None
    views: tuple[str, ...] = ()
    derived: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        names = self.class_names
        _check(isinstance(names, (tuple, list)) and len(names) > 0
               and all(isinstance(n, str) and n.strip() for n in names),
               "class_names", "a non-empty list of label names", names)
        object.__setattr__(self, "class_names", tuple(names))
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        _check(not repeated, "class_names", "distinct label names", f"{', '.join(repeated)} given twice")
        _check(isinstance(self.image_size, (int, np.integer)) and not isinstance(self.image_size, bool)
               and self.image_size >= 1, "image_size", "a positive number of pixels", self.image_size)
        object.__setattr__(self, "image_size", int(self.image_size))
        _check(self.normalize in NORMALIZATIONS, "normalize", f"one of {', '.join(NORMALIZATIONS)}", self.normalize)
        _check(self.registration in REGISTRATIONS, "registration", f"one of {', '.join(REGISTRATIONS)}",
               self.registration)
        _check(self.dataset is None or self.dataset in DATASET_KINDS, "dataset",
               f"one of {', '.join(DATASET_KINDS)} or null", self.dataset)
        _check(self.uncertain is None or self.uncertain in UNCERTAIN_POLICIES, "uncertain",
               f"one of {', '.join(UNCERTAIN_POLICIES)} or null", self.uncertain)
        _check(isinstance(self.views, (tuple, list)) and all(isinstance(v, str) for v in self.views),
               "views", "a list of view names", self.views)
        object.__setattr__(self, "views", tuple(self.views))
        grid = self.heatmap_grid
        _check(grid is None or isinstance(grid, FeatureGrid), "heatmap_grid", "a FeatureGrid or null", grid)
        if grid is not None:
            _check(tuple(grid.input_size) == (self.image_size, self.image_size), "heatmap_grid.input_size",
                   f"the model input [{self.image_size}, {self.image_size}]", list(grid.input_size))

    @property
    def num_classes(self) -> int:
        """How many labels (logits) the model has."""
        return len(self.class_names)

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean of the normalisation (:func:`normalization_constants`)."""
        return normalization_constants(self.normalize)[0]

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation of the normalisation (:func:`normalization_constants`)."""
        return normalization_constants(self.normalize)[1]

    def index(self, name: str) -> int:
        """The logit index of a label.

        Raises:
            SpecError: ``name`` is not one of :attr:`class_names` (the message lists them).
        """
        try:
            return self.class_names.index(name)
        except ValueError:
            raise SpecError(f"class {name!r} is not one of the model's labels ({', '.join(self.class_names)})") from None

    def describe(self) -> str:
        """One line for messages: the labels, the input and where the spec comes from."""
        names = ", ".join(self.class_names[:6]) + (", ..." if self.num_classes > 6 else "")
        where = f" ({self.derived})" if self.derived else ""
        return (f"{self.num_classes} classes ({names}), {self.image_size} px input, {self.normalize} normalisation, "
                f"trained on {self.dataset or 'an unknown dataset'}{where}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (str, int, float, list, dict, None): what checkpoints and exports store."""
        return {
            "version": SPEC_VERSION,
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "normalization": {"name": self.normalize, "mean": list(self.mean), "std": list(self.std)},
            "heatmap_grid": self.heatmap_grid.to_dict() if self.heatmap_grid is not None else None,
            "registration": self.registration,
            "dataset": self.dataset,
            "uncertain": self.uncertain,
            "views": list(self.views),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "model spec") -> ModelSpec:
        """Inverse of :meth:`to_dict`, every field checked.

        Args:
            data: what :meth:`to_dict` wrote (read back from JSON or a checkpoint).
            where: the file (and key) it comes from, named in errors.

        Raises:
            SpecError: not a mapping, a missing or wrong field (named with ``where``), a version written by a
                newer thoracic, or a normalisation whose mean / std are not its name's.
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"{where}: expected a mapping of spec fields, got {type(data).__name__}")
        try:
            version = data.get("version", SPEC_VERSION)
            _check(isinstance(version, int) and 1 <= version <= SPEC_VERSION, "version",
                   f"1 ... {SPEC_VERSION} (a newer thoracic wrote it: update thoracic)", version)
            missing = [k for k in ("class_names", "image_size", "normalization") if k not in data]
            _check(not missing, ", ".join(missing), "a value (the field is missing)", None)
            normalization = data["normalization"]
            _check(isinstance(normalization, Mapping) and "name" in normalization, "normalization",
                   "a mapping with name, mean and std", normalization)
            grid_info = data.get("heatmap_grid")
            try:
                grid = FeatureGrid.from_dict(grid_info) if grid_info is not None else None
            except GeometryError as exc:
                raise SpecError(f"heatmap_grid: {exc}") from None
            spec = cls(class_names=data["class_names"], image_size=data["image_size"],
                       normalize=normalization["name"], heatmap_grid=grid,
                       registration=data.get("registration", "geometric"), dataset=data.get("dataset"),
                       uncertain=data.get("uncertain"), views=data.get("views") or ())
            for key, expected in (("mean", spec.mean), ("std", spec.std)):
                value = normalization.get(key, list(expected))
                _check(isinstance(value, (list, tuple)) and len(value) == 3
                       and np.allclose(np.asarray(value, dtype=float), expected, rtol=0, atol=1e-9),
                       f"normalization.{key}", f"{list(expected)} (the {spec.normalize} normalisation's)", value)
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: not a model spec ({exc})") from None
        return spec

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

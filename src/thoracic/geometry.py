"""Where the cells of a feature map sit in the image: stride and receptive-field centres from the network.

A convolution or pooling layer with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` puts
output cell ``j`` at the centre of its taps, input position ``s * j - p + d * (k - 1) / 2``. Composing the
layers of a backbone gives, for every feature map, an affine map from cell index to model-input pixel
(pixel ``i``'s centre at ``i``)::

    centre(cell k) = offset + stride * k

:func:`feature_grids` derives ``stride``, ``offset`` and the map's shape by tracing the backbone with
``torch.fx`` and walking its graph: convolutions and pooling transform the geometry, point-wise modules
(BatchNorm, ReLU, ...) keep it, and residual additions / dense concatenations must join branches of equal
geometry (checked). No per-backbone constant is involved: a padded stride-2 ResNet puts cell ``k`` at
``32 k`` (offset 0), DenseNet-121's 2 x 2 average-pooling transitions shift its final map by 14 pixels,
and dilated stages (``model.output_stride``) are handled by the same arithmetic.

The model sees the image resized from its original size to ``data.image_size`` (the cache's
:func:`~thoracic.data.images.resize_image`, PIL bilinear: pixel centres aligned, model pixel ``q`` at
original coordinate ``(q + 0.5) * original / input - 0.5``). :class:`Registration` composes both maps and
gives the original-pixel coordinates of every heatmap cell (the ``CellCentres`` that
:mod:`thoracic.heatmaps.boxes` interpolates between). Two registrations exist:

* ``geometric`` (default): the cell centres derived from the network, as above;
* ``legacy``: the ``align_corners=False`` convention of ``torch.nn.functional.interpolate``, which centres
  cell ``k`` of ``n`` on its tile of the image, ``(k + 0.5) * original / n - 0.5`` (for a padded ResNet
  half a cell further right and down than its receptive field).

Torch and numpy only: the models (to fuse attention levels), the heatmap methods and evaluation all
import this module, so it imports none of them.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from thoracic.constants import REGISTRATIONS
from thoracic.errors import GeometryError
from thoracic.spec import FeatureGrid

__all__ = [
    "REGISTRATIONS",
    "FeatureGrid",
    "GeometryError",
    "Registration",
    "feature_grids",
    "heatmap_geometry",
    "make_registration",
    "module_grid",
    "resample_to_grid",
]



def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _conv_axis(n: int, stride: float, offset: float, k: int, s: int, p: int, d: int, ceil_mode: bool = False
               ) -> tuple[int, float, float]:
    """(size, stride, offset) of one axis after a layer with kernel k, stride s, padding p, dilation d."""
    span = n + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        out = -(-span // s) + 1
        if (out - 1) * s >= n + p:  # torch: the last window must start inside the input or left padding
            out -= 1
    else:
        out = span // s + 1
    return out, stride * s, offset + stride * (d * (k - 1) / 2 - p)


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int]
    stride: tuple[float, float]
    offset: tuple[float, float]

    def after(self, kernel: Any, stride: Any, padding: Any, dilation: Any = 1, ceil_mode: bool = False) -> _Grid:
        axes = [_conv_axis(n, st, of, k, s, p, d, ceil_mode) for n, st, of, k, s, p, d in zip(
            self.shape, self.stride, self.offset, _pair(kernel), _pair(stride), _pair(padding), _pair(dilation))]
        if min(a[0] for a in axes) < 1:
            raise GeometryError(f"the input is too small for this network: a layer's output would be "
                                f"{axes[0][0]} x {axes[1][0]} cells")
        return _Grid((axes[0][0], axes[1][0]), (axes[0][1], axes[1][1]), (axes[0][2], axes[1][2]))


#: Modules that change where cells sit (handled) ...
_CONV = (nn.Conv2d,)
_POOL = (nn.MaxPool2d, nn.AvgPool2d)
#: ... and modules whose geometry is not a fixed grid: a heatmap cannot come after them.
_UNSUPPORTED = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ConvTranspose2d, nn.Linear,
                nn.Flatten, nn.PixelShuffle, nn.Unfold, nn.Fold, nn.LPPool2d, nn.FractionalMaxPool2d)
#: Functions that combine maps position by position (residual sums, concatenation along channels).
_POINTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
                        operator.truediv, torch.add, torch.mul, torch.sub, torch.cat, torch.relu,
                        torch.sigmoid, torch.tanh, F.relu, torch.nn.functional.relu_}
_POINTWISE_METHODS = {"add", "add_", "mul", "mul_", "relu", "relu_", "sigmoid", "clone", "contiguous"}

_TRACES: weakref.WeakKeyDictionary[nn.Module, fx.Graph] = weakref.WeakKeyDictionary()


def _graph(module: nn.Module) -> fx.Graph:
    graph = _TRACES.get(module)
    if graph is None:
        try:
            graph = fx.Tracer().trace(module)
        except Exception as exc:  # noqa: BLE001 - any tracing failure means the same to the user
            raise GeometryError(f"cannot trace {type(module).__name__} to derive its heatmap geometry: "
                                f"{type(exc).__name__}: {exc}") from exc
        _TRACES[module] = graph
    return graph


def _tensor_args(value: Any) -> list[Any]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _tensor_args(item)]
    if isinstance(value, Mapping):
        return [n for item in value.values() for n in _tensor_args(item)]
    return []


def _join(node: fx.Node, grids: list[_Grid]) -> _Grid | None:
    """The common grid of the inputs of a point-wise node (``None`` when no input has one)."""
    if not grids:
        return None
    if any(g != grids[0] for g in grids[1:]):
        raise GeometryError(f"{node.name}: joins feature maps of different geometry {grids}; their cells "
                            f"do not correspond position by position")
    return grids[0]


def _walk(module: nn.Module, input_size: tuple[int, int]) -> tuple[fx.Graph, dict[fx.Node, _Grid | None]]:
    graph = _graph(module)
    grids: dict[fx.Node, _Grid | None] = {}
    for node in graph.nodes:
        inputs = [grids[n] for n in _tensor_args((node.args, node.kwargs)) if grids.get(n) is not None]
        if node.op == "placeholder":
            grids[node] = _Grid(tuple(input_size), (1.0, 1.0), (0.0, 0.0)) if not grids else None
        elif node.op == "call_module":
            layer = module.get_submodule(str(node.target))
            source = inputs[0] if inputs else None
            if source is None:
                grids[node] = None
            elif isinstance(layer, _CONV):
                padding = layer.padding
                if isinstance(padding, str):  # 'valid' = 0; 'same' keeps the size with stride 1
                    padding = (0, 0) if padding == "valid" else tuple(
                        d * (k - 1) // 2 for k, d in zip(_pair(layer.kernel_size), _pair(layer.dilation)))
                grids[node] = source.after(layer.kernel_size, layer.stride, padding, layer.dilation)
            elif isinstance(layer, nn.MaxPool2d):
                grids[node] = source.after(layer.kernel_size, layer.stride or layer.kernel_size, layer.padding,
                                           layer.dilation, layer.ceil_mode)
            elif isinstance(layer, nn.AvgPool2d):
                grids[node] = source.after(layer.kernel_size, layer.stride or layer.kernel_size, layer.padding,
                                           1, layer.ceil_mode)
            elif isinstance(layer, _UNSUPPORTED):
                grids[node] = None  # anything downstream has no fixed grid; fails only if a heatmap needs it
            else:  # normalisation, activations, dropout: position by position
                grids[node] = source
        elif node.op in ("call_function", "call_method"):
            if not inputs:
                grids[node] = None
                continue
            pointwise = (node.target in _POINTWISE_FUNCTIONS if node.op == "call_function"
                         else node.target in _POINTWISE_METHODS)
            if node.target is torch.cat:  # joins maps position by position only along channels
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                pointwise = dim in (1, -3)
            grids[node] = _join(node, inputs) if pointwise else None
        else:
            grids[node] = inputs[0] if len(inputs) == 1 else None
    return graph, grids


def _public(grid: _Grid | None, what: str, input_size: tuple[int, int]) -> FeatureGrid:
    if grid is None:
        raise GeometryError(f"{what} has no fixed grid over the input (it follows a global pooling, an "
                            f"upsampling or a layer whose geometry is unknown)")
    return FeatureGrid(grid.shape, grid.stride, grid.offset, tuple(input_size))


def _size(input_size: int | Sequence[int]) -> tuple[int, int]:
    return (int(input_size), int(input_size)) if isinstance(input_size, (int, np.integer)) else _pair(input_size)


def feature_grids(backbone: nn.Module, input_size: int | Sequence[int]) -> dict[str, FeatureGrid]:
    """The grid of every feature map a backbone returns (its ``forward`` returns a dict of maps).

    Args:
        backbone: a module whose ``forward(x)`` returns ``{name: (B, C, h, w) map}`` (a
            :class:`~thoracic.models.backbones.Backbone`: ``layer2``, ``layer3``, ``final``).
        input_size: model input side, or ``(height, width)``.

    Raises:
        GeometryError: when the backbone cannot be traced or its maps have no fixed grid.
    """
    size = _size(input_size)
    graph, grids = _walk(backbone, size)
    output = next(n for n in graph.nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, Mapping):
        raise GeometryError(f"{type(backbone).__name__}.forward must return a dict of feature maps")
    return {str(key): _public(grids.get(value), f"feature map {key!r}", size) for key, value in result.items()}


def module_grid(backbone: nn.Module, layer: nn.Module, input_size: int | Sequence[int]) -> FeatureGrid:
    """The grid of the output of ``layer``, any module inside ``backbone`` (a Grad-CAM target layer)."""
    size = _size(input_size)
    name = next((n for n, m in backbone.named_modules() if m is layer), None)
    if name is None:
        raise GeometryError(f"{type(layer).__name__} is not a module of the backbone: its grid is unknown "
                            f"(attribute a backbone layer, e.g. layer2, layer3 or layer4)")
    graph, grids = _walk(backbone, size)
    if name == "":
        raise GeometryError("the backbone itself returns several maps; name one of its layers")
    last = None
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        owners = {str(k).split("@")[0] for k in stack} | {str(v[0]) for v in stack.values()}
        if name in owners or (node.op == "call_module" and str(node.target) == name):
            last = node
    if last is None:
        raise GeometryError(f"layer {name!r} is not on the traced path of the backbone")
    return _public(grids.get(last), f"layer {name!r}", size)


# --------------------------------------------------------------------------------------------------
# Model -> heatmap geometry
# --------------------------------------------------------------------------------------------------


def heatmap_grid(model: nn.Module, input_size: int | Sequence[int]) -> FeatureGrid:
    """The grid of a model's native heatmaps (``class_maps``): its ``native_heatmap_level`` feature map."""
    level = getattr(model, "native_heatmap_level", "final")
    grids = feature_grids(model.backbone, input_size)
    if level not in grids:
        raise GeometryError(f"{type(model).__name__}: native heatmap level {level!r} is not among {list(grids)}")
    return grids[level]


def heatmap_geometry(model: nn.Module, image_size: int) -> dict[str, Any]:
    """Stride and offset of a model's native heatmap at a square input of ``image_size`` pixels.

    Returns ``{"stride": s, "offset": o, "shape": [h, w], "input_size": image_size}``: cell ``k`` of
    the heatmap (along rows and along columns) is centred at model-input pixel ``o + s * k`` (pixel ``i``'s
    centre at ``i``); e.g. ResNet at output stride 32: ``s = 32, o = 0``. Square grids only (every
    registered backbone); :func:`heatmap_grid` has per-axis values.
    """
    grid = heatmap_grid(model, int(image_size))
    if grid.stride[0] != grid.stride[1] or grid.offset[0] != grid.offset[1]:
        raise GeometryError(f"heatmap grid differs between rows and columns: {grid}; use heatmap_grid()")
    return {"stride": float(grid.stride[0]), "offset": float(grid.offset[0]), "shape": list(grid.shape),
            "input_size": int(image_size)}


# --------------------------------------------------------------------------------------------------
# Registration: heatmap cells -> original-image pixels
# --------------------------------------------------------------------------------------------------


def legacy_centres(n: int, size_out: int) -> np.ndarray:
    """``align_corners=False``: cell ``k`` of ``n`` at ``(k + 0.5) * size_out / n - 0.5`` (tile centres).

    >>> legacy_centres(4, 8).tolist()
    [0.5, 2.5, 4.5, 6.5]
    """
    return (np.arange(n, dtype=np.float64) + 0.5) * (size_out / n) - 0.5


@dataclass(frozen=True)
class Registration:
    """Where a heatmap's cells sit in its original image; call it as ``registration(shape, original_size)``.

    Attributes:
        name: ``geometric`` or ``legacy`` (see the module docstring).
        grid: the heatmap's :class:`FeatureGrid` (needed by ``geometric``; ``legacy`` only uses the shape).
    """

    name: str
    grid: FeatureGrid | None = None

    def __post_init__(self) -> None:
        if self.name not in REGISTRATIONS:
            raise GeometryError(f"registration must be one of {list(REGISTRATIONS)}, got {self.name!r}")
        if self.name == "geometric" and self.grid is None:
            raise GeometryError("the geometric registration needs the heatmap's grid")

    def __call__(self, heatmap_shape: Sequence[int], original_size: int | Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``(row_centres, col_centres)`` in original-image pixels of a ``heatmap_shape`` map.

        ``original_size`` is ``(height, width)`` (or one int). Raises :class:`GeometryError` when the
        heatmap's shape is not the grid's (a map of another model or input size).
        """
        shape = tuple(int(v) for v in tuple(heatmap_shape)[-2:])
        original = _size(original_size)
        if self.name == "legacy":
            return legacy_centres(shape[0], original[0]), legacy_centres(shape[1], original[1])
        grid = self.grid
        assert grid is not None
        if shape != tuple(grid.shape):
            raise GeometryError(f"heatmap of shape {shape} does not fit its grid {tuple(grid.shape)} "
                                f"(model input {grid.input_size}); was it computed at another input size?")
        return tuple(  # type: ignore[return-value]
            (centres + 0.5) * (size / inp) - 0.5
            for centres, size, inp in zip(grid.centres(), original, grid.input_size))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description: the name, and the grid's :meth:`FeatureGrid.to_dict` keys."""
        info: dict[str, Any] = {"registration": self.name}
        if self.grid is not None:
            info.update(self.grid.to_dict())
        return info

    @classmethod
    def from_description(cls, info: Mapping[str, Any]) -> Registration:
        """Inverse of :meth:`describe` (e.g. read back from ``localization_<method>.json``)."""
        if not isinstance(info, Mapping) or "registration" not in info:
            raise GeometryError(f"not a registration description: {info!r} (no 'registration' key)")
        grid = FeatureGrid.from_dict(info) if "stride" in info else None
        return cls(str(info["registration"]), grid)

    def other(self) -> Registration:
        """The same heatmap grid under the other registration (for sensitivity tables)."""
        return Registration(next(n for n in REGISTRATIONS if n != self.name), self.grid)


def make_registration(name: str, grid: FeatureGrid | None) -> Registration:
    """:class:`Registration` ``name`` (``geometric`` / ``legacy``) of heatmaps on ``grid``."""
    return Registration(str(name), grid)


# --------------------------------------------------------------------------------------------------
# Resampling a map from one grid onto another (attention-gated fusion)
# --------------------------------------------------------------------------------------------------


def resample_to_grid(maps: torch.Tensor, source: FeatureGrid, target: FeatureGrid) -> torch.Tensor:
    """Resample ``(B, C, h, w)`` maps on ``source`` onto ``target``'s cells, registered.

    The value at a target cell is the linear interpolation, at that cell's input-pixel position, between
    the source cell centres (constant beyond the first and last centre): the same rule as localization's
    upsampling, unlike ``interpolate(align_corners=False)``, which assumes cells centred on their tiles.
    Uses ``grid_sample`` (``align_corners=True``: -1 and 1 are the first and last source centres).
    """
    if tuple(maps.shape[-2:]) != tuple(source.shape):
        raise GeometryError(f"maps of shape {tuple(maps.shape[-2:])} are not on their grid {source.shape}")
    if source == target:
        return maps
    coords = []
    for axis in range(2):
        position = torch.as_tensor(target.centres()[axis], dtype=torch.float64)
        index = (position - source.offset[axis]) / source.stride[axis]  # fractional source cell
        n = source.shape[axis]
        coords.append(torch.zeros_like(index) if n == 1 else (2 * index / (n - 1) - 1).clamp(-1.0, 1.0))
    grid_y, grid_x = torch.meshgrid(coords[0], coords[1], indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1).to(maps.dtype).to(maps.device)
    grid = grid.unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)


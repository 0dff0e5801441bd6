"""Heatmap methods sharing one interface: ``method(images, class_index) -> (B, h, w)`` in [0, 1].

* :class:`NativeHeatmap` (``native``): the model's own maps (CAM, space-attention class maps,
  attention-gated map).
* :class:`GradCAM` (``gradcam``, ``gradcam-layer3``, ``gradcam-layer2``): Grad-CAM on the final backbone
  stage or a finer one (captum), on that layer's grid.
* :class:`IntegratedGradients` (``ig``): smoothed Integrated Gradients on the input pixels (captum).

Every method offers ``all_classes(images) -> (B, num_classes, h, w)``, works as a context manager and
says where its cells sit: ``grid(input_size)`` (:class:`thoracic.geometry.FeatureGrid`), which
localization turns into a :class:`thoracic.geometry.Registration`. :func:`create_heatmap_method` builds
one by name (``thoracic localize --method``, ``thoracic predict --method``). They depend only on the
model's forward pass and :class:`~thoracic.models.output.ModelOutput` (duck-typed: importing this
package does not import :mod:`thoracic.models`; map operations come from :mod:`thoracic.maps`).

:mod:`thoracic.heatmaps.boxes` turns a heatmap into boxes in original-image pixels (numpy; Wang et al.
2017): :func:`boxes_from_heatmap`, :func:`extract_boxes` for many maps, :func:`heatmap_peak`, at the
:data:`HEATMAP_THRESHOLDS`; localization scores these boxes and prediction draws them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from thoracic.errors import ThoracicError
from thoracic.heatmaps.attribution import IntegratedGradients
from thoracic.heatmaps.boxes import (
    HEATMAP_THRESHOLDS,
    ExtractedBoxes,
    boxes_from_heatmap,
    boxes_from_heatmaps,
    extract_boxes,
    heatmap_peak,
    heatmap_peaks,
)
from thoracic.heatmaps.gradcam import GradCAM
from thoracic.heatmaps.native import HeatmapMethod, NativeHeatmap, class_index_tensor
from thoracic.maps import minmax_normalize

#: name -> (factory, one-line description). The names are file-name safe (``heatmaps_<name>.npz``).
_METHODS: dict[str, tuple[Callable[[nn.Module], HeatmapMethod], str]] = {
    "native": (NativeHeatmap, "the model's own maps (CAM / class maps / attention-gated map)"),
    "gradcam": (lambda model: GradCAM(model), "Grad-CAM on the final backbone stage"),
    "gradcam-layer3": (lambda model: GradCAM(model, "layer3"), "Grad-CAM on layer3 (twice as fine)"),
    "gradcam-layer2": (lambda model: GradCAM(model, "layer2"), "Grad-CAM on layer2 (four times as fine)"),
    "ig": (IntegratedGradients, "smoothed Integrated Gradients on the input pixels (pixel-registered)"),
}

#: Method names, in the order ``--help`` lists them.
HEATMAP_METHOD_NAMES: tuple[str, ...] = tuple(_METHODS)


def list_heatmap_methods() -> list[str]:
    """Names accepted by :func:`create_heatmap_method`."""
    return list(HEATMAP_METHOD_NAMES)


def describe_heatmap_methods() -> str:
    """``name: description`` of every method, for command help."""
    return "; ".join(f"{name}: {text}" for name, (_, text) in _METHODS.items())


def create_heatmap_method(name: str, model: nn.Module) -> HeatmapMethod:
    """The heatmap method ``name`` (see :data:`HEATMAP_METHOD_NAMES`) on ``model``."""
    if name not in _METHODS:
        raise ThoracicError(f"heatmap method must be one of {list(_METHODS)}, got {name!r}")
    return _METHODS[name][0](model)


__all__ = ["ExtractedBoxes", "GradCAM", "HEATMAP_METHOD_NAMES", "HEATMAP_THRESHOLDS", "HeatmapMethod",
           "IntegratedGradients", "NativeHeatmap", "boxes_from_heatmap", "boxes_from_heatmaps", "class_index_tensor",
           "create_heatmap_method", "describe_heatmap_methods", "extract_boxes", "heatmap_peak", "heatmap_peaks",
           "list_heatmap_methods", "minmax_normalize"]

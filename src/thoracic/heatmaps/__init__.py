"""Heatmap methods sharing one interface: ``method(images, class_index) -> (B, h, w)`` in [0, 1].

* :class:`NativeHeatmap` (``native``): the model's own maps (CAM, space-attention class maps,
  attention-gated map).
* :class:`GradCAM` (``gradcam``, ``gradcam-layer3``, ``gradcam-layer2``): Grad-CAM on the final backbone
  stage or a finer one (captum), on that layer's grid.
* :class:`GradCAMPlusPlus` (``gradcampp``): Grad-CAM++ on the final backbone stage (pytorch-grad-cam).
* :class:`IntegratedGradients` (``ig``): smoothed Integrated Gradients on the input pixels (captum).
* :class:`SmoothGrad` (``smoothgrad``): smoothed SmoothGrad, a noise tunnel around the gradient (captum).
* :class:`Occlusion` (``occlusion``): the logit's drop under a sliding grey window (captum).

Every method derives from :class:`HeatmapMethod` (:mod:`thoracic.heatmaps.base`): its template
``__call__`` checks the class indices, runs the method's one overridden function ``attribute`` and
normalises the maps. Every method offers ``all_classes(images) -> (B, num_classes, h, w)``, works as a context manager and
says where its cells sit: ``grid(input_size)`` (:class:`thoracic.geometry.FeatureGrid`), which
localization turns into a :class:`thoracic.geometry.Registration`. :func:`create_heatmap_method` builds
one by name (``thoracic localize --method``, ``thoracic predict --method``). They depend only on the
model's forward pass and :class:`~thoracic.models.output.ModelOutput` (duck-typed: importing this
package does not import :mod:`thoracic.models`; map operations come from :mod:`thoracic.maps`).

:mod:`thoracic.heatmaps.boxes` turns a heatmap into boxes in original-image pixels (numpy; Wang et al.
2017): :func:`boxes_from_heatmap`, :func:`extract_boxes` for many maps, :func:`heatmap_peak`, at the
:data:`HEATMAP_THRESHOLDS`; localization scores these boxes and prediction draws them.

Names are imported on first use, so that the box extraction (used by evaluation and reports) and the
method names (command help) do not pull in torch.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from thoracic.errors import ThoracicError

if TYPE_CHECKING:
    from torch import nn

    from thoracic.heatmaps.base import HeatmapMethod

_EXPORTS = {
    "NativeHeatmap": "thoracic.heatmaps.native",
    "HeatmapMethod": "thoracic.heatmaps.base",
    "class_index_tensor": "thoracic.heatmaps.base",
    "GradCAM": "thoracic.heatmaps.gradcam",
    "GradCAMPlusPlus": "thoracic.heatmaps.gradcam",
    "IntegratedGradients": "thoracic.heatmaps.attribution",
    "Occlusion": "thoracic.heatmaps.attribution",
    "SmoothGrad": "thoracic.heatmaps.attribution",
    "minmax_normalize": "thoracic.maps",
    "HEATMAP_THRESHOLDS": "thoracic.heatmaps.boxes",
    "ExtractedBoxes": "thoracic.heatmaps.boxes",
    "boxes_from_heatmap": "thoracic.heatmaps.boxes",
    "boxes_from_heatmaps": "thoracic.heatmaps.boxes",
    "extract_boxes": "thoracic.heatmaps.boxes",
    "heatmap_peak": "thoracic.heatmaps.boxes",
    "heatmap_peaks": "thoracic.heatmaps.boxes",
}

#: name -> (module, class, arguments after the model, one-line description). The names are file-name safe
#: (``heatmaps_<name>.npz``).
_METHODS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "native": ("thoracic.heatmaps.native", "NativeHeatmap", (),
               "the model's own maps (CAM / class maps / attention-gated map)"),
    "gradcam": ("thoracic.heatmaps.gradcam", "GradCAM", (), "Grad-CAM on the final backbone stage"),
    "gradcam-layer3": ("thoracic.heatmaps.gradcam", "GradCAM", ("layer3",), "Grad-CAM on layer3 (twice as fine)"),
    "gradcam-layer2": ("thoracic.heatmaps.gradcam", "GradCAM", ("layer2",),
                       "Grad-CAM on layer2 (four times as fine)"),
    "ig": ("thoracic.heatmaps.attribution", "IntegratedGradients", (),
           "smoothed Integrated Gradients on the input pixels (pixel-registered)"),
    "gradcampp": ("thoracic.heatmaps.gradcam", "GradCAMPlusPlus", (), "Grad-CAM++ on the final backbone stage"),
    "smoothgrad": ("thoracic.heatmaps.attribution", "SmoothGrad", (),
                   "smoothed SmoothGrad (noise tunnel of gradients) on the input pixels"),
    "occlusion": ("thoracic.heatmaps.attribution", "Occlusion", (),
                  "drop of the class logit under a sliding grey window (input pixels; 225 passes per class)"),
}

#: Method names, in the order ``--help`` lists them (the built-in ones; :func:`list_heatmap_methods` adds
#: those registered at run time).
HEATMAP_METHOD_NAMES: tuple[str, ...] = tuple(_METHODS)

#: Methods registered at run time (:func:`register_heatmap_method`): name -> (factory, description).
_REGISTERED: dict[str, tuple[Callable[[Any], Any], str]] = {}
_FILE_NAME_SAFE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def list_heatmap_methods() -> list[str]:
    """Names accepted by :func:`create_heatmap_method`: the built-in ones, then the registered ones."""
    return [*HEATMAP_METHOD_NAMES, *_REGISTERED]


def describe_heatmap_methods() -> str:
    """``name: description`` of every method, for command help."""
    texts = {name: text for name, (_, _, _, text) in _METHODS.items()}
    texts.update({name: text for name, (_, text) in _REGISTERED.items()})
    return "; ".join(f"{name}: {text}" for name, text in texts.items())


def register_heatmap_method(name: str, factory: Callable[[nn.Module], HeatmapMethod], description: str) -> None:
    """Make ``factory(model)`` (a :class:`HeatmapMethod` subclass, typically) available as method ``name``.

    ``name`` must be file-name safe (lower-case letters, digits, ``-``: the files ``thoracic localize`` and
    ``thoracic explain`` write carry it) and not a built-in name. Registering a name again replaces it;
    :func:`unregister_heatmap_method` removes it.
    """
    if not _FILE_NAME_SAFE.match(name):
        raise ThoracicError(f"heatmap method name must be lower-case letters, digits and '-', got {name!r}")
    if name in _METHODS:
        raise ThoracicError(f"{name!r} is a built-in heatmap method")
    _REGISTERED[name] = (factory, description)


def unregister_heatmap_method(name: str) -> None:
    """Remove a method added by :func:`register_heatmap_method` (nothing when it is not registered)."""
    _REGISTERED.pop(name, None)


def create_heatmap_method(name: str, model: nn.Module) -> HeatmapMethod:
    """The heatmap method ``name`` (see :func:`list_heatmap_methods`) on ``model``."""
    if name in _REGISTERED:
        return _REGISTERED[name][0](model)
    if name not in _METHODS:
        raise ThoracicError(f"heatmap method must be one of {list_heatmap_methods()}, got {name!r}")
    module, class_name, arguments, _ = _METHODS[name]
    return getattr(importlib.import_module(module), class_name)(model, *arguments)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'thoracic.heatmaps' has no attribute {name!r}")


__all__ = ["ExtractedBoxes", "GradCAM", "GradCAMPlusPlus", "HEATMAP_METHOD_NAMES", "HEATMAP_THRESHOLDS",
           "HeatmapMethod", "IntegratedGradients", "NativeHeatmap", "Occlusion", "SmoothGrad", "boxes_from_heatmap", "boxes_from_heatmaps", "class_index_tensor",
           "create_heatmap_method", "describe_heatmap_methods", "extract_boxes", "heatmap_peak", "heatmap_peaks",
           "list_heatmap_methods", "minmax_normalize", "register_heatmap_method", "unregister_heatmap_method"]

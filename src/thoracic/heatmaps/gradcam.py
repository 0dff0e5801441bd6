"""Grad-CAM (Selvaraju et al. 2017, captum's ``LayerGradCam``) and Grad-CAM++ (Chattopadhay et al. 2018,
pytorch-grad-cam's ``GradCAMPlusPlus``) for every model, on any backbone layer.

The target is the logit of the requested class (multi-label: one sigmoid per class, so the class's own
logit, not a softmax score). Attributions are taken at ``target_layer`` (default ``model.target_layer``,
the final backbone stage; ``layer2`` / ``layer3`` give finer maps), passed through ReLU and min-max
normalised per image (Grad-CAM++ weights the activations by its second-order weights instead of the
mean gradient). They stay on the grid of that layer (8 x 8 for the final stage at 256 px and
output stride 32): :meth:`GradCAM.grid` says where its cells sit, so localization places them where
their receptive fields are instead of resizing them onto another map's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from thoracic.geometry import FeatureGrid, GeometryError, module_grid
from thoracic.heatmaps.base import HeatmapMethod, LogitsOnly

if TYPE_CHECKING:  # annotations only
    from pytorch_grad_cam import GradCAMPlusPlus as LibraryGradCAMPlusPlus

#: Names accepted for ``target_layer`` (backbone stages; ``final`` is ``layer4``).
LAYER_NAMES: tuple[str, ...] = ("layer2", "layer3", "layer4", "final")


def backbone_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module:
    """The module named ``layer`` among the backbone stages (``None`` / ``final``: ``model.target_layer``)."""
    if layer is None or layer == "final":
        return model.target_layer
    if isinstance(layer, nn.Module):
        return layer
    if layer not in LAYER_NAMES:
        raise GeometryError(f"Grad-CAM layer must be one of {list(LAYER_NAMES)}, got {layer!r}")
    return getattr(model.backbone, layer)


class LayerHeatmap(HeatmapMethod):
    """A heatmap on the grid of one backbone layer (the CAM family).

    Args:
        model: a registered model (needs ``backbone``, ``target_layer``, ``num_classes`` and
            ``forward(x, return_maps)``).
        target_layer: the layer to attribute: a module, or ``layer2`` / ``layer3`` / ``layer4`` /
            ``final`` (default: ``model.target_layer``, the final stage).
    """

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None) -> None:
        super().__init__(model)
        self.layer = backbone_layer(model, target_layer)

    def grid(self, input_size: int | Sequence[int]) -> FeatureGrid:
        """The attributed layer's grid (stride and receptive-field offset from the backbone)."""
        return module_grid(self.model.backbone, self.layer, input_size)


class GradCAM(LayerHeatmap):
    """Grad-CAM heatmaps ``(B, h, w)`` in [0, 1] on the grid of the attributed layer (arguments: see
    :class:`LayerHeatmap`).

    captum attaches its hooks only for the duration of each call and removes them in a ``finally``
    block; no gradients are accumulated into the parameters' ``.grad`` (``torch.autograd.grad`` is used).
    """

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None) -> None:
        super().__init__(model, target_layer)
        from captum.attr import LayerGradCam  # imported here: captum is slow to import

        self._gradcam = LayerGradCam(self._forward_logits, self.layer)

    def attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Grad-CAM of ``index`` at the layer (ReLU applied), ``(B, h, w)``."""
        return self._gradcam.attribute(images, target=index, relu_attributions=True)[:, 0]


class GradCAMPlusPlus(LayerHeatmap):
    """Grad-CAM++ heatmaps ``(B, h, w)`` in [0, 1] on the grid of the attributed layer (pytorch-grad-cam).

    Chattopadhay et al. 2018: the channel weights are the positive gradients weighted by the closed-form
    second-order coefficients (their Eq. 19), which credit several instances of a class in one image
    rather than the strongest. Same arguments, target and grid as :class:`GradCAM`.

    pytorch-grad-cam's ``BaseCAM`` resizes its maps to the input; here they stay on the layer's grid
    (``get_target_width_height`` returns ``None``), so localization registers them like Grad-CAM's. Its
    hooks live only for the duration of each call (released in a ``finally`` block); it puts the model in
    eval mode and calls ``backward``, so the model's mode and every parameter's ``.grad`` are restored
    afterwards.
    """

    def _library_cam(self) -> LibraryGradCAMPlusPlus:
        from pytorch_grad_cam import GradCAMPlusPlus as Library  # imported here: slow to import (OpenCV)

        class OnTheLayerGrid(Library):
            def get_target_width_height(self, input_tensor: torch.Tensor) -> None:  # keep the layer's grid
                return None

        cam = OnTheLayerGrid(LogitsOnly(self.model), [self.layer])
        cam.compute_input_gradient = True  # gradients reach the layer even when no weight before it learns
        return cam

    def attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Grad-CAM++ of ``index`` at the layer, ``(B, h, w)`` (each map already scaled to [0, 1])."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        parameters = list(self.model.parameters())
        gradients = [p.grad for p in parameters]
        training = getattr(self.model, "training", False)
        cam = self._library_cam()
        try:
            maps = cam(images, [ClassifierOutputTarget(int(k)) for k in index.tolist()])
        finally:
            cam.activations_and_grads.release()
            self.model.train(training)
            for parameter, gradient in zip(parameters, gradients):
                parameter.grad = gradient
        return torch.from_numpy(maps).to(images.device)


__all__ = ["LAYER_NAMES", "GradCAM", "GradCAMPlusPlus", "LayerHeatmap", "backbone_layer"]

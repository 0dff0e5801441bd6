"""Grad-CAM (Selvaraju et al. 2017) for every model, on any backbone layer, through captum's ``LayerGradCam``.

The target is the logit of the requested class (multi-label: one sigmoid per class, so the class's own
logit, not a softmax score). Attributions are taken at ``target_layer`` (default ``model.target_layer``,
the final backbone stage; ``layer2`` / ``layer3`` give finer maps), passed through ReLU and min-max
normalised per image. They stay on the grid of that layer (8 x 8 for the final stage at 256 px and
output stride 32): :meth:`GradCAM.grid` says where its cells sit, so localization places them where
their receptive fields are instead of resizing them onto another map's grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from thoracic.geometry import FeatureGrid, GeometryError, module_grid
from thoracic.heatmaps.native import HeatmapMethod, class_index_tensor
from thoracic.maps import minmax_normalize

if TYPE_CHECKING:  # annotations only: importing thoracic.models would load every model
    from thoracic.models.output import ModelOutput

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


class GradCAM(HeatmapMethod):
    """Grad-CAM heatmaps ``(B, h, w)`` in [0, 1] on the grid of the attributed layer.

    Args:
        model: a registered model (needs ``backbone``, ``target_layer``, ``num_classes`` and
            ``forward(x, return_maps)``).
        target_layer: the layer to attribute: a module, or ``layer2`` / ``layer3`` / ``layer4`` /
            ``final`` (default: ``model.target_layer``, the final stage).

    captum attaches its hooks only for the duration of each call and removes them in a ``finally``
    block; no gradients are accumulated into the parameters' ``.grad`` (``torch.autograd.grad`` is used).
    """

    def __init__(self, model: nn.Module, target_layer: str | nn.Module | None = None) -> None:
        super().__init__(model)
        from captum.attr import LayerGradCam  # imported here: captum is slow to import

        self.layer = backbone_layer(model, target_layer)
        self._gradcam = LayerGradCam(self._forward_logits, self.layer)

    def _forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        output: ModelOutput = self.model(images)
        return output.logits

    def grid(self, input_size: int | Sequence[int]) -> FeatureGrid:
        """The attributed layer's grid (stride and receptive-field offset from the backbone)."""
        return module_grid(self.model.backbone, self.layer, input_size)

    def _attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            maps = self._gradcam.attribute(images, target=index.to(images.device), relu_attributions=True)
        return minmax_normalize(maps.detach().float()[:, 0])

    def __call__(self, images: torch.Tensor, class_index: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        index = class_index_tensor(class_index, images.shape[0], int(self.model.num_classes))
        return self._attribute(images, index)

    def all_classes(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes, h, w)``: one backward pass per class."""
        return torch.stack(
            [self(images, k) for k in range(int(self.model.num_classes))], dim=1
        )

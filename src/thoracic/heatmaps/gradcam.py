"""Grad-CAM (Selvaraju et al. 2017) for every model, through captum's ``LayerGradCam``.

The target is the logit of the requested class (multi-label: one sigmoid per class, so the class's own
logit, not a softmax score). Attributions are taken at ``model.target_layer`` (the final backbone stage),
passed through ReLU, resized bilinearly to the shape of the model's native ``class_maps`` (8x8 for the
baseline and space attention, 32x32 for the attention-gated network at 256 px) and min-max normalised
per image, so localization compares both methods on the same boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from thoracic.heatmaps.native import HeatmapMethod, class_index_tensor
from thoracic.maps import minmax_normalize, resize_maps

if TYPE_CHECKING:  # annotations only: importing thoracic.models would load every model
    from thoracic.models.output import ModelOutput


class GradCAM(HeatmapMethod):
    """Grad-CAM heatmaps ``(B, H, W)`` in [0, 1] at the model's native heatmap resolution.

    Args:
        model: a registered model (needs ``target_layer``, ``num_classes`` and ``forward(x, return_maps)``).
        target_layer: layer to attribute (default ``model.target_layer``).

    captum attaches its hooks only for the duration of each call and removes them in a ``finally``
    block; no gradients are accumulated into the parameters' ``.grad`` (``torch.autograd.grad`` is used).
    """

    def __init__(self, model: nn.Module, target_layer: nn.Module | None = None) -> None:
        super().__init__(model)
        from captum.attr import LayerGradCam  # imported here: captum is slow to import

        self._native_size: tuple[int, int] | None = None
        self._gradcam = LayerGradCam(self._forward_logits, target_layer or model.target_layer)

    def _forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        output: ModelOutput = self.model(images, return_maps=True)
        if output.class_maps is not None:  # the native map shape, known from the same forward pass
            self._native_size = tuple(output.class_maps.shape[-2:])
        return output.logits

    def close(self) -> None:
        """Forget the native map size (captum's hooks are already gone after each call)."""
        self._native_size = None

    def _attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            maps = self._gradcam.attribute(images, target=index.to(images.device), relu_attributions=True)
        maps = maps.detach().float()
        if self._native_size is not None:
            maps = resize_maps(maps, self._native_size)
        return minmax_normalize(maps[:, 0])

    def __call__(self, images: torch.Tensor, class_index: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        index = class_index_tensor(class_index, images.shape[0], int(self.model.num_classes))
        return self._attribute(images, index)

    def all_classes(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes, H, W)``: one backward pass per class."""
        return torch.stack(
            [self(images, k) for k in range(int(self.model.num_classes))], dim=1
        )

"""What every registered model shares: a backbone, ``num_classes`` and the Grad-CAM target layer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from thoracic.constants import NUM_CLASSES
from thoracic.models.backbones import Backbone, create_backbone
from thoracic.models.output import ModelOutput


class ThoracicModel(nn.Module):
    """Base class: builds the backbone and exposes ``target_layer`` (its final stage) and ``num_classes``.

    Args:
        backbone: a registered backbone name (see :func:`~thoracic.models.backbones.list_backbones`) or a
            ready :class:`~thoracic.models.backbones.Backbone` (used as is; tests build tiny ones).
        pretrained, weights, freeze_backbone: see :mod:`thoracic.models.backbones`.
        num_classes: number of output logits (14 for ChestX-ray14).
        output_stride: 32 (the paper), 16 or 8: input pixels per cell of the final feature map (ResNet
            backbones dilate their last stages below 32; ignored for a ready ``Backbone``).
    """

    #: The backbone feature map (``layer2``, ``layer3``, ``final``) whose grid the native heatmap
    #: (``class_maps``) lives on; :func:`thoracic.geometry.heatmap_grid` reads it.
    native_heatmap_level: str = "final"

    def __init__(
        self,
        backbone: str | Backbone = "resnet34",
        pretrained: bool = False,
        weights: str | Path | None = None,
        freeze_backbone: bool = False,
        num_classes: int = NUM_CLASSES,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        if isinstance(backbone, Backbone):
            self.backbone = backbone
            if freeze_backbone:
                self.backbone.freeze()
        else:
            self.backbone = create_backbone(backbone, pretrained=pretrained, weights=weights, freeze=freeze_backbone,
                                            output_stride=output_stride)
        self.num_classes = int(num_classes)

    @property
    def target_layer(self) -> nn.Module:
        """The final backbone stage: Grad-CAM (paper's comparison method) attributes its output."""
        return self.backbone.final_stage

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> ModelOutput:  # pragma: no cover
        """``(B, 3, H, W)`` float images -> :class:`~thoracic.models.output.ModelOutput` with ``(B,
        num_classes)`` raw logits; ``class_maps`` (and the attention maps) only when ``return_maps``."""
        raise NotImplementedError

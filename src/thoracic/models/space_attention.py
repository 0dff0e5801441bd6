"""Space attention model (paper 3.2/4.2, Fig. 1).

::

    final map f (B,C,h,w) --global average pool--> (B,C,1,1) --broadcast--> (B,C,h,w)
    concat [f, broadcast]                          (B,2C,h,w)
    1x1 conv 2C->14 with bias                      (B,14,h,w)   class maps = heatmaps
    spatial mean of each class map                 (B,14)       logits

The pool is a true global average (the original code used a fixed 7x7 pool and x4 upsampling that
only fit one input size), so the model works at any input size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from thoracic.constants import NUM_CLASSES
from thoracic.models.backbones import Backbone
from thoracic.models.base import ThoracicModel
from thoracic.models.output import ModelOutput
from thoracic.models.registry import register_model


@register_model("space_attention")
class SpaceAttention(ThoracicModel):
    """Global context appended to every position, one 1x1 conv to class maps, logits by spatial mean.

    Arguments: see :class:`~thoracic.models.base.ThoracicModel`.
    """

    def __init__(
        self,
        backbone: str | Backbone = "resnet34",
        pretrained: bool = False,
        weights: str | Path | None = None,
        freeze_backbone: bool = False,
        num_classes: int = NUM_CLASSES,
        output_stride: int = 32,
    ) -> None:
        super().__init__(backbone, pretrained, weights, freeze_backbone, num_classes, output_stride)
        channels = self.backbone.channels["final"]
        self.classifier = nn.Conv2d(2 * channels, self.num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> ModelOutput:
        """``(B, 3, H, W)`` -> logits ``(B, 14)`` (class-map means); with ``return_maps`` the class maps
        ``(B, 14, H/32, W/32)``."""
        features = self.backbone(x)["final"]
        context = features.mean(dim=(2, 3), keepdim=True).expand_as(features)
        class_maps = self.classifier(torch.cat([features, context], dim=1))
        logits = class_maps.mean(dim=(2, 3))
        return ModelOutput(logits=logits, class_maps=class_maps if return_maps else None)

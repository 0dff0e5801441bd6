"""Baseline CAM model (paper 3.1/4.1, after Wang et al. 2017).

::

    image (B,3,S,S) -> backbone -> final map (B,C,S/32,S/32)
        -> transition: 1x1 conv C->T with bias (no BN, no ReLU)       (B,T,S/32,S/32)
        -> global pooling: max (paper) | avg | lse(r) (Wang et al.)    (B,T)
        -> linear T->14                                                (B,14) logits
    CAM_k = sum_t W[k,t] * transition[t]   (classifier weights, no bias)  (B,14,S/32,S/32)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from thoracic.constants import NUM_CLASSES
from thoracic.models.backbones import Backbone
from thoracic.models.base import ThoracicModel
from thoracic.models.ops import lse_pool
from thoracic.models.output import ModelOutput
from thoracic.models.registry import register_model

Pooling = Literal["max", "avg", "lse"]


@register_model("baseline")
class BaselineCAM(ThoracicModel):
    """Backbone -> transition layer -> global pooling -> linear; heatmaps are class activation maps.

    Args:
        transition_channels: output channels of the transition layer (default: the backbone's channels).
        pooling: ``max`` (the paper's choice), ``avg`` or ``lse`` (log-sum-exp, Wang et al. 2017).
        lse_r: sharpness ``r`` of LSE pooling (Wang et al.'s best: 10).
        Other arguments: see :class:`~thoracic.models.base.ThoracicModel`.
    """

    def __init__(
        self,
        backbone: str | Backbone = "resnet34",
        pretrained: bool = False,
        weights: str | Path | None = None,
        freeze_backbone: bool = False,
        num_classes: int = NUM_CLASSES,
        output_stride: int = 32,
        transition_channels: int | None = None,
        pooling: Pooling = "max",
        lse_r: float = 10.0,
    ) -> None:
        super().__init__(backbone, pretrained, weights, freeze_backbone, num_classes, output_stride)
        if pooling not in ("max", "avg", "lse"):
            raise ValueError(f"baseline: pooling must be one of max, avg, lse, got {pooling!r}")
        if pooling == "lse" and not lse_r > 0:
            raise ValueError(f"baseline: lse_r must be positive, got {lse_r}")
        in_channels = self.backbone.channels["final"]
        channels = int(transition_channels or in_channels)
        self.pooling = pooling
        self.lse_r = float(lse_r)
        self.transition = nn.Conv2d(in_channels, channels, kernel_size=1, bias=True)
        self.classifier = nn.Linear(channels, self.num_classes)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Global pooling of ``(B, T, h, w)`` transition features to ``(B, T)``."""
        if self.pooling == "max":
            return features.amax(dim=(2, 3))
        if self.pooling == "avg":
            return features.mean(dim=(2, 3))
        return lse_pool(features, self.lse_r)

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> ModelOutput:
        """``(B, 3, H, W)`` -> logits ``(B, 14)``; with ``return_maps`` the CAMs ``(B, 14, H/32, W/32)``."""
        features = self.transition(self.backbone(x)["final"])
        logits = self.classifier(self.pool(features))
        class_maps = None
        if return_maps:
            # CAM (Zhou et al. 2016; Wang et al. 2017): prediction weights x transition features, no bias.
            class_maps = torch.einsum("kc,bchw->bkhw", self.classifier.weight, features)
        return ModelOutput(logits=logits, class_maps=class_maps)

"""Attention-gated network (paper 3.3/4.3, Eq. 2, Fig. 2; Schlemper et al. 2018).

Attention gates on the outputs of ``layer2`` and ``layer3``; the gating signal comes from the final stage.
For a gated map ``f`` (``C_s`` channels) and the final map ``F``, Eq. 2 gives compatibility scores

    c_ij = psi( relu( W_f f_ij + W_g g + b_g ) ) + b_psi

* ``gating='global'`` (the paper, 4.3, default): ``g`` is the global average of ``F`` and ``W_g, b_g`` a
  fully connected layer; ``gating='grid'`` (Schlemper's code and the paper's published code): ``W_g`` is a
  1x1 conv on ``F``, upsampled bilinearly to the gated map.
* ``W_f``: 1x1 conv without bias to ``C_int = C_s / 2``; ``psi``: 1x1 conv to one channel with bias.
* attention ``a = sigmoid(c)`` (default) or ``softmax`` of ``c`` over all positions.
* per level, attention-weighted spatial pooling of the gated features ``v = pool_ij(a_ij f_ij)``:
  ``sum`` (the published code) or ``mean`` (= sum / (h w)); ``auto`` (default) uses ``mean`` with
  sigmoid attention (the sum grows with the image area, 1024x at 256 px) and ``sum`` with softmax
  attention (weights sum to 1, so the sum already is a weighted average).
* the final level's vector is the global average of ``F``.

Aggregation of the three level vectors (128 + 256 + 512 for ResNet-34):

* ``concat`` (Fig. 2, default): concatenated -> one linear layer -> 14 logits.
* ``mean``: one linear head per level, logits = mean of the three heads (every head trained through it).
* ``deep_supervision``: the ``concat`` head gives the logits; the three per-level heads are returned in
  ``aux_logits`` and must be trained with their own loss terms (the trainer adds them).

Heatmap (paper 4.3): mean of three min-max-normalised maps at the finest resolution (``layer2``, 32x32
at 256 px): the ``layer2`` attention, the ``layer3`` attention and the class CAM of the final map with the
final level's classifier weights (the final-level slice of the concat head, or the final level's own
head in ``mean`` mode), both resampled onto the ``layer2`` grid where their cells' receptive fields are
centred (:func:`thoracic.geometry.resample_to_grid`; each level at its own stride and offset, derived
from the backbone), not by ``align_corners=False`` resizing, which would shift the coarser levels by a
quarter / three eighths of a ``layer2`` cell. Shape ``(B, 14, 32, 32)`` at 256 px with ResNet-34.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from thoracic.constants import NUM_CLASSES
from thoracic.geometry import FeatureGrid, feature_grids, resample_to_grid
from thoracic.models.backbones import Backbone
from thoracic.models.base import ThoracicModel
from thoracic.maps import minmax_normalize, resize_maps
from thoracic.models.output import ModelOutput
from thoracic.models.registry import register_model

Gating = Literal["global", "grid"]
Normalization = Literal["sigmoid", "softmax"]
Aggregation = Literal["concat", "mean", "deep_supervision"]
AttentionPooling = Literal["auto", "sum", "mean"]

GATED_LEVELS: tuple[str, ...] = ("layer2", "layer3")


class AttentionGate(nn.Module):
    """One attention gate (Eq. 2): returns the attention map ``(B, 1, h, w)`` of a gated feature map."""

    def __init__(
        self,
        in_channels: int,
        gating_channels: int,
        inter_channels: int,
        gating: Gating = "global",
        normalization: Normalization = "sigmoid",
    ) -> None:
        super().__init__()
        if gating not in ("global", "grid"):
            raise ValueError(f"attention_gated: gating must be global or grid, got {gating!r}")
        if normalization not in ("sigmoid", "softmax"):
            raise ValueError(
                f"attention_gated: attention_normalization must be sigmoid or softmax, got {normalization!r}"
            )
        self.gating = gating
        self.normalization = normalization
        self.theta = nn.Conv2d(in_channels, inter_channels, kernel_size=1, bias=False)  # W_f
        if gating == "global":
            self.phi: nn.Module = nn.Linear(gating_channels, inter_channels)  # W_g, b_g
        else:
            self.phi = nn.Conv2d(gating_channels, inter_channels, kernel_size=1, bias=True)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1, bias=True)  # psi, b_psi

    def forward(self, features: torch.Tensor, gating_map: torch.Tensor) -> torch.Tensor:
        """Attention ``(B, 1, h, w)`` over ``features`` ``(B, C, h, w)``, gated by ``gating_map`` ``(B, C_g,
        h_g, w_g)`` (the final backbone map)."""
        projected = self.theta(features)
        if self.gating == "global":
            gate = self.phi(gating_map.mean(dim=(2, 3)))[:, :, None, None]
        else:
            gate = resize_maps(self.phi(gating_map), tuple(projected.shape[-2:]))
        scores = self.psi(F.relu(projected + gate))  # compatibility scores c_ij, Eq. 2
        if self.normalization == "sigmoid":
            return torch.sigmoid(scores)
        return torch.softmax(scores.flatten(2), dim=-1).view_as(scores)


@register_model("attention_gated")
class AttentionGated(ThoracicModel):
    """Backbone with attention gates on layer2 and layer3 (see the module docstring for every option).

    Args:
        gating: ``global`` (fully connected W_g on the pooled final map; paper) or ``grid``.
        attention_normalization: ``sigmoid`` (default) or ``softmax`` over positions.
        aggregation: ``concat`` (default), ``mean`` or ``deep_supervision``.
        attention_pooling: ``auto`` (default), ``sum`` or ``mean``.
        Other arguments: see :class:`~thoracic.models.base.ThoracicModel`.
    """

    native_heatmap_level = "layer2"  # the heatmap is fused on the finest gated level's grid

    def __init__(
        self,
        backbone: str | Backbone = "resnet34",
        pretrained: bool = False,
        weights: str | Path | None = None,
        freeze_backbone: bool = False,
        num_classes: int = NUM_CLASSES,
        output_stride: int = 32,
        gating: Gating = "global",
        attention_normalization: Normalization = "sigmoid",
        aggregation: Aggregation = "concat",
        attention_pooling: AttentionPooling = "auto",
    ) -> None:
        super().__init__(backbone, pretrained, weights, freeze_backbone, num_classes, output_stride)
        if aggregation not in ("concat", "mean", "deep_supervision"):
            raise ValueError(
                f"attention_gated: aggregation must be concat, mean or deep_supervision, got {aggregation!r}"
            )
        if attention_pooling not in ("auto", "sum", "mean"):
            raise ValueError(
                f"attention_gated: attention_pooling must be auto, sum or mean, got {attention_pooling!r}"
            )
        if attention_pooling == "auto":
            attention_pooling = "sum" if attention_normalization == "softmax" else "mean"
        self.gating = gating
        self.attention_normalization = attention_normalization
        self.aggregation = aggregation
        self.attention_pooling = attention_pooling
        channels = self.backbone.channels
        final = channels["final"]
        self.gates = nn.ModuleDict(
            {
                # C_int = half the gated layer's channels (64 and 128 for ResNet-34, as the published code).
                level: AttentionGate(
                    channels[level], final, max(channels[level] // 2, 1), gating, attention_normalization
                )
                for level in GATED_LEVELS
            }
        )
        self.level_channels = [channels[level] for level in GATED_LEVELS] + [final]
        if aggregation in ("concat", "deep_supervision"):
            self.classifier = nn.Linear(sum(self.level_channels), self.num_classes)
        if aggregation in ("mean", "deep_supervision"):
            self.heads = nn.ModuleList([nn.Linear(c, self.num_classes) for c in self.level_channels])
        # stride and offset of each level do not depend on the input size (only the number of cells does)
        self.level_geometry = {key: (grid.stride, grid.offset)
                               for key, grid in feature_grids(self.backbone, 256).items()}

    def _grid(self, level: str, maps: torch.Tensor) -> FeatureGrid:
        stride, offset = self.level_geometry[level]
        return FeatureGrid(tuple(maps.shape[-2:]), stride, offset, (0, 0))

    def final_level_weights(self) -> torch.Tensor:
        """``(num_classes, C_final)`` classifier weights applied to the final level (for its class CAM)."""
        if self.aggregation == "mean":
            return self.heads[-1].weight
        return self.classifier.weight[:, -self.level_channels[-1]:]

    def forward(self, x: torch.Tensor, return_maps: bool = False) -> ModelOutput:
        """``(B, 3, H, W)`` -> logits ``(B, 14)`` and the attention maps ``(B, 1, H/8, W/8)``, ``(B, 1, H/16,
        W/16)``; with ``return_maps`` the combined heatmaps ``(B, 14, H/8, W/8)`` in [0, 1] (paper 4.3)."""
        features = self.backbone(x)
        final = features["final"]
        attention = tuple(self.gates[level](features[level], final) for level in GATED_LEVELS)
        vectors = []
        for level, weights in zip(GATED_LEVELS, attention):
            gated = (weights * features[level]).flatten(2)
            vectors.append(gated.sum(dim=-1) if self.attention_pooling == "sum" else gated.mean(dim=-1))
        vectors.append(final.mean(dim=(2, 3)))

        aux_logits: tuple[torch.Tensor, ...] = ()
        if self.aggregation == "mean":
            logits = torch.stack([head(v) for head, v in zip(self.heads, vectors)]).mean(dim=0)
        else:
            logits = self.classifier(torch.cat(vectors, dim=1))
            if self.aggregation == "deep_supervision":
                aux_logits = tuple(head(v) for head, v in zip(self.heads, vectors))

        class_maps = None
        if return_maps:
            cam = torch.einsum("kc,bchw->bkhw", self.final_level_weights(), final)
            target = self._grid("layer2", attention[0])
            parts = [resample_to_grid(minmax_normalize(maps), self._grid(level, maps), target)
                     for level, maps in (("layer2", attention[0]), ("layer3", attention[1]), ("final", cam))]
            class_maps = (parts[0] + parts[1] + parts[2]) / 3.0
        return ModelOutput(logits=logits, class_maps=class_maps, attention=attention, aux_logits=aux_logits)

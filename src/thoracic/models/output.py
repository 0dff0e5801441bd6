"""The one output type every model returns, so evaluation and heatmap code never ask which model it is."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelOutput:
    """Raw outputs of one forward pass.

    Attributes:
        logits: ``(B, num_classes)`` raw scores; no sigmoid is applied inside any model
            (``torch.sigmoid(logits)`` are the per-class probabilities: the task is multi-label).
        class_maps: ``(B, num_classes, h, w)`` per-class heatmaps at the model's native resolution
            (CAM for the baseline, class maps for space attention, the combined map of paper 4.3 for
            the attention-gated network), or ``None`` when the forward pass was not asked for maps.
            Raw scores: localization min-max normalises them per image and class.
        attention: attention maps ``(B, 1, h_l, w_l)`` per gated level, finest first (attention-gated
            network only; empty otherwise).
        aux_logits: extra ``(B, num_classes)`` heads that must be trained with the same loss
            (deep supervision); empty for models without them.
    """

    logits: torch.Tensor
    class_maps: torch.Tensor | None = None
    attention: tuple[torch.Tensor, ...] = ()
    aux_logits: tuple[torch.Tensor, ...] = ()

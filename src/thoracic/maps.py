"""Operations on spatial maps shared by the models and the heatmap methods (torch only).

A neutral module so that :mod:`thoracic.heatmaps` can normalise and resize maps without importing
:mod:`thoracic.models` (house style: heatmap code depends only on the model output type). The
attention-gated network (paper 4.3) and localization both min-max normalise maps before combining or
thresholding them; :mod:`thoracic.models.ops` re-exports these names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["minmax_normalize", "resize_maps"]


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise each map (the last two dimensions) to [0, 1]; a constant map becomes zeros.

    Paper 4.3 averages min-max-normalised attention maps and CAMs; localization thresholds heatmaps
    in [0, 1] (scaled to 0-255 as in Wang et al. 2017).
    """
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    # A constant map carries no localisation information: zeros, not NaN (0 / 0).
    normalized = torch.where(span > eps, (flat - low) / span.clamp_min(eps), torch.zeros_like(flat))
    return normalized.view_as(maps)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` maps to ``size`` (no-op when already that size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)

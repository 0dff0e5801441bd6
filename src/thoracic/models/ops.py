"""Small tensor operations shared by the heads and the heatmap methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise each map (the last two dimensions) to [0, 1]; a constant map becomes zeros."""
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


def lse_pool(x: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling of Wang et al. (2017): ``(1/r) log(mean_ij exp(r x_ij))`` over space.

    Tends to max pooling as ``r -> inf`` and to average pooling as ``r -> 0``; computed with
    ``logsumexp`` so large ``r * x`` do not overflow.
    """
    flat = x.flatten(2)
    count = torch.tensor(float(flat.shape[-1]), dtype=x.dtype, device=x.device)
    return (torch.logsumexp(r * flat, dim=-1) - torch.log(count)) / r

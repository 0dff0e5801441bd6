"""Small tensor operations shared by the heads and the heatmap methods.

``minmax_normalize`` and ``resize_maps`` live in the neutral :mod:`thoracic.maps` (so heatmap code need
not import the models package) and are re-exported here for existing imports.
"""

from __future__ import annotations

import torch

from thoracic.maps import minmax_normalize, resize_maps

__all__ = ["lse_pool", "minmax_normalize", "resize_maps"]


def lse_pool(x: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling of Wang et al. (2017): ``(1/r) log(mean_ij exp(r x_ij))`` over space.

    Tends to max pooling as ``r -> inf`` and to average pooling as ``r -> 0``; computed with
    ``logsumexp`` so large ``r * x`` do not overflow.
    """
    flat = x.flatten(2)
    count = torch.tensor(float(flat.shape[-1]), dtype=x.dtype, device=x.device)
    return (torch.logsumexp(r * flat, dim=-1) - torch.log(count)) / r

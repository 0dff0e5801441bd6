"""Image normalisation shared by training, evaluation and prediction (torch only, no Lightning).

Kept apart from :mod:`thoracic.data.dataset` (a LightningDataModule) so that prediction with an exported
model loads neither Lightning nor the model code; :mod:`thoracic.data.dataset` re-exports both names.
"""

from __future__ import annotations

import torch

from thoracic.constants import IMAGENET_MEAN, IMAGENET_STD

NORMALIZATIONS = ("imagenet", "none")


def normalize_images(images: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """uint8 (B, 1, S, S) / (B, S, S) / (1, S, S) images -> float32 3-channel, normalised.

    Runs wherever ``images`` lives (CPU worker or GPU). ``"imagenet"``: (x / 255 - mean) / std per
    channel with torchvision's ImageNet statistics; ``"none"``: x / 255.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    x = images
    if x.dim() == 2:
        x = x.unsqueeze(0)
    if x.dim() == 3 and x.shape[0] != 1:  # (B, S, S)
        x = x.unsqueeze(1)
    channel_dim = x.dim() - 3
    repeats = [1] * x.dim()
    repeats[channel_dim] = 3
    x = x.to(torch.float32).div(255.0).repeat(*repeats)
    if normalize == "imagenet":
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(shape)
        x = (x - mean) / std
    return x

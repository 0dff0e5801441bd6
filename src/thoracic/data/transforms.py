"""Image transforms: the normalisation shared by training, evaluation and prediction, and the training
augmentation (torch and numpy only, no Lightning).

Kept apart from :mod:`thoracic.data.dataset` (a LightningDataModule) so that prediction with an exported
model loads neither Lightning nor the model code; :mod:`thoracic.data.dataset` re-exports
:data:`NORMALIZATIONS` and :func:`normalize_images`, and augments its samples with :func:`flip_and_shift`.
"""

from __future__ import annotations

import numpy as np
import torch

from thoracic.constants import IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS
from thoracic.errors import DataError


def normalize_images(images: torch.Tensor, normalize: str = "imagenet") -> torch.Tensor:
    """uint8 (B, 1, S, S) / (B, S, S) / (1, S, S) images -> float32 3-channel, normalised.

    Runs wherever ``images`` lives (CPU worker or GPU). ``"imagenet"``: (x / 255 - mean) / std per
    channel with torchvision's ImageNet statistics; ``"none"``: x / 255.

    Raises:
        DataError: images of another shape (e.g. already 3-channel, or normalised once: every image here
            is one grayscale channel, repeated into the network's 3 input channels).
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    x = images
    if not 2 <= x.dim() <= 4 or (x.dim() == 4 and x.shape[1] != 1):
        raise DataError(f"normalize_images: expected grayscale images of shape (B, 1, S, S), (B, S, S), (1, S, S) "
                        f"or (S, S), got {tuple(x.shape)}"
                        + (f" ({x.shape[1]} channels: give the uint8 grayscale images; normalize_images repeats "
                           "their one channel into the network's 3)" if x.dim() == 4 else ""))
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


def flip_and_shift(pixels: torch.Tensor, boxes: np.ndarray,
                   max_shift: float) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Random horizontal flip (p = 0.5) and shift by up to ``max_shift`` of the side (zero fill) of one
    (C, S, S) image, and the same on its K x 4 boxes (x, y, w, h; clipped to the image; boxes shifted
    entirely out of view are dropped by the caller). Draws from torch's global RNG (seeded per worker
    from the loader's generator): one number for the flip, then two for the shift when it can be
    non-zero. Returns (pixels, boxes, mask of the boxes kept)."""
    size = pixels.shape[-1]
    if torch.rand(()) < 0.5:
        pixels = pixels.flip(-1)
        boxes = boxes.copy()
        boxes[:, 0] = size - boxes[:, 0] - boxes[:, 2]
    keep = np.ones(len(boxes), dtype=bool)
    limit = int(round(max_shift * size))
    if limit > 0:
        dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,)))
        shifted = torch.zeros_like(pixels)
        src_y, dst_y = slice(max(0, -dy), size - max(0, dy)), slice(max(0, dy), size - max(0, -dy))
        src_x, dst_x = slice(max(0, -dx), size - max(0, dx)), slice(max(0, dx), size - max(0, -dx))
        shifted[..., dst_y, dst_x] = pixels[..., src_y, src_x]
        pixels = shifted
        if len(boxes):
            x0 = np.clip(boxes[:, 0] + dx, 0, size)
            y0 = np.clip(boxes[:, 1] + dy, 0, size)
            x1 = np.clip(boxes[:, 0] + boxes[:, 2] + dx, 0, size)
            y1 = np.clip(boxes[:, 1] + boxes[:, 3] + dy, 0, size)
            boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float32)
            keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    return pixels, boxes, keep

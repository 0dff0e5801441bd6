"""The models' own heatmaps (CAM, class maps, attention-gated combination) behind the common interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from thoracic.geometry import FeatureGrid, heatmap_grid
from thoracic.heatmaps.base import HeatmapMethod, class_index_tensor
from thoracic.maps import minmax_normalize

if TYPE_CHECKING:  # annotations only: importing thoracic.models would load every model
    from thoracic.models.output import ModelOutput


class NativeHeatmap(HeatmapMethod):
    """The ``class_maps`` of the model's own forward pass (``return_maps=True``), min-max normalised.

    Their grid is the model's ``native_heatmap_level`` feature map (the final map for the baseline and
    space attention, ``layer2`` for the attention-gated network).

    >>> import torch
    >>> from thoracic.heatmaps import NativeHeatmap
    >>> from thoracic.models import create_model
    >>> model = create_model("baseline", backbone="resnet10").eval()
    >>> images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    >>> with NativeHeatmap(model) as method:
    ...     maps = method(images, [2, 5])  # Effusion for the first image, Nodule for the second
    >>> tuple(maps.shape), float(maps.amin()), float(maps.amax())
    ((2, 8, 8), 0.0, 1.0)
    >>> method.grid(256).stride, method.grid(256).offset  # cell k centred at input pixel 32 k
    ((32.0, 32.0), (0.0, 0.0))
    """

    uses_gradients = False

    def grid(self, input_size: int | Sequence[int]) -> FeatureGrid:
        """The grid of the model's ``native_heatmap_level`` feature map."""
        return heatmap_grid(self.model, input_size)

    @torch.no_grad()
    def raw_maps(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes, h, w)`` raw class maps at the model's native resolution."""
        output: ModelOutput = self.model(images, return_maps=True)
        if output.class_maps is None:
            raise ValueError(f"{type(self.model).__name__} returned no class_maps with return_maps=True")
        return output.class_maps

    def all_classes(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes, h, w)`` heatmaps in [0, 1], each map min-max normalised on its own."""
        return minmax_normalize(self.raw_maps(images).float())

    def selected(self, images: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        """Every pair from one forward pass (:meth:`all_classes`)."""
        maps = self.all_classes(images)
        return {(int(row), int(k)): maps[int(row), int(k)] for row, k in pairs}

    def attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The raw class map of ``index[b]`` for image ``b`` (range checked against the maps' classes)."""
        maps = self.raw_maps(images)
        index = class_index_tensor(index, maps.shape[0], maps.shape[1]).to(maps.device)
        return maps[torch.arange(maps.shape[0], device=maps.device), index]


__all__ = ["HeatmapMethod", "NativeHeatmap", "class_index_tensor"]

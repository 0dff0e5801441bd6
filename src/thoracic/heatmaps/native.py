"""The models' own heatmaps (CAM, class maps, attention-gated combination) behind the common interface."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from thoracic.geometry import FeatureGrid, heatmap_grid
from thoracic.maps import minmax_normalize

if TYPE_CHECKING:  # annotations only: importing thoracic.models would load every model
    from thoracic.models.output import ModelOutput


def class_index_tensor(
    class_index: int | Sequence[int] | torch.Tensor, batch_size: int, num_classes: int
) -> torch.Tensor:
    """``class_index`` as a ``(B,)`` long tensor (one int is used for every image); range checked."""
    if isinstance(class_index, int):
        index = torch.full((batch_size,), class_index, dtype=torch.long)
    else:
        index = torch.as_tensor(class_index, dtype=torch.long).reshape(-1)
        if index.numel() != batch_size:
            raise ValueError(f"class_index: {index.numel()} indices for a batch of {batch_size} images")
    if bool(((index < 0) | (index >= num_classes)).any()):
        raise ValueError(f"class_index: values must lie in [0, {num_classes}), got {index.tolist()}")
    return index


class HeatmapMethod:
    """Common interface: ``method(images, class_index) -> (B, H, W)`` in [0, 1] (min-max per image).

    ``images``: ``(B, 3, H_in, W_in)`` float, preprocessed as for training (ImageNet-normalised).
    ``class_index``: one int for every image, or ``B`` ints (one per image), in ``[0, num_classes)``.
    The result has the model's native map resolution ``(H, W)`` (8 x 8 for the baseline and space
    attention, 32 x 32 for the attention-gated network at 256 px); each map is min-max normalised on its
    own (a constant map is all zeros). Localization upsamples it to the original image.

    Also a context manager (``with Method(model) as method: ...``) that releases whatever the method
    attached to the model on exit. The model's train/eval mode is not changed: call ``model.eval()``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> HeatmapMethod:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release hooks or other state attached to the model (nothing for the native maps)."""

    def grid(self, input_size: int | Sequence[int]) -> FeatureGrid:  # pragma: no cover - abstract
        """Where the cells of this method's maps sit in a model input of ``input_size`` pixels (their
        stride and receptive-field offset, :mod:`thoracic.geometry`); localization registers maps by it."""
        raise NotImplementedError

    def all_classes(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``(B, num_classes, H, W)``: the heatmap of every class, each in [0, 1]."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, class_index: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def selected(self, images: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        """The ``(h, w)`` heatmaps of ``(row, class index)`` pairs of a batch, each in [0, 1].

        What localization and prediction call, whatever the method: this default runs the method once per
        class (in class order) on the rows that want it; a method that gets every class from one pass
        (:class:`NativeHeatmap`) overrides it.
        """
        rows_of: dict[int, list[int]] = {}
        for row, k in pairs:
            rows_of.setdefault(int(k), []).append(int(row))
        result: dict[tuple[int, int], torch.Tensor] = {}
        for k in sorted(rows_of):
            rows = rows_of[k]
            for row, heatmap in zip(rows, self(images[rows], k)):
                result[(row, k)] = heatmap
        return result


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

    def __call__(self, images: torch.Tensor, class_index: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        maps = self.raw_maps(images)
        index = class_index_tensor(class_index, maps.shape[0], maps.shape[1]).to(maps.device)
        selected = maps[torch.arange(maps.shape[0], device=maps.device), index]
        return minmax_normalize(selected.float())

"""The one base class of every heatmap method: a template ``__call__`` around one overridable function.

The pattern of pytorch-grad-cam's ``BaseCAM`` (``pytorch_grad_cam/base_cam.py``: ``__call__`` -> ``forward``
does the bookkeeping, a method overrides ``get_cam_weights``): :meth:`HeatmapMethod.__call__` checks the
class indices, runs :meth:`HeatmapMethod.attribute` (with autograd on when the method needs gradients),
and min-max normalises each map to [0, 1]; a new method overrides :meth:`~HeatmapMethod.attribute`
(raw maps, any scale) and :meth:`~HeatmapMethod.grid` (where its cells sit), nothing else.
:meth:`~HeatmapMethod.all_classes` and :meth:`~HeatmapMethod.selected` are built on ``__call__``; a method
that gets every class from one pass (the native maps) overrides them for speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from thoracic.geometry import FeatureGrid
from thoracic.maps import minmax_normalize

if TYPE_CHECKING:  # annotations only: importing thoracic.models would load every model
    from thoracic.models.output import ModelOutput


def class_index_tensor(
    class_index: int | Sequence[int] | torch.Tensor, batch_size: int, num_classes: int | None
) -> torch.Tensor:
    """``class_index`` as a ``(B,)`` long tensor (one int is used for every image); range checked
    against ``num_classes`` (``None``: not known yet, checked by the caller once it is)."""
    if isinstance(class_index, int):
        index = torch.full((batch_size,), class_index, dtype=torch.long)
    else:
        index = torch.as_tensor(class_index, dtype=torch.long).reshape(-1)
        if index.numel() != batch_size:
            raise ValueError(f"class_index: {index.numel()} indices for a batch of {batch_size} images")
    upper = num_classes if num_classes is not None else None
    if bool((index < 0).any()) or (upper is not None and bool((index >= upper).any())):
        raise ValueError(f"class_index: values must lie in [0, {upper}), got {index.tolist()}")
    return index


class LogitsOnly(nn.Module):
    """A model as libraries that expect a plain classifier call it (pytorch-grad-cam's CAMs and metrics):
    ``forward(images)`` returns the logits tensor alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` logits of ``model(images)``."""
        output: ModelOutput = self.model(images)
        return output.logits


class HeatmapMethod:
    """Common interface: ``method(images, class_index) -> (B, H, W)`` in [0, 1] (min-max per image).

    ``images``: ``(B, 3, H_in, W_in)`` float, preprocessed as for training (ImageNet-normalised).
    ``class_index``: one int for every image, or ``B`` ints (one per image), in ``[0, num_classes)``.
    The result has the method's own map resolution ``(H, W)`` (:meth:`grid`: 8 x 8 for the baseline's
    native maps at 256 px, the input pixels for pixel attributions); each map is min-max normalised on its
    own (a constant map is all zeros). Localization upsamples it to the original image.

    Subclasses override :meth:`attribute` and :meth:`grid`; :attr:`uses_gradients` says whether
    :meth:`attribute` runs with autograd enabled. Also a context manager (``with Method(model) as method:
    ...``) that releases whatever the method attached to the model on exit. The model's train/eval mode
    is not changed: call ``model.eval()``.
    """

    #: ``attribute`` runs under ``torch.enable_grad()`` (gradient methods) or ``torch.no_grad()``.
    uses_gradients: bool = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> HeatmapMethod:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release hooks or other state attached to the model (nothing by default)."""

    @property
    def num_classes(self) -> int | None:
        """The model's number of classes (``None`` when the model does not say, e.g. an exported file)."""
        value = getattr(self.model, "num_classes", None)
        return None if value is None else int(value)

    def grid(self, input_size: int | Sequence[int]) -> FeatureGrid:  # pragma: no cover - abstract
        """Where the cells of this method's maps sit in a model input of ``input_size`` pixels (their
        stride and receptive-field offset, :mod:`thoracic.geometry`); localization registers maps by it."""
        raise NotImplementedError

    def attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """``(B, H, W)`` raw maps (any scale; larger = more evidence) of class ``index[b]`` for image ``b``.

        The one function a method overrides; ``index`` is a checked ``(B,)`` long tensor on the images'
        device. Called by :meth:`__call__`, which normalises the result."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, class_index: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` heatmaps in [0, 1] of ``class_index`` (one int, or one per image)."""
        index = class_index_tensor(class_index, images.shape[0], self.num_classes).to(images.device)
        with torch.set_grad_enabled(self.uses_gradients):
            maps = self.attribute(images, index)
        return minmax_normalize(maps.detach().float())

    def all_classes(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes, H, W)``: the heatmap of every class, each in [0, 1] (one pass per class)."""
        if self.num_classes is None:
            raise ValueError(f"{type(self.model).__name__} does not say its number of classes (num_classes)")
        return torch.stack([self(images, k) for k in range(self.num_classes)], dim=1)

    def selected(self, images: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> dict[tuple[int, int], torch.Tensor]:
        """The ``(h, w)`` heatmaps of ``(row, class index)`` pairs of a batch, each in [0, 1].

        What localization and prediction call, whatever the method: this default runs the method once per
        class (in class order) on the rows that want it; a method that gets every class from one pass
        (:class:`~thoracic.heatmaps.native.NativeHeatmap`) overrides it.
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

    def _forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The model's logits alone: the forward function attribution libraries call."""
        output: ModelOutput = self.model(images)
        return output.logits


__all__ = ["HeatmapMethod", "LogitsOnly", "class_index_tensor"]

"""Heatmap methods sharing one interface: ``method(images, class_index) -> (B, H, W)`` in [0, 1].

* :class:`NativeHeatmap`: the model's own maps (CAM, space-attention class maps, attention-gated map).
* :class:`GradCAM`: Grad-CAM on the final backbone stage (captum), resized to the native map shape.

Both offer ``all_classes(images) -> (B, num_classes, H, W)`` and work as context managers. They depend
only on the model's forward pass and :class:`~thoracic.models.output.ModelOutput` (duck-typed: importing
this package does not import :mod:`thoracic.models`; map operations come from :mod:`thoracic.maps`).
"""

from thoracic.heatmaps.gradcam import GradCAM
from thoracic.heatmaps.native import HeatmapMethod, NativeHeatmap, class_index_tensor
from thoracic.maps import minmax_normalize

__all__ = ["GradCAM", "HeatmapMethod", "NativeHeatmap", "class_index_tensor", "minmax_normalize"]

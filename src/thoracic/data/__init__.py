"""The data layer: ChestX-ray14 metadata, splits, boxes, image decoding, phantoms, cache, datasets.

Submodules are imported on use (``from thoracic.data.metadata import load_chestxray14``) so that reading
metadata does not import torch.
"""

from __future__ import annotations

__all__ = ["boxes", "cache", "dataset", "images", "metadata", "splits", "synth"]

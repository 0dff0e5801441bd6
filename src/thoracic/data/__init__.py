"""The data layer: dataset readers, splits, boxes, image decoding, phantoms, cache, datasets.

Submodules are imported on use (``from thoracic.data.datasets import load_dataset``) so that reading
metadata does not import torch.

=================================================  =========================================================
entry point                                        what it gives
=================================================  =========================================================
:func:`datasets.load_dataset` (root, kind)         any of six layouts as distributed (ChestX-ray14,
                                                   CheXpert, MIMIC-CXR-JPG, PadChest, VinDr-CXR, RSNA
                                                   Pneumonia): a :class:`collection.ChestXrayCollection`
                                                   (table, ``labels`` N x C with NaN where not labelled,
                                                   ``boxes`` with reader ids, split)
:func:`metadata.load_chestxray14` (root)           :class:`metadata.ChestXray14`: ``table`` (one row per
                                                   image), ``labels`` N x 14 uint8, ``boxes`` (one row per
                                                   box, x, y, w, h in original pixels), official split
:data:`harmonisation.HARMONISED_LABELS`            label names that mean the same finding across datasets
:func:`splits.make_splits`                         train / val / test row indices (patient-disjoint)
:func:`images.read_image` (path)                   2-D uint8 grayscale array of a PNG / JPEG / DICOM file
:func:`boxes.scale_boxes`                          boxes mapped between image sizes
:func:`cache_writer.prepare_cache` (root, S)       the N x S x S uint8 memory-mapped cache (``thoracic prepare``)
:class:`cache.ImageCache`                          its read side (``ImageCache.open(folder)``)
:class:`dataset.ChestXrayDataset`                  samples: ``image`` 3 x S x S float, ``labels`` 14, boxes
:class:`dataset.ChestXrayDataModule`               the Lightning loaders built from a ``DataConfig``
:func:`synth.generate_phantom_dataset`             a phantom folder in the NIH layout, with known boxes
:func:`synth.generate_layout` (out, kind)          the same phantoms in any other layout
=================================================  =========================================================

From a folder to a batch (a small phantom folder here; a real ChestX-ray14 folder works the same):

>>> import tempfile
>>> from pathlib import Path
>>> from thoracic.data.cache import ImageCache
>>> from thoracic.data.cache_writer import prepare_cache
>>> from thoracic.data.dataset import ChestXrayDataset
>>> from thoracic.data.metadata import load_chestxray14
>>> from thoracic.data.synth import generate_phantom_dataset
>>> folder = tempfile.TemporaryDirectory()
>>> root = generate_phantom_dataset(Path(folder.name) / "phantom", 24, 64, seed=0, progress=False, num_workers=1)
>>> dataset = load_chestxray14(root)
>>> len(dataset), dataset.labels.shape, list(dataset.boxes.columns[:7])
(24, (24, 14), ['image_id', 'class_name', 'class_index', 'x', 'y', 'w', 'h'])
>>> cache = ImageCache.open(prepare_cache(root, 32, num_workers=1, progress=False))
>>> cache.images.shape, cache.images.dtype.name
((24, 32, 32), 'uint8')
>>> sample = ChestXrayDataset(dataset, cache)[0]
>>> tuple(sample["image"].shape), tuple(sample["labels"].shape), tuple(sample["boxes"].shape[1:])
((3, 32, 32), (14,), (4,))
>>> folder.cleanup()
"""

from __future__ import annotations

__all__ = ["boxes", "cache", "cache_writer", "collection", "dataset", "datasets", "harmonisation", "images",
           "metadata", "splits", "synth", "tables"]

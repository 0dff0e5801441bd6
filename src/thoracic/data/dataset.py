"""PyTorch dataset over the image cache and the Lightning data module built from a DataConfig.

A sample is a dict with fixed keys (every consumer reads the same):

- ``image``: 3 x S x S float32; the cached grayscale repeated on three channels (the backbones are
  ImageNet models) and ImageNet-normalised (``normalize="imagenet"``) or scaled to [0, 1] (``"none"``).
  With ``as_uint8=True`` it is the raw 1 x S x S uint8 instead, to normalise on the device with
  :func:`normalize_images` (4x less host-to-device traffic).
- ``labels``: C float32 in the order of the dataset's ``class_names`` (ChestX-ray14: the 14 of
  :data:`~thoracic.constants.CLASS_NAMES`); NaN where the image is not labelled for a class (or its label
  is uncertain under the ``ignore`` policy): the loss and the metrics skip those entries.
- ``image_id``: the image id (ChestX-ray14: the file name). ``index``: the row in the metadata table
  (:attr:`ChestXrayCollection.table <thoracic.data.collection.ChestXrayCollection>`).
- ``boxes``: K x 4 float32, every box row of the image (in file order; several readers' boxes all
  included) as x, y, w, h in cache pixels (scaled by :func:`thoracic.data.boxes.scale_boxes` from the
  decoded file's size, and flipped / shifted with the image when augmenting); shape (0, 4) for an image
  without boxes.
- ``box_classes``: K int64, the class index (``class_names`` order) of each box.

An image has 0 to several boxes, so batches are made by :func:`collate_samples` (every loader of
:class:`ChestXrayDataModule` uses it): the fixed-size keys are stacked by torch's ``default_collate``,
``boxes`` and ``box_classes`` stay per-image lists. :meth:`ChestXrayDataset.boxes_for` and
:attr:`ChestXrayDataModule.box_table` give the same rows as tables, and
:meth:`ChestXrayDataModule.box_dataloader` iterates over the test images that carry boxes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, default_collate

from thoracic.data.boxes import scale_boxes
from thoracic.data.cache import ImageCache, default_cache_dir
from thoracic.data.collection import FRONTAL, ChestXrayCollection
from thoracic.data.datasets import AUTO, READERS, load_dataset, resolve_dataset_kind
from thoracic.data.metadata import check_boxes_inside
from thoracic.data.splits import Splits, make_splits
from thoracic.data.transforms import NORMALIZATIONS, flip_and_shift, normalize_images  # noqa: F401 - re-exported
from thoracic.errors import DataError
from thoracic.metrics import positive_fractions
from thoracic.runtime import resolve_num_workers

logger = logging.getLogger(__name__)

#: Sample keys with one entry per box (0 to several per image): batched as lists, not stacked.
BOX_KEYS = ("boxes", "box_classes")


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: torch's ``default_collate`` for the fixed-size keys, lists for :data:`BOX_KEYS`.

    ``batch["boxes"][i]`` (K_i x 4) and ``batch["box_classes"][i]`` (K_i) belong to image ``i`` of the
    batch. Module-level (picklable) so DataLoader workers can use it.
    """
    # per key, as default_collate does for dicts (stacking into shared memory inside workers)
    return {
        key: [sample[key] for sample in samples] if key in BOX_KEYS
        else default_collate([sample[key] for sample in samples])
        for key in samples[0]
    }


def box_table(dataset: ChestXrayCollection, cache: ImageCache, image_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Box rows of ``dataset`` (optionally of some images) with x, y, w, h in cache pixels.

    Columns: image_id, class_name, class_index, box_row, reader_id (the radiologist for datasets with
    several readers per image, VinDr-CXR's ``R1`` ... ``R17`` or ``consensus``; ``""`` when the boxes name
    none), x, y, w, h (cache pixels), x_original, y_original, w_original, h_original (pixels of the
    decoded file), original_width, original_height.
    """
    boxes = dataset.boxes if image_ids is None else dataset.boxes[dataset.boxes["image_id"].isin(list(image_ids))]
    boxes = boxes.reset_index(drop=True)
    rows = cache.indices_of(boxes["image_id"].tolist())
    if (rows < 0).any():
        absent = boxes["image_id"][rows < 0].unique()[:5]
        raise DataError(f"box image(s) not in the cache {cache.cache_dir}: {', '.join(absent)}")
    sizes = cache.original_sizes[rows]
    original = boxes[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    size = cache.image_size
    scaled = np.empty_like(original)
    for (width, height) in np.unique(sizes, axis=0):  # one call per distinct original size
        same = (sizes[:, 0] == width) & (sizes[:, 1] == height)
        scaled[same] = scale_boxes(original[same], (width, height), (size, size))
    table = pd.DataFrame(
        {
            "image_id": boxes["image_id"],
            "class_name": boxes["class_name"],
            "class_index": boxes["class_index"].astype(np.int64),
            "box_row": boxes["box_row"].astype(np.int64),
            "reader_id": boxes["reader_id"].fillna("").astype(object) if "reader_id" in boxes
            else pd.Series([""] * len(boxes), dtype=object),
            "x": scaled[:, 0], "y": scaled[:, 1], "w": scaled[:, 2], "h": scaled[:, 3],
            "x_original": original[:, 0], "y_original": original[:, 1],
            "w_original": original[:, 2], "h_original": original[:, 3],
            "original_width": sizes[:, 0], "original_height": sizes[:, 1],
        }
    )
    return table


class ChestXrayDataset(Dataset):
    """Samples (dicts, see the module docstring) of some rows of a dataset's table, from the cache.

    Args:
        dataset: the metadata. cache: the prepared :class:`ImageCache` of its folder.
        indices: rows of ``dataset.table`` (default: all).
        normalize: ``"imagenet"`` or ``"none"``. as_uint8: return the raw 1 x S x S uint8 image.
        augment: random horizontal flip (p = 0.5) and shift by up to ``max_shift`` of the side (zero
            fill), drawn from torch's RNG (seeded per worker from the loader's generator); see
            :func:`~thoracic.data.transforms.flip_and_shift`.
    """

    def __init__(
        self,
        dataset: ChestXrayCollection,
        cache: ImageCache,
        indices: Sequence[int] | np.ndarray | None = None,
        *,
        normalize: str = "imagenet",
        augment: bool = False,
        as_uint8: bool = False,
        max_shift: float = 1 / 16,
    ) -> None:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.dataset = dataset
        self.cache = cache
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.image_ids = dataset.table["image_id"].to_numpy()[self.indices].astype(str)
        rows = cache.indices_of(self.image_ids)
        unavailable = rows < 0
        unavailable[~unavailable] = ~cache.available[rows[~unavailable]]
        if unavailable.any():
            names = self.image_ids[unavailable]
            raise DataError(
                f"{len(names)} image(s) are not available in the cache {cache.cache_dir} (e.g. "
                f"{', '.join(names[:5])}); rerun thoracic prepare or allow missing images"
            )
        self.cache_rows = rows
        self.labels = dataset.labels[self.indices].astype(np.float32)
        self.normalize = normalize
        self.augment = augment
        self.as_uint8 = as_uint8
        self.max_shift = max_shift
        self._box_xywh, self._box_classes, self._box_start, self._box_stop = self._box_lookup()

    def _box_lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every box of these images in one array; item i's are rows ``start[i]:stop[i]`` (file order).

        Built once here so that ``__getitem__`` only slices arrays (no per-sample table filtering).
        """
        boxes = self.dataset.boxes
        with_boxes = pd.unique(boxes["image_id"][boxes["image_id"].isin(self.image_ids)]) if len(boxes) else []
        start = np.zeros(len(self.image_ids), dtype=np.int64)
        stop = np.zeros(len(self.image_ids), dtype=np.int64)
        if len(with_boxes) == 0:
            return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64), start, stop
        table = box_table(self.dataset, self.cache, with_boxes)
        group = pd.Index(with_boxes).get_indexer(table["image_id"])
        order = np.argsort(group, kind="stable")  # grouped by image, file order within an image
        offsets = np.zeros(len(with_boxes) + 1, dtype=np.int64)
        np.cumsum(np.bincount(group, minlength=len(with_boxes)), out=offsets[1:])
        position = pd.Index(with_boxes).get_indexer(self.image_ids)  # -1: no box (indices may repeat)
        has = position >= 0
        start[has], stop[has] = offsets[position[has]], offsets[position[has] + 1]
        xywh = table[["x", "y", "w", "h"]].to_numpy(dtype=np.float32)[order]
        classes = table["class_index"].to_numpy(dtype=np.int64)[order]
        return xywh, classes, start, stop

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, Any]:
        pixels = torch.from_numpy(np.array(self.cache.images[self.cache_rows[item]], dtype=np.uint8))[None]
        start, stop = self._box_start[item], self._box_stop[item]
        boxes, classes = self._box_xywh[start:stop], self._box_classes[start:stop]
        if self.augment:
            pixels, boxes, keep = flip_and_shift(pixels, boxes, self.max_shift)
            boxes, classes = boxes[keep], classes[keep]
        image = pixels if self.as_uint8 else normalize_images(pixels, self.normalize)
        return {
            "image": image,
            "labels": torch.from_numpy(self.labels[item]),
            "image_id": str(self.image_ids[item]),
            "index": int(self.indices[item]),
            # copies: a consumer changing a batch in place must not change the dataset
            "boxes": torch.from_numpy(np.array(boxes, dtype=np.float32)),
            "box_classes": torch.from_numpy(np.array(classes, dtype=np.int64)),
        }

    def boxes_for(self, image_id: str) -> pd.DataFrame:
        """Every box row of one image, x, y, w, h in cache pixels (see :func:`box_table`)."""
        return box_table(self.dataset, self.cache, [image_id])


class ChestXrayDataModule(LightningDataModule):
    """Train / val / test / box loaders over the cache of a dataset folder (any layout of
    :mod:`thoracic.data.datasets`: ``dataset`` names it or ``auto`` detects it).

    ``uncertain``, ``views`` and ``classes`` are :func:`~thoracic.data.datasets.load_dataset`'s. Validation
    and test loaders never shuffle; the train loader shuffles with a ``torch.Generator`` seeded by
    ``seed`` (same order on every run) and keeps the last partial batch. The cache must exist
    (``thoracic prepare --data ROOT --image-size S``); it is not built implicitly because that is a long,
    explicit step (STYLE.md 6).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: int = 256,
        cache_dir: str | Path | None = None,
        batch_size: int = 32,
        seed: int = 0,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        dataset: str = AUTO,
        uncertain: str = "ignore",
        classes: Sequence[str] = (),
        views: Sequence[str] = (FRONTAL,),
        allow_missing_images: bool = False,
        num_workers: int | str = "auto",
        augment: bool = False,
        normalize: str = "imagenet",
        as_uint8: bool = False,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(self.root, self.image_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.dataset_kind = dataset
        self.uncertain = uncertain
        self.classes = tuple(classes)
        self.views = tuple(views)
        self.allow_missing_images = allow_missing_images
        self.num_workers = resolve_num_workers(num_workers)  # "auto": min(8, usable cores)
        self.augment = augment
        self.normalize = normalize
        self.as_uint8 = as_uint8
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._dataset: ChestXrayCollection | None = None
        self._splits: Splits | None = None
        self._cache: ImageCache | None = None
        self._datasets: dict[str, ChestXrayDataset] = {}

    @classmethod
    def from_config(cls, cfg: Any, batch_size: int, seed: int = 0, **kwargs: Any) -> ChestXrayDataModule:
        """Build from a :class:`thoracic.config.DataConfig` (every field is honoured)."""
        return cls(
            cfg.root,
            image_size=cfg.image_size,
            cache_dir=cfg.cache,
            batch_size=batch_size,
            seed=seed,
            val_fraction=cfg.val_fraction,
            split_seed=cfg.split_seed,
            dataset=cfg.dataset,
            uncertain=cfg.uncertain,
            classes=cfg.classes,
            views=cfg.views,
            allow_missing_images=cfg.allow_missing_images,
            num_workers=cfg.num_workers,
            augment=cfg.augment,
            normalize=cfg.normalize,
            **kwargs,
        )

    # ---------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read metadata, open and check the cache, split; idempotent."""
        if self._dataset is not None:
            return
        kind = resolve_dataset_kind(self.root, self.dataset_kind)
        dataset = load_dataset(self.root, kind, uncertain=self.uncertain, views=self.views, check_box_images=False)
        cache = ImageCache.open(self.cache_dir, expected_root=self.root, expected_size=self.image_size,
                                expected_dataset=kind, expected_class_names=dataset.class_names)
        dataset = dataset.select_classes(self.classes)
        rows = cache.indices_of(dataset.table["image_id"].tolist())
        present = rows >= 0
        present[present] = cache.available[rows[present]]
        if not present.all():
            missing = dataset.table["image_id"].to_numpy()[~present]
            if not self.allow_missing_images:
                raise DataError(
                    f"{len(missing)} of {len(dataset)} images of {self.root} are not in the cache {self.cache_dir} "
                    f"(missing or unreadable when it was prepared, e.g. {', '.join(missing[:5])}); set "
                    "data.allow_missing_images=true to train on the others"
                )
            logger.warning("%d of %d images are not in the cache %s; using the %d available",
                           len(missing), len(dataset), self.cache_dir, int(present.sum()))
            dataset = dataset.subset(present)
            if len(dataset) == 0:
                raise DataError(f"no image of {self.root} is available in {self.cache_dir} (empty dataset)")
        sizes = cache.original_sizes[cache.indices_of(dataset.table["image_id"].tolist())]
        size_of = dict(zip(dataset.table["image_id"], map(tuple, sizes)))
        files = getattr(dataset, "files", None)
        if len(dataset.boxes):
            check_boxes_inside(dataset.boxes, {i: size_of[i] for i in dataset.boxes["image_id"]},
                               files.bbox if files is not None else None)
        splits = make_splits(dataset, self.val_fraction, self.split_seed)
        if len(splits.train) == 0:
            what = "train_val_list.txt has no usable image" if kind == "chestxray14" else "no usable training image"
            raise DataError(f"{self.root}: the train split is empty ({what})")
        self._dataset, self._cache, self._splits = dataset, cache, splits

    def _require(self) -> None:
        if self._dataset is None:
            self.setup()

    @property
    def dataset(self) -> ChestXrayCollection:
        """The metadata (after ``views`` and missing-image filtering); set up on first use."""
        self._require()
        return self._dataset  # type: ignore[return-value]

    @property
    def splits(self) -> Splits:
        """Train / val / test row indices into :attr:`dataset`'s table."""
        self._require()
        return self._splits  # type: ignore[return-value]

    @property
    def class_names(self) -> tuple[str, ...]:
        """The label names, the column order of every sample's ``labels`` (the dataset's, or ``classes``)."""
        return self.dataset.class_names

    @property
    def cache(self) -> ImageCache:
        """The opened image cache (checked against the folder's metadata and ``image_size``)."""
        self._require()
        return self._cache  # type: ignore[return-value]

    @property
    def class_frequencies(self) -> np.ndarray:
        """Fraction of positives per class on the train split, over the images labelled for the class
        (:func:`thoracic.metrics.positive_fractions`; one float per label column)."""
        return positive_fractions(self.dataset.labels[self.splits.train])

    @property
    def box_image_ids(self) -> tuple[str, ...]:
        """Test images that carry at least one box, in table order."""
        test = set(self.dataset.table["image_id"].to_numpy()[self.splits.test])
        return tuple(i for i in self.dataset.box_image_ids if i in test)

    @property
    def box_table(self) -> pd.DataFrame:
        """Every box row of the test images, x, y, w, h in cache pixels (see :func:`box_table`)."""
        return box_table(self.dataset, self.cache, self.box_image_ids)

    def box_images(self, split: str = "test") -> tuple[str, ...]:
        """Images that carry at least one box: of the test split (:attr:`box_image_ids`), or of every split
        (``all``: for a run that was not trained on this dataset)."""
        if split == "test":
            return self.box_image_ids
        if split != "all":
            raise ValueError(f"box images: split must be test or all, got {split!r}")
        return self.dataset.box_image_ids

    def split_dataset(self, split: str) -> ChestXrayDataset:
        """The dataset of ``"train"``, ``"val"``, ``"test"``, ``"box"`` (test images with boxes) or
        ``"box_all"`` (every image with boxes)."""
        if split not in self._datasets:
            if split in ("box", "box_all"):
                ids = self.box_images("test" if split == "box" else "all")
                indices = np.sort(np.asarray(self.dataset.index_of(ids), dtype=np.int64))
            else:
                indices = self.splits[split]
            self._datasets[split] = ChestXrayDataset(
                self.dataset,
                self.cache,
                indices,
                normalize=self.normalize,
                augment=self.augment and split == "train",
                as_uint8=self.as_uint8,
            )
        return self._datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.split_dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            drop_last=False,
            collate_fn=collate_samples,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        """The train split, shuffled by a generator seeded with ``seed``, augmented when ``augment``."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The validation split, in table order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The test split (the official one where the dataset has one), in table order."""
        return self._loader("test", shuffle=False)

    def box_dataloader(self, split: str = "test") -> DataLoader:
        """The test images that carry boxes (never shuffled); their boxes are in the batches
        (``boxes``, ``box_classes``) and in :attr:`box_table`. ``split="all"``: every image with boxes
        (:meth:`box_images`)."""
        self.box_images(split)  # checks the split's name
        return self._loader("box" if split == "test" else "box_all", shuffle=False)

    def dataloader(self, split: str) -> DataLoader:
        """Unshuffled loader of any split (``train`` included, e.g. for evaluation)."""
        return self._loader(split, shuffle=False)

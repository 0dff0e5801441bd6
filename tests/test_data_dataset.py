"""ChestXrayDataset samples and the Lightning data module."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from thoracic.config import DataConfig
from thoracic.constants import IMAGENET_MEAN, IMAGENET_STD
from thoracic.data.cache import ImageCache, prepare_cache
from thoracic.data.dataset import ChestXrayDataModule, ChestXrayDataset, normalize_images
from thoracic.data.metadata import load_chestxray14
from thoracic.errors import DataError


def _module(phantom_dir, phantom_cache, **changes) -> ChestXrayDataModule:
    config = DataConfig(**{"root": str(phantom_dir), "image_size": 64, "num_workers": 0, **changes})
    module = ChestXrayDataModule.from_config(config, batch_size=16, seed=0)
    module.setup()
    return module


def test_sample_keys_values_and_normalisation(phantom_dir, phantom_cache):
    dataset = load_chestxray14(phantom_dir)
    cache = ImageCache.open(phantom_cache)
    samples = ChestXrayDataset(dataset, cache, [4, 9])
    sample = samples[1]
    assert set(sample) == {"image", "labels", "image_id", "index"}
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert sample["labels"].dtype == torch.float32 and sample["labels"].shape == (14,)
    assert sample["index"] == 9 and sample["image_id"] == dataset.table["image_id"].iat[9]
    np.testing.assert_array_equal(sample["labels"].numpy(), dataset.labels[9])
    pixels = cache.images[9].astype(np.float64)
    for channel in range(3):
        expected = (pixels / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        np.testing.assert_allclose(sample["image"][channel].numpy(), expected, atol=1e-5)
    plain = ChestXrayDataset(dataset, cache, [9], normalize="none")[0]["image"]
    np.testing.assert_allclose(plain.numpy(), np.broadcast_to(pixels / 255.0, (3, 64, 64)), atol=1e-6)
    raw = ChestXrayDataset(dataset, cache, [9], as_uint8=True)[0]["image"]
    assert raw.dtype == torch.uint8 and raw.shape == (1, 64, 64)
    torch.testing.assert_close(normalize_images(raw[None])[0], sample["image"])
    clone = pickle.loads(pickle.dumps(samples))  # picklable for workers; the map reopens lazily
    torch.testing.assert_close(clone[1]["image"], sample["image"])


def test_data_module_splits_loaders_and_frequencies(phantom_dir, phantom_cache):
    module = _module(phantom_dir, phantom_cache, val_fraction=0.2)
    splits, table = module.splits, module.dataset.table
    patients = table["patient_id"].to_numpy()
    assert not set(patients[splits.train]) & set(patients[splits.val])
    np.testing.assert_allclose(module.class_frequencies, module.dataset.labels[splits.train].mean(axis=0))
    assert module.class_frequencies.shape == (14,)

    def order(loader):
        return [i for batch in loader for i in batch["index"].tolist()]

    train = order(module.train_dataloader())
    assert sorted(train) == sorted(splits.train.tolist()) and train != sorted(train)
    assert order(_module(phantom_dir, phantom_cache, val_fraction=0.2).train_dataloader()) == train
    other_seed = ChestXrayDataModule.from_config(
        DataConfig(root=str(phantom_dir), image_size=64, num_workers=0, val_fraction=0.2), batch_size=16, seed=1)
    assert order(other_seed.train_dataloader()) != train
    assert order(module.val_dataloader()) == splits.val.tolist()
    assert order(module.test_dataloader()) == splits.test.tolist()
    assert order(module.test_dataloader()) == order(module.test_dataloader())
    sizes = [len(b["index"]) for b in module.train_dataloader()]
    assert sum(sizes) == len(splits.train)  # drop_last=False


def test_box_loader_and_boxes_in_cache_pixels(phantom_dir, tmp_path):
    prepare_cache(phantom_dir, 32, cache_dir=tmp_path / "c32", workers=1, progress=False)
    config = DataConfig(root=str(phantom_dir), image_size=32, cache=str(tmp_path / "c32"), num_workers=0)
    module = ChestXrayDataModule.from_config(config, batch_size=4)
    ids = module.box_image_ids
    assert ids and set(ids) <= set(module.dataset.test_ids)
    loaded = [i for batch in module.box_dataloader() for i in batch["image_id"]]
    assert loaded == list(ids)
    table = module.box_table
    assert len(table) == len(module.dataset.boxes)
    np.testing.assert_allclose(table[["x", "y", "w", "h"]].to_numpy(),
                               table[["x_original", "y_original", "w_original", "h_original"]].to_numpy() / 2)
    first = module.split_dataset("box").boxes_for(ids[0])
    assert len(first) >= 1 and (first["image_id"] == ids[0]).all()


def test_missing_cache_says_how_to_prepare(phantom_dir, tmp_path):
    config = DataConfig(root=str(phantom_dir), image_size=48, num_workers=0)
    with pytest.raises(DataError, match=f"thoracic prepare --data {phantom_dir} --size 48"):
        ChestXrayDataModule.from_config(config, batch_size=4).setup()


def test_views_and_allow_missing_images(phantom_dir, phantom_cache, tmp_path):
    module = _module(phantom_dir, phantom_cache, views=("PA",))
    assert set(module.dataset.table["view"]) == {"PA"}
    root = Path(shutil.copytree(phantom_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("cache_*")))
    (root / "images" / "00000001_000.png").unlink()
    prepare_cache(root, 64, workers=1, progress=False, skip_bad=True)
    strict = ChestXrayDataModule.from_config(DataConfig(root=str(root), image_size=64, num_workers=0), batch_size=4)
    with pytest.raises(DataError, match="1 of 120 images .* not in the cache"):
        strict.setup()
    lenient = ChestXrayDataModule.from_config(
        DataConfig(root=str(root), image_size=64, num_workers=0, allow_missing_images=True), batch_size=4)
    assert len(lenient.dataset) == 119 and "00000001_000.png" not in set(lenient.dataset.table["image_id"])


def test_augmentation_and_worker_loader(phantom_dir, phantom_cache):
    module = _module(phantom_dir, phantom_cache, augment=True, num_workers=1)
    train = module.split_dataset("train")
    assert train.augment and not module.split_dataset("val").augment
    torch.manual_seed(0)
    a = train[0]["image"]
    torch.manual_seed(0)
    torch.testing.assert_close(train[0]["image"], a)
    assert a.shape == (3, 64, 64)
    loader = module.val_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    batch = next(iter(loader))
    assert batch["image"].shape[1:] == (3, 64, 64)

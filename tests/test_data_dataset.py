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
from thoracic.data.cache import ImageCache
from thoracic.data.cache_writer import prepare_cache
from thoracic.data.dataset import ChestXrayDataModule, ChestXrayDataset, collate_samples, normalize_images
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
    assert set(sample) == {"image", "labels", "image_id", "index", "boxes", "box_classes"}
    assert dataset.table["image_id"].iat[9] not in set(dataset.boxes["image_id"])
    assert sample["boxes"].shape == (0, 4) and sample["boxes"].dtype == torch.float32
    assert sample["box_classes"].shape == (0,) and sample["box_classes"].dtype == torch.int64
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
    prepare_cache(phantom_dir, 32, cache_dir=tmp_path / "c32", num_workers=1, progress=False)
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


def _with_extra_box(phantom_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the phantom folder whose first box image gets a second box row (another class),
    separated from the first by other images' rows, so a lookup must gather rows from all over the file."""
    root = Path(shutil.copytree(phantom_dir, tmp_path / "boxes", ignore=shutil.ignore_patterns("cache_*")))
    path = root / "BBox_List_2017.csv"
    lines = path.read_text().splitlines()
    image = lines[1].split(",")[0]
    present = {line.split(",")[1] for line in lines[1:] if line.startswith(image + ",")}
    extra = next(name for name in ("Nodule", "Mass", "Atelectasis") if name not in present)
    lines.append(f"{image},{extra},3.0,5.0,10.0,12.0")
    path.write_text("\n".join(lines) + "\n")
    # a box's class must be among its image's labels: label the image with it too
    entry = root / "Data_Entry_2017_v2020.csv"
    rows = entry.read_text().splitlines()
    for k, row in enumerate(rows):
        if row.startswith(image + ","):
            fields = row.split(",")
            fields[1] = "|".join(sorted(set(fields[1].split("|")) - {"No Finding"} | {extra}))
            rows[k] = ",".join(fields)
    entry.write_text("\n".join(rows) + "\n")
    return root, image


def test_samples_carry_every_box_row_in_cache_pixels(phantom_dir, phantom_cache, tmp_path):
    root, image = _with_extra_box(phantom_dir, tmp_path)
    prepare_cache(root, 32, cache_dir=tmp_path / "c32", num_workers=1, progress=False)
    config = DataConfig(root=str(root), image_size=32, cache=str(tmp_path / "c32"), num_workers=0)
    module = ChestXrayDataModule.from_config(config, batch_size=4)
    table = module.box_table
    rows = table[table["image_id"] == image]
    assert len(rows) >= 2 and rows["class_index"].nunique() == len(rows)
    box_set = module.split_dataset("box")
    sample = box_set[list(box_set.image_ids).index(image)]
    assert sample["image_id"] == image
    # 64 px files in a 32 px cache: every coordinate halves; rows in file order, each with its class
    np.testing.assert_allclose(sample["boxes"].numpy(), rows[["x_original", "y_original", "w_original",
                                                              "h_original"]].to_numpy() / 2, rtol=1e-6)
    np.testing.assert_allclose(sample["boxes"].numpy(), rows[["x", "y", "w", "h"]].to_numpy(), rtol=1e-6)
    assert sample["box_classes"].tolist() == rows["class_index"].tolist()
    assert sample["boxes"][-1].tolist() == [1.5, 2.5, 5.0, 6.0]  # the added row, (3, 5, 10, 12) / 2
    # every image of every split: exactly its rows of the table (none for images without boxes)
    dataset = module.dataset
    for split in ("train", "val", "test"):
        samples = module.split_dataset(split)
        for item in range(len(samples)):
            got = samples[item]
            expected = table[table["image_id"] == got["image_id"]]
            assert got["boxes"].shape == (len(expected), 4)
            np.testing.assert_allclose(got["boxes"].numpy(), expected[["x", "y", "w", "h"]].to_numpy(), rtol=1e-6)
            assert got["box_classes"].tolist() == expected["class_index"].tolist()
    assert sum(len(module.split_dataset(s)[i]["boxes"]) for s in ("train", "val", "test")
               for i in range(len(module.split_dataset(s)))) == len(dataset.boxes)
    # a sample's boxes are copies: changing a batch does not change the dataset
    sample["boxes"].zero_()
    assert box_set[list(box_set.image_ids).index(image)]["boxes"].abs().sum() > 0
    # the same rows through the loaders: per-image lists beside the stacked fixed-size keys
    for loader in (module.box_dataloader(), module.test_dataloader(), module.train_dataloader()):
        assert loader.collate_fn is collate_samples
        for batch in loader:
            assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == len(batch["image_id"])
            assert batch["image"].shape[0] == len(batch["box_classes"]) == batch["labels"].shape[0]
            for image_id, boxes, classes in zip(batch["image_id"], batch["boxes"], batch["box_classes"]):
                expected = table[table["image_id"] == image_id]
                np.testing.assert_allclose(boxes.numpy(), expected[["x", "y", "w", "h"]].to_numpy(), rtol=1e-6)
                assert classes.tolist() == expected["class_index"].tolist()


def test_collate_samples_by_hand():
    samples = [
        {"image": torch.zeros(1, 2, 2), "labels": torch.ones(14), "image_id": "a.png", "index": 3,
         "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]]), "box_classes": torch.tensor([0, 5])},
        {"image": torch.ones(1, 2, 2), "labels": torch.zeros(14), "image_id": "b.png", "index": 7,
         "boxes": torch.zeros(0, 4), "box_classes": torch.zeros(0, dtype=torch.int64)},
    ]
    batch = collate_samples(samples)
    assert batch["image"].shape == (2, 1, 2, 2) and batch["image"][1].sum() == 4
    assert batch["index"].tolist() == [3, 7] and batch["image_id"] == ["a.png", "b.png"]
    assert [b.shape for b in batch["boxes"]] == [(2, 4), (0, 4)]
    assert batch["box_classes"][0].tolist() == [0, 5]
    assert set(collate_samples([{"index": 1}, {"index": 2}])) == {"index"}  # box keys are optional


def test_augmentation_moves_the_boxes_with_the_image(phantom_dir, phantom_cache, tmp_path):
    """Flip and shift: the pixels under an augmented box are those under the original box."""
    root, image = _with_extra_box(phantom_dir, tmp_path)
    dataset = load_chestxray14(root)
    cache = ImageCache.open(phantom_cache)  # same images (the cache does not depend on the box file)
    row = dataset.index_of(image)
    plain = ChestXrayDataset(dataset, cache, [row], as_uint8=True)[0]
    augmented = ChestXrayDataset(dataset, cache, [row], as_uint8=True, augment=True, max_shift=0.1)
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        flipped = bool(torch.rand(()) < 0.5)
        dy, dx = (int(v) for v in torch.randint(-6, 7, (2,)))
        torch.manual_seed(seed)
        sample = augmented[0]
        flips.add(flipped)
        assert len(sample["boxes"]) == len(plain["boxes"])  # small boxes, small shifts: all stay in view
        for before, after in zip(plain["boxes"].int().tolist(), sample["boxes"].tolist()):
            x, y, w, h = before
            expected_x = (64 - x - w if flipped else x) + dx
            x0, y0 = max(0, expected_x), max(0, y + dy)
            x1, y1 = min(64, expected_x + w), min(64, y + dy + h)
            assert after == [x0, y0, x1 - x0, y1 - y0]
            crop = plain["image"][0, y0 - dy : y1 - dy, :]
            crop = crop.flip(-1)[:, x0 - dx : x1 - dx] if flipped else crop[:, x0 - dx : x1 - dx]
            torch.testing.assert_close(sample["image"][0, y0:y1, x0:x1], crop)
        assert sample["box_classes"].tolist() == plain["box_classes"].tolist()
    assert flips == {True, False}


def test_missing_cache_says_how_to_prepare(phantom_dir, tmp_path):
    config = DataConfig(root=str(phantom_dir), image_size=48, num_workers=0)
    with pytest.raises(DataError, match=f"thoracic prepare --data {phantom_dir} --image-size 48"):
        ChestXrayDataModule.from_config(config, batch_size=4).setup()


def test_views_and_allow_missing_images(phantom_dir, phantom_cache, tmp_path):
    module = _module(phantom_dir, phantom_cache, views=("PA",))
    assert set(module.dataset.table["view"]) == {"PA"}
    root = Path(shutil.copytree(phantom_dir, tmp_path / "copy", ignore=shutil.ignore_patterns("cache_*")))
    (root / "images" / "00000001_000.png").unlink()
    prepare_cache(root, 64, num_workers=1, progress=False, skip_bad=True)
    strict = ChestXrayDataModule.from_config(DataConfig(root=str(root), image_size=64, num_workers=0), batch_size=4)
    with pytest.raises(DataError, match="1 of 120 images .* not in the cache"):
        strict.setup()
    lenient = ChestXrayDataModule.from_config(
        DataConfig(root=str(root), image_size=64, num_workers=0, allow_missing_images=True), batch_size=4)
    assert len(lenient.dataset) == 119 and "00000001_000.png" not in set(lenient.dataset.table["image_id"])


def _augmentation_of(original: torch.Tensor, augmented: torch.Tensor, limit: int) -> tuple[bool, int, int] | None:
    """The (flip, dy, dx) of ``flip_and_shift``'s transform family (horizontal flip, then a
    zero-filled shift of at most ``limit`` pixels) that maps ``original`` to ``augmented``; None if none does."""
    size = original.shape[-1]
    for flip in (False, True):
        source = original.flip(-1) if flip else original
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                shifted = torch.zeros_like(source)
                shifted[..., max(0, dy):size + min(0, dy), max(0, dx):size + min(0, dx)] = \
                    source[..., max(0, -dy):size - max(0, dy), max(0, -dx):size - max(0, dx)]
                if torch.equal(shifted, augmented):
                    return flip, dy, dx
    return None


def test_augmentation_flips_and_shifts_train_images_only_and_reaches_worker_loaders(phantom_dir, phantom_cache):
    module = ChestXrayDataModule.from_config(
        DataConfig(root=str(phantom_dir), image_size=64, num_workers=1, augment=True), batch_size=16, seed=0,
        as_uint8=True)
    plain_module = ChestXrayDataModule.from_config(
        DataConfig(root=str(phantom_dir), image_size=64, num_workers=0, augment=False), batch_size=16, seed=0,
        as_uint8=True)
    train, plain = module.split_dataset("train"), plain_module.split_dataset("train")
    limit = round(64 / 16)  # the default max_shift of 1/16 of the side
    # every augmented sample is the plain image flipped and/or shifted, and the draws vary
    transforms = []
    for seed in range(8):
        torch.manual_seed(seed)
        item = seed % len(train)
        found = _augmentation_of(plain[item]["image"], train[item]["image"], limit)
        assert found is not None, f"seed {seed}: the augmented image is no flip/shift of the original"
        transforms.append(found)
    assert {flip for flip, _, _ in transforms} == {False, True}
    assert len({(dy, dx) for _, dy, dx in transforms}) > 1 and any(t != (False, 0, 0) for t in transforms)
    # the same torch seed gives the same sample
    torch.manual_seed(0)
    first = train[0]["image"]
    torch.manual_seed(0)
    torch.testing.assert_close(train[0]["image"], first, rtol=0, atol=0)
    # evaluation splits are never augmented
    for split in ("val", "test"):
        assert not module.split_dataset(split).augment
        for item in range(3):
            torch.testing.assert_close(module.split_dataset(split)[item]["image"],
                                       plain_module.split_dataset(split)[item]["image"], rtol=0, atol=0)
    # through a worker process: the train batches are augmented copies, the val batches are not
    loader = module.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    batch = next(iter(loader))
    assert batch["image"].shape[1:] == (1, 64, 64) and batch["image"].dtype == torch.uint8
    by_index = {int(i): k for k, i in enumerate(plain.indices)}
    originals = [plain[by_index[int(i)]]["image"] for i in batch["index"]]
    found = [_augmentation_of(o, a, limit) for o, a in zip(originals, batch["image"])]
    assert all(f is not None for f in found) and any(f != (False, 0, 0) for f in found)
    val_batch = next(iter(module.val_dataloader()))
    plain_val = plain_module.split_dataset("val")
    for image, index in zip(val_batch["image"], val_batch["index"]):
        k = list(plain_val.indices).index(int(index))
        torch.testing.assert_close(image, plain_val[k]["image"], rtol=0, atol=0)

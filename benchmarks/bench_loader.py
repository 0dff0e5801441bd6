"""Benchmark 1: samples/s of the cache Dataset vs. decoding every PNG per sample.

Baseline (what the paper's code and the CheXNet re-implementations do for every sample of every
epoch): ``PIL.Image.open(png).convert("RGB")`` of a 1024 x 1024 PNG, torchvision ``Resize(256)``,
``ToTensor()`` and ``Normalize(ImageNet mean, std)``.

Candidate: ``ChestXrayDataset[i]`` over the prepared cache (``thoracic prepare``): one row of a uint8
memory map, repeated to 3 channels and ImageNet-normalised. Both run in one process, single sample at
a time, files and memory map warm in the page cache. Target: the cache at least 50x faster.

Informational figures: the cache Dataset through a ``DataLoader`` (batch 32, the data module's collate, no
workers), i.e. including batching; and the same with ``as_uint8=True`` (1 x S x S uint8 samples,
normalised later on the device by ``normalize_images``) vs float32 samples: the 12x smaller batches are
what worker processes pass through shared memory and what is copied to a GPU.

    python benchmarks/bench_loader.py [--quick] [--out results/loader.json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "loader"
TARGET = 50.0


def paper_transform(image_size: int) -> Any:
    """torchvision Resize + ToTensor + ImageNet Normalize, as in the paper's code."""
    from torchvision import transforms

    from thoracic.constants import IMAGENET_MEAN, IMAGENET_STD

    return transforms.Compose([
        transforms.Resize(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Measure both loaders on the same images; return the result document."""
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader

    from thoracic.data.cache import ImageCache
    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.dataset import ChestXrayDataset, collate_samples
    from thoracic.data.metadata import load_chestxray14

    image_size = 32 if quick else 256
    repeats = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        root, source = common.image_folder(work, quick)
        cache_dir = prepare_cache(root, image_size, cache_dir=work / f"cache_{image_size}", num_workers=1,
                                  progress=False, overwrite=True)
        metadata = load_chestxray14(root)
        dataset = ChestXrayDataset(metadata, ImageCache.open(cache_dir, expected_root=root, expected_size=image_size))
        paths = [str(p) for p in metadata.table["path"]]
        labels = torch.from_numpy(metadata.labels.astype("float32"))
        transform = paper_transform(image_size)
        count = len(paths)

        def decode_per_sample() -> None:
            for index, path in enumerate(paths):
                with Image.open(path) as image:
                    sample = {"image": transform(image.convert("RGB")), "labels": labels[index]}
                assert sample["image"].shape[-1] == image_size

        # The cache is ~100x faster: one timed call covers many passes so that it lasts long enough.
        passes = 5 if quick else 25

        def cache_dataset() -> None:
            for _ in range(passes):
                for index in range(count):
                    sample = dataset[index]
                assert sample["image"].shape[-1] == image_size

        loader = DataLoader(dataset, batch_size=32, shuffle=False, num_workers=0, collate_fn=collate_samples)
        raw_loader = DataLoader(ChestXrayDataset(metadata, dataset.cache, as_uint8=True), batch_size=32,
                                shuffle=False, num_workers=0, collate_fn=collate_samples)

        def through(batches: DataLoader) -> Any:
            def call() -> None:
                for _ in range(passes):
                    for batch in batches:
                        pass
                assert batch["image"].shape[-1] == image_size
            return call

        times = common.interleaved(
            {"pil": decode_per_sample, "cache": cache_dataset, "cache_loader": through(loader),
             "cache_loader_uint8": through(raw_loader)},
            repeats=repeats, warmup=1,
        )
        baseline = common.measurement(count, times["pil"], "samples/s")
        candidate = common.measurement(count * passes, times["cache"], "samples/s")
        batched = common.measurement(count * passes, times["cache_loader"], "samples/s")
        batched_uint8 = common.measurement(count * passes, times["cache_loader_uint8"], "samples/s")
        comparisons = [
            common.comparison("cache Dataset vs PIL decode + Resize + Normalize per sample", candidate, baseline,
                              TARGET, "ChestXrayDataset[i] from the uint8 memory map vs Image.open(1024 px PNG)"
                              f".convert('RGB') + Resize({image_size}) + ToTensor + Normalize, one process"),
            common.comparison("cache through DataLoader (batch 32) vs PIL per sample", batched, baseline, None,
                              "the same Dataset collated (collate_samples) into batches of 32, no workers"),
            common.comparison("DataLoader with uint8 samples vs float32 samples", batched_uint8, batched, None,
                              "as_uint8=True (normalised later on the device) vs the default float32 "
                              "3 x S x S samples, both batch 32"),
        ]
        settings = {"images": source, "image_size": image_size, "samples_per_pass": count,
                    "cache_passes_per_call": passes, "repeats": repeats,
                    "torch_threads": torch.get_num_threads()}
    return common.result_document(NAME, quick, settings, comparisons)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

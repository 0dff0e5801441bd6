"""Benchmark 6: GPU training throughput with bf16 + channels_last, and whether the loader keeps up.

Only on a machine with a CUDA GPU; elsewhere the result says "not measured: no GPU on this machine".

Part A. Training images/s of the paper's setting (``baseline`` model, ResNet-34, 256 px) with bf16
autocast and channels_last memory format vs. the same step in float32 with contiguous tensors, on one
synthetic batch already on the GPU (timed with ``torch.cuda.synchronize``). Informational: the figure
users get from ``train.precision=bf16-mixed train.channels_last=true``.

Part B. The same bf16 + channels_last step fed by ``ChestXrayDataModule.train_dataloader()`` over a
prepared phantom cache (worker processes, pinned memory, non-blocking copies) vs. fed by one synthetic
batch resident on the GPU. A ratio near 1 means the loader keeps the GPU busy; target at least 0.9.

    python benchmarks/bench_gpu.py [--quick] [--out results/gpu.json]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "gpu"
TARGET_LOADER = 0.9
NO_GPU = "not measured: no GPU on this machine"


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"backbone": "resnet10", "image_size": 64, "batch_size": 4, "steps_per_call": 2, "repeats": 2,
                "loader_images": 24, "loader_workers": 0}
    return {"backbone": "resnet34", "image_size": 256, "batch_size": 128, "steps_per_call": 10, "repeats": 5,
            "loader_images": 2560, "loader_workers": min(8, os.cpu_count() or 1)}


def _synchronize(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(quick: bool = False, workdir: Path | None = None, device: str | None = None) -> dict[str, Any]:
    """Measure on ``device`` (default: the first CUDA GPU; none -> a "not measured" document).

    ``device="cpu"`` runs the same code on the CPU (the smoke test uses it so the GPU path cannot rot).
    """
    import torch

    settings = settings_for(quick)
    if device is None:
        if not torch.cuda.is_available():
            return common.result_document(NAME, quick, settings, [], [NO_GPU], status=NO_GPU)
        device = "cuda"
    dev = torch.device(device)
    settings["device"] = str(dev)
    from thoracic.config import LossConfig
    from thoracic.losses import build_loss
    from thoracic.models import create_model

    torch.manual_seed(0)
    batch, size = settings["batch_size"], settings["image_size"]
    loss_fn = build_loss(LossConfig())
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def make_model(channels_last: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        model = create_model("baseline", backbone=settings["backbone"], pretrained=False).to(dev).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=1e-4)

    def step_fn(model: torch.nn.Module, optimizer: torch.optim.Optimizer, bf16: bool, channels_last: bool) -> Any:
        def step(images: torch.Tensor, labels: torch.Tensor) -> None:
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images).logits
            loss = loss_fn(logits.float(), labels)
            loss.backward()
            optimizer.step()
        return step

    images = torch.randn(batch, 3, size, size, device=dev)
    labels = (torch.rand(batch, 14, device=dev) < 0.2).float()
    fp32_step = step_fn(*make_model(False), bf16=False, channels_last=False)
    fast_model, fast_optimizer = make_model(True)
    fast_step = step_fn(fast_model, fast_optimizer, bf16=True, channels_last=True)

    def on_resident_batch(step: Any) -> Any:
        def call() -> None:
            for _ in range(settings["steps_per_call"]):
                step(images, labels)
            _synchronize(dev)
        return call

    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        loader = _phantom_loader(work, settings, pin_memory=dev.type == "cuda")
        iterator = _endless(loader)

        def from_loader() -> None:
            for _ in range(settings["steps_per_call"]):
                sample = next(iterator)
                fast_step(sample["image"].to(dev, non_blocking=True), sample["labels"].to(dev, non_blocking=True))
            _synchronize(dev)

        times = common.interleaved(
            {"fp32": on_resident_batch(fp32_step), "bf16_cl": on_resident_batch(fast_step), "loader": from_loader},
            repeats=settings["repeats"], warmup=1,
        )
    per_call = batch * settings["steps_per_call"]
    fp32 = common.measurement(per_call, times["fp32"], "images/s")
    fast = common.measurement(per_call, times["bf16_cl"], "images/s")
    fed = common.measurement(per_call, times["loader"], "images/s")
    comparisons = [
        common.comparison(f"bf16 + channels_last vs float32 training, {settings['backbone']} at {size} px", fast, fp32,
                          None, f"baseline model, batch {batch}, synthetic batch resident on {dev.type}"),
        common.comparison("bf16 step fed by the cache DataLoader vs a resident batch", fed, fast, TARGET_LOADER,
                          f"ChestXrayDataModule train loader ({settings['loader_workers']} workers, pinned memory) "
                          "vs the same step on a batch already on the device: does the loader keep the GPU busy?"),
    ]
    notes = [f"bf16 + channels_last: {fast['rate']:.0f} images/s; float32: {fp32['rate']:.0f} images/s "
             f"({dev.type}, {settings['backbone']} {size} px, batch {batch})."]
    settings["torch_threads"] = torch.get_num_threads()
    return common.result_document(NAME, quick, settings, comparisons, notes)


def _endless(loader: Any) -> Any:
    while True:
        yield from loader


def _phantom_loader(work: Path, settings: dict[str, Any], pin_memory: bool) -> Any:
    """The project's train DataLoader over a prepared cache of phantom images at the benchmark size."""
    from torch.utils.data import DataLoader

    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.dataset import ChestXrayDataModule
    from thoracic.data.synth import generate_phantom_dataset

    size = settings["image_size"]
    root = generate_phantom_dataset(work / "phantoms", settings["loader_images"], size, seed=0, num_workers=None,
                                    overwrite=True, progress=False)
    cache = prepare_cache(root, size, cache_dir=work / f"cache_{size}", num_workers=None, progress=False)
    datamodule = ChestXrayDataModule(root, image_size=size, cache_dir=cache, batch_size=settings["batch_size"],
                                     num_workers=settings["loader_workers"], pin_memory=pin_memory, val_fraction=0.1)
    datamodule.setup("fit")
    # The train loader's settings, with drop_last so that every timed step has the full batch.
    return DataLoader(datamodule.split_dataset("train"), batch_size=settings["batch_size"], shuffle=True,
                      num_workers=settings["loader_workers"], persistent_workers=settings["loader_workers"] > 0,
                      pin_memory=pin_memory, drop_last=True)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 12: a CPU training step in channels_last memory format vs the default contiguous format.

``train.channels_last=true`` stores the network's weights and feeds its images in NHWC order
(``torch.channels_last``): the convolutions of PyTorch's CPU backend (oneDNN) then run without converting
their tensors on every call. One training step (``zero_grad``, forward, Eq. 1 loss, backward, Adam) on the
same in-memory batch, the two formats timed in alternation, for the three paper models on the demo's
network (ResNet-10 trained from scratch at 128 px, output stride 16, batch 32; the attention-gated model
with ``aggregation: mean``, as the demo trains it) and for the baseline at the paper's size (ResNet-34
at 256 px, CPU-sized batch 8). Figures are rates relative to the contiguous format (above 1: faster); no
target, they decide what the demo trains with (it sets ``train.channels_last: true``).

    python benchmarks/bench_memory_format.py [--quick] [--out results/memory_format.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "memory_format"


def settings_for(quick: bool) -> dict[str, Any]:
    # (model, backbone, image size, output stride, batch)
    if quick:
        return {"setups": [("baseline", "resnet10", 64, 16, 2)], "repeats": 2}
    return {"setups": [("baseline", "resnet10", 128, 16, 32), ("space_attention", "resnet10", 128, 16, 32),
                       ("attention_gated", "resnet10", 128, 16, 32), ("baseline", "resnet34", 256, 32, 8)],
            "repeats": 5}


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Train-step rate in channels_last relative to contiguous, per setup; the result document."""
    import torch

    from thoracic.config import LossConfig
    from thoracic.losses import build_loss
    from thoracic.models import create_model

    settings = settings_for(quick)
    loss_fn = build_loss(LossConfig())
    comparisons = []
    for model_name, backbone, size, stride, batch in settings["setups"]:
        torch.manual_seed(0)
        images = torch.randn(batch, 3, size, size)
        labels = (torch.rand(batch, 14) < 0.2).float()
        labels[0, 0] = 1.0
        options = {"aggregation": "mean"} if model_name == "attention_gated" else {}

        def train_step(channels_last: bool) -> Any:
            torch.manual_seed(0)
            model = create_model(model_name, backbone=backbone, pretrained=False, output_stride=stride, **options)
            batch_images = images
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                batch_images = images.contiguous(memory_format=torch.channels_last)
            model.train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(batch_images).logits, labels).backward()
                optimizer.step()
            return step

        times = common.interleaved({"contiguous": train_step(False), "channels_last": train_step(True)},
                                   repeats=settings["repeats"], warmup=1)
        comparisons.append(common.comparison(
            f"train step channels_last vs contiguous ({model_name}, {backbone}, {size} px, output stride {stride})",
            common.measurement(batch, times["channels_last"], "images/s"),
            common.measurement(batch, times["contiguous"], "images/s"), None,
            f"forward + Eq. 1 loss + backward + Adam, batch {batch}, float32 on the CPU",
        ))
    settings = {**settings, "setups": [f"{m} {b} at {s} px, output stride {o}, batch {n}"
                                       for m, b, s, o, n in settings["setups"]],
                "torch_threads": torch.get_num_threads()}
    return common.result_document(NAME, quick, settings, comparisons)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

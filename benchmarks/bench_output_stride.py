"""Benchmark 8: training-step and inference cost of finer heatmaps (model.output_stride 16 and 8 vs 32).

``model.output_stride`` dilates the last stage (16) or the last two stages (8) of a ResNet instead of
striding them: the weights are the same, the heatmaps have 4x (16x) as many cells, and those stages run
on 4x (16x) as many positions. The baseline CAM network is timed at the three strides in alternation on
the same batch (training step: forward, Eq. 1 loss, backward, Adam; inference: ``model(x,
return_maps=True)`` under ``inference_mode``), for the paper's ResNet-34 at 256 px and for the demo's
ResNet-10 at 160 px. Figures are rates relative to stride 32 (below 1: slower); no target, they decide
which stride a time budget allows.

    python benchmarks/bench_output_stride.py [--quick] [--out results/output_stride.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "output_stride"
STRIDES = (32, 16, 8)


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"setups": [("resnet10", 64, 2)], "repeats": 2}
    # (backbone, image size, batch): the paper's network and size with a CPU-sized batch, and the demo's
    return {"setups": [("resnet34", 256, 8), ("resnet10", 160, 32)], "repeats": 5}


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Train-step and inference rates at output strides 16 and 8 relative to 32; the result document."""
    import torch

    from thoracic.config import LossConfig
    from thoracic.losses import build_loss
    from thoracic.models import create_model

    settings = settings_for(quick)
    loss_fn = build_loss(LossConfig())
    comparisons = []
    for backbone, size, batch in settings["setups"]:
        torch.manual_seed(0)
        images = torch.randn(batch, 3, size, size)
        labels = (torch.rand(batch, 14) < 0.2).float()
        labels[0, 0] = 1.0

        def train_step(model: torch.nn.Module) -> Any:
            model.train()
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                loss_fn(model(images).logits, labels).backward()
                optimizer.step()
            return step

        def inference(model: torch.nn.Module) -> Any:
            def forward() -> None:
                model.eval()
                with torch.inference_mode():
                    assert model(images, return_maps=True).class_maps is not None
            return forward

        models = {stride: create_model("baseline", backbone=backbone, pretrained=False, output_stride=stride)
                  for stride in STRIDES}
        shapes = {}
        with torch.inference_mode():
            for stride, model in models.items():
                shapes[stride] = tuple(model.eval()(images[:1], return_maps=True).class_maps.shape[-2:])
        for kind, make in (("train step", train_step), ("inference", inference)):
            times = common.interleaved({stride: make(model) for stride, model in models.items()},
                                       repeats=settings["repeats"], warmup=1)
            reference = common.measurement(batch, times[32], "images/s")
            for stride in STRIDES[1:]:
                comparisons.append(common.comparison(
                    f"{kind} output stride {stride} vs 32 ({backbone}, {size} px)",
                    common.measurement(batch, times[stride], "images/s"), reference, None,
                    f"baseline CAM, batch {batch}; heatmap {shapes[stride][0]}x{shapes[stride][1]} vs "
                    f"{shapes[32][0]}x{shapes[32][1]} cells",
                ))
    settings = {**settings, "setups": [f"{b} at {s} px, batch {n}" for b, s, n in settings["setups"]],
                "torch_threads": torch.get_num_threads()}
    return common.result_document(NAME, quick, settings, comparisons)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

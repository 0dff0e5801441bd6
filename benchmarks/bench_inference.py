"""Benchmark 4: inference with native heatmaps vs. the bare backbone forward.

Each registry model runs ``model(x, return_maps=True)`` in eval mode under ``torch.inference_mode``:
logits and the per-class heatmaps of paper 3.1-3.3 from the same forward pass (CAM for the baseline,
the class maps of space attention, the attention-gated map). The baseline is the bare torchvision
classifier of the same backbone (``model(x)``, logits only). All are timed in alternation on the same
batch, medians of repeats. Target: at least 0.85x the bare forward.

    python benchmarks/bench_inference.py [--quick] [--out results/inference.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from bench_train_step import bare_backbone  # noqa: E402

NAME = "inference"
MODELS = ("baseline", "space_attention", "attention_gated")
TARGET = 0.85


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"backbone": "resnet10", "image_size": 64, "batch_size": 2, "batches_per_call": 1, "repeats": 2}
    return {"backbone": "resnet34", "image_size": 256, "batch_size": 8, "batches_per_call": 1, "repeats": 7}


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Time every model with maps and the bare backbone; return the result document."""
    import torch

    from thoracic.models import create_model

    settings = settings_for(quick)
    torch.manual_seed(0)
    batch, size = settings["batch_size"], settings["image_size"]
    images = torch.randn(batch, 3, size, size)

    def make_forward(model: torch.nn.Module, maps: bool | None) -> Any:
        model.eval()

        def forward() -> None:
            with torch.inference_mode():
                for _ in range(settings["batches_per_call"]):
                    if maps is None:
                        model(images)
                    else:
                        output = model(images, return_maps=maps)
                        assert (output.class_maps is not None) == maps
        return forward

    workloads = {"bare": make_forward(bare_backbone(settings["backbone"]), None)}
    for name in MODELS:
        model = create_model(name, backbone=settings["backbone"], pretrained=False)
        workloads[name] = make_forward(model, True)
        workloads[f"{name}_logits"] = make_forward(model, False)
    times = common.interleaved(workloads, repeats=settings["repeats"], warmup=1)
    images_per_call = batch * settings["batches_per_call"]
    baseline = common.measurement(images_per_call, times["bare"], "images/s")
    comparisons = []
    for name in MODELS:
        comparisons.append(common.comparison(
            f"{name} with native heatmaps vs bare {settings['backbone']} forward",
            common.measurement(images_per_call, times[name], "images/s"), baseline, TARGET,
            f"model(x, return_maps=True) vs torchvision {settings['backbone']}(x), eval, inference_mode, "
            f"batch {batch} at {size} px",
        ))
    for name in MODELS:
        comparisons.append(common.comparison(
            f"{name} with maps vs the same model logits only",
            common.measurement(images_per_call, times[name], "images/s"),
            common.measurement(images_per_call, times[f"{name}_logits"], "images/s"), None,
            "the cost of producing the heatmaps on top of the logits (ideal: 1.0)",
        ))
    settings = {**settings, "torch_threads": torch.get_num_threads()}
    return common.result_document(NAME, quick, settings, comparisons)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

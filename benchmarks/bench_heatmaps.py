"""Benchmark 9: the cost of every heatmap method per (image, class) map, against the native maps.

Each method of ``thoracic.heatmaps`` computes the map of one class for each image of a batch
(``method(images, class_index)``), on the demo's model (baseline, ResNet-10, 128 px, output stride 16,
untrained weights: the cost does not depend on them). The baseline is the native map (one forward pass
gives every class); the ratio says how many times slower a method is (rate ratio < 1). No target: the
figures are for choosing methods and for the cost of ``thoracic explain``, which recomputes each method's
maps once per randomized stage.

    python benchmarks/bench_heatmaps.py [--quick] [--out results/heatmaps.json]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "heatmaps"


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"backbone": "resnet10", "image_size": 64, "output_stride": 16, "batch_size": 2, "repeats": 2}
    return {"backbone": "resnet10", "image_size": 128, "output_stride": 16, "batch_size": 4, "repeats": 5}


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Time every registered method against the native maps; return the result document."""
    import torch

    from thoracic.heatmaps import HEATMAP_METHOD_NAMES, create_heatmap_method
    from thoracic.models import create_model

    settings = settings_for(quick)
    torch.manual_seed(0)
    batch, size = settings["batch_size"], settings["image_size"]
    images = torch.randn(batch, 3, size, size)
    model = create_model("baseline", backbone=settings["backbone"], pretrained=False,
                         output_stride=settings["output_stride"]).eval()
    classes = [k % 14 for k in range(batch)]

    def workload(name: str) -> Any:
        method = create_heatmap_method(name, model)

        def compute() -> None:
            maps = method(images, classes)
            assert maps.shape[0] == batch
        return compute

    workloads = {name: workload(name) for name in HEATMAP_METHOD_NAMES}
    times = common.interleaved(workloads, repeats=settings["repeats"], warmup=1)
    baseline = common.measurement(batch, times["native"], "maps/s")
    comparisons = [
        common.comparison(
            f"{name} vs native maps ({settings['image_size']} px, {settings['backbone']}, stride "
            f"{settings['output_stride']})",
            common.measurement(batch, times[name], "maps/s"), baseline, None,
            f"method(images, class_index): one map per image of a batch of {batch}, CPU; the inverse of the ratio "
            "is how many native maps one map of this method costs")
        for name in HEATMAP_METHOD_NAMES if name != "native"]
    per_map = {name: round(1000.0 * common.median(times[name]) / batch, 2) for name in HEATMAP_METHOD_NAMES}
    notes = ["milliseconds per map (median): " + ", ".join(f"{k} {v:g}" for k, v in per_map.items())]
    settings = {**settings, "torch_threads": torch.get_num_threads()}
    document = common.result_document(NAME, quick, settings, comparisons, notes)
    document["ms_per_map"] = per_map
    return document


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

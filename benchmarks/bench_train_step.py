"""Benchmark 3: training images/s per model vs. the bare torchvision backbone.

Part A, model cost. One training step (``zero_grad``, forward, loss, backward, Adam step) on the same
in-memory batch for:

- baseline: ``torchvision.models.<backbone>(num_classes=14)`` with ``BCEWithLogitsLoss``, the network
  every model of the paper is built on (global average pool + linear head);
- ``baseline``, ``space_attention`` and ``attention_gated`` from the registry with the paper's loss
  (Eq. 1, ``build_loss``), ``pretrained=False`` (weights do not change the cost).

The four are timed in alternation, medians of repeats. Targets: baseline and space attention at least
0.9x the bare backbone, attention-gated at least 0.75x. Full runs: ResNet-34 at 256 px (the paper's
setting) with batch 8 (a CPU-sized batch; the per-image cost of these convolutions barely depends on
the batch on CPU).

Part B, loop overhead. The Lightning loop the project trains with (``thoracic.training.build_trainer``:
loggers, checkpoint and early-stopping callbacks, the ``ThoracicModule``) vs. a plain PyTorch loop
(same model, loss, Adam and DataLoader) over the same in-memory dataset. The steady-state time per
step is the median interval between the ends of consecutive steps (data fetch, hooks and logging
included), after warm-up steps; trainer start-up and the end-of-epoch checkpoint are outside it (they
happen once per run or epoch). Target: overhead at most 5%, i.e. Lightning at least 0.95x the plain loop.

    python benchmarks/bench_train_step.py [--quick] [--out results/train_step.json]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "train_step"
TARGETS = {"baseline": 0.9, "space_attention": 0.9, "attention_gated": 0.75}
TARGET_LOOP = 0.95


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"backbone": "resnet10", "image_size": 64, "batch_size": 2, "steps_per_call": 1, "repeats": 2,
                "loop_steps": 3, "loop_warmup_steps": 1, "loop_rounds": 1}
    return {"backbone": "resnet34", "image_size": 256, "batch_size": 8, "steps_per_call": 1, "repeats": 8,
            "loop_steps": 5, "loop_warmup_steps": 1, "loop_rounds": 2}


#: Part B again on a tiny model, where the loop's fixed per-step cost is visible (milliseconds per step).
TINY_LOOP = {"backbone": "resnet10", "image_size": 64, "batch_size": 2, "loop_steps": 15, "loop_warmup_steps": 2,
             "loop_rounds": 3}


def bare_backbone(backbone: str, num_classes: int = 14) -> Any:
    """The torchvision classifier of the same architecture (resnet10: the project's own, with a pool + fc)."""
    import torchvision

    if hasattr(torchvision.models, backbone):
        return getattr(torchvision.models, backbone)(num_classes=num_classes)
    from torchvision.models.resnet import BasicBlock, ResNet

    if backbone == "resnet10":  # one BasicBlock per stage, as thoracic.models.backbones builds it
        return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)
    raise ValueError(f"no bare torchvision network for backbone {backbone!r}")


def model_step_benchmark(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Part A: images/s of one training step per model vs the bare backbone."""
    import torch

    from thoracic.config import LossConfig
    from thoracic.losses import build_loss
    from thoracic.models import create_model

    torch.manual_seed(0)
    batch, size = settings["batch_size"], settings["image_size"]
    images = torch.randn(batch, 3, size, size)
    labels = (torch.rand(batch, 14) < 0.2).float()
    labels[0, 0] = 1.0  # at least one positive, as Eq. 1's weights need both kinds in most batches
    paper_loss = build_loss(LossConfig())
    bce = torch.nn.BCEWithLogitsLoss()

    def make_step(model: torch.nn.Module, bare: bool) -> Any:
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            for _ in range(settings["steps_per_call"]):
                optimizer.zero_grad(set_to_none=True)
                if bare:
                    loss = bce(model(images), labels)
                else:
                    output = model(images)
                    loss = paper_loss(output.logits, labels)
                    for aux in output.aux_logits:
                        loss = loss + paper_loss(aux, labels)
                loss.backward()
                optimizer.step()
        return step

    workloads = {"bare": make_step(bare_backbone(settings["backbone"]), bare=True)}
    for name in TARGETS:
        workloads[name] = make_step(create_model(name, backbone=settings["backbone"], pretrained=False), bare=False)
    times = common.interleaved(workloads, repeats=settings["repeats"], warmup=1)
    images_per_call = batch * settings["steps_per_call"]
    baseline = common.measurement(images_per_call, times["bare"], "images/s")
    comparisons = []
    for name, target in TARGETS.items():
        candidate = common.measurement(images_per_call, times[name], "images/s")
        comparisons.append(common.comparison(
            f"train step {name} vs bare {settings['backbone']}", candidate, baseline, target,
            f"{name} (paper loss) vs torchvision {settings['backbone']} + BCE, forward+backward+Adam, "
            f"batch {batch} at {size} px",
        ))
    return comparisons


def loop_benchmark(settings: dict[str, Any], workdir: Path, warm_fit: bool = True,
                   target: float | None = TARGET_LOOP) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part B: the project's Lightning loop vs a plain PyTorch loop; (comparison, details).

    ``warm_fit`` runs one untimed Lightning fit first: it sets the trainer's global flags (deterministic
    algorithms) that then apply to both loops, and warms the imports and allocator.
    """
    import torch
    from lightning.pytorch import Callback
    from torch.utils.data import DataLoader, Dataset

    from thoracic.config import Config, replace
    from thoracic.models import create_model
    from thoracic.training.module import ThoracicModule, compute_loss
    from thoracic.training.factory import build_trainer

    batch, size = settings["batch_size"], settings["image_size"]
    steps = settings["loop_warmup_steps"] + settings["loop_steps"]
    generator = torch.Generator().manual_seed(0)

    class InMemory(Dataset):
        """Samples shaped like ChestXrayDataset's (dict with image, labels, image_id, index)."""

        def __init__(self, count: int) -> None:
            self.images = torch.randn(count, 3, size, size, generator=generator)
            self.labels = (torch.rand(count, 14, generator=generator) < 0.2).float()

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, index: int) -> dict[str, Any]:
            return {"image": self.images[index], "labels": self.labels[index], "image_id": f"{index:08d}.png",
                    "index": index}

    data = InMemory(batch * steps)
    validation = InMemory(batch)  # EarlyStopping needs val_loss: one batch after the timed steps
    cfg = replace(Config(), **{
        "model.backbone": settings["backbone"], "model.pretrained": False, "data.image_size": size,
        "train.batch_size": batch, "train.max_epochs": 1, "train.limit_val_batches": 1,
        "train.accelerator": "cpu", "train.devices": "1", "train.progress_bar": False,
    })  # everything else (logging every 10 steps, deterministic, callbacks) as users train

    class Clock(Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.ends.append(time.perf_counter())

    def loader() -> DataLoader:
        return DataLoader(data, batch_size=batch, shuffle=False, num_workers=0)

    def lightning_run(run: int) -> list[float]:
        torch.manual_seed(0)
        module = ThoracicModule(cfg, model=create_model("baseline", backbone=settings["backbone"], pretrained=False))
        clock = Clock()
        trainer, _ = build_trainer(cfg, workdir / f"lightning_{run}", callbacks=[clock])
        trainer.fit(module, train_dataloaders=loader(),
                    val_dataloaders=DataLoader(validation, batch_size=batch, num_workers=0))
        return clock.ends

    def plain_run() -> list[float]:
        torch.manual_seed(0)
        module = ThoracicModule(cfg, model=create_model("baseline", backbone=settings["backbone"], pretrained=False))
        model, loss_fn = module.model, module.loss_fn
        model.train()
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
        ends = []
        for batch_data in loader():
            optimizer.zero_grad(set_to_none=True)
            loss, _ = compute_loss(loss_fn, model(batch_data["image"]), batch_data["labels"])
            loss.backward()
            optimizer.step()
            ends.append(time.perf_counter())
        return ends

    def intervals(ends: list[float]) -> list[float]:
        kept = ends[settings["loop_warmup_steps"] - 1:] if settings["loop_warmup_steps"] > 0 else ends
        return [b - a for a, b in zip(kept, kept[1:])]

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice (num_workers, no val loop) is not what is timed
        start = time.perf_counter()
        if warm_fit:
            lightning_run(-1)  # sets the trainer's global flags (deterministic algorithms) for both loops
        startup_s = time.perf_counter() - start
        lightning_steps: list[float] = []
        plain_steps: list[float] = []
        for run in range(settings["loop_rounds"]):
            plain_steps += intervals(plain_run())
            lightning_steps += intervals(lightning_run(run))
    plain = common.measurement(batch, plain_steps, "images/s")
    lightning = common.measurement(batch, lightning_steps, "images/s")
    comparison = common.comparison(
        f"Lightning loop vs plain PyTorch loop (baseline {settings['backbone']}, {size} px, batch {batch})",
        lightning, plain, target,
        "thoracic's Trainer (loggers, callbacks, ThoracicModule) vs a for-loop with the same model, loss, Adam "
        "and DataLoader; steady-state time per step",
    )
    details = {"overhead": 1.0 / comparison["ratio"] - 1.0,
               "overhead_ms_per_step": 1000 * (lightning["median_s"] - plain["median_s"]),
               "step_ms_plain": 1000 * plain["median_s"],
               "first_fit_total_s": startup_s if warm_fit else None, "first_fit_steps": steps}
    return comparison, details


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    """Both parts; return the result document."""
    import torch

    settings = settings_for(quick)
    comparisons = model_step_benchmark(settings)
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        loop_comparison, details = loop_benchmark(settings, work, warm_fit=not quick)
        comparisons.append(loop_comparison)
        loops = {"paper_size": details}
        if not quick:
            tiny_comparison, loops["tiny"] = loop_benchmark(TINY_LOOP, work / "tiny", warm_fit=False, target=None)
            comparisons.append(tiny_comparison)
    notes = [f"Lightning loop overhead at {name.replace('_', ' ')}: {100 * d['overhead']:+.1f}% per step "
             f"({d['overhead_ms_per_step']:+.1f} ms on a {d['step_ms_plain']:.0f} ms step; negative = within noise)"
             for name, d in loops.items()]
    settings = {**settings, "torch_threads": torch.get_num_threads(),
                "why": "CPU machine: ResNet-34 at 256 px as in the paper, with a batch of 8 and few steps"
                       if not quick else "--quick: tiny sizes"}
    return common.result_document(NAME, quick, settings, comparisons, notes, lightning_loop=loops)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

"""The demo's sizes and CPU-sized overrides (light: ``thoracic demo --help`` reads its defaults here without
importing the pipeline of :mod:`thoracic.workflows.demo`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


#: The paper models the demo trains, by config name.
DEMO_MODELS: tuple[str, ...] = ("baseline", "space_attention", "attention_gated")


#: CPU-sized overrides applied on top of each paper config (documented in the README).
DEMO_OVERRIDES: dict[str, Any] = {
    "data.image_size": 128,
    "data.num_workers": 0,
    "model.backbone": "resnet10",
    "model.pretrained": False,
    "model.output_stride": 16,
    "optim.lr": 5e-4,
    "optim.lr_step_epochs": 0,
    "train.batch_size": 32,
    "train.max_epochs": 8,
    "train.patience": 3,
    "train.precision": "32-true",
    "train.channels_last": True,
    "train.accelerator": "cpu",
    "train.devices": "1",
    "train.log_every_n_steps": 10,
}


#: Overrides of one model only, applied after :data:`DEMO_OVERRIDES` (documented in the README). The
#: attention-gated network is trained as the paper's code trained it, with one classifier per level and
#: their mean as the logits (``aggregation: mean``): with the concatenated classifier of the paper's figure,
#: a ResNet-10 trained from scratch on phantoms leaves the gates free to attend to the image border (the
#: final level alone classifies), and the fused heatmap then points away from every lesion.
DEMO_MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "attention_gated": {"model.aggregation": "mean"},
}


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults finish within 10 minutes on 2 CPU cores with two torch threads (README: the measured runs)."""

    out_dir: Path = Path("demo_output")
    num_images: int = 1600
    image_size: int = 256
    """Side of the phantom images on disk (the models see ``DEMO_OVERRIDES['data.image_size']``)."""
    seed: int = 0
    models: tuple[str, ...] = DEMO_MODELS
    overrides: Mapping[str, Any] = field(default_factory=lambda: dict(DEMO_OVERRIDES))
    model_overrides: Mapping[str, Mapping[str, Any]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEMO_MODEL_OVERRIDES.items()})
    """Per model (by config name), applied after ``overrides``."""
    extra_methods: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"baseline": ("gradcam", "ig")})
    """Heatmap methods localized beside the native maps, per model (Grad-CAM and the pixel-registered
    Integrated Gradients for the baseline)."""
    explain_methods: Mapping[str, tuple[str, ...]] | None = field(
        default_factory=lambda: {"baseline": ("native", "gradcam")})
    """Heatmap methods ``thoracic explain`` checks, per model (a model not named: its native maps; the
    baseline's Grad-CAM beside them); ``None``: no heatmap checks (``thoracic demo --no-explain``)."""
    explain_images: int = 16
    """Test images with boxes the heatmap checks use (a seeded draw; ``thoracic explain --num-images``)."""
    n_bootstrap: int = 200
    """Bootstrap resamples of the AUC confidence intervals (and of the heatmap checks' CIs)."""
    progress: bool = True
    workers: int | None = None
    """Processes for phantom generation and the image cache (None: all cores)."""
    threads: int | None = None
    """torch threads for training and evaluation (None: torch's default). Training is reproducible
    bit for bit only for the same thread count, CPU instruction set and library builds."""


__all__ = ["DEMO_MODELS", "DEMO_MODEL_OVERRIDES", "DEMO_OVERRIDES", "DemoSettings"]

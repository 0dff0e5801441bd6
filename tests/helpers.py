"""Shared test helpers (imported by test modules; pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import torch

from thoracic.config import Config, DataConfig, ModelConfig, TrainConfig, save_config, to_dict
from thoracic.constants import CLASS_NAMES


def make_run(folder: Path, data_root: Path, model: str, seed: int, image_size: int = 64) -> Path:
    """A run folder with a Lightning-format checkpoint of an untrained tiny model (no training needed)."""
    from thoracic.models import build_model

    config = Config(seed=seed, output_dir=str(folder.parent), run_name=folder.name,
                    data=DataConfig(root=str(data_root), image_size=image_size, num_workers=0),
                    model=ModelConfig(name=model, backbone="resnet10", pretrained=False),
                    train=TrainConfig(batch_size=16))
    torch.manual_seed(seed)
    net = build_model(config.model)
    (folder / "checkpoints").mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"config": to_dict(config), "class_names": list(CLASS_NAMES)},
                "epoch": 0}, folder / "checkpoints" / "best.ckpt")
    return folder

"""Training on Lightning: the LightningModule, ``train(config, resume=None) -> run folder``, the paper's
learning-rate sweep and multi-seed experiments; ``checkpoints.load_run`` reads a run back.

Names are imported on first use so that ``thoracic.training.checkpoints`` (used by evaluation and
prediction) does not pull in Lightning's trainer machinery.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ThoracicModule": "thoracic.training.module",
    "NonFiniteLossError": "thoracic.training.module",
    "compute_loss": "thoracic.training.module",
    "train": "thoracic.training.trainer",
    "evaluate_checkpoint": "thoracic.training.trainer",
    "read_epoch_metrics": "thoracic.training.trainer",
    "load_config_by_name": "thoracic.config",
    "config_for_resume": "thoracic.training.trainer",
    "lr_sweep": "thoracic.training.sweep",
    "PAPER_LR_GRID": "thoracic.training.sweep",
    "run_experiment": "thoracic.training.experiment",
    "aggregate_metrics": "thoracic.training.experiment",
    "format_mean_std": "thoracic.training.experiment",
    "LoadedRun": "thoracic.training.checkpoints",
    "load_run": "thoracic.training.checkpoints",
    "find_checkpoint": "thoracic.training.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'thoracic.training' has no attribute {name!r}")

"""Training on Lightning: the LightningModule, ``train(config, resume=None) -> run folder``, the run folder
(``run_folder``), the Trainer and data module (``factory``); ``checkpoints.load_run`` reads a run back.
The learning-rate sweep and multi-seed experiments that drive ``train`` are in :mod:`thoracic.workflows`.

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
    "read_epoch_metrics": "thoracic.training.run_folder",
    "load_config_by_name": "thoracic.config",
    "config_for_resume": "thoracic.training.trainer",
    "LoadedRun": "thoracic.training.checkpoints",
    "load_run": "thoracic.training.checkpoints",
    "find_checkpoint": "thoracic.training.checkpoints",
    "checkpoint_info": "thoracic.training.checkpoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'thoracic.training' has no attribute {name!r}")

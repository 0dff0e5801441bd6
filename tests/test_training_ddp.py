"""Metrics over all processes: a 2-process DDP run on the CPU (gloo, launched with
torchrun exactly as on a GPU machine) logs the same validation AUC as one process computes on the same
validation images with the same weights.

The weights themselves differ from a 1-process training run (BatchNorm statistics are per process and
Eq. 1's weights come from each process's own batch), so the comparison evaluates the DDP run's own
checkpoint in one process: any difference would come from how the metric was gathered (one rank's
shard only, or padded duplicates).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from thoracic.constants import CLASS_NAMES
from thoracic.workflows.evaluate import evaluate_checkpoint
from thoracic.training.run_folder import read_epoch_metrics

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore:.*LeafSpec.*")]


def test_two_process_ddp_logs_the_single_process_validation_auc(phantom_dir, phantom_cache, tmp_path):
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "thoracic.cli", "train", "--config", "baseline", "model.backbone=resnet10", "--no-model.pretrained",
        "data.image_size=64", f"data.root={phantom_dir}", "data.val_fraction=0.3", "data.num_workers=0",
        "train.batch_size=8", "train.max_epochs=1", "--no-train.progress_bar", "train.accelerator=cpu",
        "--devices", "2", "train.strategy=ddp", "--output-dir", str(tmp_path), "--run-name", "ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = tmp_path / "ddp"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "ddp-2").exists()  # rank 1 wrote nothing of its own
    assert json.loads((run / "run_info.json").read_text())["command_line"][:3] == ["thoracic", "train", "--config"]

    logged = read_epoch_metrics(run).loc[0]
    single = evaluate_checkpoint(run, checkpoint="last", split="val",
                      overrides={"train.devices": "1", "train.strategy": "auto", "train.progress_bar": False})
    names = [f"val_auc/{c}" for c in CLASS_NAMES]
    logged_auc = np.array([logged[n] for n in names], dtype=float)
    single_auc = np.array([np.nan if single[n] is None else single[n] for n in names], dtype=float)
    assert np.isfinite(logged_auc).sum() >= 5  # enough defined classes to make the comparison meaningful
    np.testing.assert_allclose(logged_auc, single_auc, rtol=0, atol=1e-6, equal_nan=True)

"""Conventional CLI: library noise hidden unless --verbose, --device auto, worker defaults, error blame."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from thoracic.cli import build_parser, main
from thoracic.errors import ThoracicError
from thoracic.runtime import MAX_AUTO_WORKERS, resolve_device, resolve_num_workers, usable_cores

REPO = Path(__file__).resolve().parents[1]

#: Lightning's own ways of talking: an INFO banner, the "Tip", a worker hint, a deprecation of its internals.
NOISE_SCRIPT = """
import sys, warnings
from thoracic.runtime import quiet_libraries
quiet_libraries(verbose=sys.argv[1] == "verbose")
import lightning.pytorch  # resets its package logger to INFO on import
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from lightning.fabric.utilities.warnings import PossibleUserWarning
rank_zero_info("GPU available: False, used: False")
rank_zero_info("Tip: try installing litlogger")
rank_zero_warn("The 'train_dataloader' does not have many workers which may be a bottleneck.",
               category=PossibleUserWarning)
warnings.warn("This DataLoader will create 8 worker processes in total.", UserWarning)
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)
warnings.warn("a warning of thoracic's own", UserWarning)
print("result")
"""


def _run_noise(mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", NOISE_SCRIPT, mode], capture_output=True, text=True, env=env,
                          timeout=120, check=True)


def test_library_noise_is_hidden_unless_verbose() -> None:
    quiet = _run_noise("quiet")
    assert quiet.stdout == "result\n"
    for noise in ("GPU available", "Tip", "many workers", "worker processes", "LeafSpec"):
        assert noise not in quiet.stderr
    assert "a warning of thoracic's own" in quiet.stderr  # only the libraries' noise is hidden
    verbose = _run_noise("verbose")
    for noise in ("GPU available", "Tip", "many workers", "worker processes", "LeafSpec"):
        assert noise in verbose.stderr


def test_every_subcommand_takes_verbose_and_network_commands_default_to_device_auto() -> None:
    parser = build_parser()
    for command in ("evaluate", "localize"):
        args = parser.parse_args([command, "RUN"])
        assert args.device == "auto" and args.verbose is False
    args = parser.parse_args(["predict", "RUN", "x.png", "--verbose"])
    assert args.device == "auto" and args.verbose is True and args.threshold is None
    assert parser.parse_args(["train", "--config", "baseline", "--verbose"]).verbose is True


def test_device_auto_resolves_to_what_the_machine_has() -> None:
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ThoracicError, match="--device: expected auto, cpu, cuda or cuda:N, got 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ThoracicError, match="no CUDA GPU is visible"):
            resolve_device("cuda:0")


def test_worker_defaults_follow_the_machine() -> None:
    from thoracic.config import DataConfig
    from thoracic.config import load_config_by_name

    assert DataConfig().num_workers == "auto"
    for name in ("baseline", "space_attention", "attention_gated"):
        assert load_config_by_name(name).data.num_workers == "auto"
    assert resolve_num_workers("auto") == min(MAX_AUTO_WORKERS, usable_cores())
    assert resolve_num_workers(3) == 3 and resolve_num_workers(0) == 0
    assert load_config_by_name("baseline", ["data.num_workers=3"]).data.num_workers == 3
    with pytest.raises(ThoracicError, match="data.num_workers"):
        resolve_num_workers(-1)


def test_override_errors_name_the_command_line_not_the_packaged_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "baseline", "optim.lr=1e-3", "train.batch_size=lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: command line: train.batch_size=lots: train.batch_size: expected an integer")
    assert "baseline.yaml" not in err and "optim.lr" not in err
    assert main(["train", "--config", "baseline", "data.num_workers=many"]) == 2
    assert "command line: data.num_workers=many" in capsys.readouterr().err


def test_errors_inside_a_config_file_still_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  batch_size: lots\n")
    assert main(["train", "--config", str(path), "optim.lr=1e-3"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: train.batch_size: expected an integer" in err and "command line" not in err

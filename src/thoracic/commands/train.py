"""Train a model from a YAML config (Lightning; CPU, one GPU, several GPUs or nodes).

  thoracic train --config baseline --data /data/chestxray14   # a packaged config by name
  thoracic train --config configs/baseline.yaml optim.lr=3e-4 --no-model.pretrained
  thoracic train --config attention_gated --device cuda --num-devices 4 --precision bf16-mixed
  thoracic train runs/baseline-seed0-20250101-120000       # continue a run after a crash or Ctrl-C

Overrides are `section.key=value`, `--section.key` (true) or `--no-section.key` (false), anywhere on the
line. Prints the data it trains on at the start (stderr) and the best epoch, its validation loss and mean
validation AUC and the run folder at the end (stdout).
Multi-GPU: `--num-devices N` on one machine; torchrun or SLURM (srun) for several nodes (docs/training.md).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from thoracic.commands._options import (
    add_data,
    add_deprecated,
    add_image_size,
    add_num_workers,
    add_option,
    add_trust_checkpoint,
)
from thoracic.config import ConfigError, parse_overrides

_CUDA = re.compile(r"cuda(:(?P<indices>\d+(,\d+)*))?")


def add_common_arguments(parser: argparse.ArgumentParser, *, out_help: str, out_old: tuple[str, ...] = ()) -> None:
    """Options shared by train, lr-sweep and experiment (``out_help``: what ``--out`` is for that command;
    ``out_old``: its old spellings there)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", help="YAML file, or the name of a packaged config "
                        "(baseline, space_attention, attention_gated)")
    add_option(parser, "--out", *out_old, metavar="FOLDER", help=out_help)
    add_data(parser, "ChestX-ray14 folder (data.root)")
    parser.add_argument("--cache", metavar="FOLDER", help="image cache folder (data.cache; default DATA/cache_SIZE)")
    add_image_size(parser, None, "model input side (data.image_size; the cache of that size must exist)")
    add_num_workers(parser, "data loader worker processes per training process (data.num_workers)")
    parser.add_argument("--device", default=None,
                        help="auto (default: the GPUs when there are some), cpu, cuda, or cuda:N[,M...] (those GPUs); "
                             "sets train.accelerator (and train.devices for cuda:N)")
    add_option(parser, "--num-devices", "--devices", metavar="N",
               help="devices per node (train.devices): a count, -1 for all; one process each (DDP)")
    parser.add_argument("--num-nodes", type=int, metavar="N", help="machines (train.num_nodes)")
    parser.add_argument("--precision", help="train.precision (32-true, bf16-mixed, 16-mixed)")
    add_deprecated(parser, "--output-dir", "the override output_dir=FOLDER (where new runs go) or --out",
                   dest="output_dir", metavar="FOLDER")
    add_trust_checkpoint(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bars (train.progress_bar=false)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, anywhere on the line: section.key=value, --section.key (true), "
                             "--no-section.key (false)")


def device_overrides(device: str | None, num_devices: str | None = None) -> dict[str, Any]:
    """The ``train.accelerator`` / ``train.devices`` overrides of ``--device`` and ``--num-devices``.

    ``auto`` (or None) changes nothing, ``cpu`` / ``mps`` set the accelerator, ``cuda`` the GPUs, and
    ``cuda:N[,M...]`` also which GPUs (Lightning's device list).
    """
    overrides: dict[str, Any] = {}
    name = "auto" if device is None else str(device).strip()
    match = _CUDA.fullmatch(name)
    if name in ("cpu", "mps"):
        overrides["train.accelerator"] = name
    elif match is not None:
        overrides["train.accelerator"] = "gpu"
        if match.group("indices"):
            if num_devices is not None:
                raise ConfigError(f"--device {name} names the GPUs; --num-devices {num_devices} cannot go with it")
            overrides["train.devices"] = match.group("indices") + ("," if "," not in match.group("indices") else "")
    elif name != "auto":
        raise ConfigError(f"--device: expected auto, cpu, cuda or cuda:N[,M...], got {device!r}")
    if num_devices is not None:
        overrides["train.devices"] = str(num_devices)
    return overrides


def collect_overrides(args: argparse.Namespace) -> dict:
    """Dotted overrides from the override tokens plus the options that stand for config keys."""
    overrides = parse_overrides(args.overrides or [])
    shortcuts = {"data.root": getattr(args, "data", None), "data.cache": getattr(args, "cache", None),
                 "data.image_size": getattr(args, "image_size", None),
                 "data.num_workers": getattr(args, "num_workers", None),
                 "train.num_nodes": getattr(args, "num_nodes", None),
                 "train.precision": getattr(args, "precision", None),
                 "output_dir": getattr(args, "output_dir", None),
                 "train.progress_bar": False if getattr(args, "progress", None) is False else None}
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    overrides.update(device_overrides(getattr(args, "device", None), getattr(args, "num_devices", None)))
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", nargs="?", metavar="RUN",
                        help="a run folder (or its last.ckpt) to continue from its last finished epoch, with its "
                             "own config; instead of --config")
    add_common_arguments(parser, out_help="the run folder to write (default <output_dir>/<run_name>; a folder "
                                          "that already holds a run gets a -2, -3 ... suffix, as a run_name)")
    parser.add_argument("--run-name", help="run_name: the run folder's name in output_dir "
                                           "(default <model>-seed<seed>-<time>)")
    add_deprecated(parser, "--resume", "thoracic train RUN (the run folder as the positional argument)",
                   dest="resume", metavar="RUN")


def run(args: argparse.Namespace) -> int:
    from thoracic.config import load_config_by_name

    overrides = collect_overrides(args)
    if args.run_name is not None:
        overrides["run_name"] = args.run_name
    if args.out is not None:
        if args.run_name is not None:
            raise ConfigError("--out is the run folder itself (output_dir/run_name): give --out or --run-name, not both")
        out = Path(args.out)
        overrides.update({"output_dir": str(out.parent), "run_name": out.name})
    resume = getattr(args, "resume", None)
    if resume is not None and args.run is not None:
        raise ConfigError(f"give the run to continue once: RUN ({args.run}) or --resume ({resume}), not both")
    resume = resume if resume is not None else args.run
    if resume and args.config:
        raise ConfigError("give either --config (a new run) or a RUN to continue (its own config), not both")
    if resume:
        if args.out is not None or args.run_name is not None:
            raise ConfigError("a run continues in its own folder: --out / --run-name cannot go with RUN")
        if not Path(resume).exists():
            raise ConfigError(f"RUN {resume}: no such run folder or checkpoint to continue; a new run is "
                              f"`thoracic train --config {resume}` (a YAML file or a packaged config name)")
    elif not args.config:
        raise ConfigError("thoracic train: give --config FILE_OR_NAME (a new run) or a RUN folder to continue")
    from thoracic.training.trainer import config_for_resume, train  # Lightning: only once the line is sound

    cfg = (config_for_resume(resume, overrides, trust_checkpoint=args.trust_checkpoint) if resume
           else load_config_by_name(args.config, overrides))
    run_dir = train(cfg, resume=resume, command_line=getattr(args, "command_line", None),
                    trust_checkpoint=args.trust_checkpoint,
                    log=lambda message: print(message, file=sys.stderr))
    print(format_run_result(run_dir))
    return 0


def format_run_result(run_dir: Path) -> str:
    """The result lines of a training run: best epoch, its validation loss and mean AUC, the run folder."""
    import json

    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    lines = []
    if summary.get("best_epoch") is not None:
        auc = (summary.get("metrics") or {}).get("val_auc_mean")
        lines.append(f"best epoch {summary['best_epoch']} (counting from 0; {summary.get('epochs_completed')} run): "
                     f"validation loss {summary['best_val_loss']:.4f}, mean validation AUC "
                     + (f"{auc:.4f}" if auc is not None else "undefined (no class with positives and negatives)"))
    if summary.get("diverged"):
        lines.append("the run diverged: " + "; ".join(summary.get("divergence") or []))
    lines.append(f"run folder: {run_dir}")
    return "\n".join(lines)


__all__ = ["add_arguments", "add_common_arguments", "collect_overrides", "device_overrides", "format_run_result", "run"]

"""Train a model from a YAML config (Lightning; CPU, one GPU, several GPUs or nodes).

  thoracic train --config baseline                         # a packaged config by name
  thoracic train --config configs/baseline.yaml optim.lr=3e-4 --no-model.pretrained
  thoracic train --config attention_gated --devices 4 --precision bf16-mixed
  thoracic train --resume runs/baseline-seed0-20250101-120000   # continue after a crash

Overrides are `section.key=value`, `--section.key` (true) or `--no-section.key` (false).
Multi-GPU: `--devices N` on one machine; torchrun or SLURM (srun) for several nodes (docs/training.md).
"""

from __future__ import annotations

import argparse

from thoracic.commands.shared import add_trust_checkpoint
from thoracic.config import ConfigError, parse_overrides


def add_common_arguments(parser: argparse.ArgumentParser, *, resume: bool = True) -> None:
    """Options shared by train, lr-sweep and experiment."""
    parser.allow_abbrev = False  # `--seed=1` must not silently mean `--seeds`
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--config", help="YAML file, or the name of a packaged config "
                        "(baseline, space_attention, attention_gated)")
    if resume:
        parser.add_argument("--resume", metavar="RUN", help="run folder (or its last.ckpt) to continue")
    parser.add_argument("--devices", help="shortcut for train.devices (a count, -1 for all, or 0,1)")
    parser.add_argument("--num-nodes", type=int, help="shortcut for train.num_nodes")
    parser.add_argument("--precision", help="shortcut for train.precision (32-true, bf16-mixed, 16-mixed)")
    parser.add_argument("--output-dir", help="shortcut for output_dir")
    add_trust_checkpoint(parser)
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides: section.key=value, --section.key, --no-section.key")


def collect_overrides(args: argparse.Namespace) -> dict:
    """Dotted overrides from the positional tokens plus the shortcut options."""
    overrides = parse_overrides(args.overrides or [])
    shortcuts = {"train.devices": getattr(args, "devices", None), "train.num_nodes": getattr(args, "num_nodes", None),
                 "train.precision": getattr(args, "precision", None), "output_dir": getattr(args, "output_dir", None)}
    overrides.update({k: v for k, v in shortcuts.items() if v is not None})
    return overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--run-name", help="shortcut for run_name (default <model>-seed<seed>-<time>)")


def run(args: argparse.Namespace) -> int:
    from thoracic.config import load_config_by_name
    from thoracic.training.trainer import config_for_resume, train

    overrides = collect_overrides(args)
    if args.run_name is not None:
        overrides["run_name"] = args.run_name
    if args.resume and args.config:
        raise ConfigError("give either --config (a new run) or --resume RUN (its own config), not both")
    if args.resume:
        cfg = config_for_resume(args.resume, overrides, trust_checkpoint=args.trust_checkpoint)
    elif args.config:
        cfg = load_config_by_name(args.config, overrides)
    else:
        raise ConfigError("thoracic train: give --config FILE_OR_NAME or --resume RUN")
    run_dir = train(cfg, resume=args.resume, command_line=getattr(args, "command_line", None),
                    trust_checkpoint=args.trust_checkpoint)
    print(f"run folder: {run_dir}")
    return 0

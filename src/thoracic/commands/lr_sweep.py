"""The paper's learning-rate grid search: 10 values from 1e-3 to 1e-6, a short run each, chosen by
validation loss; writes sweep.csv, sweep.md, sweep.json and sweep.png in the sweep folder.

  thoracic lr-sweep --config baseline --epochs 2
  thoracic lr-sweep --config baseline --lrs 1e-3 1e-4 1e-5 train.limit_train_batches=0.1 --out runs/sweep
"""

from __future__ import annotations

import argparse

from thoracic.commands.train import add_common_arguments, collect_overrides
from thoracic.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, out_help="the sweep folder (default <output_dir>/lr_sweep-<model>-<time>); "
                         "rerunning with the same folder skips finished learning rates and resumes or restarts "
                         "interrupted ones", out_old=("--folder",))
    parser.add_argument("--lrs", type=float, nargs="+", metavar="LR",
                        help="learning rates to try (default: 10 log-spaced values 1e-3..1e-6)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per learning rate (default 2)")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.sweep import PAPER_LR_GRID, lr_sweep
    from thoracic.config import load_config_by_name

    if not args.config:
        raise ConfigError("thoracic lr-sweep: give --config FILE_OR_NAME")
    if args.epochs < 1:
        raise ConfigError(f"--epochs: expected a positive integer, got {args.epochs}")
    cfg = load_config_by_name(args.config, collect_overrides(args))
    result = lr_sweep(cfg, args.lrs or PAPER_LR_GRID, epochs=args.epochs, out=args.out,
                      command_line=getattr(args, "command_line", None), trust_checkpoint=args.trust_checkpoint)
    print((result.folder / "sweep.md").read_text())
    chosen = "none (every run diverged)" if result.best_lr is None else f"{result.best_lr:.2e}"
    print(f"chosen learning rate: {chosen}\nsweep folder: {result.folder}")
    return 0 if result.best_lr is not None else 1

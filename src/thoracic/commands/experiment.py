"""One run per seed on the same split, then mean +- std of every metric (val at the best epoch and,
unless --no-test, the test split); writes per_seed.csv and summary.csv/json/md in the experiment folder.
With testing, each seed's best checkpoint also goes through `thoracic evaluate` (and, with --localize,
`thoracic localize`), so `thoracic report FOLDER` reports the seeds as mean +- std.

  thoracic experiment --config baseline --seeds 0 1 2
  thoracic experiment --config space_attention --seeds 0 1 2 --num-devices 4 --out runs/sa-seeds --localize
  thoracic report runs/sa-seeds
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import add_deprecated
from thoracic.commands.train import add_common_arguments, collect_overrides
from thoracic.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, out_help="the experiment folder (default <output_dir>/experiment-<model>-<time>); "
                         "rerunning with the same folder skips finished seeds and resumes interrupted ones",
                         out_old=("--folder",))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--test", action=argparse.BooleanOptionalAction, default=True,
                        help="evaluate each run's best checkpoint on the test split (default: yes)")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="bootstrap resamples of each seed's AUC confidence intervals (0: none; default 200)")
    parser.add_argument("--localize", action="store_true",
                        help="also score weakly supervised localization (native heatmaps) of each seed "
                        "on the test images with boxes")
    add_deprecated(parser, "--eval-device", "--device (the device of training and of the per-seed evaluation)",
                   dest="eval_device")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.experiment import format_mean_std, run_experiment
    from thoracic.config import load_config_by_name

    if not args.config:
        raise ConfigError("thoracic experiment: give --config FILE_OR_NAME")
    cfg = load_config_by_name(args.config, collect_overrides(args))
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap: expected 0 or a positive integer, got {args.bootstrap}")
    if args.localize and not args.test:
        raise ConfigError("--localize evaluates the test split: it cannot go with --no-test")
    result = run_experiment(cfg, args.seeds, out=args.out, test=args.test, bootstrap=args.bootstrap,
                            localize=args.localize,
                            device=evaluation_device(args.device, getattr(args, "eval_device", None)),
                            command_line=getattr(args, "command_line", None),
                            trust_checkpoint=args.trust_checkpoint)
    print(format_mean_std(result.summary))
    print(f"experiment folder: {result.folder}")
    if args.test:
        print(f"report: thoracic report {result.folder}")
    return 0


def evaluation_device(device: str | None, eval_device: str | None = None) -> str | None:
    """The torch device of the per-seed evaluation: the old ``--eval-device`` when given, else the first
    device ``--device`` names (``cuda:0,1`` -> ``cuda:0``); None (auto) follows the training's accelerator."""
    if eval_device is not None:
        return eval_device
    if device is None or device == "auto":
        return None
    return device.split(",")[0]

"""The whole pipeline on phantom chest X-rays, sized for a 2-core CPU (what `make demo` runs).

Generates (or reuses) a phantom ChestX-ray14 folder, prepares its cache, trains the paper's three models
with CPU-sized settings, evaluates classification and localization, writes the report and prints the
headline numbers. Rerunning reuses finished steps and resumes an interrupted training run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from thoracic.workflows.demo_settings import DEMO_MODELS, DemoSettings

    defaults = DemoSettings()
    parser.add_argument("--out", type=Path, default=defaults.out_dir, help="output folder (default: %(default)s)")
    parser.add_argument("--images", type=int, default=defaults.num_images,
                        help="phantom images to generate (default: %(default)s)")
    parser.add_argument("--size", type=int, default=defaults.image_size,
                        help="side of the phantom images on disk (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=DEMO_MODELS, default=list(DEMO_MODELS),
                        help="models to train (default: all three)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.max_epochs")
    parser.add_argument("--output-stride", type=int, choices=(32, 16, 8), default=None,
                        help=f"override model.output_stride (default {defaults.overrides['model.output_stride']})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice); results are reproducible for the "
                             "same thread count, CPU and library builds only")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.demo import DemoSettings, check_learning, format_headline, run_demo

    overrides = dict(DemoSettings().overrides)
    if args.epochs is not None:
        overrides["train.max_epochs"] = args.epochs
    if args.output_stride is not None:
        overrides["model.output_stride"] = args.output_stride
    settings = DemoSettings(out_dir=args.out, num_images=args.images, image_size=args.size, seed=args.seed,
                            models=tuple(args.models), overrides=overrides, progress=args.progress,
                            threads=args.threads)
    result = run_demo(settings, log=lambda message: print(message, file=sys.stderr))  # progress: stderr
    print(format_headline(result))
    problems = check_learning(result.headline)
    if problems:
        print("note: the demo did not reach its targets:\n  " + "\n  ".join(problems))
    return 0

"""The whole pipeline on phantom chest X-rays, sized for a 2-core CPU (what `make demo` runs).

Generates (or reuses) a phantom ChestX-ray14 folder, prepares its cache, trains the paper's three models
with CPU-sized settings, evaluates classification and localization, checks the heatmaps (thoracic
explain), writes the report and prints the headline numbers. Rerunning reuses finished steps and resumes an interrupted training run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from thoracic.commands._options import add_image_size, add_num_images, add_num_workers, add_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from thoracic.workflows.demo_settings import DEMO_MODELS, DEMO_OVERRIDES, DemoSettings

    defaults = DemoSettings()
    parser.add_argument("--out", type=Path, default=defaults.out_dir, metavar="FOLDER",
                        help="output folder (default: %(default)s)")
    add_num_images(parser, defaults.num_images, "phantom images to generate")
    add_image_size(parser, defaults.image_size, "side of the phantom images on disk (the models see "
                   f"{DEMO_OVERRIDES['data.image_size']} px, data.image_size)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed (default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=DEMO_MODELS, default=list(DEMO_MODELS),
                        help="models to train (default: all three)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.max_epochs")
    parser.add_argument("--output-stride", type=int, choices=(32, 16, 8), default=None,
                        help=f"override model.output_stride (default {defaults.overrides['model.output_stride']})")
    add_num_workers(parser, "processes of the phantom generation and the image cache (default: all cores)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice); results are reproducible for the "
                             "same thread count, CPU and library builds only")
    parser.add_argument("--no-explain", dest="explain", action="store_false",
                        help="skip the heatmap checks (thoracic explain: model randomization, faithfulness, mask "
                             f"metrics on {defaults.explain_images} test images with boxes)")
    add_progress(parser)


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.demo import DemoSettings, check_learning, format_headline, run_demo

    overrides = dict(DemoSettings().overrides)
    if args.epochs is not None:
        overrides["train.max_epochs"] = args.epochs
    if args.output_stride is not None:
        overrides["model.output_stride"] = args.output_stride
    settings = DemoSettings(out_dir=args.out, num_images=args.num_images, image_size=args.image_size,
                            seed=args.seed, models=tuple(args.models), overrides=overrides, progress=args.progress,
                            workers=args.num_workers, threads=args.threads)
    if not args.explain:
        settings = dataclasses.replace(settings, explain_methods=None)
    result = run_demo(settings, log=lambda message: print(message, file=sys.stderr))  # progress: stderr
    print(format_headline(result))
    problems = check_learning(result.headline, checks=result.checks)
    if problems:
        print("note: the demo did not reach its targets:\n  " + "\n  ".join(problems))
    return 0

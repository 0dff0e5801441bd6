"""Can a run's heatmaps be trusted? Sanity checks of every heatmap method on the test box images.

For a run folder, per method (default: the methods `thoracic localize` ran, else native), on the box rows
of up to --num-images test images: the cascading model randomization test (Adebayo et al. 2018: Spearman
and SSIM between the trained model's maps and those of the model randomized from the classifier down
through the backbone stages; a method whose maps stay similar is flagged), deletion and insertion curves
against a random order and ROAD (faithfulness), and the CheXlocalize mask metrics (mIoU and hit rate at the
fixed heatmap thresholds, at Otsu's threshold, and with per-class thresholds tuned on the other half of the
patients). For an experiment folder, the same for every seed run, then the repeatability of the maps
across the seeds. Writes CSV, JSON and figures beside the localization files in RUN/evaluation/
(randomization*, faithfulness*, masks.csv, mask_metrics.csv, mask_thresholds.csv, explain.json) and
EXPERIMENT/evaluation/repeatability*; finished parts are reused when rerun (RUN/evaluation/explain/).
`thoracic report` shows the results in its "Can these heatmaps be trusted?" section.
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import (
    add_checkpoint,
    add_data,
    add_device,
    add_num_workers,
    add_progress,
    add_run,
    add_trust_checkpoint,
)


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from thoracic.constants import EXPLAIN_CHECKS as CHECKS
    from thoracic.constants import EXPLAIN_NUM_IMAGES as DEFAULT_NUM_IMAGES
    from thoracic.constants import HEATMAP_THRESHOLDS
    from thoracic.heatmaps import describe_heatmap_methods

    add_run(parser, "run folder, or experiment folder (one run folder per seed)")
    parser.add_argument("--method", action="extend", nargs="+", default=None, metavar="METHOD",
                        help="heatmap method(s), repeatable or a list (default: those `thoracic localize` ran, else "
                             f"native): {describe_heatmap_methods()}")
    parser.add_argument("--checks", nargs="+", choices=CHECKS, default=list(CHECKS),
                        help="which checks (default all; repeatability needs an experiment folder)")
    add_checkpoint(parser)
    add_device(parser)
    parser.add_argument("--num-images", type=_count, default=DEFAULT_NUM_IMAGES, metavar="N",
                        help=f"box images used, a seeded draw of the test box images (0: all; default {DEFAULT_NUM_IMAGES})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the image draw, randomization, random orders, halves and bootstrap (default 0)")
    parser.add_argument("--bootstrap", type=_count, default=1000,
                        help="bootstrap resamples of the 95%% CIs (0: none; default 1000)")
    parser.add_argument("--heatmap-thresholds", type=float, nargs="+",
                        default=[float(t) for t in HEATMAP_THRESHOLDS], metavar="LEVEL",
                        help="heatmap levels 0-255 of the fixed mask thresholds (default "
                             f"{' '.join(str(t) for t in HEATMAP_THRESHOLDS)})")
    parser.add_argument("--steps", type=int, default=5,
                        help="steps of the deletion / insertion curves (default 5: fractions 0, 0.2, ..., 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the run's)")
    add_data(parser, "data folder instead of the run's data.root")
    parser.add_argument("--cache", default=None, metavar="FOLDER", help="image cache folder (default: the run's)")
    add_num_workers(parser, "data loader worker processes (default: the run's data.num_workers)")
    add_progress(parser)
    add_trust_checkpoint(parser)


def run(args: argparse.Namespace) -> int:
    from thoracic.errors import DataError
    from thoracic.workflows.explain import ExplainSettings, explain

    thresholds = tuple(float(t) for t in args.heatmap_thresholds)
    bad = [t for t in thresholds if not 0.0 <= t <= 255.0]
    if bad:
        raise DataError(f"--heatmap-thresholds must lie in 0-255, got {bad}")
    if args.steps < 1:
        raise DataError(f"--steps must be at least 1, got {args.steps}")
    methods = tuple(m for value in args.method for m in value.split(",") if m) if args.method else None
    settings = ExplainSettings(method=methods, checks=tuple(args.checks), num_images=args.num_images,
                               seed=args.seed, bootstrap=args.bootstrap, heatmap_thresholds=thresholds,
                               steps=args.steps)
    result = explain(args.run, settings, checkpoint=args.checkpoint, device=args.device, batch_size=args.batch_size,
                     data=args.data, cache=args.cache, num_workers=args.num_workers, progress=args.progress,
                     trust_checkpoint=args.trust_checkpoint)
    for line in result.lines():
        print(line)
    written = [p for e in result.runs for p in e.files.values()] + list(result.files.values())
    print(f"wrote {len(written)} files in {result.seconds:.0f} s: {', '.join(sorted({str(p.parent) for p in written}))}")
    return 0

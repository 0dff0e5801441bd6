"""Weakly supervised localization accuracy of a run on the box rows of the test images (Tables 2-7, Figs. 6-8).

Protocol of Wang et al. 2017: the heatmap of each box row's class is upsampled to the original image,
min-max normalised to [0, 255], thresholded (--heatmap-thresholds, default 60 and 180), and every connected
region gives a box.
IoU = intersection / union, IoBB = intersection / area of the predicted box; accuracy at every
T(IoU) and T(IoBB) with false positives per image (per heatmap threshold and pooled; threshold 180, the
paper's, is the headline), the pointing game, and random-box (mean ± sd over --draws seeded draws) and
centre-box baselines. Heatmap cells are placed in the image by --registration (geometric: their
receptive-field centres, derived from the network; legacy: align_corners=False); the same heatmaps are
also scored under the other registration, so the sensitivity of the result to it is printed beside the
headline. Writes RUN/evaluation/boxes_<method>.csv, scores_<method>.csv, baselines_<method>.csv,
localization_<method>.csv/.json, registration_<method>.csv, heatmaps_<method>.npz and overlays_<method>.png.
Every box set is scored the same way: with --data and --dataset another dataset's boxes (VinDr-CXR, RSNA
Pneumonia; --split all: every image with boxes, not only the test split) for the box classes the run has,
into RUN/evaluation/<kind>-<folder>/. Where several readers boxed an image, --ground-truth says what their
boxes become (each: every reader's box is a row; any: the findings at least one reader boxed; consensus:
those a majority of the image's readers boxed; readers' boxes matched at IoU > 0.4 and averaged), and the
human row scores each reader's boxes against the other readers' with the same metrics, printed beside the
model and written to human_<method>.csv.
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import add_option
from thoracic.commands.evaluate import add_common_arguments
from thoracic.constants import BOX_SPLITS, GROUND_TRUTH_POLICIES, HEATMAP_THRESHOLDS, REGISTRATIONS
from thoracic.heatmaps import HEATMAP_METHOD_NAMES, describe_heatmap_methods


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--method", default="native", choices=HEATMAP_METHOD_NAMES,
                        help=f"heatmap method (default native): {describe_heatmap_methods()}")
    parser.add_argument("--registration", default=REGISTRATIONS[0], choices=REGISTRATIONS,
                        help="where heatmap cells sit in the image: geometric (receptive-field centres derived "
                             "from the network; default) or legacy (align_corners=False tiles)")
    add_option(parser, "--heatmap-thresholds", "--thresholds", type=float, nargs="+", metavar="LEVEL",
               default=[float(t) for t in HEATMAP_THRESHOLDS],
               help="heatmap thresholds on the 0-255 scale (default "
                    f"{' '.join(str(t) for t in HEATMAP_THRESHOLDS)})")
    parser.add_argument("--largest-only", action="store_true",
                        help="one box per heatmap: the largest region only (what the seed code did)")
    add_option(parser, "--num-examples", "--examples", type=int, default=8, metavar="N",
               help="images in the overlay figure (default 8)")
    parser.add_argument("--draws", type=_positive, default=100,
                        help="seeded draws of the random-box baseline, reported as mean ± sd (default 100)")
    parser.add_argument("--ground-truth", default=GROUND_TRUTH_POLICIES[0], choices=GROUND_TRUTH_POLICIES,
                        help="what the boxes of several readers of an image become: each (every reader's box is a "
                             "row; default), any (one row per finding at least one reader boxed), consensus (the "
                             "findings a majority of the image's readers boxed); readers' boxes of a class match at "
                             "IoU > 0.4 and are averaged. A dataset with one reference per image reads the same "
                             "under each")
    parser.add_argument("--split", default=BOX_SPLITS[0], choices=BOX_SPLITS,
                        help="the box rows of the test images (default), or of every image (all: another dataset "
                             "than the run's only, e.g. VinDr-CXR's training images, three readers each)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of draws, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    import sys

    from thoracic.evaluation.protocol import headline, headline_text, human_text
    from thoracic.workflows.localize import localize_run

    result = localize_run(args.run, method=args.method, heatmap_thresholds=args.heatmap_thresholds,
                          largest_only=args.largest_only, batch_size=args.batch_size, device=args.device,
                          data=args.data, cache=args.cache, num_workers=args.num_workers,
                          checkpoint=args.checkpoint, seed=args.seed, num_examples=args.num_examples,
                          progress=args.progress, draws=args.draws, registration=args.registration,
                          trust_checkpoint=args.trust_checkpoint, dataset=args.dataset,
                          ground_truth=args.ground_truth, split=args.split, shared_images=args.shared_images)
    box_set = result.box_set
    if box_set:
        truth = box_set["ground_truth"]
        mapping = ", ".join(f"{m['run_label']} = {m['test_label']}" for m in box_set["label_mapping"])
        print(f"box set: {box_set['dataset']} {box_set['root']} ({box_set['split']} images), ground truth "
              f"{truth['policy']}: {truth['definition']}; {truth['n_rows']} rows from {truth['n_reader_boxes']} "
              f"boxes; classes (the run's = {box_set['dataset']}'s): {mapping}")
    print(headline_text(headline(result.accuracy, args.method), args.method, len(result.box_classes)))
    if result.human is not None:
        print(human_text(result.human.accuracy, result.human.reason, result.human.n_pairs))
    sensitivity = result.registrations
    if sensitivity is not None:
        print("same heatmaps under both registrations (mean accuracy; false positives per image):")
        for (name, threshold), rows in sensitivity.groupby(["registration", "threshold"], sort=False):
            cells = " ".join(f"{m}>{t:g}:{a:.3f} ({fp:.2f})" for m, t, a, fp in
                             zip(rows["metric"], rows["t"], rows["accuracy"], rows["false_positives_per_image"]))
            print(f"  {name:<10} T={threshold:<4} {cells}")
    print(f"{len(result.scores['box_row'].unique())} box rows scored; "
          f"wrote {', '.join(str(p) for p in result.files.values())}")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0

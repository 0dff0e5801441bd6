"""Probabilities, heatmaps and boxes for new chest X-rays (PNG, JPEG or DICOM; files or folders).

Prints a table of per-class probabilities (or JSON with --json) on stdout and writes, per image, a figure
with the heatmaps and boxes of the classes at or above their threshold, plus predictions.json, into --out.
Thresholds: the run's per-class operating points (evaluation/operating_points.json, written by
`thoracic evaluate`) by default, --threshold P for one value for every class; which one is used is said
on stderr and stored in predictions.json. A checkpoint trained on phantom images gets a warning, and so
do thresholds or temperatures fitted on fewer than 10 positive validation images and a temperature at the
bound of its search interval. The table writes 4 digits and marks each probability at or above its
class's threshold with *; figures write p=0.4996 < 0.5000 and name the classes they leave out.
A file that is missing, not an image, truncated or an unsupported DICOM gets its own message and the rest
are still processed. Exit code: 0 when every file was processed, 1 when any file failed, 2 when there was
nothing to process (no input exists, empty folders), the checkpoint cannot be loaded, or --threshold /
--device / --out is unusable.
With --model FILE, a model written by `thoracic export` (ONNX or TorchScript) runs instead of the
checkpoint, without Lightning or thoracic's model code (native heatmaps only). Probabilities are
temperature-scaled when the run (or the export) holds a calibration fitted by `thoracic evaluate
--calibrate`; stderr says whether they are (the operating points are then mapped onto the
calibrated probabilities, so the decisions they make do not change).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+",
                        help="image files (PNG, JPEG, DICOM) and/or folders (searched recursively)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a run folder (its best checkpoint) or a .ckpt file")
    source.add_argument("--model", help="an exported model (.onnx or TorchScript .pt from `thoracic export`)")
    parser.add_argument("--out", default="predictions", help="output folder (default: %(default)s)")
    from thoracic.geometry import REGISTRATIONS
    from thoracic.heatmaps import HEATMAP_METHOD_NAMES, describe_heatmap_methods

    parser.add_argument("--method", choices=HEATMAP_METHOD_NAMES, default="native",
                        help=f"heatmap method (default: %(default)s): {describe_heatmap_methods()}")
    parser.add_argument("--registration", choices=REGISTRATIONS, default=REGISTRATIONS[0],
                        help="where heatmap cells sit in the image: geometric (receptive-field centres, "
                             "default) or legacy (align_corners=False)")
    parser.add_argument("--threshold", type=float, default=None, metavar="P",
                        help="one probability threshold in [0, 1] for every class (default: the run's per-class "
                        "operating points from `thoracic evaluate`, else 0.5)")
    parser.add_argument("--all-boxes", action="store_true",
                        help="figures also show the boxes of heatmap threshold 60 (dashed); by default only "
                        "those of threshold 180 (predictions.json always has both)")
    parser.add_argument("--device", default="auto",
                        help="auto (a GPU when there is one, else the CPU), cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-calibration", dest="calibrate", action="store_false",
                        help="ignore the run's (or the export's) temperature scaling")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.predict import predict_images
    from thoracic.prediction import probability_table

    results = predict_images(args.images, args.checkpoint, out_dir=args.out, method=args.method,
                             threshold=args.threshold, device=args.device, progress=args.progress,
                             all_boxes=args.all_boxes, model=args.model, calibrate=args.calibrate,
                             registration=args.registration,
                             log=lambda message: print(message, file=sys.stderr))
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        print(probability_table(results))
        print(f"figures and predictions.json in {args.out}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0

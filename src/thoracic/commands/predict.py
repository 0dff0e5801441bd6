"""Probabilities, heatmaps and boxes for new chest X-rays (PNG, JPEG or DICOM; files or folders).

Prints a table of per-class probabilities (or, with --json, the content of predictions.json: source,
checkpoint hash, thresholds and where they come from, calibration, and one entry per image) on stdout and
writes, per image, a figure with the heatmaps and boxes of the classes at or above their threshold, plus
predictions.json, into --out. --out must lie outside the input folders; it holds the outputs of one
checkpoint or exported model (another's are refused; this one's earlier files are replaced) and
thoracic_outputs.json, the list of files thoracic wrote there: a file it did not write is never replaced,
and files it wrote are never read as inputs.
Thresholds: the run's per-class operating points (evaluation/operating_points.json, written by
`thoracic evaluate`) by default, --threshold P for one value for every class; which one is used is said
on stderr and stored in predictions.json. A checkpoint trained on phantom images gets a warning.
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

from thoracic.commands.shared import add_trust_checkpoint


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
    add_trust_checkpoint(parser)


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.predict import run_predictions
    from thoracic.prediction import probability_table

    done = run_predictions(args.images, args.checkpoint, out_dir=args.out, method=args.method,
                           threshold=args.threshold, device=args.device, progress=args.progress,
                           all_boxes=args.all_boxes, model=args.model, calibrate=args.calibrate,
                           registration=args.registration, trust_checkpoint=args.trust_checkpoint,
                           log=lambda message: print(message, file=sys.stderr))
    results = done.results
    if args.json:  # what predictions.json holds: the run-level fields, and "images"
        print(json.dumps(done.document, indent=1))
    else:
        print(probability_table(results))
        print(f"figures and predictions.json in {args.out}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0

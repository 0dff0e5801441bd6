"""Probabilities, heatmaps and boxes for new chest X-rays (PNG, JPEG or DICOM; files or folders).

  thoracic predict runs/baseline scans/ extra/chest.dcm --out predictions/
  thoracic predict runs/baseline chest.png --checkpoint last --method gradcam --threshold 0.3 --json
  thoracic predict runs/baseline/export/baseline.onnx scans/     # an exported model, no Lightning needed

RUN comes first: a run folder (its --checkpoint: best by default, last, or a .ckpt path), a .ckpt file, or
a model written by `thoracic export` (ONNX or TorchScript .pt; runs without Lightning or thoracic's model
code, native heatmaps only); then the images.
Prints a table of per-class probabilities (or, with --json, the content of predictions.json: source,
checkpoint hash, thresholds and where they come from, calibration, and one entry per image) on stdout and
writes, per image, a figure with the heatmaps and boxes of the classes at or above their threshold, plus
predictions.json, into --out. --out must lie outside the input folders; it holds the outputs of one
checkpoint or exported model (another's are refused; this one's earlier files are replaced) and
thoracic_outputs.json, the list of files thoracic wrote there: a file it did not write is never replaced,
and files it wrote are never read as inputs.
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
Probabilities are temperature-scaled when the run (or the export) holds a calibration fitted by
`thoracic evaluate --calibrate`; stderr says whether they are (the operating points are then mapped onto
the calibrated probabilities, so the decisions they make do not change).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from thoracic.commands._options import (
    DEVICE_HELP,
    add_checkpoint,
    add_deprecated,
    add_device,
    add_progress,
    add_run,
    add_trust_checkpoint,
    warn_deprecated,
)
from thoracic.constants import CHECKPOINT_NAMES, REGISTRATIONS
from thoracic.errors import ThoracicError
from thoracic.heatmaps import HEATMAP_METHOD_NAMES, describe_heatmap_methods


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_run(parser, help="a run folder, a .ckpt file, or a model written by `thoracic export` (.onnx, .pt)")
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="image files (PNG, JPEG, DICOM) and/or folders (searched recursively)")
    add_checkpoint(parser)
    parser.add_argument("--out", default="predictions", metavar="FOLDER", help="output folder (default: %(default)s)")
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
    add_device(parser, DEVICE_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-calibration", dest="calibrate", action="store_false",
                        help="ignore the run's (or the export's) temperature scaling")
    add_progress(parser, "no progress bar")
    add_trust_checkpoint(parser)
    add_deprecated(parser, "--model", "thoracic predict FILE IMAGE... (the exported model first)", dest="model",
                   metavar="FILE")


def is_model_source(path: str) -> bool:
    """Whether ``path`` can be predict's RUN: a run folder, a ``.ckpt`` file or an exported model."""
    candidate = Path(path)
    if candidate.is_dir():
        return (candidate / "checkpoints").is_dir() or (candidate / "config.yaml").is_file()
    return candidate.suffix.lower() in (".ckpt", ".onnx", ".pt")


def model_and_images(args: argparse.Namespace) -> tuple[str, list[str], str]:
    """``(RUN, images, checkpoint)`` of the command line; the old form ``predict IMAGE... --checkpoint RUN``
    (or ``--model FILE``) is understood, with a warning, for one release."""
    images = list(args.images)
    model = getattr(args, "model", None)
    if model is not None:  # predict IMAGE... --model FILE (the option printed its warning)
        if args.checkpoint not in CHECKPOINT_NAMES:
            raise ThoracicError(f"give one model: --model {model} or --checkpoint {args.checkpoint}, not both")
        return model, [args.run, *images], "best"
    if args.checkpoint not in CHECKPOINT_NAMES and not is_model_source(args.run):
        warn_deprecated("predict IMAGE... --checkpoint RUN", "thoracic predict RUN IMAGE... (the run first; "
                        "--checkpoint now picks best, last or a .ckpt of RUN)")
        return args.checkpoint, [args.run, *images], "best"
    if not images:
        raise ThoracicError(f"no IMAGE given after RUN {args.run}: thoracic predict RUN IMAGE... (files or folders)")
    return args.run, images, args.checkpoint


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.predict import predict_images
    from thoracic.prediction import probability_table

    source, images, checkpoint = model_and_images(args)
    results = predict_images(source, images, checkpoint=checkpoint, out=args.out, method=args.method,
                             threshold=args.threshold, device=args.device, progress=args.progress,
                             all_boxes=args.all_boxes, calibrate=args.calibrate, registration=args.registration,
                             log=lambda message: print(message, file=sys.stderr),
                             trust_checkpoint=args.trust_checkpoint)
    if args.json:  # what predictions.json holds: the run-level fields, and "images"
        print(json.dumps(results.document, indent=1))
    else:
        print(probability_table(results))
        print(f"figures and predictions.json in {args.out}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"error: {r.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(results)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0

"""Export a run's model to ONNX or TorchScript: normalised images in, logits and native class maps out.

Writes RUN/export/<model>.onnx (or .pt; --out to choose) and <file>.json beside it. The graph takes a
float32 batch (B, 3, S, S) normalised as in training (B dynamic, S the run's data.image_size) and returns
logits (B, 14) and the raw native class maps (B, 14, h, w). The metadata (inside the file and in the
JSON) holds the class order, preprocessing, the run's operating points and calibration when present,
and the heatmap geometry (stride and the input pixel of cell (0, 0)'s centre). The export is checked
at once: onnxruntime / torch.jit run it on another batch size and the largest difference from the
PyTorch model is printed and stored. `thoracic predict FILE IMAGE...` uses it without Lightning.
"""

from __future__ import annotations

import argparse
import sys

from thoracic.commands._options import add_checkpoint, add_run, add_trust_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run(parser)
    parser.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                        help="onnx (onnxruntime, any language) or torchscript (libtorch) (default: %(default)s)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="file to write (default: RUN/export/<model>.onnx or .pt)")
    add_checkpoint(parser)
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    add_trust_checkpoint(parser)


def run(args: argparse.Namespace) -> int:
    from thoracic.workflows.export import export_run

    result = export_run(args.run, args.format, out=args.out, checkpoint=args.checkpoint, opset=args.opset,
                        trust_checkpoint=args.trust_checkpoint)
    check = result.metadata["verification"]
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in result.max_abs_diff.items())
    print(f"wrote {result.path} and {result.metadata_path}")
    print(f"checked with {check['runtime']} on a batch of {check['batch_size']}: max abs difference from PyTorch {diffs}")
    note = result.metadata.get("operating_points_note", "")
    if "not embedded" in note or "caution" in note:
        print(f"warning: operating points {note}", file=sys.stderr)
    return 0

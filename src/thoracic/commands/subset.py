"""Build a small real ChestX-ray14 folder from complete metadata and a folder holding some of its images.

For example ``thoracic subset --data /data/nih --image-folder /data/nih/sample/images --out DIR`` turns the
full NIH metadata and some of its PNGs into a folder in the NIH layout (the CSV rows and list lines of
those images copied verbatim, the images symlinked) on which ``thoracic prepare`` and every other
command run unchanged.
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import add_data, add_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data(parser, "ChestX-ray14 folder with the complete metadata (in it or in DATA/metadata)", "--source",
             required=True)
    add_option(parser, "--image-folder", "--images", required=True, metavar="FOLDER",
               help="folder holding the images to keep (e.g. DATA/sample/images)")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="folder to write (must be empty or absent)")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of symlinking them")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from thoracic.data.metadata import load_chestxray14, write_subset_folder
    from thoracic.errors import DataError

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not empty; choose another folder")
    write_subset_folder(args.data, out, args.image_folder, symlink=not args.copy)
    dataset = load_chestxray14(out, require_images=True)
    boxes = dataset.boxes
    print(f"wrote {len(dataset)} images of {dataset.table['patient_id'].nunique()} patients to {out} "
          f"({'copied' if args.copy else 'symlinked'} from {args.image_folder})")
    print(f"train_val {len(dataset.train_val_ids)}, test {len(dataset.test_ids)}; "
          f"{len(boxes)} box rows on {boxes['image_id'].nunique()} images")
    print(f"next: thoracic prepare --data {out} --image-size 256")
    return 0

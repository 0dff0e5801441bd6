"""Write a phantom ChestX-ray14 folder (NIH layout, exact lesion boxes) for tests and the demo.

Phantom results say nothing clinical; see docs/data.md.
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import add_image_size, add_num_images, add_num_workers, add_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FOLDER", help="folder to write (must be empty or absent)")
    add_num_images(parser, 2000, "number of images")
    add_image_size(parser, 256, "image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--family", choices=("A", "B"), default="A",
                        help="finding design: A (default) or B, other shapes, positions and sizes of the "
                             "box classes (docs/data.md)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="fraction of patients in test_list.txt, strictly between 0 and 1 (default 0.25)")
    parser.add_argument("--tarball-layout", action=argparse.BooleanOptionalAction, default=False,
                        help="write images_001/images/... like the NIH tarballs instead of images/")
    add_num_workers(parser, "processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a phantom folder written by thoracic synth (only the files its "
                        "thoracic_synth.json lists, and image caches in it, are deleted; any other file stops it)")
    add_progress(parser, "no progress bar")


def run(args: argparse.Namespace) -> int:
    from thoracic.data.metadata import load_chestxray14
    from thoracic.data.synth import generate_phantom_dataset

    out = generate_phantom_dataset(
        args.out,
        num_images=args.num_images,
        image_size=args.image_size,
        seed=args.seed,
        family=args.family,
        test_fraction=args.test_fraction,
        tarball_layout=args.tarball_layout,
        num_workers=args.num_workers,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    dataset = load_chestxray14(out)
    positives = dataset.labels.sum(axis=0)
    print(f"wrote {len(dataset)} phantom images (family {args.family}, {args.image_size} px, seed {args.seed}) of "
          f"{dataset.table['patient_id'].nunique()} patients to {out}")
    print(f"train_val {len(dataset.train_val_ids)}, test {len(dataset.test_ids)}; "
          f"{len(dataset.boxes)} box rows on {dataset.boxes['image_id'].nunique()} test images")
    print("positives per class: " + ", ".join(f"{n} {int(c)}" for n, c in zip(dataset.class_names, positives)))
    print(f"next: thoracic prepare --data {out} --image-size {args.image_size}")
    return 0

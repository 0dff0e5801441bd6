"""Write a phantom dataset folder (exact lesion boxes) for tests and the demo: the NIH ChestX-ray14 layout by
default, or any other layout thoracic reads (``--dataset chexpert|mimic|padchest|vindr|rsna``).

Phantom results say nothing clinical; see docs/data.md.
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import add_dataset, add_image_size, add_num_images, add_num_workers, add_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FOLDER", help="folder to write (must be empty or absent)")
    add_dataset(parser, "chestxray14", "the layout to write, its files and image formats as distributed", "--layout")
    add_num_images(parser, 2000, "number of images")
    add_image_size(parser, 256, "image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--family", choices=("A", "B"), default="A",
                        help="finding design: A (default) or B, other shapes, positions and sizes of the "
                             "box classes (docs/data.md)")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="fraction of patients in test_list.txt, strictly between 0 and 1 (default 0.25)")
    parser.add_argument("--tarball-layout", action=argparse.BooleanOptionalAction, default=False,
                        help="write images_001/images/... like the NIH tarballs instead of images/ (chestxray14)")
    add_num_workers(parser, "processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a phantom folder written by thoracic synth (only the files its "
                        "thoracic_synth.json lists, and image caches in it, are deleted; any other file stops it)")
    add_progress(parser, "no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.dataset != "chestxray14":
        return _run_layout(args)
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


def _run_layout(args: argparse.Namespace) -> int:
    import numpy as np

    from thoracic.data.datasets import load_dataset
    from thoracic.data.synth import generate_layout
    from thoracic.errors import DataError

    if args.tarball_layout:
        raise DataError(f"--tarball-layout: the NIH tarballs' folders; expected no --tarball-layout with --dataset "
                        f"{args.dataset}")
    out = generate_layout(args.out, args.dataset, args.num_images, args.image_size, args.seed, family=args.family,
                          test_fraction=args.test_fraction, num_workers=args.num_workers, overwrite=args.overwrite,
                          progress=args.progress)
    dataset = load_dataset(out, args.dataset, views=())
    splits = dataset.table["split"].value_counts()
    labels = dataset.labels.astype(np.float64)
    print(f"wrote {len(dataset)} phantom images in the {args.dataset} layout (family {args.family}, {args.image_size} px, "
          f"seed {args.seed}) of {dataset.table['patient_id'].nunique()} patients to {out}")
    print(", ".join(f"{name} {int(count)}" for name, count in splits.items())
          + f"; {len(dataset.boxes)} box rows on {dataset.boxes['image_id'].nunique()} images"
          + (f" by {len(dataset.reader_ids)} readers" if dataset.reader_ids else ""))
    print("positives per class: " + ", ".join(f"{n} {int(np.nansum(labels[:, i]))}" for i, n in
                                              enumerate(dataset.class_names) if np.nansum(labels[:, i]) > 0))
    print(f"labels not given (blank or uncertain): {int(np.isnan(labels).sum())} of {labels.size}")
    print(f"next: thoracic prepare --data {out} --dataset {args.dataset} --image-size {args.image_size}")
    return 0

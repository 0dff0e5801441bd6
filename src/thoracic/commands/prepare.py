"""Decode and resize every image of a dataset folder once into a memory-mapped uint8 cache.

The folder is any layout thoracic reads (``--dataset``, detected from its files when omitted); the cache
records the dataset kind, its label names and, for datasets with uncertain labels, the policy
(``--uncertain``) the runs on it use.

Resumable: after Ctrl-C or a kill, rerun the same command; a rerun also checks every finished row and
rebuilds damaged ones. Unreadable or missing images are listed and the command exits non-zero unless
--skip-bad is given (then they are left out of the cache). The cache goes into a new or empty folder (or
over a thoracic cache); never into the data folder. --overwrite deletes only the cache's own files.
"""

from __future__ import annotations

import argparse

from thoracic.commands._options import add_data, add_dataset, add_image_size, add_num_workers, add_progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data(parser, "the dataset folder, as distributed", required=True)
    add_dataset(parser, "auto", "its layout: detected from its files, or named")
    parser.add_argument("--uncertain", default="ignore", choices=("ignore", "zeros", "ones"),
                        help="uncertain-label policy of the runs on this cache (CheXpert, MIMIC-CXR: data.uncertain; "
                             "default ignore: missing), recorded in the cache")
    add_image_size(parser, 256, "side of the cached images: the data.image_size of the runs that use the cache")
    add_num_workers(parser, "decoding processes (default: all cores)")
    parser.add_argument("--cache", default=None, metavar="FOLDER", help="cache folder (default: DATA/cache_SIZE)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="finish without the missing or unreadable images instead of failing")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a cache at --cache that was built from other data or another size "
                        "(only the cache's own files are deleted; any other file stops it)")
    add_progress(parser, "no progress bar")


def run(args: argparse.Namespace) -> int:
    from thoracic.data.cache import ImageCache
    from thoracic.data.cache_writer import prepare_cache

    cache_dir = prepare_cache(
        args.data,
        args.image_size,
        cache_dir=args.cache,
        num_workers=args.num_workers,
        skip_bad=args.skip_bad,
        progress=args.progress,
        overwrite=args.overwrite,
        dataset=args.dataset,
        uncertain=args.uncertain,
    )
    cache = ImageCache.open(cache_dir)
    bad = cache.manifest.get("bad_images", [])
    print(f"cache {cache_dir}: {int(cache.available.sum())} of {len(cache)} images at {args.image_size} px "
          f"({cache.manifest['dataset']}: {len(cache.manifest['class_names'])} labels)"
          + (f"; {len(bad)} skipped (listed in {cache_dir / 'manifest.json'})" if bad else ""))
    return 0

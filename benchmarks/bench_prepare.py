"""Benchmark 2: images/s of ``prepare_cache`` vs. a single-process PIL decode + resize loop.

Baseline: a plain loop ``Image.open(png).convert("L").resize((S, S), BILINEAR)`` over the 1024 x 1024
PNGs, in one process, results kept in memory: the least any cache builder must do.

Candidates: ``prepare_cache(root, S, num_workers=1)`` and ``prepare_cache(root, S, num_workers=N)`` (N = the
usable cores), each writing a fresh cache (metadata read, memory map, index, manifest included).
Targets: one worker at least 0.9x the loop (the cache adds little), N workers at least 0.9 x N of it.

Control: the same decode+resize loop split over N processes of a ``multiprocessing.Pool`` (no cache):
what N cores give on this machine at this moment. When the machine is shared, this is below N too, and
``prepare / control`` tells prepare's own overhead apart from the machine's.

Also reported: the PNG-decode share of the baseline loop (a loop doing only ``Image.open(png).load()``,
timed in the same alternation): the floor no implementation can go below on one core.

Set size: the 40 real PNGs are each listed ``COPIES`` times (240 names). prepare has fixed costs that a
real folder (112,120 images) amortises to nothing: reading the metadata (~10 ms), forking the workers
(~5 ms each), the last flush of the memory map, the index, the manifest and the workers' exit
(~12 ms): ~6% of a 2-worker run on 120 names, ~3% on 240 (the full run then takes about a minute).

No torch in this process while timing (``--threads`` is applied afterwards, for the machine
description): ``thoracic prepare`` never imports it, and with torch loaded (~0.5 GB mapped) every fork
of a worker and every worker's exit costs ~10 ms more, which is not what users pay.

    python benchmarks/bench_prepare.py [--quick] [--out results/prepare.json]
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "prepare"
TARGET_ONE_WORKER = 0.9
TARGET_SCALING = 0.9
#: How many times each real PNG is listed (under different names) in full runs.
COPIES = 6


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _decode_resize(job: tuple[str, int]) -> tuple[int, int]:
    from PIL import Image

    path, size = job
    with Image.open(path) as image:
        return image.convert("L").resize((size, size), Image.Resampling.BILINEAR).size


def run(quick: bool = False, workdir: Path | None = None, workers: int | None = None,
        threads: int | None = None) -> dict[str, Any]:
    """Measure the loop, decode only, prepare with 1 and N workers; return the result document.

    ``threads``: ``torch.set_num_threads`` applied after the timings (see the module docs).
    """
    from PIL import Image

    from thoracic.data.cache_writer import prepare_cache

    image_size = 32 if quick else 256
    repeats = 2 if quick else 5
    workers = workers or max(2, usable_cores())
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        root, source = common.image_folder(work, quick)
        if not quick and source.startswith("40 real"):
            common.replicate_folder(root, COPIES)
            source += f", each listed {COPIES} times under different names (symlinks)"
        paths = common.png_paths(root)
        count = len(paths)

        def decode_only() -> None:
            for path in paths:
                with Image.open(path) as image:
                    image.load()

        def decode_resize_loop() -> None:
            out = []
            for path in paths:
                with Image.open(path) as image:
                    out.append(image.convert("L").resize((image_size, image_size), Image.Resampling.BILINEAR))
            assert len(out) == count

        def prepare(n: int) -> Any:
            def call() -> None:
                cache = work / f"cache_w{n}"
                if cache.exists():
                    shutil.rmtree(cache)
                prepare_cache(root, image_size, cache_dir=cache, num_workers=n, progress=False)
            return call

        jobs = [(str(path), image_size) for path in paths]
        pool = multiprocessing.get_context().Pool(workers)

        def parallel_loop() -> None:
            sizes = pool.map(_decode_resize, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
            assert len(sizes) == count

        try:
            times = common.interleaved(
                {"decode": decode_only, "loop": decode_resize_loop, "prepare_1": prepare(1),
                 f"prepare_{workers}": prepare(workers), "parallel_loop": parallel_loop},
                repeats=repeats, warmup=1,
            )
        finally:
            pool.close()
            pool.join()
        loop = common.measurement(count, times["loop"], "images/s")
        decode = common.measurement(count, times["decode"], "images/s")
        one = common.measurement(count, times["prepare_1"], "images/s")
        many = common.measurement(count, times[f"prepare_{workers}"], "images/s")
        control = common.measurement(count, times["parallel_loop"], "images/s")
        decode_share = common.median(times["decode"]) / common.median(times["loop"])
        comparisons = [
            common.comparison("prepare_cache, 1 worker vs PIL decode+resize loop", one, loop, TARGET_ONE_WORKER,
                              "thoracic prepare in one process (metadata, memory map, index, manifest included)"),
            common.comparison(f"prepare_cache, {workers} workers vs {workers} x the loop", many, loop, TARGET_SCALING,
                              f"{workers} worker processes; ratio is rate / ({workers} x single-process loop rate)",
                              scale=workers),
            common.comparison(f"prepare_cache, {workers} workers vs 1 worker", many, one, None,
                              "parallel speed-up of prepare itself (ideal: the worker count)"),
            common.comparison(f"control: bare loop in a {workers}-process pool vs {workers} x the loop", control, loop,
                              None, "what the machine's cores give right now (below 1 when shared)",
                              scale=workers),
            common.comparison(f"prepare_cache, {workers} workers vs the bare {workers}-process loop", many, control,
                              None, "prepare's own parallel overhead, independent of the machine's load"),
            common.comparison("PNG decode only vs decode+resize loop", decode, loop, None,
                              "Image.open().load() alone: the inverse of the decode share"),
        ]
        notes = [f"PNG decoding is {100 * decode_share:.0f}% of the single-process decode+resize loop: "
                 "the floor of any cache builder on one core."]
        if usable_cores() < workers:
            notes.append(f"only {usable_cores()} usable core(s): {workers} workers cannot scale here")
        settings = {"images": source, "image_count": count, "image_size": image_size, "workers": workers,
                    "usable_cores": usable_cores(), "repeats": repeats,
                    "torch_loaded_while_timing": "torch" in sys.modules}
    common.set_threads(threads)
    return common.result_document(NAME, quick, settings, comparisons, notes, png_decode_share=decode_share)


def main(argv: list[str] | None = None) -> int:
    # --threads is taken here and applied by run() after the timings: benchmark_main would import torch
    # first (see the module docs).
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--threads", type=int, default=common.DEFAULT_THREADS)
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return common.benchmark_main(NAME, functools.partial(run, threads=known.threads), [*rest, "--threads", "0"],
                                 __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

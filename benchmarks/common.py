"""Shared helpers of the benchmark scripts: timing, ratios, machine description, result files.

Every figure the benchmarks report is a **ratio against a baseline measured in the same run**: the
machines these run on are shared and noisy, so absolute rates drift by tens of percent between minutes,
but two workloads timed in alternation (A B A B ...) see the same noise. :func:`interleaved` does that
alternation and returns the per-repeat timings; :func:`rate` turns them into a median rate.

A benchmark script exposes ``run(quick: bool = False, workdir: Path | None = None) -> dict`` (the
result document, see :func:`result_document`) and ``main(argv) -> int`` (``--quick``, ``--out``), so
``run_all.py`` and the smoke test call the same code.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: Where run_all.py writes one JSON file per benchmark.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The real ChestX-ray14 sample beside the repository (used when present; phantoms otherwise).
SHARED_NIH = Path(__file__).resolve().parents[2] / "shared" / "nih"


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def time_call(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of ``fn`` (``perf_counter``), with Python's cyclic garbage
    collector paused during the call as ``timeit`` does (a full collection costs ~0.2 s once torch,
    Lightning and pandas are loaded, and would land in whichever workload happened to trigger it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def interleaved(
    workloads: Mapping[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Time each workload ``repeats`` times, alternating between them in rounds (A B C, B C A, C A B, ...).

    Alternation spreads the machine's background load evenly over the workloads, which is what makes
    their ratio meaningful on a shared machine; rotating the order each round cancels any advantage of
    running first or after a given neighbour. ``warmup`` untimed calls of each come first (allocator,
    thread pools, lazy initialisation, the OS page cache). Round ``i`` of every list was timed within
    seconds of round ``i`` of the others (see :func:`comparison`).
    """
    for _ in range(warmup):
        for fn in workloads.values():
            fn()
    gc.collect()
    names = list(workloads)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_call(workloads[name]))
    return times


def median(values: Sequence[float]) -> float:
    """Median of the repeats (robust to the odd slow repeat caused by another process)."""
    return float(statistics.median(values))


def rate(items_per_call: float, seconds: Sequence[float]) -> float:
    """Items per second from the median time of repeated calls that each process ``items_per_call``."""
    return float(items_per_call) / median(seconds)


def spread(seconds: Sequence[float]) -> float:
    """Relative spread (max - min) / median of repeated timings: how noisy the measurement was."""
    mid = median(seconds)
    return float((max(seconds) - min(seconds)) / mid) if mid > 0 else float("nan")


def measurement(items_per_call: float, seconds: Sequence[float], unit: str) -> dict[str, Any]:
    """One side of a comparison: its median rate, the raw timings and their spread."""
    return {
        "rate": rate(items_per_call, seconds),
        "unit": unit,
        "items_per_call": items_per_call,
        "median_s": median(seconds),
        "times_s": [round(t, 6) for t in seconds],
        "spread": round(spread(seconds), 4),
    }


def comparison(
    name: str,
    candidate: Mapping[str, Any],
    baseline: Mapping[str, Any],
    target: float | None,
    description: str,
    *,
    scale: float = 1.0,
    higher_is_better: bool = True,
) -> dict[str, Any]:
    """A speed ratio ``candidate / (scale * baseline)`` and its target.

    ``ratio`` is the median over rounds of the per-round ratio when both sides were timed in the same
    rounds of :func:`interleaved` (each pair ran seconds apart, so the machine's load, which changes
    over minutes on a shared machine, cancels within the pair); otherwise the ratio of the median
    rates. Both are stored (``paired_ratio_median``, ``ratio_of_medians``). ``passed`` is None without a
    target (informational ratios). ``scale`` expresses targets like "N workers reach 0.9 x N of the
    single-process rate" as a plain ratio against ``N * baseline``.
    """
    of_medians = float(candidate["rate"]) / (scale * float(baseline["rate"]))
    paired = _paired_ratio(candidate, baseline, scale)
    ratio = of_medians if paired is None else paired
    if target is None:
        passed = None
    else:
        passed = bool(ratio >= target) if higher_is_better else bool(ratio <= target)
    return {
        "name": name,
        "description": description,
        "ratio": ratio,
        "target": target,
        "target_op": ">=" if higher_is_better else "<=",
        "passed": passed,
        "paired_ratio_median": paired,
        "ratio_of_medians": of_medians,
        "scale": scale,
        "candidate": dict(candidate),
        "baseline": dict(baseline),
    }


def budget(name: str, value: float, limit: float, unit: str, description: str) -> dict[str, Any]:
    """An absolute budget (a size, a time that has no fair baseline): ``value`` must stay below ``limit``.

    ``ratio`` is the margin ``limit / value`` (target 1: pass while it is at least 1); ``value``,
    ``limit`` and ``unit`` are kept for the report (run_all shows "value unit (margin)" and "< limit unit").
    """
    ratio = float(limit) / float(value) if value > 0 else float("inf")
    return {
        "name": name, "description": description, "ratio": ratio, "target": 1.0, "target_op": ">=",
        "passed": bool(value < limit), "paired_ratio_median": None, "ratio_of_medians": ratio, "scale": 1.0,
        "value": float(value), "limit": float(limit), "unit": unit,
        "candidate": {"value": float(value), "unit": unit}, "baseline": {"value": float(limit), "unit": unit,
                                                                         "what": "the budget"},
    }


def _paired_ratio(candidate: Mapping[str, Any], baseline: Mapping[str, Any], scale: float) -> float | None:
    """Median over repeats of the per-repeat ratio (candidate and baseline of the same round of
    :func:`interleaved` ran seconds apart, so slow drifts of the machine's load cancel in each pair).
    A cross-check of ``ratio``; None when the two were not timed in the same rounds."""
    times_c, times_b = candidate.get("times_s"), baseline.get("times_s")
    if not times_c or not times_b or len(times_c) != len(times_b) or "items_per_call" not in candidate \
            or "items_per_call" not in baseline:
        return None
    n_c, n_b = float(candidate["items_per_call"]), float(baseline["items_per_call"])
    return median([(n_c / tc) / (scale * n_b / tb) for tc, tb in zip(times_c, times_b)])


# --------------------------------------------------------------------------------------------------
# Machine and environment
# --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def machine_description() -> dict[str, Any]:
    """CPU model and cores, memory, load, Python/torch versions and threads, GPU if any."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1_5_15": _load_average(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "gpu": None,
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gib"] = None
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - a project dependency
        info["torchvision"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "bf16": bool(torch.cuda.is_bf16_supported()),
        }
    return info


def result_document(name: str, quick: bool, settings: Mapping[str, Any], comparisons: Sequence[Mapping[str, Any]],
                    notes: Sequence[str] = (), status: str = "measured", **extra: Any) -> dict[str, Any]:
    """The JSON written for one benchmark (what run_all.py turns into BENCHMARKS.md)."""
    return {
        "benchmark": name,
        "status": status,
        "quick": bool(quick),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "settings": dict(settings),
        "comparisons": [dict(c) for c in comparisons],
        "notes": list(notes),
        **extra,
    }


def add_load_note(document: dict[str, Any]) -> dict[str, Any]:
    """Append to a result document's notes that its absolute times depend on the machine's load (given)."""
    load = document["machine"].get("load_average_1_5_15")
    document["notes"].append(
        f"absolute times depend on the machine's load (load average {load} on {document['machine']['logical_cores']} "
        "cores when the benchmark started); the ratios do not, their two sides ran in alternation")
    return document


def write_json(document: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``document`` as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


#: CPU threads the benchmarks use by default. One: on a shared machine, torch's OpenMP threads wait
#: for each other at every parallel region, and one descheduled thread stalls the rest; measured here
#: (2 cores, 3 other jobs) a ResNet-10 step took 0.1-4.7 s with 2 threads and 0.035-0.05 s with 1.
DEFAULT_THREADS = 1


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` (None / 0: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(int(threads))


# --------------------------------------------------------------------------------------------------
# Script entry point
# --------------------------------------------------------------------------------------------------


def benchmark_main(name: str, run: Callable[..., dict[str, Any]], argv: Sequence[str] | None = None,
                   description: str = "") -> int:
    """``--quick`` / ``--out`` / ``--threads`` handling shared by every benchmark script."""
    parser = argparse.ArgumentParser(prog=f"bench_{name}", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): checks the script works")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="result JSON file")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for generated images/caches (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch.set_num_threads (default {DEFAULT_THREADS}; 0 keeps torch's default)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    document = run(quick=args.quick, workdir=args.workdir)
    write_json(document, args.out)
    for item in document["comparisons"]:
        verdict = "" if item["passed"] is None else ("pass" if item["passed"] else "MISS")
        target = "" if item["target"] is None else f" (target {item['target_op']} {item['target']:g})"
        print(f"{name}: {item['name']}: {item['ratio']:.3f}x{target} {verdict}")
    if document["status"] != "measured":
        print(f"{name}: {document['status']}")
    print(f"{name}: wrote {args.out}")
    return 0


# --------------------------------------------------------------------------------------------------
# Image folders for the data benchmarks
# --------------------------------------------------------------------------------------------------

#: Side of the original ChestX-ray14 PNGs (what the loader and prepare baselines decode).
FULL_IMAGE_SIZE = 1024


def image_folder(workdir: Path, quick: bool, num_phantoms: int = 40) -> tuple[Path, str]:
    """A ChestX-ray14-layout folder of PNGs to decode, and a one-line description of it.

    Full runs use the 40 real 1024 x 1024 ChestX-ray14 PNGs of the NIH sample folder beside the project when present
    (real PNG compression, 4 RGBA files among them) and otherwise ``num_phantoms`` 1024 px phantoms;
    quick runs use a few 64 px phantoms.
    """
    from thoracic.data.synth import generate_phantom_dataset

    workdir = Path(workdir)
    if quick:
        root = generate_phantom_dataset(workdir / "phantom_quick", 8, 64, seed=0, num_workers=1,
                                        overwrite=True, progress=False)
        return root, "8 phantom PNGs of 64 x 64 px (--quick)"
    sample_images = SHARED_NIH / "sample" / "images"
    if sample_images.is_dir() and any(sample_images.glob("*.png")):
        from thoracic.data.metadata import write_subset_folder

        root = workdir / "nih_sample"
        if root.exists():
            import shutil

            shutil.rmtree(root)
        write_subset_folder(SHARED_NIH / "metadata", root, sample_images, symlink=True)
        count = len(list((root / "images").glob("*.png")))
        return root, f"{count} real ChestX-ray14 PNGs of 1024 x 1024 px (the real NIH sample folder)"
    root = generate_phantom_dataset(workdir / "phantom_1024", num_phantoms, FULL_IMAGE_SIZE, seed=0,
                                    num_workers=None, overwrite=True, progress=False)
    return root, f"{num_phantoms} phantom PNGs of 1024 x 1024 px (real sample not found)"


def png_paths(root: Path) -> list[Path]:
    """The PNG files of a folder in NIH layout (images/ or images_0XX/images/), sorted."""
    root = Path(root)
    return sorted(list(root.glob("images/*.png")) + list(root.glob("images_*/images/*.png")))


def replicate_folder(root: Path, copies: int) -> int:
    """Add ``copies - 1`` renamed copies of every image of a NIH-layout folder (symlinks), in place.

    Copy ``c`` of ``00000100_000.png`` is ``c0000100_000.png`` (ChestX-ray14 names start with ``0``):
    a new data-entry row with the same labels and patient, listed in the same split. Box rows are not
    copied. Gives the prepare benchmark enough images for its fixed costs (metadata, process start)
    to weigh as little as on a real-sized folder. Returns the new image count.
    """
    root = Path(root)
    entry = root / "Data_Entry_2017_v2020.csv"
    lines = entry.read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    lists = {name: (root / name).read_text().split() for name in ("train_val_list.txt", "test_list.txt")}
    images = root / "images"
    new_rows, new_lists = list(rows), {name: list(ids) for name, ids in lists.items()}
    for copy in range(1, copies):
        for row in rows:
            image_id, rest = row.split(",", 1)
            if not image_id.startswith("0"):
                raise ValueError(f"cannot rename {image_id}: expected a ChestX-ray14 name starting with 0")
            new_id = f"{copy}{image_id[1:]}"
            (images / new_id).symlink_to((images / image_id).resolve())
            new_rows.append(f"{new_id},{rest}")
            for name, ids in lists.items():
                if image_id in ids:
                    new_lists[name].append(new_id)
    entry.write_text("\n".join([header, *new_rows]) + "\n")
    for name, ids in new_lists.items():
        (root / name).write_text("\n".join(ids))
    return len(new_rows)

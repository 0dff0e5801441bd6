"""Benchmark 9: the explorer page at NIH scale (984 box rows x 6 heatmap methods): build, size, load.

A synthetic localized run of the NIH size: 984 box rows on 880 test images (original size 1024 x 1024,
about 10% of the images with a second box, like BBox_List_2017), six heatmap methods with the grids
thoracic's methods have for a ResNet at 256 px (8 x 8 CAM and Grad-CAM, 16 x 16 and 32 x 32 Grad-CAM of
layer3 / layer2, two at input resolution 256 x 256 like Integrated Gradients; a second method of a grid
gets a copy of the first one's files, which costs the page the same), scored and written by the real
protocol (``localize_boxes`` + ``write_localization`` + ``save_heatmaps``), a predictions file, and a
256 px image cache of phantom images (``thoracic prepare``) for the thumbnails. Then:

- **build**: ``build_explorer`` into a fresh folder (CPU seconds of the process, one thread: on a machine
  shared with other jobs its wall time also counts the waits for a core; both are given), and the
  rebuild into the same folder (what a rerun of ``thoracic report`` costs);
- **size**: the whole folder and its ``data.js`` (budgets below);
- **load in Chromium** (Playwright, the system browser; skipped with a note when absent): time from
  navigation to the page's ``explorer-ready`` mark (data parsed, first cards drawn), to the first screen's
  images decoded, and the in-page time of a class filter and of sorting by IoU (medians of fresh tabs);
- **encoding vs matplotlib** (informational ratio, timed in alternation): the explorer's per-panel work (a
  thumbnail per image, one heatmap image per method) vs drawing the same panels as the report's
  matplotlib overlay figure.

    python benchmarks/bench_explorer.py [--quick] [--out results/explorer.json]
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "explorer"
#: Heatmap method -> side of its maps (a ResNet at 256 px: stride 32, 16, 8, and input resolution).
METHODS = {"native": 8, "gradcam": 8, "gradcam-layer3": 16, "gradcam-layer2": 32, "ig": 256, "smoothgrad": 256}
#: Budgets at the NIH scale (984 rows x 6 methods), on one core of this project's 2-core machine.
BUILD_BUDGET_S = 60.0
FOLDER_BUDGET_MB = 60.0
DATA_BUDGET_MB = 5.0
READY_BUDGET_MS = 1500.0
FIRST_SCREEN_BUDGET_MS = 3000.0
INTERACTION_BUDGET_MS = 500.0


def settings_for(quick: bool) -> dict[str, Any]:
    if quick:
        return {"rows": 60, "images": 50, "phantoms": 90, "phantom_size": 64, "methods": 2, "tabs": 1,
                "panel_rows": 2, "repeats": 2}
    return {"rows": 984, "images": 880, "phantoms": 1000, "phantom_size": 256, "methods": len(METHODS), "tabs": 3,
            "panel_rows": 6, "repeats": 3}


def synthetic_run(workdir: Path, settings: dict[str, Any]) -> tuple[Path, Path]:
    """A phantom data folder with its cache, and a run folder localized with synthetic heatmaps."""
    import numpy as np
    import pandas as pd
    from scipy import ndimage

    from thoracic.config import Config, DataConfig, ModelConfig, save_config
    from thoracic.constants import BOX_CLASS_NAMES, CLASS_NAMES, NIH_IMAGE_SIZE
    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.metadata import load_chestxray14
    from thoracic.data.synth import generate_phantom_dataset
    from thoracic.evaluation.predictions import save_heatmaps
    from thoracic.evaluation.protocol import localize_boxes, write_localization

    size = settings["phantom_size"]
    data = generate_phantom_dataset(workdir / "data", settings["phantoms"], size, seed=0, test_fraction=0.95,
                                    progress=False)
    prepare_cache(data, size, num_workers=1, progress=False)
    test_ids = list(load_chestxray14(data).test_ids)
    if len(test_ids) < settings["images"]:
        raise RuntimeError(f"{len(test_ids)} phantom test images, {settings['images']} needed")
    rng = np.random.default_rng(0)
    images = test_ids[:settings["images"]]
    image_ids = images + list(rng.choice(images, size=settings["rows"] - len(images), replace=False))
    n = len(image_ids)
    truth = pd.DataFrame({"image_id": image_ids, "class_name": rng.choice(BOX_CLASS_NAMES, size=n),
                          "box_row": np.arange(n), "x": rng.uniform(0, 700, n), "y": rng.uniform(0, 700, n),
                          "w": rng.uniform(20, 320, n), "h": rng.uniform(20, 320, n),
                          "original_width": NIH_IMAGE_SIZE, "original_height": NIH_IMAGE_SIZE})
    run = workdir / "run"
    evaluation = run / "evaluation"
    evaluation.mkdir(parents=True)
    save_config(Config(run_name="run", data=DataConfig(root=str(data), image_size=size),
                       model=ModelConfig(name="baseline", backbone="resnet34", pretrained=False)), run / "config.yaml")
    pairs = truth.drop_duplicates(["image_id", "class_name"])
    written: dict[int, str] = {}
    for method, side in list(METHODS.items())[:settings["methods"]]:
        if side in written:  # a second method of the same grid: the same files under its name (set-up time)
            for kind, ext in (("scores", "csv"), ("boxes", "csv"), ("baselines", "csv"), ("localization", "csv"),
                              ("localization", "json"), ("heatmaps", "npz")):
                shutil.copy(evaluation / f"{kind}_{written[side]}.{ext}", evaluation / f"{kind}_{method}.{ext}")
            continue
        # smooth random maps with a few peaks, like CAMs (a coarse field upsampled: cheap at 256 x 256)
        heatmaps = {(i, c): ndimage.zoom(rng.random((4, 4)), side / 4, order=1, grid_mode=True, mode="nearest")
                    for i, c in zip(pairs["image_id"], pairs["class_name"])}
        write_localization(evaluation, method, localize_boxes(truth, heatmaps, method, draws=2), {"method": method})
        save_heatmaps(heatmaps, evaluation / f"heatmaps_{method}.npz")
        written[side] = method
    ids = sorted(set(image_ids))
    pd.DataFrame({"image_id": ids, **{f"prob_{c}": rng.random(len(ids)) for c in CLASS_NAMES},
                  **{f"label_{c}": 0 for c in CLASS_NAMES}}).to_csv(evaluation / "predictions_test.csv", index=False)
    return data, run


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build_items(run: Path, workdir: Path, settings: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str], Path]:
    from thoracic.reporting.explorer import DATA_FILE, build_explorer

    out = workdir / "explorer"
    start, cpu = time.perf_counter(), time.process_time()
    page = build_explorer([run], out)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    build_explorer([run], out)
    rebuild = time.perf_counter() - start
    total, data = folder_bytes(out), (out / DATA_FILE).stat().st_size
    files = sum(1 for p in out.rglob("*") if p.is_file())
    scale = f"{settings['rows']} rows x {settings['methods']} methods"
    items = [
        common.budget(f"build: {scale}", cpu, BUILD_BUDGET_S, "s",
                      "build_explorer into a fresh folder: reading the CSVs and heatmaps, one thumbnail per image, "
                      "one heatmap image per (method, image, class), data.js, the page (CPU seconds of the "
                      "process, one thread; the wall time is in the notes)"),
        common.budget(f"folder size: {scale}", total / 1e6, FOLDER_BUDGET_MB, "MB",
                      f"everything the page needs ({files} files)"),
        common.budget(f"data.js: {scale}", data / 1e6, DATA_BUDGET_MB, "MB",
                      "every score, box and probability the page shows (parsed once when the page opens)"),
    ]
    notes = [f"build: {wall:.1f} s wall, {cpu:.1f} s CPU; rebuild into the same folder (a rerun): {rebuild:.1f} s; "
             f"{files} files, {total / 1e6:.1f} MB ({data / 1e6:.2f} MB data.js)"]
    return items, notes, page


def browser_items(page: Path, settings: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Median over fresh tabs of the load and interaction times in Chromium (none without a browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [], ["page load: not measured (playwright is not installed)"]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import chromium_binary

    binary = chromium_binary()
    if binary is None:
        return [], ["page load: not measured (no Chromium binary; set THORACIC_CHROMIUM)"]
    timings: dict[str, list[float]] = {"ready": [], "first screen": [], "filter": [], "sort": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        try:
            for _ in range(settings["tabs"]):
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                start = time.perf_counter()
                tab.goto(page.as_uri(), wait_until="load")
                tab.wait_for_function("document.body.dataset.ready === 'true'")
                tab.wait_for_function("""Array.from(document.images).filter(i => {
                    const r = i.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight;
                }).every(i => i.complete && i.naturalWidth > 0)""")
                timings["first screen"].append(1000 * (time.perf_counter() - start))
                timings["ready"].append(tab.evaluate("performance.getEntriesByName('explorer-ready')[0].startTime"))
                for name, select, value in (("filter", "class", None), ("sort", "sort", "best_iou-desc")):
                    timings[name].append(tab.evaluate("""([id, value]) => {
                        const select = document.getElementById(id);
                        select.value = value === null ? select.options[1].value : value;
                        const start = performance.now();
                        select.dispatchEvent(new Event('change'));
                        return performance.now() - start; }""", [select, value]))
                tab.close()
        finally:
            browser.close()
    median = {name: statistics.median(values) for name, values in timings.items()}
    scale = f"{settings['rows']} rows x {settings['methods']} methods"
    items = [
        common.budget(f"page ready in Chromium: {scale}", median["ready"], READY_BUDGET_MS, "ms",
                      "navigation to the page's explorer-ready mark: data.js parsed, first batch of cards drawn "
                      f"(median of {settings['tabs']} fresh tabs)"),
        common.budget(f"first screen with its images: {scale}", median["first screen"], FIRST_SCREEN_BUDGET_MS, "ms",
                      "until every image of the first screen is decoded (1280 x 900 window; measured from the "
                      "test driver, so it includes its round trips)"),
        common.budget(f"class filter: {scale}", median["filter"], INTERACTION_BUDGET_MS, "ms",
                      "filtering every entry and redrawing the first batch (in-page time)"),
        common.budget(f"sort by IoU: {scale}", median["sort"], INTERACTION_BUDGET_MS, "ms",
                      "sorting every entry and redrawing the first batch (in-page time)"),
    ]
    notes = ["page load (median ms): " + ", ".join(f"{k} {v:.0f}" for k, v in median.items())]
    return items, notes


def encoding_item(run: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Informational: the explorer's per-panel images vs the same panels drawn as a matplotlib figure."""
    import numpy as np
    import pandas as pd

    from thoracic.evaluation.figures import OverlayPanel, OverlayRow, overlay_figure
    from thoracic.evaluation.predictions import load_heatmaps
    from thoracic.reporting.explorer import heatmap_bytes, heatmap_format, thumbnail_bytes

    evaluation = run / "evaluation"
    methods = list(METHODS)[:settings["methods"]]
    scores = pd.read_csv(evaluation / f"scores_{methods[0]}.csv").drop_duplicates(["image_id", "class_name"])
    chosen = scores.head(settings["panel_rows"])
    maps = {m: load_heatmaps(evaluation / f"heatmaps_{m}.npz") for m in methods}
    image = np.random.default_rng(0).integers(0, 255, (256, 256), dtype=np.uint8)
    kind = heatmap_format()
    panels = len(chosen) * len(methods)

    def explorer() -> None:
        for record in chosen.itertuples():
            thumbnail_bytes(image, (1024, 1024))
            for m in methods:
                heatmap_bytes(maps[m][(record.image_id, record.class_name)], (1024, 1024), kind=kind)

    def matplotlib() -> None:
        rows = [OverlayRow(np.kron(image, np.ones((4, 4), np.uint8)), f"{r.image_id}\n{r.class_name}",
                           np.array([[r.x, r.y, r.w, r.h]]),
                           [OverlayPanel(m, maps[m][(r.image_id, r.class_name)]) for m in methods])
                for r in chosen.itertuples()]
        overlay_figure(rows).savefig(io.BytesIO(), format="png")

    times = common.interleaved({"explorer": explorer, "matplotlib": matplotlib}, repeats=settings["repeats"])
    return common.comparison(
        f"panel images: explorer vs a matplotlib overlay figure ({len(chosen)} images x {len(methods)} methods)",
        common.measurement(panels, times["explorer"], "panels/s"),
        common.measurement(panels, times["matplotlib"], "panels/s"), None,
        "a JPEG thumbnail per image and a heatmap image per method (drawn over it by the browser) vs the same "
        "panels as the report's matplotlib overlay figure (PNG)")


def run(quick: bool = False, workdir: Path | None = None) -> dict[str, Any]:
    settings = settings_for(quick)
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="bench_explorer_")) if own else Path(workdir)
    try:
        start = time.perf_counter()
        _, run_folder = synthetic_run(folder, settings)
        setup = time.perf_counter() - start
        items, notes, page = build_items(run_folder, folder, settings)
        loaded, load_notes = browser_items(page, settings)
        items += loaded
        items.append(encoding_item(run_folder, settings))
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    notes += load_notes + [f"set-up (phantoms, cache, synthetic localization files): {setup:.0f} s"]
    return common.result_document(NAME, quick, settings, items, notes)


def main(argv: list[str] | None = None) -> int:
    return common.benchmark_main(NAME, run, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())

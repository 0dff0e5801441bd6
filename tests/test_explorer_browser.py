"""The explorer page as a reader uses it, in a real headless Chromium (the system browser, driven by
Playwright): two runs (untrained tiny models) localized through the CLI, three run x method combinations
(the first run with a predictions file: its probabilities); every count, order and value the page shows is
computed here from the CSV files ``thoracic localize`` wrote. (``test_explorer.py`` checks that
``thoracic report`` writes and links the same page.)

Skips, saying why, when Playwright or a Chromium binary is missing (see ``test_report_browser.py``). The
screenshot is kept in ``test-artifacts/explorer.png``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_run

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES
from thoracic.reporting.explorer import build_explorer

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
#: One card per line and a short window, so most of the list starts far below it (lazy loading shows).
VIEWPORT = {"width": 520, "height": 700}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def explorer(chromium: str, phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """The report's explorer page of a baseline (native, Grad-CAM) and a space-attention run (native), and
    the scores the page must show (every scores_<method>.csv row, with its run and method)."""
    root = tmp_path_factory.mktemp("explorer_runs")
    runs = [make_run(root / "base", phantom_dir, "baseline", 0), make_run(root / "space", phantom_dir,
                                                                         "space_attention", 1)]
    for run in runs:
        assert main(["localize", str(run), "--no-progress", "--examples", "1"]) == 0
    assert main(["localize", str(runs[0]), "--method", "gradcam", "--no-progress", "--examples", "1"]) == 0
    # thoracic explain on the first run's native maps (the checks and mask metrics the page shows)
    assert main(["explain", str(runs[0]), "--method", "native", "--checks", "randomization", "masks",
                 "--num-images", "6", "--bootstrap", "0", "--no-progress"]) == 0
    images = sorted(pd.read_csv(runs[0] / "evaluation" / "scores_native.csv")["image_id"].unique())
    rng = np.random.default_rng(0)  # predictions_test.csv as evaluate writes it (evaluate's own run is slow)
    pd.DataFrame({"image_id": images, **{f"prob_{c}": rng.random(len(images)) for c in CLASS_NAMES},
                  **{f"label_{c}": 0 for c in CLASS_NAMES}}).to_csv(
        runs[0] / "evaluation" / "predictions_test.csv", index=False, float_format="%.8g")
    page = build_explorer(runs, root / "explorer")
    frames = []
    for run, method in ((runs[0], "gradcam"), (runs[0], "native"), (runs[1], "native")):
        scores = pd.read_csv(run / "evaluation" / f"scores_{method}.csv", dtype={"threshold": str})
        frames.append(scores.assign(run=run.name, method=method))
    return page, pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def browser(chromium: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # CI runs as root
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture()
def page(browser, explorer):
    """A fresh tab on the page, ready; at the end, no console error, failed or network request."""
    path, _ = explorer
    tab = browser.new_page(viewport=VIEWPORT)
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
           else None)
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    tab.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else
           problems.append(f"network request: {r.url}"))
    try:
        tab.goto(path.as_uri(), wait_until="load")
        tab.wait_for_function("document.body.dataset.ready === 'true'")
        yield tab
    finally:
        tab.close()
    assert problems == []


def at(scores: pd.DataFrame, threshold: str = "180") -> pd.DataFrame:
    """The rows of one heatmap threshold (the page opens on 180, the paper's)."""
    return scores[scores["threshold"] == threshold].reset_index(drop=True)


def shown(page) -> list[dict]:
    return page.evaluate("""Array.from(document.querySelectorAll('#list article.entry')).map(a => ({
        source: a.dataset.source, row: Number(a.dataset.boxRow), method: a.dataset.method, cls: a.dataset.class,
        iou: Number(a.dataset.iou), outcome: a.dataset.outcome}))""")


def choose(page, select: str, value: str) -> None:
    page.select_option(f"#{select}", value)


def test_the_page_loads_with_every_scored_box_row(page, explorer, tmp_path: Path) -> None:
    scores = at(explorer[1])
    cards = shown(page)
    assert int(page.inner_text("#count")) == int(page.inner_text("#total")) == len(cards) == len(scores)
    assert sorted((c["method"], c["row"]) for c in cards) == sorted(zip(scores["method"], scores["box_row"]))
    assert page.locator("#method option").all_inner_texts() == ["all methods", "Grad-CAM", "native heatmap"]
    page.screenshot(path=str(tmp_path / "explorer.png"))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "explorer.png", ARTIFACTS / "explorer.png")


def test_filters_show_the_rows_the_csv_files_select(page, explorer) -> None:
    scores = at(explorer[1])
    common = scores["class_name"].value_counts().index[0]
    choose(page, "class", common)
    cards = shown(page)
    assert len(cards) == int(page.inner_text("#count")) == int((scores["class_name"] == common).sum())
    assert {c["cls"] for c in cards} == {common}
    choose(page, "class", "")
    choose(page, "method", "gradcam")
    assert len(shown(page)) == int((scores["method"] == "gradcam").sum()) < len(scores)
    choose(page, "method", "")
    # hit / miss under a criterion that splits the rows (computed from best_iou / best_iobb at threshold 180)
    criteria = page.evaluate("window.THORACIC_EXPLORER.criteria")
    split = None
    for index, criterion in enumerate(criteria):
        hits = scores["pointing"] == 1 if criterion["metric"] == "pointing" else scores[criterion["metric"]] > criterion["t"]
        if 0 < hits.sum() < len(scores):
            split = (index, hits)
            break
    assert split is not None, "no criterion splits these rows into hits and misses"
    index, hits = split
    choose(page, "criterion", str(index))
    choose(page, "outcome", "hit")
    cards = shown(page)
    assert len(cards) == int(hits.sum()) and {c["outcome"] for c in cards} == {"hit"}
    assert sorted((c["method"], c["row"]) for c in cards) == sorted(zip(scores.loc[hits, "method"],
                                                                        scores.loc[hits, "box_row"]))
    choose(page, "outcome", "miss")
    assert len(shown(page)) == int((~hits).sum())


def test_explain_checks_and_the_mask_filter_follow_the_explain_files(page, explorer) -> None:
    path, scores = explorer
    evaluation = path.parents[1] / "base" / "evaluation"
    verdicts = json.loads((evaluation / "explain.json").read_text())["verdicts"]["native"]
    rows = page.evaluate("""Array.from(document.querySelectorAll('#checks-body tr')).map(r => ({
        check: r.dataset.check, flagged: r.dataset.flagged, text: r.cells[3].textContent}))""")
    assert [(r["check"], r["text"]) for r in rows] == [(c, verdicts[c]["text"]) for c in ("randomization", "masks")]
    assert rows[0]["flagged"] == str(verdicts["randomization"]["flagged"]).lower()
    assert page.is_visible("#mask-filter")
    masks = pd.read_csv(evaluation / "masks.csv", dtype={"image_id": str})
    hits = {(i, c): h for i, c, h in zip(masks["image_id"], masks["class_name"], masks["hit"])}
    native = at(scores)
    native = native[(native["run"] == "base") & (native["method"] == "native")]
    explained = [hits.get((i, c)) for i, c in zip(native["image_id"], native["class_name"])]
    choose(page, "mask", "explained")
    cards = shown(page)
    assert len(cards) == sum(h is not None for h in explained) > 0
    assert {(c["method"], c["source"]) for c in cards} == {("native", "1")}  # gradcam sorts first: source 0
    choose(page, "mask", "hit")
    assert len(shown(page)) == sum(h == 1 for h in explained)
    choose(page, "mask", "miss")
    assert len(shown(page)) == sum(h == 0 for h in explained)
    choose(page, "mask", "explained")
    assert "at Otsu" in page.locator("#list article.entry").first.inner_text()


def test_sorting_orders_the_rows_by_iou(page, explorer) -> None:
    scores = at(explorer[1])
    choose(page, "sort", "best_iou-desc")
    assert [c["iou"] for c in shown(page)] == sorted(scores["best_iou"], reverse=True)
    choose(page, "sort", "best_iou-asc")
    assert [c["iou"] for c in shown(page)] == sorted(scores["best_iou"])
    choose(page, "threshold", "60")  # another heatmap threshold: its own values
    assert [c["iou"] for c in shown(page)] == sorted(at(explorer[1], "60")["best_iou"])


def test_side_by_side_shows_every_run_and_method_of_one_box_row(page, explorer) -> None:
    scores = at(explorer[1])
    first = shown(page)[0]
    page.locator("#list article.entry").first.locator("button.compare").click()
    page.wait_for_function("document.getElementById('compare').open")
    panels = page.evaluate("""Array.from(document.querySelectorAll('#panels section.panel[data-source]')).map(p => ({
        method: p.dataset.method, run: Number(p.dataset.run), text: p.innerText}))""")
    same = scores[scores["box_row"] == first["row"]]
    assert sorted((p["run"], p["method"]) for p in panels) == sorted(
        zip(same["run"].map({"base": 0, "space": 1}), same["method"]))
    probabilities = pd.read_csv(explorer[0].parents[1] / "base" / "evaluation" / "predictions_test.csv",
                                index_col="image_id")
    for panel, (_, expected) in zip(sorted(panels, key=lambda p: (p["run"], p["method"])),
                                    same.sort_values(["run", "method"]).iterrows()):
        assert f"IoU {expected['best_iou']:.3f}" in panel["text"] and f"IoBB {expected['best_iobb']:.3f}" in panel["text"]
        probability = probabilities.at[expected["image_id"], f"prob_{expected['class_name']}"]
        assert (f"p {probability:.3f}" if expected["run"] == "base" else "p n/a") in panel["text"]
    page.wait_for_function("""Array.from(document.querySelectorAll('#panels img'))
        .every(i => i.complete && i.naturalWidth > 0)""")
    assert page.locator("#panels img").count() >= 1 + 2 * len(panels)  # the image alone, then image + heatmap each
    page.click("#compare-close")
    assert not page.evaluate("document.getElementById('compare').open")


def test_images_load_lazily_when_scrolled_into_view(page) -> None:
    images = page.evaluate("""Array.from(document.querySelectorAll('#list img')).map(i => ({
        src: i.getAttribute('src'), lazy: i.loading, top: i.getBoundingClientRect().top, width: i.naturalWidth}))""")
    assert images and all(i["lazy"] == "lazy" for i in images)
    # heatmap images are one file per (run, method, image, class): those far below the window are not
    # fetched before they come near it
    counts = pd.Series([i["src"] for i in images]).value_counts()
    far = [i for i in images if i["top"] > 4 * VIEWPORT["height"] + 2500 and counts[i["src"]] == 1]
    assert far and all(i["width"] == 0 for i in far)
    for index in range(page.locator("#list article.entry").count()):
        card = page.locator("#list article.entry").nth(index)
        card.scroll_into_view_if_needed()
        card.locator("img").first.wait_for()
        page.wait_for_function("""(n) => Array.from(document.querySelectorAll('#list article.entry')[n]
            .querySelectorAll('img')).every(i => i.complete && i.naturalWidth > 0)""", arg=index)

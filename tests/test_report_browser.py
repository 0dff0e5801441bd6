"""The report as a reader sees it: a tiny trained run, evaluated, localized and reported through the CLI,
then opened in a real headless Chromium (the system browser, driven by Playwright).

The training runs as a subprocess (``python -m thoracic train``), so its stdout and stderr are exactly
what a user sees: results on stdout, progress on stderr, none of Lightning's own noise.

The browser test skips, saying why, when Playwright or a Chromium binary is missing (``.ci/run``
installs Debian's ``chromium``; ``THORACIC_CHROMIUM`` may name another binary). Its screenshot is kept
as a test artefact in ``test-artifacts/report.png`` (and in the test's tmp folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from thoracic.cli import main

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """A baseline ResNet-10 trained 1 epoch at 64 px on the session's phantoms, through the real CLI."""
    out = tmp_path_factory.mktemp("browser_runs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "thoracic", "train", "--config", "baseline", f"data.root={phantom_dir}",
               "data.image_size=64", "model.backbone=resnet10", "--no-model.pretrained", "train.max_epochs=1",
               "train.batch_size=32", "--device", "cpu", "--out", str(out / "tiny")]
    process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    return out / "tiny", process


def test_training_prints_results_on_stdout_progress_on_stderr_and_no_library_noise(trained_run) -> None:
    run, process = trained_run
    summary = json.loads((run / "summary.json").read_text())
    info = json.loads((run / "run_info.json").read_text())
    auc = summary["metrics"]["val_auc_mean"]
    # the results, alone on stdout: best epoch, its validation loss and mean AUC, the run folder
    assert process.stdout == (f"best epoch 0 (counting from 0; 1 run): validation loss {summary['best_val_loss']:.4f}, "
                              f"mean validation AUC {auc:.4f}\nrun folder: {run}\n")
    # at the start, on stderr: the data folder and kind, images per split, positives per class
    images = info["images"]
    assert (f"data: {info['data']['root']} (phantom); images: train {images['train']}, val {images['val']}, "
            f"test {images['test']}") in process.stderr
    assert "positives per class (train/val): Atelectasis " in process.stderr
    assert process.stderr.index("positives per class") < process.stderr.index("Epoch 0")
    assert "Epoch 0" in process.stderr  # Lightning's progress bar, on stderr
    for noise in ("v_num", "Tip", "litlogger", "GPU available", "worker", "LeafSpec", "Trainable params",
                  "`Trainer.fit` stopped", "limit_train_batches"):
        assert noise not in process.stderr, noise


@pytest.fixture(scope="module")
def report_html(trained_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run, _ = trained_run
    assert main(["evaluate", str(run), "--bootstrap", "20", "--no-progress"]) == 0
    assert main(["localize", str(run), "--no-progress", "--examples", "4"]) == 0
    assert main(["localize", str(run), "--method", "gradcam", "--no-progress", "--examples", "4"]) == 0
    out = tmp_path_factory.mktemp("browser_report")
    assert main(["report", str(run), "--out", str(out), "--title", "tiny phantom report"]) == 0
    return out / "report.html"


#: Text that would mean Markdown leaked into the HTML unrendered.
RAW_MARKDOWN = [r"\*\*", r"\]\(", r"^#{1,6} ", r"^\|.*\|$", r"^\s*- \*\*", r"`", r"^---$"]


def test_report_renders_cleanly_in_chromium(chromium: str, report_html: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    binary = chromium
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=["--no-sandbox"])  # CI runs as root
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto(report_html.as_uri(), wait_until="load")
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")

            images = page.evaluate("Array.from(document.images).map(i => ({w: i.naturalWidth, ok: i.complete}))")
            text = page.inner_text("body")
            tables = page.evaluate("""Array.from(document.querySelectorAll('table')).map(t => ({
                header: Array.from(t.tHead.rows[0].cells).map(c => c.innerText.trim()),
                rows: Array.from(t.tBodies[0].rows).map(r => Array.from(r.cells).map(c => c.innerText.trim())),
                headRows: t.tHead.rows.length}))""")
            anchors = page.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.hash.slice(1))")
            ids = page.evaluate("Array.from(document.querySelectorAll('section[id]')).map(s => s.id)")
            screenshot = tmp_path / "report.png"
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / "report.png")

    assert problems == []
    # every figure loaded: the ROC curves, the subgroup and reliability figures, both runs' overlays and
    # the side-by-side comparison
    assert len(images) == 6 and all(i["ok"] and i["w"] > 0 for i in images)
    # no raw Markdown anywhere in the rendered text
    for pattern in RAW_MARKDOWN:
        assert not re.search(pattern, text, flags=re.MULTILINE), pattern
    # tables: one header row, no empty or unnamed header cell, no empty row, rows as wide as the header
    assert len(tables) >= 5
    for table in tables:
        assert table["headRows"] == 1 and all(table["header"])
        assert table["rows"] and all(any(row) for row in table["rows"])
        assert all(len(row) == len(table["header"]) for row in table["rows"])
    # a contents list pointing at every section; the setup table says what was trained
    assert anchors == ids == ["setup", "classification", "subgroups", "calibration", "localization"]
    setup = next(t for t in tables if t["header"][0] == "setting")
    fields = {row[0]: row[1] for row in setup["rows"]}
    assert fields["backbone"] == "resnet10" and fields["input size"] == "64 px"
    assert fields["weights"] == "none (trained from scratch)" and fields["epochs run"] == "1"
    assert fields["best epoch"] == "0" and re.fullmatch(r"\d+ / \d+ / \d+", fields["images train / val / test"])
    assert fields["data folder"].startswith("phantom (synthetic)")
    assert re.fullmatch(r"best\.ckpt, sha256 [0-9a-f]{12}", fields["checkpoint"])
    n_test = int(fields["images train / val / test"].split(" / ")[2])
    rows, images = re.fullmatch(r"(\d+) in \d of 8 classes on (\d+) images", fields["box rows (test)"]).groups()
    assert fields["of the full dataset"] == (
        f"test images {n_test} of 25,596 ({n_test / 25_596:.1%}); box rows {rows} of 984 ({int(rows) / 984:.1%}) "
        f"on {images} of 880 images (phantom images, not a part of ChestX-ray14)")
    assert "Mean over" in text and "of 8 classes" in text
    assert report_html.stat().st_size < 3_000_000

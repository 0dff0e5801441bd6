"""The explorer page's data and folder (fast: run folders written from synthetic heatmaps, no network).

Each run folder holds what ``thoracic localize`` and ``thoracic evaluate`` write (``scores_``, ``boxes_``,
``heatmaps_<method>`` and ``localization_<method>.json`` through the same protocol functions, and
``predictions_test.csv``); the page's data must hold every box row with exactly the CSVs' values. The page
itself is checked in Chromium by ``test_explorer_browser.py``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thoracic.cli import main
from thoracic.config import Config, DataConfig, ModelConfig, save_config
from thoracic.constants import CLASS_NAMES
from thoracic.data.cache import ImageCache
from thoracic.data.dataset import box_table
from thoracic.data.metadata import load_chestxray14
from thoracic.errors import OutputPathError, RunError
from thoracic.evaluation.figures import HEATMAP_CMAP, display_heatmap
from thoracic.evaluation.predictions import save_heatmaps
from thoracic.evaluation.protocol import ground_truth_boxes, localize_boxes, write_localization
from thoracic.evaluation.trust.masks import mask_scores
from thoracic.geometry import Registration
from thoracic.reporting.explorer import (
    DATA_FILE,
    MANIFEST_FILE,
    PAGE_FILE,
    build_explorer,
    discover_methods,
    explorer_content,
    heatmap_bytes,
    read_data_script,
    thumbnail_bytes,
)
from thoracic.reporting.runs import load_run_summary

#: Heatmap methods of the synthetic runs: names localize knows and one it does not (methods are
#: discovered from the files present, never from a list).
METHODS = {"run_a": ("native", "gradcam", "edge-detector"), "run_b": ("native",)}


@pytest.fixture(scope="module")
def ground_truth(phantom_dir: Path, phantom_cache: Path) -> pd.DataFrame:
    dataset = load_chestxray14(phantom_dir)
    return ground_truth_boxes(box_table(dataset, ImageCache.open(phantom_cache), dataset.test_ids))


def write_localized_run(folder: Path, data_root: Path, ground_truth: pd.DataFrame, methods: tuple[str, ...],
                        seed: int, sha: str = "a" * 64, predictions: bool = True) -> Path:
    """A run folder as evaluate + localize leave it, from seeded random 4 x 4 heatmaps."""
    evaluation = folder / "evaluation"
    evaluation.mkdir(parents=True)
    save_config(Config(seed=seed, run_name=folder.name, data=DataConfig(root=str(data_root), image_size=64),
                       model=ModelConfig(name="baseline", backbone="resnet10", pretrained=False)),
                folder / "config.yaml")
    rng = np.random.default_rng(seed)
    pairs = ground_truth.drop_duplicates(["image_id", "class_name"])
    checkpoint = {"sha256": sha, "model_name": "baseline", "image_size": 64}
    for method in methods:
        heatmaps = {(i, c): rng.random((4, 4)) for i, c in zip(pairs["image_id"], pairs["class_name"])}
        tables = localize_boxes(ground_truth, heatmaps, method, draws=2)
        write_localization(evaluation, method, tables, {"method": method, "checkpoint": checkpoint,
                                                        "registration": Registration("legacy").describe()})
        save_heatmaps(heatmaps, evaluation / f"heatmaps_{method}.npz")
    if predictions:
        images = sorted(set(ground_truth["image_id"]))
        table = pd.DataFrame({"image_id": images, **{f"prob_{c}": rng.random(len(images)) for c in CLASS_NAMES},
                              **{f"label_{c}": 0 for c in CLASS_NAMES}})
        table.to_csv(evaluation / "predictions_test.csv", index=False, float_format="%.8g")
        (evaluation / "auc_test.json").write_text(json.dumps({"per_class": {}, "checkpoint": checkpoint}))
    return folder


@pytest.fixture()
def runs(tmp_path: Path, phantom_dir: Path, ground_truth: pd.DataFrame) -> list[Path]:
    return [write_localized_run(tmp_path / name, phantom_dir, ground_truth, methods, seed)
            for seed, (name, methods) in enumerate(METHODS.items())]


def test_the_data_holds_every_box_row_with_the_values_of_the_csv_files(runs: list[Path], ground_truth) -> None:
    summaries = [load_run_summary(r) for r in runs]
    content = explorer_content(summaries, {id(s): s.path.name for s in summaries})
    data = content.data
    assert [r["label"] for r in data["runs"]] == ["run_a", "run_b"]
    assert [(data["runs"][s["run"]]["label"], s["method"]) for s in data["sources"]] == [
        ("run_a", "edge-detector"), ("run_a", "gradcam"), ("run_a", "native"), ("run_b", "native")]
    # one row per ground-truth box; every source scores every one of them
    assert len(data["rows"]) == len(ground_truth) > 5
    truth = {(r.image_id, r.class_name, r.x, r.y, r.w, r.h) for r in ground_truth.itertuples()}
    assert {(data["images"][r["image"]]["id"], r["class"], *r["box"]) for r in data["rows"]} == truth
    for source in data["sources"]:
        evaluation = runs[source["run"]] / "evaluation"
        scores = pd.read_csv(evaluation / f"scores_{source['method']}.csv", dtype={"threshold": str})
        boxes = pd.read_csv(evaluation / f"boxes_{source['method']}.csv")
        predictions = pd.read_csv(evaluation / "predictions_test.csv").set_index("image_id")
        assert sorted(source["box_rows"]) == sorted(ground_truth["box_row"])
        assert set(source["scores"]) == set(scores["threshold"]) == {"60", "180", "all"}
        for threshold, values in source["scores"].items():
            part = scores[scores["threshold"] == threshold].set_index("box_row").loc[source["box_rows"]]
            for column in ("n_predicted", "best_iou", "best_iobb"):
                assert values[column] == part[column].tolist()  # exact: the CSVs' doubles
        first = scores[scores["threshold"] == "60"].set_index("box_row").loc[source["box_rows"]]
        assert source["pointing"] == first["pointing"].tolist()
        assert source["peak"] == first[["peak_x", "peak_y"]].values.tolist()
        for k, row_index in enumerate(source["rows"]):
            row = data["rows"][row_index]
            image_id = data["images"][row["image"]]["id"]
            assert (image_id, row["class"]) == (first["image_id"].iloc[k], first["class_name"].iloc[k])
            assert source["probability"][k] == predictions.at[image_id, f"prob_{row['class']}"]
            mine = boxes[(boxes["image_id"] == image_id) & (boxes["class_name"] == row["class"])]
            assert {t: sorted(b) for t, b in source["boxes"][k].items()} == {
                str(t): sorted(part[["x", "y", "w", "h"]].values.tolist()) for t, part in mine.groupby("threshold")}
            assert source["heatmap"][k] is not None
    assert data["default_threshold"] == "180"
    assert data["criteria"][data["default_criterion"]]["label"] == "IoU > 0.3"


def test_the_folder_holds_the_page_its_data_and_one_thumbnail_per_image(runs: list[Path], tmp_path: Path) -> None:
    page = build_explorer(runs, tmp_path / "explorer")
    folder = page.parent
    data = read_data_script(folder / DATA_FILE)
    assert page.name == PAGE_FILE and f'<script src="{DATA_FILE}"></script>' in page.read_text()
    assert "http://" not in page.read_text().replace("http://www.w3.org/2000/svg", "")  # nothing from the network
    sources = {image["src"] for image in data["images"]}
    assert None not in sources and len(sources) == len(data["images"]) == len({r["image"] for r in data["rows"]})
    for image in data["images"]:
        with Image.open(folder / image["src"]) as thumbnail:
            assert thumbnail.mode == "L" and thumbnail.size == (image["width"], image["height"])  # 64 px phantoms
    heatmaps = {src for source in data["sources"] for src in source["heatmap"]}
    for src in heatmaps:
        with Image.open(folder / src) as picture:
            assert picture.mode == "RGB" and max(picture.size) <= 128
    listed = json.loads((folder / MANIFEST_FILE).read_text())["files"]
    assert sorted(listed) == sorted([*sources, *heatmaps, DATA_FILE, PAGE_FILE])
    # the runs' labels are the report's (two seeds of one config: each run's folder, the model beside it)
    assert [r["label"] for r in data["runs"]] == [f"{run.parent.name}/{run.name}: baseline (resnet10, 64 px)"
                                                  for run in runs]


def test_a_rebuild_replaces_only_its_own_files(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "explorer"
    build_explorer(runs, out)
    (out / "notes.txt").write_text("mine")
    (out / "heatmaps" / "drawing.svg").write_text("mine too")
    # a method removed from a run: its heatmap images go, everything not written by the explorer stays
    for name in ("scores", "boxes"):
        (runs[0] / "evaluation" / f"{name}_gradcam.csv").unlink()
    build_explorer(runs, out)
    data = read_data_script(out / DATA_FILE)
    assert "gradcam" not in {s["method"] for s in data["sources"]}
    assert not (out / "heatmaps" / "r0_gradcam").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "heatmaps" / "drawing.svg").is_file()
    listed = set(json.loads((out / MANIFEST_FILE).read_text())["files"])
    assert "notes.txt" not in listed and all((out / name).is_file() for name in listed)
    # a folder holding a page the explorer did not write: refused, nothing written
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / PAGE_FILE).write_text("<p>someone's page</p>")
    with pytest.raises(OutputPathError, match="index.html"):
        build_explorer(runs, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == [PAGE_FILE]
    (out / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(OutputPathError, match="damaged"):
        build_explorer(runs, out)


def test_missing_probabilities_and_heatmaps_are_said_not_invented(tmp_path: Path, phantom_dir: Path,
                                                                  ground_truth: pd.DataFrame) -> None:
    run = write_localized_run(tmp_path / "run", phantom_dir, ground_truth, ("native",), 0, predictions=False)
    (run / "evaluation" / "heatmaps_native.npz").unlink()
    data = explorer_content([load_run_summary(run)]).data
    source = data["sources"][0]
    assert source["probability"] == [None] * len(ground_truth) and source["heatmap"] == [None] * len(ground_truth)
    notes = " ".join(data["runs"][0]["notes"])
    assert "predictions_test.csv is missing" in notes and "no heatmaps_native.npz" in notes
    # probabilities of another checkpoint than the localization's are not shown beside its boxes
    other = write_localized_run(tmp_path / "other", phantom_dir, ground_truth, ("native",), 1)
    (other / "evaluation" / "auc_test.json").write_text(json.dumps({"per_class": {}, "checkpoint": {"sha256": "b" * 64}}))
    data = explorer_content([load_run_summary(other)]).data
    assert data["sources"][0]["probability"] == [None] * len(ground_truth)
    assert "another checkpoint" in " ".join(data["runs"][0]["notes"])


def test_damaged_or_missing_localization_files_are_named(runs: list[Path], tmp_path: Path) -> None:
    scores = runs[1] / "evaluation" / "scores_native.csv"
    pd.read_csv(scores).drop(columns=["best_iobb"]).to_csv(scores, index=False)
    with pytest.raises(RunError, match=r"scores_native\.csv: columns \['best_iobb'\] missing"):
        explorer_content([load_run_summary(r) for r in runs])
    bare = tmp_path / "bare"
    (bare / "evaluation").mkdir(parents=True)
    (bare / "evaluation" / "auc_test.json").write_text(json.dumps({"per_class": {}}))
    assert discover_methods(bare / "evaluation") == []
    with pytest.raises(RunError, match="thoracic localize"):
        explorer_content([load_run_summary(bare)])


def test_thumbnails_keep_the_original_aspect_within_their_side() -> None:
    square = np.tile(np.arange(64, dtype=np.uint8), (64, 1))  # a cache image: the original stretched square
    with Image.open(io.BytesIO(thumbnail_bytes(square, (3000, 2000)))) as picture:
        assert picture.size == (256, 171) and picture.format == "JPEG"
    with Image.open(io.BytesIO(thumbnail_bytes(square, (64, 48)))) as picture:
        assert picture.size == (64, 48)  # never enlarged past the original


def test_a_heatmap_image_is_the_map_as_the_overlay_figures_draw_it() -> None:
    import matplotlib

    heatmap = np.random.default_rng(0).random((4, 6))
    registration = Registration("legacy")
    png = heatmap_bytes(heatmap, (300, 200), registration, side=60, kind="png")  # lossless: comparable
    with Image.open(io.BytesIO(png)) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    expected = matplotlib.colormaps[HEATMAP_CMAP](display_heatmap(heatmap, (40, 60), registration), bytes=True)
    assert pixels.shape == (40, 60, 3) and np.array_equal(pixels, expected[..., :3])


def write_explained(run: Path, ground_truth: pd.DataFrame, method: str, sha: str = "a" * 64,
                    flagged: bool = True) -> pd.DataFrame:
    """``explain.json`` and ``masks.csv`` as ``thoracic explain`` writes them for ``method`` (the mask metrics
    computed by its own function from the run's heatmaps, on the pairs of half the box images)."""
    evaluation = run / "evaluation"
    with np.load(evaluation / f"heatmaps_{method}.npz") as stored:
        heatmaps = {tuple(key.split("|", 1)): stored[key] for key in stored.files}
    images = sorted(ground_truth["image_id"].unique())[::2]
    pairs = ground_truth[ground_truth["image_id"].isin(images)].drop_duplicates(["image_id", "class_name"])
    table, _ = mask_scores(ground_truth, pairs, heatmaps, method, Registration("legacy"))
    table.to_csv(evaluation / "masks.csv", index=False)
    verdicts = {method: {"randomization": {"flagged": flagged, "text": "FLAGGED: stays similar" if flagged else "passes"},
                         "faithfulness": {"verdict": "faithful", "text": "faithful: deletion area ..."},
                         "masks": {"text": "mIoU 0.10 at heatmap > 180"}}}
    (evaluation / "explain.json").write_text(json.dumps({"checkpoint": {"sha256": sha}, "verdicts": verdicts}))
    return table


def test_explain_results_travel_with_their_rows(runs: list[Path], ground_truth: pd.DataFrame) -> None:
    table = write_explained(runs[0], ground_truth, "native")
    data = explorer_content([load_run_summary(r) for r in runs]).data
    source = next(s for s in data["sources"] if s["run"] == 0 and s["method"] == "native")
    assert [(c["check"], c["flagged"]) for c in source["checks"]] == [
        ("randomization", True), ("faithfulness", False), ("masks", None)]
    assert data["runs"][0]["explained"] and not data["runs"][1]["explained"]
    mask = source["mask"]
    assert mask["explained"] == len(table) and set(mask["iou"]) == {"60", "180"}
    indexed = table.set_index(["image_id", "class_name"])
    seen = 0
    for k, row_index in enumerate(source["rows"]):
        row = data["rows"][row_index]
        key = (data["images"][row["image"]]["id"], row["class"])
        if key in indexed.index:  # every box row of an explained pair carries the pair's values exactly
            seen += 1
            assert mask["hit"][k] == indexed.at[key, "hit"]
            assert mask["iou_otsu"][k] == indexed.at[key, "iou_otsu"]
            assert mask["iou"]["180"][k] == indexed.at[key, "iou_180"]
        else:
            assert mask["hit"][k] is None and mask["iou_otsu"][k] is None
    assert seen >= len(table)
    # the other sources of the run were not explained: no checks, no mask values
    assert all(s["checks"] == [] and s["mask"] is None for s in data["sources"] if s is not source)


def test_explain_results_of_other_weights_or_damaged_are_left_out_with_a_note(runs: list[Path],
                                                                              ground_truth: pd.DataFrame) -> None:
    write_explained(runs[0], ground_truth, "native", sha="b" * 64)
    data = explorer_content([load_run_summary(runs[0])]).data
    assert all(s["checks"] == [] and s["mask"] is None for s in data["sources"])
    assert "explain.json checked another checkpoint" in " ".join(data["runs"][0]["notes"])
    (runs[0] / "evaluation" / "explain.json").write_text("{")
    data = explorer_content([load_run_summary(runs[0])]).data
    assert all(s["checks"] == [] for s in data["sources"])
    assert "heatmap checks not shown" in " ".join(data["runs"][0]["notes"])


@pytest.mark.slow  # two reports with their figures
def test_the_report_writes_and_links_the_explorer(runs: list[Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out), "--no-progress"]) == 0
    assert f"explorer page: {out / 'explorer' / PAGE_FILE}" in capsys.readouterr().out
    assert "[Explorer: every scored box row](explorer/index.html)" in (out / "report.md").read_text()
    assert '<a href="explorer/index.html">' in (out / "report.html").read_text()
    assert (out / "explorer" / DATA_FILE).is_file()
    plain = tmp_path / "plain"
    assert main(["report", *map(str, runs), "--out", str(plain), "--no-explorer"]) == 0
    assert not (plain / "explorer").exists() and "explorer/index.html" not in (plain / "report.md").read_text()

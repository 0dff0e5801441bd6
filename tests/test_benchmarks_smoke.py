"""Smoke test of benchmarks/: every benchmark's --quick mode runs and produces its ratio fields.

Timings are not asserted (they are meaningless at these sizes and on a shared machine); the structure
of the result documents is, and so is the report built from them, so the scripts cannot rot.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS_DIR))

common = importlib.import_module("common")
run_all = importlib.import_module("run_all")

COMPARISON_KEYS = {"name", "description", "ratio", "target", "target_op", "passed", "candidate", "baseline"}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def check_document(document: dict, name: str, expected_targets: int) -> None:
    assert document["benchmark"] == name
    assert document["status"] == "measured"
    assert document["quick"] is True
    assert {"cpu_model", "logical_cores", "torch", "torch_threads", "gpu"} <= set(document["machine"])
    comparisons = document["comparisons"]
    assert comparisons
    for item in comparisons:
        assert COMPARISON_KEYS <= set(item), item.keys()
        assert isinstance(item["ratio"], float) and math.isfinite(item["ratio"]) and item["ratio"] > 0
        # the ratio is derived from the two sides' repeats, not a separately timed number
        assert item["ratio_of_medians"] == pytest.approx(
            item["candidate"]["rate"] / (item["scale"] * item["baseline"]["rate"]))
        assert item["ratio"] == pytest.approx(item["paired_ratio_median"] or item["ratio_of_medians"])
        if item["target"] is None:
            assert item["passed"] is None
        else:
            assert item["passed"] == (item["ratio"] >= item["target"])
        for side in ("candidate", "baseline"):
            assert len(item[side]["times_s"]) >= 2  # medians of repeats
    assert sum(item["target"] is not None for item in comparisons) == expected_targets
    json.dumps(document)  # serialisable as written by run_all


def test_interleaved_alternates_and_ratio_is_rate_quotient():
    calls = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]  # warm-up, then rounds in rotated order
    assert set(times) == {"a", "b"} and all(len(v) == 3 for v in times.values())
    fast = common.measurement(10, [0.1, 0.2, 0.1], "items/s")   # median 0.1 s -> 100 items/s
    slow = common.measurement(10, [0.5, 0.4, 0.6], "items/s")   # median 0.5 s -> 20 items/s
    assert fast["rate"] == pytest.approx(100.0) and slow["rate"] == pytest.approx(20.0)
    item = common.comparison("x", fast, slow, target=4.0, description="")
    # per-round ratios 5, 2, 6 -> median 5; ratio of medians 100 / 20 = 5 as well
    assert item["paired_ratio_median"] == pytest.approx(5.0) and item["ratio"] == pytest.approx(5.0)
    assert item["ratio_of_medians"] == pytest.approx(5.0) and item["passed"] is True
    assert common.comparison("x", fast, slow, target=0.9, description="", scale=10)["passed"] is False
    # a machine that slows down by 3x halfway: the per-round pairs still say 2x, the medians do not
    steady = common.comparison("y", common.measurement(1, [1, 1, 3, 3, 3], "u"),
                               common.measurement(1, [2, 2, 2, 6, 6], "u"), None, "")
    assert steady["paired_ratio_median"] == pytest.approx(2.0)
    assert steady["ratio_of_medians"] == pytest.approx(2.0 / 3.0)


@pytest.mark.slow
def test_loader_quick(tmp_path):
    check_document(importlib.import_module("bench_loader").run(quick=True, workdir=tmp_path), "loader", 1)


@pytest.mark.slow
def test_prepare_quick(tmp_path):
    document = importlib.import_module("bench_prepare").run(quick=True, workdir=tmp_path, workers=2)
    check_document(document, "prepare", 2)
    assert 0 < document["png_decode_share"]


@pytest.mark.slow
def test_train_step_quick(tmp_path):
    document = importlib.import_module("bench_train_step").run(quick=True, workdir=tmp_path)
    check_document(document, "train_step", 4)
    names = [item["name"] for item in document["comparisons"]]
    assert any("attention_gated" in n for n in names) and any("Lightning" in n for n in names)


@pytest.mark.slow
def test_inference_quick():
    check_document(importlib.import_module("bench_inference").run(quick=True), "inference", 3)


def test_heatmaps_quick():
    document = importlib.import_module("bench_heatmaps").run(quick=True)
    check_document(document, "heatmaps", 0)
    from thoracic.heatmaps import HEATMAP_METHOD_NAMES

    assert set(document["ms_per_map"]) == set(HEATMAP_METHOD_NAMES)
    assert len(document["comparisons"]) == len(HEATMAP_METHOD_NAMES) - 1


def test_memory_format_quick():
    document = importlib.import_module("bench_memory_format").run(quick=True)
    check_document(document, "memory_format", 0)
    assert len(document["comparisons"]) == 1 and document["comparisons"][0]["ratio"] > 0


def test_output_stride_quick():
    document = importlib.import_module("bench_output_stride").run(quick=True)
    check_document(document, "output_stride", 0)
    names = [item["name"] for item in document["comparisons"]]
    assert names == [f"{kind} output stride {s} vs 32 (resnet10, 64 px)"
                     for kind in ("train step", "inference") for s in (16, 8)]


@pytest.mark.slow
def test_explorer_quick(tmp_path):
    document = importlib.import_module("bench_explorer").run(quick=True, workdir=tmp_path)
    assert document["benchmark"] == "explorer" and document["status"] == "measured"
    budgets = [item for item in document["comparisons"] if "limit" in item]
    assert [item["unit"] for item in budgets[:3]] == ["s", "MB", "MB"]
    for item in budgets:
        assert item["ratio"] == pytest.approx(item["limit"] / item["value"])
        assert item["passed"] == (item["value"] < item["limit"])
    encoding = document["comparisons"][-1]
    assert encoding["target"] is None and encoding["candidate"]["unit"] == "panels/s"
    # the report shows a budget as its value, margin and limit
    text = run_all.render_markdown([document])
    assert f"| {budgets[0]['name']} | {budgets[0]['value']:.3g} s ({budgets[0]['ratio']:.1f}x margin) | < 60 s |" in text


def test_gpu_without_gpu_is_recorded_as_not_measured():
    bench_gpu = importlib.import_module("bench_gpu")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    document = bench_gpu.run(quick=True)
    assert document["status"] == "not measured: no GPU on this machine"
    assert document["comparisons"] == []


@pytest.mark.slow
def test_gpu_code_path_on_cpu(tmp_path):
    document = importlib.import_module("bench_gpu").run(quick=True, workdir=tmp_path, device="cpu")
    check_document(document, "gpu", 1)


@pytest.mark.slow
def test_library_quick(tmp_path):
    bench_library = importlib.import_module("bench_library")
    document = bench_library.run(quick=True, workdir=tmp_path)
    check_document(document, "library", 1)
    assert [item["candidate"]["unit"] for item in document["comparisons"]] == ["resamples/s", "images/s"]
    assert len(document["notes"]) == 3 and "load" in document["notes"][2]


@pytest.mark.slow
def test_datasets_quick(tmp_path):
    document = importlib.import_module("bench_datasets").run(quick=True, workdir=tmp_path)
    check_document(document, "datasets", 3)
    assert [item["candidate"]["unit"] for item in document["comparisons"]] == ["images/s", "rows/s", "rows/s"]
    assert "2,000 rows" in document["notes"][1] and "3,000 images" in document["notes"][2]


def test_synthetic_mimic_metadata_loads_like_the_physionet_files(tmp_path):
    from thoracic.data.datasets import load_dataset

    dataset = load_dataset(importlib.import_module("bench_datasets").synthetic_mimic_metadata(tmp_path / "m", 2000),
                           views=())
    assert dataset.kind == "mimic" and len(dataset) == 2000 and dataset.labels.shape == (2000, 14)
    assert set(dataset.table["split"]) == {"train", "val", "test"} and dataset.table["path"].isna().all()
    assert 0.5 < np.isnan(dataset.labels).mean() < 0.9 and np.nanmax(dataset.labels) == 1


def test_synthetic_metadata_loads_like_the_nih_files(tmp_path):
    from thoracic.data.metadata import load_chestxray14

    dataset = load_chestxray14(importlib.import_module("bench_datasets").synthetic_nih_metadata(tmp_path / "m", 3000))
    assert len(dataset) == 3000 and dataset.labels.shape == (3000, 14) and 0 < dataset.labels.mean() < 0.2
    assert len(dataset.test_ids) + len(dataset.train_val_ids) == 3000 and len(dataset.boxes) > 0
    test_patients = set(dataset.table.loc[dataset.table["split"] == "test", "patient_id"])
    assert test_patients and not test_patients & set(dataset.table.loc[dataset.table["split"] == "train_val",
                                                                       "patient_id"])


@pytest.mark.slow
def test_localization_wrapper_and_report(tmp_path):
    if not (BENCHMARKS_DIR / "bench_localization.py").is_file():
        pytest.skip("bench_localization.py not written yet")
    document = run_all.run_localization(quick=True, out=tmp_path / "localization.json", threads=1, timeout=120)
    assert document["status"] == "measured", document["notes"]
    assert len(document["comparisons"]) >= 1
    for item in document["comparisons"]:
        assert item["ratio"] == pytest.approx(item["target_s"] / item["elapsed_s"])
        assert item["passed"] == (item["elapsed_s"] < item["target_s"])
    assert json.loads((tmp_path / "localization.json").read_text())["benchmark"] == "localization"


def test_report_lists_every_figure_with_its_verdict():
    measured = {"rate": 10.0, "unit": "images/s", "times_s": [1.0, 1.0], "spread": 0.0}
    slower = {"rate": 5.0, "unit": "images/s", "times_s": [2.0, 2.0], "spread": 0.0}
    documents = [
        common.result_document("loader", False, {"images": "x"}, [
            common.comparison("fast one", measured, slower, 1.5, "d"),
            common.comparison("slow one", slower, measured, 0.9, "d"),
            common.comparison("info one", measured, measured, None, "d"),
        ]),
        common.result_document("gpu", False, {}, [], ["n"], status="not measured: no GPU on this machine"),
    ]
    text = run_all.render_markdown(documents, total_s=60.0, shared_note="shared with other jobs")
    assert "| fast one | 2.00x | >= 1.5x | **pass** |" in text
    assert "| slow one | 0.50x | >= 0.9x | **MISS** |" in text
    assert "| info one | 1.00x | - | info |" in text
    assert "not measured: no GPU on this machine" in text
    assert "shared with other jobs" in text and "Whole run: 1.0 min" in text


def test_full_scale_checklist_in_the_docs_is_rendered_from_the_results(tmp_path: Path) -> None:
    """docs/training.md's checklist block equals what benchmarks/checklist.py renders from the results."""
    checklist = importlib.import_module("checklist")
    assert checklist.main(["--check"]) == 0
    prepare = json.loads((BENCHMARKS_DIR / "results" / "prepare.json").read_text())
    block = checklist.render(prepare, None)
    one_worker = prepare["comparisons"][0]["candidate"]["rate"]
    assert f"{checklist.NIH_IMAGES / one_worker / 60:.0f} core-minutes" in block
    assert "| time: one training epoch per GPU | not measured yet |" in block
    assert f"| disk: the image cache at 256 px | {112_120 * 256 * 256 / 1e9:.1f} GB |" in block

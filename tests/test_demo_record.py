"""The demo's record file and the script that copies its numbers into the README."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import torch

from thoracic.workflows.demo import RECORD_FILE, DemoResult, DemoSettings, write_demo_record

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_readme_demo.py"


def _script():
    spec = importlib.util.spec_from_file_location("update_readme_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _headline(iou: float) -> pd.DataFrame:
    return pd.DataFrame([{"model": "space_attention", "method": "native", "mean AUC": 0.9712,
                          "IoU>0.3 model": iou, "IoU>0.3 random": 0.05, "IoU>0.3 centre": 0.1,
                          "IoBB>0.25 model": 0.4, "IoBB>0.25 random": 0.1, "IoBB>0.25 centre": 0.13}])


def test_record_then_readme_section(tmp_path: Path) -> None:
    records = []
    for threads, iou in ((2, 0.31), (1, 0.08)):
        settings = DemoSettings(out_dir=tmp_path / f"t{threads}", threads=threads)
        settings.out_dir.mkdir()
        checks = {"space_attention": {"native": {
            "randomization": {"flagged": iou < 0.1, "spearman_median": 0.61 if iou < 0.1 else 0.12, "text": "..."},
            "faithfulness": {"verdict": "faithful", "deletion_gain": 0.2, "insertion_gain": 0.31, "road": 0.1,
                             "text": "faithful"},
            "masks": {"miou": 0.25, "miou_otsu": 0.3, "miou_tuned": float("nan"), "hit_rate": 0.5, "text": "mIoU"}}}}
        result = DemoResult(tmp_path / "r.md", tmp_path / "r.html", {}, _headline(iou), 372.0, checks,
                            {"train space_attention": 120.04, "explain": 30.0})
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            path = write_demo_record(result, settings)
        finally:
            torch.set_num_threads(previous)
        assert path == settings.out_dir / RECORD_FILE
        record = json.loads(path.read_text())
        assert record["torch_threads"] == threads and record["minutes"] == 6.2
        assert record["torch"] == torch.__version__ and record["cpu"] and record["cpu_minutes"] > 0
        if iou > 0.1:
            assert record["problems"] == []
        else:  # the shortfalls named as check_learning names them
            assert len(record["problems"]) == 2 and "IoU>0.3 accuracy 0.080" in record["problems"][0]
            assert "flagged by the model randomization test" in record["problems"][1]
        assert record["steps_seconds"] == {"train space_attention": 120.04, "explain": 30.0}
        assert record["checks"][0]["miou_tuned"] is None and record["checks"][0]["faithfulness"] == "faithful"
        records.append(path)

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- demo-results:start -->\nold numbers\n<!-- demo-results:end -->\noutro\n")
    assert _script().main([str(p) for p in records] + ["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    one, two = text.index("**torch threads 1**"), text.index("**torch threads 2**")
    assert one < two  # ordered by thread count
    assert "| space attention | native | 0.971 | 0.080 |" in text  # copied, not bold: not above the centre box
    assert "| space attention | native | 0.971 | **0.310** |" in text
    assert "targets not reached" in text[one:two] and "targets not reached" not in text[two:]
    # how far the two runs lie apart, computed from the records
    assert "IoU>0.3 (heatmap threshold 180) 0.230 (space attention native)" in text
    assert "mean test AUC 0.000" in text
    # the heatmap checks copied from the records
    assert "| space attention | native | **FLAGGED** | 0.610 | faithful | +0.200 | +0.310 | 0.250 | 0.300 | n/a | 0.500 |" \
        in text[one:two]
    assert "| space attention | native | passes | 0.120 |" in text[two:]
    assert "no checked heatmap method is flagged by the model randomization test" in text[two:]
    assert "Time per step (s): train space_attention 120, explain 30." in text[two:]


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    record = tmp_path / "demo_results.json"
    record.write_text("{}")
    assert _script().main([str(record), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers\n"

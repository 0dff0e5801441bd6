"""Localization under both registrations: the same heatmaps boxed where the network puts their cells
(geometric) and where align_corners=False puts them (legacy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import make_run

from thoracic.cli import main
from thoracic.heatmaps.boxes import boxes_from_heatmap
from thoracic.evaluation.protocol import registration_table
from thoracic.geometry import FeatureGrid, make_registration


def test_a_hot_cell_is_boxed_around_its_receptive_field_centre() -> None:
    grid = FeatureGrid((4, 4), (32.0, 32.0), (0.0, 0.0), (128, 128))
    heatmap = np.zeros((4, 4))
    heatmap[1, 2] = 1.0
    centres = {}
    for name in ("geometric", "legacy"):
        registration = make_registration(name, grid)
        (x, y, w, h), = boxes_from_heatmap(heatmap, 180, 512, cell_centres=registration((4, 4), 512)).boxes
        centres[name] = (y + h / 2, x + w / 2)  # box centre, original pixels (4x the model input)
    # cell (1, 2) at model pixels (32, 64) -> original pixels (130, 258) (pixel p's box centre at p + 0.5);
    # legacy: the centre of the cell's tile of the image, (1.5, 2.5) * 512 / 4 - 0.5 = (191.5, 319.5)
    np.testing.assert_allclose(centres["geometric"], (130.5, 258.5), atol=1.0)
    np.testing.assert_allclose(centres["legacy"], (192.0, 320.0), atol=1.0)

    truth = pd.DataFrame({"image_id": ["a"], "class_name": ["Mass"], "x": [240.0], "y": [112.0], "w": [40.0],
                          "h": [40.0], "box_row": [0], "original_width": [512], "original_height": [512]})
    table = registration_table(truth, {("a", "Mass"): heatmap},
                               [make_registration("geometric", grid), make_registration("legacy", grid)])
    at_180 = table[(table["threshold"] == "180") & (table["metric"] == "IoBB")].set_index("registration")
    assert at_180.loc["geometric", "accuracy"] == 1.0 and at_180.loc["legacy", "accuracy"] == 0.0


@pytest.mark.slow
def test_localize_scores_both_registrations_on_the_same_heatmaps(phantom_dir: Path, phantom_cache: Path,
                                                                 tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    tables = {}
    for name in ("legacy", "geometric"):
        assert main(["localize", str(run), "--registration", name, "--no-progress", "--examples", "1",
                     "--draws", "5"]) == 0
        evaluation = run / "evaluation"
        info = json.loads((evaluation / "localization_native.json").read_text())
        assert info["registration"]["registration"] == name
        assert info["registration"]["stride"] == [32.0, 32.0] and info["registration"]["offset"] == [0.0, 0.0]
        table = pd.read_csv(evaluation / "registration_native.csv", dtype={"threshold": str})
        assert list(table["registration"].unique()) == [name, "legacy" if name == "geometric" else "geometric"]
        # the registration used is the one of the headline table
        accuracy = pd.read_csv(evaluation / "localization_native.csv", dtype={"threshold": str})
        mine = table[table["registration"] == name]
        for row in mine.itertuples(index=False):
            match = accuracy[(accuracy["source"] == "native") & (accuracy["class_name"] == "Mean")
                             & (accuracy["threshold"] == row.threshold) & (accuracy["metric"] == row.metric)
                             & np.isclose(accuracy["t"], row.t)]
            assert match["accuracy"].item() == pytest.approx(row.accuracy, abs=1e-6)
        tables[name] = table.sort_values(["registration", "threshold", "metric"]).reset_index(drop=True)
    # the same heatmaps give the same numbers, whichever registration led
    pd.testing.assert_frame_equal(tables["legacy"], tables["geometric"])

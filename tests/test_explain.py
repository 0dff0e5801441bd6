"""``thoracic explain``: the randomization test, faithfulness, mask metrics and repeatability, each recomputed
from its exported files; the randomization test flags a map that ignores the model."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_run
from scipy import ndimage
from scipy.stats import spearmanr
from skimage.filters import threshold_otsu
from skimage.metrics import structural_similarity
from torch import nn

from thoracic.evaluation.trust.common import ALL, select_pairs
from thoracic.evaluation.trust.faithfulness import faithfulness_curves, pair_scores
from thoracic.evaluation.trust.masks import iou_by_level, mask_iou, patient_halves, region_mask
from thoracic.evaluation.trust.randomization import RANDOMIZATION_STAGES, SIMILARITY_FLAG, cascading_randomization
from thoracic.geometry import FeatureGrid, make_registration
from thoracic.heatmaps import register_heatmap_method, unregister_heatmap_method
from thoracic.heatmaps.attribution import PixelAttribution
from thoracic.heatmaps.boxes import normalize_heatmap, upsample_heatmap
from thoracic.models import Backbone, create_model


class EdgeDetector(PixelAttribution):
    """A "heatmap" that ignores the model: the Sobel gradient magnitude of the input's first channel."""

    uses_gradients = False

    def attribute(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        weight = torch.stack([kernel, kernel.T])[:, None]
        gradients = nn.functional.conv2d(images[:, :1].float(), weight, padding=1)
        return gradients.pow(2).sum(dim=1).sqrt()


# --------------------------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------------------------


def test_cascading_randomization_goes_down_stage_by_stage_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = create_model("baseline", backbone="resnet10").eval()
    with torch.no_grad():  # "trained": no weight at its initial value (BatchNorm's ones and zeros included)
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    changed_at = {}
    for depth, stage, randomized in cascading_randomization(model, RANDOMIZATION_STAGES, seed=3):
        state = randomized.state_dict()
        for name, value in state.items():
            if name not in changed_at and value.is_floating_point() and not torch.equal(value, original[name]):
                changed_at[name] = depth
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())  # the trained model is untouched
    depth_of = {stage: depth for depth, stage in enumerate(RANDOMIZATION_STAGES, start=1)}
    for name, depth in changed_at.items():
        stage = name.split(".")[1] if name.startswith("backbone.") else "classifier"
        assert depth == depth_of[stage], name
    assert {changed_at[n] for n in changed_at} == set(range(1, len(RANDOMIZATION_STAGES) + 1))
    weights = [n for n in original if n.endswith("weight")]
    assert all(n in changed_at for n in weights)  # every learned weight was re-initialised in the end


def test_region_mask_takes_the_pixels_whose_centre_is_inside_a_box() -> None:
    mask = region_mask(np.array([[1.4, 0.6, 2.2, 1.0], [6.0, 6.0, 1.0, 1.0]]), (8, 8))
    rows, cols = np.nonzero(mask)
    # centres c + 0.5 in [1.4, 3.6): columns 1, 2, 3; rows: centres in [0.6, 1.6): row 1
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(1, 1), (1, 2), (1, 3), (6, 6)]


def test_iou_at_every_level_equals_thresholding_the_map() -> None:
    rng = np.random.default_rng(0)
    normalised = normalize_heatmap(upsample_heatmap(rng.random((4, 4)), (40, 40)))
    normalised[0, :5] = 100.0  # values exactly on a level
    region = region_mask(np.array([[5.0, 8.0, 20.0, 15.0]]), (40, 40))
    curve = iou_by_level(normalised, region)
    for level in range(255):
        assert curve[level] == pytest.approx(mask_iou(normalised > level, region), abs=1e-12, nan_ok=True)


def test_halves_split_by_patient() -> None:
    pairs = pd.DataFrame({"image_id": [f"{p:03d}_{k}" for p in range(9) for k in range(3)],
                          "class_name": "Mass", "patient_id": [p for p in range(9) for _ in range(3)]})
    halves = patient_halves(pairs, seed=1)
    assert set(halves) == {0, 1}
    assert (pairs.assign(half=halves).groupby("patient_id")["half"].nunique() == 1).all()
    assert halves.tolist() == patient_halves(pairs, seed=1).tolist()  # seeded


def _pooling_model() -> nn.Module:
    """Class 2 reads the mean of channel 0 (no parameters before the head): the evidence is known."""
    backbone = Backbone(nn.AvgPool2d(4), nn.Identity(), nn.AvgPool2d(2), nn.AvgPool2d(2), nn.AvgPool2d(2),
                        channels={"layer2": 3, "layer3": 3, "final": 3}, name="pooling")
    model = create_model("baseline", backbone=backbone).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.transition.weight[:, :, 0, 0] = torch.eye(3)
        model.classifier.weight[2, 0] = 4.0
    return model


def test_deletion_and_insertion_reward_the_evidence_and_punish_its_inverse() -> None:
    model = _pooling_model()
    image = torch.zeros(3, 64, 64)
    image[0, 40:56, 8:24] = 3.0  # the evidence of class 2
    truth = np.zeros((64, 64))
    truth[40:56, 8:24] = 1.0
    maps = {("a", "Effusion"): truth, ("b", "Effusion"): 1.0 - truth}
    images = {"a": image, "b": image}
    curves = faithfulness_curves(model, "m", images, maps, {"Effusion": 2}, steps=4, road_fractions=(0.5,), seed=0)
    scores = pair_scores(curves).set_index("image_id")
    assert scores.at["a", "deletion_gain"] > 0.05 and scores.at["a", "insertion_gain"] > 0.05
    assert scores.at["b", "deletion_gain"] < 0 and scores.at["b", "insertion_gain"] < 0
    assert scores.at["a", "road"] > scores.at["b", "road"]
    # the ends of the curves are the clean and the baseline image, whatever the order
    ends = curves[curves["curve"].isin(["deletion", "insertion"])].pivot_table(
        index=["image_id", "order", "fraction"], columns="curve", values="probability")
    for (image_id, order), rows in ends.groupby(level=[0, 1]):
        rows = rows.droplevel([0, 1])
        assert rows.at[0.0, "deletion"] == rows.at[1.0, "insertion"] > rows.at[1.0, "deletion"] == rows.at[0.0, "insertion"]


# --------------------------------------------------------------------------------------------------
# End to end: an experiment of two seed runs, three methods (one of them an edge detector)
# --------------------------------------------------------------------------------------------------

METHODS = ("native", "gradcam", "edges")


@pytest.fixture(scope="module")
def explained(phantom_dir: Path, phantom_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from thoracic.workflows.explain import ExplainSettings, explain

    experiment = tmp_path_factory.mktemp("explain") / "experiment"
    for seed in (0, 1):
        make_run(experiment / f"seed{seed}", phantom_dir, "baseline", seed)
    register_heatmap_method("edges", EdgeDetector, "Sobel edges of the input (ignores the model)")
    try:
        settings = ExplainSettings(method=METHODS, num_images=5, bootstrap=50, steps=4, road_fractions=(0.5,))
        result = explain(experiment, settings, device="cpu", progress=False)
        again = explain(experiment / "seed0", settings, device="cpu", progress=False)
    finally:
        unregister_heatmap_method("edges")
    assert len(result.runs) == 2 and result.verdicts
    # the second call reused every part of the first
    assert again.runs[0].computed == [] and len(again.runs[0].reused) >= 3 * len(METHODS)
    return experiment


def _evaluation(experiment: Path, seed: int = 0) -> Path:
    return experiment / f"seed{seed}" / "evaluation"


@pytest.mark.slow
def test_randomization_flags_the_edge_detector_and_passes_the_model_maps(explained: Path) -> None:
    evaluation = _evaluation(explained)
    table = pd.read_csv(evaluation / "randomization.csv")
    summary = pd.read_csv(evaluation / "randomization_summary.csv")
    document = json.loads((evaluation / "explain.json").read_text())
    assert set(table["method"]) == set(METHODS)
    assert len(table) == len(METHODS) * len(RANDOMIZATION_STAGES) * document["n_pairs"]
    # the summary recomputes from the per-image table
    for (method, depth), rows in table.groupby(["method", "depth"]):
        row = summary[(summary["method"] == method) & (summary["depth"] == depth)].iloc[0]
        finite = rows["spearman"].dropna()
        if len(finite):
            assert row["spearman_median"] == pytest.approx(float(np.median(finite)))
        assert row["ssim_median"] == pytest.approx(float(np.median(rows["ssim"])))
        assert row["spearman_median_verdict"] == pytest.approx(float(np.median(rows["spearman"].fillna(0.0))))
    last = summary[summary["depth"] == summary["depth"].max()].set_index("method")
    verdicts = document["verdicts"]
    for method in METHODS:
        expected = bool(last.at[method, "spearman_median_verdict"] >= SIMILARITY_FLAG)
        assert verdicts[method]["randomization"]["flagged"] is expected
    assert verdicts["edges"]["randomization"]["flagged"] is True  # ignores the model: identical maps
    assert table[table["method"] == "edges"]["spearman"].min() == pytest.approx(1.0)
    assert verdicts["native"]["randomization"]["flagged"] is False  # the model's own maps follow its weights
    for name in ("randomization.png", "randomization_examples.png"):
        assert (evaluation / name).stat().st_size > 1000


@pytest.mark.slow
def test_randomization_similarities_recompute_from_the_maps(explained: Path) -> None:
    """The depth-0 maps of every method are stored; the similarity of the edge detector's maps with themselves
    (every depth) and the SSIM definition are recomputed independently."""
    evaluation = _evaluation(explained)
    with np.load(evaluation / "explain" / "maps_edges.npz") as data:
        maps = {key: data[key] for key in data.files}
    table = pd.read_csv(evaluation / "randomization.csv")
    edges = table[table["method"] == "edges"]
    for key, heatmap in maps.items():
        image_id, class_name = key.split("|")
        rows = edges[(edges["image_id"] == image_id) & (edges["class_name"] == class_name)]
        a = heatmap.astype(np.float64)
        assert rows["spearman"].to_numpy() == pytest.approx(spearmanr(a.ravel(), a.ravel()).statistic)
        assert rows["ssim"].to_numpy() == pytest.approx(structural_similarity(a, a, data_range=1.0))


@pytest.mark.slow
def test_faithfulness_summary_recomputes_from_the_curves(explained: Path) -> None:
    evaluation = _evaluation(explained)
    curves = pd.read_csv(evaluation / "faithfulness_curves.csv")
    summary = pd.read_csv(evaluation / "faithfulness.csv")
    steps = sorted(curves[curves["curve"] == "deletion"]["fraction"].unique())
    assert steps == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    per_pair = {}
    for (method, image_id, class_name), rows in curves.groupby(["method", "image_id", "class_name"]):
        def area(order: str, curve: str) -> float:
            part = rows[(rows["order"] == order) & (rows["curve"] == curve)].sort_values("fraction")
            y, x = part["probability"].to_numpy(), part["fraction"].to_numpy()
            return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))

        morf = rows[rows["curve"] == "road-morf"]["probability"].to_numpy()
        lerf = rows[rows["curve"] == "road-lerf"]["probability"].to_numpy()
        per_pair[(method, image_id, class_name)] = {
            "deletion_auc": area("saliency", "deletion"), "insertion_auc": area("saliency", "insertion"),
            "deletion_gain": area("random", "deletion") - area("saliency", "deletion"),
            "insertion_gain": area("saliency", "insertion") - area("random", "insertion"),
            "road": float(np.mean((lerf - morf) / 2))}
    frame = pd.DataFrame([{"method": k[0], "class_name": k[2], **v} for k, v in per_pair.items()])
    for method, rows in frame.groupby("method"):
        mine = summary[(summary["method"] == method) & (summary["class_name"] == ALL)].iloc[0]
        for column in ("deletion_auc", "insertion_auc", "deletion_gain", "insertion_gain", "road"):
            assert mine[column] == pytest.approx(rows[column].mean()), (method, column)
            assert mine[f"{column}_ci_low"] <= mine[column] <= mine[f"{column}_ci_high"]
        for class_name, part in rows.groupby("class_name"):
            row = summary[(summary["method"] == method) & (summary["class_name"] == class_name)].iloc[0]
            assert row["n"] == len(part) and row["deletion_gain"] == pytest.approx(part["deletion_gain"].mean())
    verdicts = json.loads((evaluation / "explain.json").read_text())["verdicts"]
    for method in METHODS:
        row = summary[(summary["method"] == method) & (summary["class_name"] == ALL)].iloc[0]
        wins = [row["deletion_gain_ci_low"] > 0, row["insertion_gain_ci_low"] > 0]
        means = [row["deletion_gain"] > 0, row["insertion_gain"] > 0]
        expected = ("faithful" if all(wins) else "partly" if any(wins) else
                    "inconclusive" if all(means) else "not better than a random order")
        assert verdicts[method]["faithfulness"]["verdict"] == expected


@pytest.mark.slow
def test_mask_metrics_recompute_from_the_maps_and_boxes(explained: Path, phantom_dir: Path) -> None:
    """Per pair: the region from the box file, the map from the stored native maps, upsampled through the
    method's grid, thresholded and labelled the plain way; the tuned thresholds from the other half only."""
    from thoracic.data.metadata import load_chestxray14

    evaluation = _evaluation(explained)
    masks = pd.read_csv(evaluation / "masks.csv")
    metrics = pd.read_csv(evaluation / "mask_metrics.csv")
    chosen = pd.read_csv(evaluation / "mask_thresholds.csv")
    boxes = load_chestxray14(phantom_dir).boxes
    model = create_model("baseline", backbone="resnet10")
    for method in ("native", "gradcam"):
        from thoracic.heatmaps import create_heatmap_method

        registration = make_registration("geometric", create_heatmap_method(method, model).grid(64))
        with np.load(evaluation / "explain" / f"maps_{method}.npz") as data:
            maps = {tuple(key.split("|")): data[key].astype(np.float64) for key in data.files}
        rows = masks[masks["method"] == method]
        assert len(rows) == len(maps)
        curves = {}
        for row in rows.itertuples(index=False):
            heatmap = maps[(row.image_id, row.class_name)]
            size = (64, 64)
            up = upsample_heatmap(heatmap, size, registration(heatmap.shape, size))
            normalised = normalize_heatmap(up)
            own = boxes[(boxes["image_id"] == row.image_id) & (boxes["class_name"] == row.class_name)]
            region = np.zeros(size, dtype=bool)
            centres = np.arange(64) + 0.5
            for x, y, w, h in own[["x", "y", "w", "h"]].to_numpy():
                region |= ((centres[:, None] >= y) & (centres[:, None] < y + h)
                           & (centres[None, :] >= x) & (centres[None, :] < x + w))
            for t in (60, 180):
                predicted = normalised > t
                union = (predicted | region).sum()
                assert getattr(row, f"iou_{t}") == pytest.approx((predicted & region).sum() / union if union else np.nan,
                                                                 nan_ok=True)
            if np.ptp(normalised) > 0:
                assert row.otsu_threshold == pytest.approx(threshold_otsu(normalised, nbins=256))
            peak = np.unravel_index(np.argmax(up), up.shape)
            assert row.hit == int(region[peak])
            assert ndimage.sum(region) == row.region_area
            curves[(row.image_id, row.class_name)] = np.array(
                [((normalised > t) & region).sum() / max(1, ((normalised > t) | region).sum()) for t in range(255)])
        # tuned thresholds: chosen on one half, applied to the other
        for class_name, part in rows.groupby("class_name"):
            for half in (0, 1):
                tuning = part[part["half"] == half]
                scored = part[part["half"] == 1 - half]
                if tuning.empty:
                    assert scored["iou_tuned"].isna().all()
                    continue
                mean = np.mean([curves[(r.image_id, r.class_name)] for r in tuning.itertuples()], axis=0)
                level = int(np.argmax(mean))
                record = chosen[(chosen["method"] == method) & (chosen["class_name"] == class_name)
                                & (chosen["tuned_on_half"] == half)]
                assert int(record["threshold"].iloc[0]) == level
                assert (scored["tuned_threshold"] == level).all()
                for r in scored.itertuples():
                    assert r.iou_tuned == pytest.approx(curves[(r.image_id, r.class_name)][level])
        # the summary is the mean of the per-pair values
        every = metrics[(metrics["method"] == method) & (metrics["class_name"] == ALL)]
        for protocol, column in (("heatmap > 180", "iou_180"), ("Otsu", "iou_otsu"),
                                 ("tuned on the other half", "iou_tuned")):
            value = every[every["protocol"] == protocol]["value"].iloc[0]
            assert value == pytest.approx(rows[column].mean(), nan_ok=True)
        assert every[every["metric"] == "hit rate"]["value"].iloc[0] == pytest.approx(rows["hit"].mean())
    # no patient sits in both halves
    assert (masks.groupby(["method", "patient_id"])["half"].nunique() == 1).all()


@pytest.mark.slow
def test_repeatability_recomputes_from_the_seed_runs(explained: Path) -> None:
    table = pd.read_csv(explained / "evaluation" / "repeatability.csv")
    summary = pd.read_csv(explained / "evaluation" / "repeatability_summary.csv")
    document = json.loads((explained / "evaluation" / "repeatability.json").read_text())
    assert document["runs"] == ["seed0", "seed1"] and set(table["method"]) == set(METHODS)
    model = create_model("baseline", backbone="resnet10")
    from thoracic.heatmaps import create_heatmap_method

    for method in ("native", "gradcam"):
        registration = make_registration("geometric", create_heatmap_method(method, model).grid(64))
        maps = []
        for seed in (0, 1):
            with np.load(_evaluation(explained, seed) / "explain" / f"maps_{method}.npz") as data:
                maps.append({tuple(k.split("|")): upsample_heatmap(data[k].astype(np.float64), (64, 64),
                                                                 registration(data[k].shape, (64, 64)))
                             for k in data.files})
        masks = [pd.read_csv(_evaluation(explained, seed) / "masks.csv") for seed in (0, 1)]
        masks = [m[m["method"] == method].set_index(["image_id", "class_name"]) for m in masks]
        for row in table[table["method"] == method].itertuples(index=False):
            key = (row.image_id, row.class_name)
            a, b = maps[0][key], maps[1][key]
            rho = spearmanr(a.ravel(), b.ravel()).statistic if np.ptp(a) and np.ptp(b) else np.nan
            assert row.spearman == pytest.approx(rho, nan_ok=True)
            assert row.ssim == pytest.approx(structural_similarity(a, b, data_range=1.0))
            hits = [m.at[key, "hit"] for m in masks]
            assert row.hit_share == pytest.approx(np.mean(hits))
            assert row.iou_sd == pytest.approx(np.std([m.at[key, "iou_180"] for m in masks], ddof=1))
        mine = summary[summary["method"] == method].iloc[0]
        rows = table[table["method"] == method]
        assert mine["spearman_median"] == pytest.approx(rows["spearman"].dropna().median(), nan_ok=True)
        rates = [m["hit"].mean() for m in masks]
        assert mine["hit_rate_sd"] == pytest.approx(np.std(rates, ddof=1))
        assert document["verdicts"][method]["flagged"] is bool(not mine["spearman_median"] >= 0.5)
    # the edge detector's maps do not depend on the seed at all
    edges = table[table["method"] == "edges"]
    assert edges["spearman"].to_numpy() == pytest.approx(1.0)


@pytest.mark.slow
def test_report_states_each_check_in_one_line_per_method(explained: Path, tmp_path: Path) -> None:
    from thoracic.workflows.report import build_report

    for seed in (0, 1):  # the report needs an evaluation table of each run: a tiny AUC file stands for it
        evaluation = _evaluation(explained, seed)
        (evaluation / "auc_test.json").write_text(json.dumps({"per_class": {}, "n_images": 0}))
    build_report([explained], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    section = text[text.index("## Can these heatmaps be trusted?"):]
    lines = [line for line in section.splitlines() if line.startswith("| ") and "seed0" in line]
    assert len([line for line in lines if "FLAGGED" in line and "edges" in line]) == 1
    assert any("native heatmap" in line and "passes" in line for line in lines)
    assert "Repeatability across training seeds" in section


def test_a_seeded_draw_of_box_images_picks_whole_images() -> None:
    truth = pd.DataFrame({"image_id": ["a", "a", "b", "c", "d"], "class_name": ["Mass", "Mass", "Nodule", "Mass", "Mass"]})
    pairs = select_pairs(truth, 2, seed=0)
    assert pairs["image_id"].nunique() == 2 and not pairs.duplicated(["image_id", "class_name"]).any()
    assert pairs.equals(select_pairs(truth, 2, seed=0))
    assert len(select_pairs(truth, 0, seed=0)) == 4
    assert list(itertools.chain(select_pairs(truth, 10, seed=5)["image_id"])) == ["a", "b", "c", "d"]


def test_command_line_masks_only_with_a_checkpoint_file(phantom_dir: Path, phantom_cache: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``thoracic explain RUN --checkpoint FILE --checks masks``: one check, written beside the run's files; an
    unknown method and a missing checkpoint file are named errors (exit 2)."""
    from thoracic.cli import main

    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    checkpoint = run / "checkpoints" / "best.ckpt"
    code = main(["explain", str(run), "--checkpoint", str(checkpoint), "--checks", "masks", "--num-images", "2",
                 "--bootstrap", "0", "--method", "native,gradcam", "--device", "cpu", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count(" masks ") == 2 and "randomization" not in out
    document = json.loads((run / "evaluation" / "explain.json").read_text())
    assert document["methods"] == ["native", "gradcam"] and document["checks"] == ["masks"]
    assert document["n_images"] == 2 and not (run / "evaluation" / "randomization.csv").exists()
    metrics = pd.read_csv(run / "evaluation" / "mask_metrics.csv")
    assert metrics["ci_low"].isna().all()  # --bootstrap 0: no intervals
    # a changed setting recomputes the parts that depend on it, and only those
    assert main(["explain", str(run), "--checks", "masks", "--num-images", "2", "--bootstrap", "0", "--method",
                 "native", "--heatmap-thresholds", "100", "--device", "cpu", "--no-progress"]) == 0
    parts = json.loads((run / "evaluation" / "explain.json").read_text())["parts"]
    assert parts == {"computed": ["masks_native.csv"], "reused": ["maps_native.npz"]}
    assert "iou_100" in pd.read_csv(run / "evaluation" / "masks.csv").columns
    capsys.readouterr()
    assert main(["explain", str(run), "--method", "nosuch", "--device", "cpu", "--no-progress"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["explain", str(run), "--checkpoint", str(tmp_path / "none.ckpt"), "--no-progress"]) == 2
    assert "none.ckpt" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["localize", "predict", "explain"])
def test_every_method_is_selectable_on_the_command_line(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from thoracic.cli import build_parser
    from thoracic.heatmaps import HEATMAP_METHOD_NAMES

    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([command, "--help"])
    assert stopped.value.code == 0
    usage = capsys.readouterr().out
    for method in HEATMAP_METHOD_NAMES:
        assert re.search(rf"(?<![\w-]){re.escape(method)}(?![\w-])", usage), (command, method)
    if command != "predict":
        for method in HEATMAP_METHOD_NAMES:
            parsed = build_parser().parse_args([command, "somewhere", "--method", method])
            assert method in (parsed.method if isinstance(parsed.method, list) else [parsed.method])


def test_faithfulness_verdicts_separate_an_inconclusive_draw_from_no_gain() -> None:
    """Faithful: both gains above 0 with their CI; partly: one; inconclusive: neither CI excludes 0 but both
    means are above 0; not better than a random order: otherwise (the one verdict that flags a method)."""
    from thoracic.constants import NOT_FAITHFUL
    from thoracic.evaluation.trust.faithfulness import INCONCLUSIVE, faithfulness_verdicts

    def row(method: str, deletion: tuple[float, float], insertion: tuple[float, float]) -> dict:
        values = {"method": method, "class_name": ALL, "n": 18, "deletion_auc": 0.4, "insertion_auc": 0.7,
                  "random_deletion_auc": 0.6, "random_insertion_auc": 0.6, "road": 0.1}
        for name, (mean, low) in (("deletion_gain", deletion), ("insertion_gain", insertion)):
            values.update({name: mean, f"{name}_ci_low": low, f"{name}_ci_high": mean + 0.2})
        return values

    summary = pd.DataFrame([row("a", (0.2, 0.05), (0.1, 0.01)), row("b", (0.2, 0.05), (0.1, -0.02)),
                            row("c", (0.19, -0.09), (0.15, -0.02)), row("d", (0.19, -0.09), (-0.01, -0.2)),
                            {**row("e", (0.3, 0.1), (0.3, 0.1)), "class_name": "Nodule"}])
    verdicts = faithfulness_verdicts(summary)
    assert {m: v["verdict"] for m, v in verdicts.items()} == {
        "a": "faithful", "b": "partly", "c": INCONCLUSIVE, "d": NOT_FAITHFUL}
    assert verdicts["c"]["text"].startswith("inconclusive: deletion area 0.400 vs 0.600")


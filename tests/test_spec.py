"""The model spec: one place for the label space, input and heatmap conventions of a trained model, stored
in every checkpoint and export, derived for files written before it existed, and read back by the
commands; and the one Python call that does what ``thoracic predict`` does to an image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_run

from thoracic.cli import main
from thoracic.config import ConfigError, ModelConfig, load_config_by_name
from thoracic.constants import CLASS_NAMES
from thoracic.data.images import read_image
from thoracic.errors import RunError, SpecError
from thoracic.evaluation.calibration import CALIBRATION_FILE, write_calibration
from thoracic.evaluation.formatting import fmt
from thoracic.evaluation.references import load_classification_reference
from thoracic.evaluation.table1 import Table1Column, classification_table
from thoracic.geometry import heatmap_grid
from thoracic.metrics import resolve_class_names
from thoracic.models import build_model
from thoracic.prediction import abbreviate_class_names
from thoracic.spec import FeatureGrid, ModelSpec
from thoracic.training.checkpoints import DERIVED_SPEC, load_run
from thoracic.training.trainer import check_resumed_labels, resolve_num_classes, train
from thoracic.workflows.export import export_run
from thoracic.workflows.predict import open_predictor, predict_image

TEST_DATA = Path(__file__).resolve().parent / "data"
CHEXPERT = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
            "Fracture", "Support Devices")


def grid(size: int = 64) -> FeatureGrid:
    return FeatureGrid((size // 32, size // 32), (32.0, 32.0), (0.0, 0.0), (size, size))


# --------------------------------------------------------------------------------------------------
# The spec itself
# --------------------------------------------------------------------------------------------------


def test_spec_is_plain_data_and_reads_back_equal() -> None:
    spec = ModelSpec(CHEXPERT, 64, "none", grid(), "legacy", "chexpert", "zeros", ("frontal",))
    data = spec.to_dict()

    def plain(value: object) -> bool:  # what torch.load(weights_only=True) and JSON hold
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float))

    assert plain(data) and json.loads(json.dumps(data)) == data
    assert data["normalization"] == {"name": "none", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert data["heatmap_grid"] == grid().to_dict() and data["class_names"] == list(CHEXPERT)
    back = ModelSpec.from_dict(json.loads(json.dumps(data)))
    assert back == spec and back.num_classes == 14 and back.index("Pleural Effusion") == 10
    assert ModelSpec(("Mass",), 256).mean == (0.485, 0.456, 0.406)  # ImageNet's by default


@pytest.mark.parametrize("change, message", [
    ({"class_names": []}, "class_names: expected a non-empty list"),
    ({"class_names": ["Mass", "Mass"]}, "class_names: expected distinct label names.*Mass given twice"),
    ({"image_size": "64"}, "image_size: expected a positive number of pixels"),
    ({"normalization": {"name": "imagenet", "mean": [0.5, 0.5, 0.5], "std": [0.229, 0.224, 0.225]}},
     r"normalization.mean: expected \[0.485, 0.456, 0.406\]"),
    ({"normalization": {"name": "zscore"}}, "normalize: expected one of imagenet, none"),
    ({"heatmap_grid": {"shape": [4, 4], "stride": [32, 32], "offset": [0, 0], "input_size": [128, 128]}},
     r"heatmap_grid.input_size: expected the model input \[64, 64\]"),
    ({"heatmap_grid": {"shape": [2, 2]}}, "heatmap_grid: not a heatmap grid"),
    ({"dataset": "imagenet"}, "dataset: expected one of chestxray14"),
    ({"version": 99}, "version: expected 1 ... 1 .a newer thoracic wrote it"),
    ({"image_size": None}, "image_size: expected a positive number"),
])
def test_a_wrong_spec_names_the_file_and_the_field(change: dict, message: str) -> None:
    data = {**ModelSpec(("Mass", "Nodule"), 64, heatmap_grid=grid()).to_dict(), **change}
    with pytest.raises(SpecError, match=message) as caught:
        ModelSpec.from_dict(data, "run/checkpoints/best.ckpt")
    assert str(caught.value).startswith("run/checkpoints/best.ckpt: ")
    with pytest.raises(SpecError, match="class_names, image_size: expected a value"):
        ModelSpec.from_dict({"normalization": {"name": "none"}}, "x.json")


def test_column_names_are_never_guessed_from_a_count() -> None:
    assert resolve_class_names(None, 14) == tuple(f"class_{j}" for j in range(14))  # CheXpert has 14 too
    assert resolve_class_names(CHEXPERT, 14) == CHEXPERT
    labels = abbreviate_class_names(list(dict.fromkeys([*CLASS_NAMES, *CHEXPERT, "pleural effusion"])))
    assert labels["Pneumothorax"] == "Pneumoth" and labels["Pleural Effusion"] == "PleuEffu"
    assert len(set(labels.values())) == len(labels) and max(map(len, labels.values())) <= 8


# --------------------------------------------------------------------------------------------------
# The label space of a run: model outputs follow the data
# --------------------------------------------------------------------------------------------------


def test_num_classes_follows_the_data_and_a_wrong_count_names_both(phantom_dir: Path, phantom_cache: Path,
                                                                   tmp_path: Path) -> None:
    cfg = load_config_by_name("baseline", [f"data.root={phantom_dir}", "data.image_size=64", f"output_dir={tmp_path}"])
    assert cfg.model.num_classes is None and resolve_num_classes(cfg, CHEXPERT).model.num_classes == 14
    assert resolve_num_classes(cfg, ("Mass", "Nodule")).model.num_classes == 2
    assert build_model(ModelConfig(backbone="resnet10", pretrained=False)).num_classes == 14  # the models' default
    with pytest.raises(ConfigError, match=r"model.num_classes=3, but the run trains on 14 labels of chexpert "
                                          r"\(No Finding, .*\): leave model.num_classes unset .* or set it to 14"):
        resolve_num_classes(load_config_by_name("baseline", ["model.num_classes=3"]), CHEXPERT, "chexpert")
    wrong = load_config_by_name("baseline", [f"data.root={phantom_dir}", "data.image_size=64", "data.num_workers=0",
                                             "model.backbone=resnet10", "--no-model.pretrained",
                                             "model.num_classes=5", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="model.num_classes=5, but the run trains on 14 labels of chestxray14"):
        train(wrong)
    assert not any(tmp_path.iterdir())  # refused before the run folder was made


def test_a_run_on_chosen_labels_has_one_output_per_label(phantom_dir: Path, phantom_cache: Path,
                                                         tmp_path: Path) -> None:
    cfg = load_config_by_name("baseline", [
        f"data.root={phantom_dir}", "data.image_size=64", "data.num_workers=0", "data.classes=[Effusion, Mass]",
        "model.backbone=resnet10", "--no-model.pretrained", "train.max_epochs=1", "train.batch_size=16",
        "train.limit_train_batches=1", "train.limit_val_batches=1", "--no-train.progress_bar",
        "train.accelerator=cpu", "train.devices=1", f"output_dir={tmp_path}", "run_name=two"])
    run = train(cfg)
    loaded = load_run(run)
    assert loaded.class_names == ("Effusion", "Mass") and loaded.config.model.num_classes == 2
    assert loaded.model(torch.zeros(1, 3, 64, 64)).logits.shape == (1, 2)
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert len(checkpoint["hyper_parameters"]["class_frequencies"]) == 2
    info = json.loads((run / "run_info.json").read_text())
    assert info["class_names"] == ["Effusion", "Mass"] and list(info["box_rows"]) == ["Effusion", "Mass"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["class_names"] == ["Effusion", "Mass"]
    assert sorted(k for k in summary["metrics"] if k.startswith("val_auc/")) == ["val_auc/Effusion", "val_auc/Mass"]


def test_a_resumed_run_keeps_its_labels() -> None:
    stored = {"hyper_parameters": {"spec": ModelSpec(("Mass", "Nodule"), 64).to_dict()}}
    check_resumed_labels(stored, ("Mass", "Nodule"), Path("last.ckpt"))
    with pytest.raises(RunError, match="trained on the labels Mass, Nodule, but the data now has Nodule, Mass"):
        check_resumed_labels(stored, ("Nodule", "Mass"), Path("last.ckpt"))
    check_resumed_labels({"hyper_parameters": {}}, CLASS_NAMES, Path("old.ckpt"))  # before specs: ChestX-ray14's


# --------------------------------------------------------------------------------------------------
# Files written before specs existed
# --------------------------------------------------------------------------------------------------


def test_a_checkpoint_written_before_specs_opens_with_a_derived_spec(tmp_path: Path) -> None:
    """make_run writes the old format: hyper_parameters hold the config and class_names, no spec."""
    run = make_run(tmp_path / "old", Path("unused"), "attention_gated", 0)
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert "spec" not in checkpoint["hyper_parameters"]
    loaded = load_run(run)
    spec = loaded.spec
    assert spec.derived == DERIVED_SPEC and loaded.class_names == CLASS_NAMES
    assert spec.image_size == 64 and spec.normalize == "imagenet" and spec.dataset == "chestxray14"
    assert spec.heatmap_grid == heatmap_grid(loaded.model, 64)  # traced from the model (attention-gated: 8 px)
    assert spec.heatmap_grid.stride == (8.0, 8.0)
    # an old checkpoint without class names: ChestX-ray14's; one with other names: its own
    del checkpoint["hyper_parameters"]["class_names"]
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    assert load_run(run).class_names == CLASS_NAMES
    checkpoint["hyper_parameters"]["class_names"] = list(reversed(CLASS_NAMES))
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    assert load_run(run).class_names == tuple(reversed(CLASS_NAMES))
    checkpoint["hyper_parameters"]["class_names"] = ["Mass", "Nodule"]
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    with pytest.raises(RunError, match="its 2 class names do not fit the model's 14 outputs"):
        load_run(run)
    # the commands read an old checkpoint: predict names its classes from the derived spec
    checkpoint["hyper_parameters"]["class_names"] = list(CLASS_NAMES)
    torch.save(checkpoint, run / "checkpoints" / "best.ckpt")
    image = sorted(TEST_DATA.glob("*.png"))[0]
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--no-progress"]) == 0
    document = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert document["class_names"] == list(CLASS_NAMES) == list(document["images"][0]["probabilities"])
    assert document["spec"] == {**spec.to_dict(), "heatmap_grid": spec.heatmap_grid.to_dict()}


def test_table1_shows_published_columns_only_beside_chestxray14() -> None:
    def auc(names: tuple[str, ...], dataset: str | None) -> dict:
        return {"class_names": list(names), "dataset": dataset, "mean_auc": 0.7, "n_images": 50,
                "per_class": {n: {"auc": 0.7, "n_positive": 12, "n_negative": 38} for n in names}}

    nih = classification_table([Table1Column("run", "baseline", [auc(("Mass", "Nodule", "Hernia"), None)])])
    assert list(nih.index) == ["Mass", "Nodule", "Hernia", "Mean"]
    published = load_classification_reference()
    assert nih.loc["Mass", "Wang 2017 ResNet-50"] == fmt(published.loc["Mass", "wang2017_resnet50"])
    assert nih.loc["Mean", "Wang 2017 ResNet-50"] == fmt(published.loc[["Mass", "Nodule", "Hernia"],
                                                                       "wang2017_resnet50"].mean())
    other = classification_table([Table1Column("run", "baseline", [auc(CHEXPERT, "chexpert")])])
    assert list(other.index) == [*CHEXPERT, "Mean"] and "Wang 2017 ResNet-50" not in other.columns
    assert list(other.columns) == ["positives", "run"]


# --------------------------------------------------------------------------------------------------
# One call does what `thoracic predict` does to one image
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A run with operating points and a calibration of its checkpoint, and its ONNX export."""
    root = tmp_path_factory.mktemp("api")
    run = make_run(root / "run", Path("unused"), "baseline", 3)
    rng = np.random.default_rng(0)
    evaluation = run / "evaluation"
    evaluation.mkdir()
    (evaluation / "operating_points.json").write_text(json.dumps(
        {"method": "youden", "split": "val", "thresholds": {c: float(rng.uniform(0.3, 0.6)) for c in CLASS_NAMES}}))
    write_calibration(evaluation / CALIBRATION_FILE, rng.uniform(0.5, 2.0, 14), "per_class",
                      run / "checkpoints" / "best.ckpt", n_fit=40, class_names=CLASS_NAMES)
    return {"run": run, "onnx": export_run(run, "onnx").path}


@pytest.mark.parametrize("source", ["run", "onnx"])
def test_predict_image_returns_the_numbers_of_the_command(calibrated_run: dict, source: str, tmp_path: Path) -> None:
    model = calibrated_run[source]
    image = sorted(TEST_DATA.glob("*.png"))[0]
    assert main(["predict", str(model), str(image), "--out", str(tmp_path / "cli"), "--device", "cpu",
                 "--no-progress"]) == 0
    document = json.loads((tmp_path / "cli" / "predictions.json").read_text())
    entry = document["images"][0]
    assert document["calibration"]["applied"] and document["threshold_source"] == "operating_points"

    result = predict_image(model, image, device="cpu")
    assert result.probabilities == entry["probabilities"]  # the same floats, not merely close
    assert result.thresholds == document["thresholds"] and result.threshold_source == document["threshold_source"]
    assert result.to_dict()["boxes"] == entry["boxes"] and entry["boxes"]  # classes above threshold got boxes
    assert result.to_dict()["above_threshold"] == entry["above_threshold"]
    # a decoded array, and one predictor for many images, give the same numbers
    predictor = open_predictor(model, device="cpu")
    from_array = predict_image(predictor, read_image(image), device="cpu")
    assert from_array.probabilities == entry["probabilities"] and from_array.to_dict()["boxes"] == entry["boxes"]
    assert predictor.class_names == CLASS_NAMES and predictor.document([result])["images"][0] == {
        **entry, "path": str(image), "figure": None}  # (the command also drew a figure)
    with pytest.raises(Exception, match="expected a 2-D uint8 grayscale image"):
        predictor.predict(np.zeros((8, 8), dtype=np.float32))


def test_an_export_carries_the_spec_of_its_run(calibrated_run: dict, tmp_path: Path) -> None:
    from thoracic.runtime import load_exported

    exported = load_exported(calibrated_run["onnx"])
    assert exported.spec == load_run(calibrated_run["run"]).spec and not exported.spec.derived
    beside = json.loads(Path(f"{calibrated_run['onnx']}.json").read_text())
    assert ModelSpec.from_dict(beside["spec"]) == exported.spec
    broken = tmp_path / "broken.onnx"
    shutil.copy(calibrated_run["onnx"], broken)
    import onnx

    proto = onnx.load(str(broken))
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}["thoracic"])
    for field, value, message in (("image_size", 0, "image_size: expected a positive number of pixels"),
                                  ("class_names", ["Mass"], "its spec names 1 class.*outputs 14")):
        onnx.helper.set_model_props(proto, {"thoracic": json.dumps(
            {**metadata, "spec": {**metadata["spec"], field: value}})})
        onnx.save(proto, str(broken))
        with pytest.raises(SpecError, match=message) as caught:
            load_exported(broken)
        assert str(caught.value).startswith(str(broken)) and caught.value.exit_code == 2

"""`thoracic export`: ONNX (onnxruntime) and TorchScript (torch.jit) reproduce the PyTorch model of all
three paper models (logits and native class maps, any batch size), carry their metadata, and
`thoracic predict --model FILE` runs them without Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from helpers import make_run

from thoracic.cli import main
from thoracic.constants import CLASS_NAMES
from thoracic.errors import ThoracicError
from thoracic.geometry import FeatureGrid, Registration, heatmap_grid
from thoracic.workflows.predict import exported_predictor
from thoracic.workflows.export import export_run
from thoracic.training.checkpoints import load_run

MODELS = ("baseline", "space_attention", "attention_gated")
SIZE = 64
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Each model as an untrained resnet10 run at 64 px, exported to both formats; the baseline run
    carries operating points, so its export must hold them."""
    root = tmp_path_factory.mktemp("export")
    files: dict[str, dict[str, Path]] = {}
    for k, name in enumerate(MODELS):
        run = make_run(root / name, Path("unused"), name, seed=k, image_size=SIZE)
        if name == "baseline":
            (run / "evaluation").mkdir()
            (run / "evaluation" / "operating_points.json").write_text(json.dumps(
                {"method": "youden", "split": "val", "thresholds": {c: 0.3 for c in CLASS_NAMES}}))
        files[name] = {"run": run}
        for fmt in ("onnx", "torchscript"):
            files[name][fmt] = export_run(run, fmt).path
    return files


def reference(run: Path, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    model = load_run(run).model.eval()
    with torch.no_grad():
        output = model(images, return_maps=True)
    return output.logits.numpy(), output.class_maps.numpy()


@pytest.mark.parametrize("name", MODELS)
def test_onnx_and_torchscript_reproduce_pytorch(exported: dict, name: str) -> None:
    files = exported[name]
    session = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["logits", "class_maps"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated upstream
        scripted = torch.jit.load(str(files["torchscript"]))
    for batch in (1, 5):  # neither is the traced batch size (2): the batch dimension is dynamic
        images = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        logits, maps = reference(files["run"], images)
        assert logits.shape == (batch, 14) and maps.shape[:2] == (batch, 14)
        onnx_logits, onnx_maps = session.run(None, {"image": images.numpy()})
        with torch.no_grad():
            ts_logits, ts_maps = (t.numpy() for t in scripted(images))
        for got_logits, got_maps in ((onnx_logits, onnx_maps), (ts_logits, ts_maps)):
            assert got_maps.shape == maps.shape
            assert np.max(np.abs(got_logits - logits)) <= 1e-4
            assert np.max(np.abs(got_maps - maps)) <= 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_metadata_inside_the_files_and_beside_them(exported: dict, name: str) -> None:
    files = exported[name]
    proto = onnx.load(str(files["onnx"]))
    inside = json.loads({p.key: p.value for p in proto.metadata_props}["thoracic"])
    beside = json.loads(files["onnx"].with_name(files["onnx"].name + ".json").read_text())
    with zipfile.ZipFile(files["torchscript"]) as archive:
        member = next(n for n in archive.namelist() if n.endswith("extra/thoracic.json"))
        scripted = json.loads(archive.read(member))
    for info in (inside, beside, scripted):
        assert info["class_names"] == list(CLASS_NAMES)
        assert info["image_size"] == SIZE and info["input"]["shape"] == ["batch", 3, SIZE, SIZE]
        assert info["model"]["name"] == name
        assert info["preprocessing"]["mean"] == [0.485, 0.456, 0.406] and info["preprocessing"]["scale"] == "x / 255"
        geometry = info["heatmap_geometry"]
        h, w = geometry["shape"]
        assert info["outputs"]["class_maps"] == ["batch", 14, h, w]
        assert geometry["stride"] == [SIZE / h, SIZE / w]
        assert geometry["offset"] == [0.0, 0.0]  # padded stride-2 ResNets: receptive-field centres
        # the grid's one JSON form, the same keys as a registration's description in localization files
        grid = FeatureGrid.from_dict(geometry)
        assert {k: v for k, v in geometry.items() if k != "convention"} == grid.to_dict()
        assert Registration("geometric", grid).describe() == {"registration": "geometric", **grid.to_dict()}
        assert max(info["verification"]["max_abs_diff"].values()) <= 1e-4
    # stride 32 for the final-stage maps, 8 for the attention-gated network's layer2 maps
    assert inside["heatmap_geometry"]["stride"][0] == (8.0 if name == "attention_gated" else 32.0)
    if name == "baseline":
        assert inside["operating_points"]["thresholds"]["Hernia"] == 0.3
    else:
        assert inside["operating_points"] is None and "0.5" in inside["operating_points_note"]
    assert inside["calibration"] is None


def test_the_exported_grid_is_read_back_also_under_earlier_key_names(exported: dict, tmp_path: Path) -> None:
    path = exported["attention_gated"]["onnx"]
    metadata = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["thoracic"])
    grid = heatmap_grid(load_run(exported["attention_gated"]["run"]).model, SIZE)
    assert exported_predictor(path)[0].registration.grid == grid
    stored = metadata["heatmap_geometry"]
    earlier = {"map_size": stored["shape"], "input_size": stored["input_size"], "stride": stored["stride"],
               "cell_centre_offset": stored["offset"], "convention": stored["convention"]}
    broken = {key: value for key, value in stored.items() if key != "stride"}
    for name, geometry in (("earlier", earlier), ("broken", broken)):
        proto = onnx.load(str(path))
        before_specs = {key: value for key, value in metadata.items() if key != "spec"}  # an earlier export
        onnx.helper.set_model_props(proto, {"thoracic": json.dumps({**before_specs, "heatmap_geometry": geometry})})
        onnx.save(proto, str(tmp_path / f"{name}.onnx"))
    predictor = exported_predictor(tmp_path / "earlier.onnx")[0]
    assert predictor.registration.grid == grid and predictor.class_names == tuple(metadata["class_names"])
    assert predictor.model.exported.spec.derived  # derived from the fields earlier exports wrote
    with pytest.raises(ThoracicError, match="heatmap_geometry.*expected the keys shape, stride, offset, input_size"):
        exported_predictor(tmp_path / "broken.onnx")


def test_predict_with_an_exported_model_runs_without_lightning(exported: dict, tmp_path: Path) -> None:
    files = exported["attention_gated"]
    image = sorted((REPO / "tests" / "data").glob("*.png"))[0]
    script = (
        "import json, sys\n"
        "from thoracic.cli import main\n"
        f"code = main(['predict', {str(image)!r}, '--model', {str(files['onnx'])!r}, '--out', {str(tmp_path / 'x')!r},"
        " '--threshold', '0', '--no-progress'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'lightning_fabric',"
        " 'torchvision') or m.startswith(('thoracic.models', 'thoracic.training', 'thoracic.data.dataset')))\n"
        "print('MODULES', json.dumps(loaded))\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    modules_line = next(line for line in done.stdout.splitlines() if line.startswith("MODULES"))
    assert json.loads(modules_line.split(" ", 1)[1]) == []
    assert "no calibration in" in done.stderr
    # the same probabilities and boxes (every class: --threshold 0) as the PyTorch checkpoint, and from the
    # TorchScript file: preprocessing, heatmap normalisation and box extraction are shared
    results = {"onnx": json.loads((tmp_path / "x" / "predictions.json").read_text())["images"][0]}
    for source, flag, path in (("checkpoint", "--checkpoint", files["run"]),
                               ("torchscript", "--model", files["torchscript"])):
        assert main(["predict", str(image), flag, str(path), "--out", str(tmp_path / source), "--threshold", "0",
                     "--no-progress"]) == 0
        results[source] = json.loads((tmp_path / source / "predictions.json").read_text())["images"][0]
    for source in ("onnx", "torchscript"):
        np.testing.assert_allclose([results[source]["probabilities"][c] for c in CLASS_NAMES],
                                   [results["checkpoint"]["probabilities"][c] for c in CLASS_NAMES], atol=1e-5)
        assert results[source]["boxes"] == results["checkpoint"]["boxes"]
    assert len(results["checkpoint"]["boxes"]) == 14


def test_export_and_predict_errors(exported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = sorted((REPO / "tests" / "data").glob("*.png"))[0]
    assert main(["predict", str(image), "--model", str(exported["baseline"]["onnx"]), "--method", "gradcam",
                 "--out", str(tmp_path / "g")]) == 2
    assert "Grad-CAM needs the PyTorch model" in capsys.readouterr().err
    plain = onnx.load(str(exported["baseline"]["onnx"]))  # a valid model without thoracic's metadata
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert main(["predict", str(image), "--model", str(tmp_path / "plain.onnx"), "--out", str(tmp_path / "h")]) == 2
    assert "no thoracic metadata" in capsys.readouterr().err
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    assert main(["predict", str(image), "--model", str(tmp_path / "broken.onnx"), "--out", str(tmp_path / "i")]) == 2
    assert "onnxruntime cannot load it" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing_run")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # the old spellings --checkpoint RUN and --model FILE are exclusive
    assert main(["predict", str(image), "--model", "a.onnx", "--checkpoint", "run"]) == 2
    assert "give one model" in capsys.readouterr().err

"""One vocabulary: new names, old spellings with a warning, no abbreviations, overrides anywhere, --help
without torch, the Python API's keywords and defaults equal to the commands', every doc line parses."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from thoracic.cli import COMMANDS, build_parser, main, parse_command_line
from thoracic.commands._options import is_override, split_overrides
from thoracic.errors import DataError, RunError, ThoracicError

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    return parse_command_line(build_parser(), argv)


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


# --------------------------------------------------------------------------------------------------
# Renamed options: the new name works silently, the old one works and names the new one
# --------------------------------------------------------------------------------------------------

#: (command and its required arguments, new option, old option, value, attribute, parsed value)
RENAMES = [
    (["synth", "--out", "p"], "--num-images", "--images", "12", "num_images", 12),
    (["synth", "--out", "p"], "--image-size", "--size", "32", "image_size", 32),
    (["synth", "--out", "p"], "--num-workers", "--workers", "2", "num_workers", 2),
    (["prepare", "--data", "d"], "--image-size", "--size", "48", "image_size", 48),
    (["prepare", "--data", "d"], "--num-workers", "--workers", "3", "num_workers", 3),
    (["subset", "--out", "o", "--image-folder", "i"], "--data", "--source", "full", "data", "full"),
    (["subset", "--out", "o", "--data", "full"], "--image-folder", "--images", "i", "image_folder", "i"),
    (["evaluate", "RUN"], "--num-workers", "--workers", "4", "num_workers", 4),
    (["localize", "RUN"], "--num-workers", "--workers", "4", "num_workers", 4),
    (["localize", "RUN"], "--num-examples", "--examples", "3", "num_examples", 3),
    (["lr-sweep", "--config", "baseline"], "--out", "--folder", "sweep", "out", "sweep"),
    (["experiment", "--config", "baseline"], "--out", "--folder", "exp", "out", "exp"),
    (["train", "--config", "baseline"], "--num-devices", "--devices", "4", "num_devices", "4"),
    (["lr-sweep", "--config", "baseline"], "--num-devices", "--devices", "2", "num_devices", "2"),
    (["experiment", "--config", "baseline"], "--num-devices", "--devices", "2", "num_devices", "2"),
    (["demo"], "--num-images", "--images", "50", "num_images", 50),
    (["demo"], "--image-size", "--size", "48", "image_size", 48),
    (["demo"], "--num-workers", "--workers", "1", "num_workers", 1),
]


@pytest.mark.parametrize("command, new, old, value, attribute, expected", RENAMES,
                         ids=[f"{r[0][0]}{r[1]}" for r in RENAMES])
def test_new_name_works_and_old_spelling_warns_naming_it(command, new, old, value, attribute, expected,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert getattr(parse([*command, new, value]), attribute) == expected
    assert capsys.readouterr().err == ""
    assert getattr(parse([*command, old, value]), attribute) == expected
    err = capsys.readouterr().err
    assert err == f"warning: {old} is deprecated: use {new} ({old} will be removed in the next release)\n"
    # the old spelling is hidden from --help, the new one listed
    text = subparser(command[0]).format_help()
    assert new in text and old not in text.replace(new, "")


def test_heatmap_thresholds_and_required_options_through_old_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse(["localize", "RUN", "--heatmap-thresholds", "60", "120"]).heatmap_thresholds == [60.0, 120.0]
    assert parse(["localize", "RUN", "--thresholds", "100"]).heatmap_thresholds == [100.0]
    assert "--thresholds is deprecated: use --heatmap-thresholds" in capsys.readouterr().err
    # a required option given by its old spelling counts
    args = parse(["subset", "--source", "full", "--images", "i", "--out", "o"])
    assert (args.data, args.image_folder) == ("full", "i")


def test_options_whose_replacement_is_not_a_rename_say_what_replaces_them(capsys) -> None:
    from thoracic.commands.experiment import evaluation_device
    from thoracic.commands.train import collect_overrides

    args = parse(["train", "--config", "baseline", "--output-dir", "elsewhere"])
    assert collect_overrides(args)["output_dir"] == "elsewhere"
    assert "--output-dir is deprecated: use the override output_dir=FOLDER" in capsys.readouterr().err
    args = parse(["train", "--resume", "runs/a"])
    assert args.resume == "runs/a" and "use thoracic train RUN" in capsys.readouterr().err
    args = parse(["experiment", "--config", "baseline", "--eval-device", "cpu"])
    assert evaluation_device(args.device, args.eval_device) == "cpu"
    assert "--eval-device is deprecated: use --device" in capsys.readouterr().err
    assert evaluation_device("cuda:1,2") == "cuda:1" and evaluation_device(None) is None


def test_training_options_stand_for_their_config_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from thoracic.commands.train import collect_overrides

    for command in (["train"], ["lr-sweep"], ["experiment"]):
        args = parse([*command, "--config", "baseline", "--data", "d", "--cache", "c", "--image-size", "64",
                      "--num-workers", "2", "--num-nodes", "2", "--precision", "bf16-mixed", "optim.lr=0.001"])
        assert collect_overrides(args) == {"optim.lr": 0.001, "data.root": "d", "data.cache": "c",
                                           "data.image_size": 64, "data.num_workers": 2, "train.num_nodes": 2,
                                           "train.precision": "bf16-mixed"}
        no_bars = parse([*command, "--config", "baseline", "--no-progress"])
        assert collect_overrides(no_bars) == {"train.progress_bar": False}  # the same words as every command
    assert main(["train", "--config", "baseline", "--out", "runs/x", "--run-name", "y"]) == 2
    assert "give --out or --run-name, not both" in capsys.readouterr().err
    assert main(["train", "baseline"]) == 2  # a config name where a run folder goes: say how to start a run
    assert "a new run is `thoracic train --config baseline`" in capsys.readouterr().err


def test_the_training_device_options() -> None:
    from thoracic.commands.train import device_overrides

    assert device_overrides(None) == {} and device_overrides("auto") == {}
    assert device_overrides("cpu") == {"train.accelerator": "cpu"}
    assert device_overrides("cuda", "4") == {"train.accelerator": "gpu", "train.devices": "4"}
    assert device_overrides("cuda:1") == {"train.accelerator": "gpu", "train.devices": "1,"}
    assert device_overrides("cuda:0,2") == {"train.accelerator": "gpu", "train.devices": "0,2"}
    with pytest.raises(ThoracicError, match="--device: expected auto, cpu, cuda or cuda:N"):
        device_overrides("gpu0")
    with pytest.raises(ThoracicError, match="names the GPUs"):
        device_overrides("cuda:1", "2")
    from thoracic.config import load_config_by_name
    from thoracic.training.factory import parse_devices

    args = parse(["train", "--config", "baseline", "--device", "cuda:1"])
    from thoracic.commands.train import collect_overrides

    config = load_config_by_name("baseline", collect_overrides(args))
    assert config.train.accelerator == "gpu" and parse_devices(config.train.devices) == [1]


# --------------------------------------------------------------------------------------------------
# No abbreviations; overrides anywhere on the line
# --------------------------------------------------------------------------------------------------


def test_no_prefix_matching_anywhere(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.allow_abbrev is False
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(COMMANDS)
    assert all(command.allow_abbrev is False for command in commands.values())
    # --threshold is predict's probability, never localize's --heatmap-thresholds
    with pytest.raises(SystemExit) as exit_info:
        parse(["localize", "RUN", "--threshold", "100"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --threshold 100" in capsys.readouterr().err
    for argv in (["--vers"], ["evaluate", "RUN", "--boot", "10"], ["predict", "R", "x.png", "--thresh", "0.3"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    # experiment has --seeds only: --seed is the config key `seed` (an override), never --seeds
    assert main(["experiment", "--config", "baseline", "--seed", "1"]) == 2
    assert "override '1': expected key=value" in capsys.readouterr().err


def test_overrides_anywhere_on_the_line() -> None:
    args = parse(["experiment", "--config", "baseline", "--seeds", "0", "1", "2", "data.root=/data/nih",
                  "--out", "runs/x", "--no-model.pretrained", "--localize", "--model.freeze_backbone"])
    assert args.seeds == [0, 1, 2] and args.out == "runs/x" and args.localize is True
    assert args.overrides == ["data.root=/data/nih", "--no-model.pretrained", "--model.freeze_backbone"]
    args = parse(["lr-sweep", "--lrs", "1e-3", "1e-4", "optim.weight_decay=0.1", "--config", "baseline", "seed=3"])
    assert args.lrs == [1e-3, 1e-4] and args.overrides == ["optim.weight_decay=0.1", "seed=3"]
    # an option's single value stays the option's; a run folder stays positional; after -- nothing moves
    args = parse(["train", "runs/a", "train.max_epochs=40", "--run-name", "lr=3e-4"])
    assert args.run == "runs/a" and args.run_name == "lr=3e-4" and args.overrides == ["train.max_epochs=40"]
    parser = subparser("train")
    assert split_overrides(parser, ["--", "a.b=1"]) == (["--", "a.b=1"], [])
    assert is_override("data/x=1", parser) is False and is_override("--config", parser) is False


def test_the_readme_experiment_line_reaches_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import thoracic.workflows.experiment as experiment

    seen = {}

    def fake(cfg, seeds, **kwargs):
        seen.update(cfg=cfg, seeds=seeds, **kwargs)
        raise ThoracicError("stop here")

    monkeypatch.setattr(experiment, "run_experiment", fake)
    assert main(["experiment", "--config", "baseline", "--seeds", "0", "1", "2", f"data.root={tmp_path}",
                 "--out", str(tmp_path / "exp"), "--localize", "--device", "cpu"]) == 2
    assert "stop here" in capsys.readouterr().err
    assert seen["cfg"].data.root == str(tmp_path) and list(seen["seeds"]) == [0, 1, 2]
    assert seen["out"] == str(tmp_path / "exp") and seen["localize"] is True and seen["device"] == "cpu"
    assert seen["cfg"].train.accelerator == "cpu"


# --------------------------------------------------------------------------------------------------
# --help without torch
# --------------------------------------------------------------------------------------------------

HELP_SCRIPT = """
import contextlib, io, json, sys
from thoracic.cli import COMMANDS, main
loaded = {}
for command in ["", *COMMANDS]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([command, "--help"] if command else ["--help"])
        except SystemExit:
            pass
    assert "usage: thoracic" in out.getvalue(), command
    loaded[command or "thoracic"] = sorted(m for m in ("torch", "lightning", "pandas", "matplotlib") if m in sys.modules)
print(json.dumps(loaded))
"""


def test_help_imports_no_torch() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=120, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded) == {"thoracic", *COMMANDS}
    assert all(modules == [] for modules in loaded.values()), loaded


# --------------------------------------------------------------------------------------------------
# --checkpoint best|last|PATH and predict's RUN first
# --------------------------------------------------------------------------------------------------


def test_checkpoint_is_best_last_or_a_path_everywhere(tmp_path: Path) -> None:
    from thoracic.training.checkpoints import find_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best", "last", "epoch3"):
        (run / "checkpoints" / f"{name}.ckpt").write_bytes(b"x")
    assert find_checkpoint(run) == run / "checkpoints" / "best.ckpt"
    assert find_checkpoint(run, "last") == run / "checkpoints" / "last.ckpt"
    assert find_checkpoint(run, "checkpoints/epoch3.ckpt") == run / "checkpoints" / "epoch3.ckpt"  # from RUN
    assert find_checkpoint(run, str(run / "checkpoints" / "epoch3.ckpt")) == run / "checkpoints" / "epoch3.ckpt"
    with pytest.raises(RunError, match="--checkpoint nope.ckpt: no such file"):
        find_checkpoint(run, "nope.ckpt")
    with pytest.raises(RunError, match="is a checkpoint file already"):
        find_checkpoint(run / "checkpoints" / "best.ckpt", "last")
    for command in (["evaluate", "R"], ["localize", "R"], ["export", "R"], ["predict", "R", "x.png"]):
        assert parse(command).checkpoint == "best"
        assert parse([*command, "--checkpoint", "last"]).checkpoint == "last"
        assert parse([*command, "--checkpoint", "a/b.ckpt"]).checkpoint == "a/b.ckpt"


def test_predict_takes_the_run_first_and_understands_the_old_form(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from thoracic.commands.predict import model_and_images

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    scans = tmp_path / "scans"
    scans.mkdir()
    assert model_and_images(parse(["predict", str(run), str(scans), "x.png", "--checkpoint", "last"])) == (
        str(run), [str(scans), "x.png"], "last")
    assert model_and_images(parse(["predict", "m.onnx", "x.png"])) == ("m.onnx", ["x.png"], "best")
    assert capsys.readouterr().err == ""
    # the old forms: images first, the run in --checkpoint, an exported model in --model
    assert model_and_images(parse(["predict", str(scans), "x.png", "--checkpoint", str(run)])) == (
        str(run), [str(scans), "x.png"], "best")
    assert "use thoracic predict RUN IMAGE..." in capsys.readouterr().err
    assert model_and_images(parse(["predict", "x.png", "--model", "m.onnx"])) == ("m.onnx", ["x.png"], "best")
    assert "--model is deprecated: use thoracic predict FILE IMAGE..." in capsys.readouterr().err
    with pytest.raises(ThoracicError, match="no IMAGE given after RUN"):
        model_and_images(parse(["predict", str(run)]))


# --------------------------------------------------------------------------------------------------
# The Python API: the commands' keyword names, old names with a FutureWarning
# --------------------------------------------------------------------------------------------------


def test_api_keywords_are_the_commands_names() -> None:
    from thoracic.workflows.evaluate import evaluate_run
    from thoracic.workflows.experiment import run_experiment
    from thoracic.workflows.export import export_run
    from thoracic.workflows.localize import localize_run
    from thoracic.workflows.predict import predict_images
    from thoracic.workflows.sweep import lr_sweep

    expected = {
        evaluate_run: {"run", "checkpoint", "data", "cache", "bootstrap", "num_workers", "device", "batch_size"},
        localize_run: {"run", "checkpoint", "data", "cache", "heatmap_thresholds", "num_workers", "num_examples",
                       "device", "method", "registration"},
        predict_images: {"run", "images", "checkpoint", "out", "threshold", "device", "method", "registration"},
        export_run: {"run", "format", "out", "checkpoint", "opset"},
        run_experiment: {"out", "bootstrap", "device", "seeds", "localize"},
        lr_sweep: {"out", "lrs", "epochs"},
    }
    for function, names in expected.items():
        assert names <= set(inspect.signature(function).parameters), function.__name__


def _old_keyword_calls(tmp_path: Path):
    from thoracic.config import Config
    from thoracic.data.cache_writer import prepare_cache
    from thoracic.data.synth import generate_phantom_dataset
    from thoracic.evaluation.classification import compute_auc
    from thoracic.evaluation.subgroups import evaluate_subgroups
    from thoracic.training.checkpoints import find_checkpoint, load_run
    from thoracic.workflows.common import open_run
    from thoracic.workflows.evaluate import evaluate_run
    from thoracic.workflows.experiment import run_experiment
    from thoracic.workflows.export import export_run
    from thoracic.workflows.localize import localize_run
    from thoracic.workflows.sweep import lr_sweep

    missing = tmp_path / "missing"
    return [
        (lambda: evaluate_run(missing, which="last"), "evaluate_run(checkpoint=...)", RunError),
        (lambda: evaluate_run(missing, n_bootstrap=5), "evaluate_run(bootstrap=...)", RunError),
        (lambda: evaluate_run(missing, data_root=missing), "evaluate_run(data=...)", RunError),
        (lambda: localize_run(missing, thresholds=[60]), "localize_run(heatmap_thresholds=...)", RunError),
        (lambda: localize_run(missing, n_examples=2), "localize_run(num_examples=...)", RunError),
        (lambda: open_run(missing, which="best"), "open_run(checkpoint=...)", RunError),
        (lambda: load_run(missing, which="best"), "load_run(checkpoint=...)", RunError),
        (lambda: find_checkpoint(missing, which="last"), "find_checkpoint(checkpoint=...)", RunError),
        (lambda: export_run(missing, fmt="onnx"), "export_run(format=...)", RunError),
        (lambda: lr_sweep(Config(), [], folder=missing), "lr_sweep(out=...)", ThoracicError),
        (lambda: run_experiment(Config(), [], folder=missing), "run_experiment(out=...)", ThoracicError),
        (lambda: run_experiment(Config(), [], eval_device="cpu"), "run_experiment(device=...)", ThoracicError),
        (lambda: prepare_cache(missing, 32, workers=1), "prepare_cache(num_workers=...)", ThoracicError),
        (lambda: generate_phantom_dataset(missing, 0, 32, workers=1), "generate_phantom_dataset(num_workers=...)",
         DataError),
        (lambda: compute_auc(np.eye(4)[:, :2], np.eye(4)[:, :2], n_bootstrap=-1), "compute_auc(bootstrap=...)", None),
        (lambda: evaluate_subgroups(np.zeros((0, 1)), np.zeros((0, 1)), [], pd.DataFrame(), n_bootstrap=5),
         "evaluate_subgroups(bootstrap=...)", DataError),
    ]


def test_old_api_keywords_warn_naming_the_new_one(tmp_path: Path) -> None:
    for call, new, error in _old_keyword_calls(tmp_path):
        with pytest.warns(FutureWarning, match=re.escape(f"use {new}")), \
                (pytest.raises(error) if error else contextlib.nullcontext()):
            call()
    from thoracic.workflows.evaluate import evaluate_run

    with pytest.raises(ThoracicError, match=r"give checkpoint=\.\.\. only"):
        evaluate_run(tmp_path, which="last", checkpoint="best")


def test_old_predict_images_calls_still_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from thoracic.workflows import predict as workflow

    seen = []

    def refuse(path, device):
        raise DataError(f"not loaded: {path}")

    monkeypatch.setattr(workflow, "collect_image_paths", lambda images, **options: seen.append(images) or [])
    monkeypatch.setattr(workflow, "load_exported", refuse)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new call: no warning
        with pytest.raises(DataError, match="m.onnx"):
            workflow.predict_images("m.onnx", ["a.png"], device="cpu")
    for call in (lambda: workflow.predict_images(["a.png"], None, model="m.onnx", device="cpu"),
                 lambda: workflow.predict_images(inputs=["a.png"], model="m.onnx", device="cpu"),
                 lambda: workflow.predict_images(["a.png"], "m.onnx", out_dir=tmp_path, device="cpu")):
        with pytest.warns(FutureWarning) as caught, pytest.raises(DataError, match="m.onnx"):
            call()
        assert any("use predict_images(run, images" in str(warning.message) for warning in caught)
    assert seen == [["a.png"]] * 4


# --------------------------------------------------------------------------------------------------
# The API's defaults are the commands': the geometric registration
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone, output_stride, input_size", [("resnet10", 32, 256), ("resnet18", 16, 256),
                                                                  ("resnet34", 8, 256)])
def test_box_extraction_defaults_to_the_commands_registration(backbone: str, output_stride: int,
                                                              input_size: int) -> None:
    from thoracic.geometry import make_registration
    from thoracic.heatmaps import NativeHeatmap
    from thoracic.heatmaps.boxes import (
        boxes_from_heatmap,
        extract_boxes,
        heatmap_peak,
        legacy_cell_centres,
        upsample_heatmap,
    )
    from thoracic.models import create_model

    model = create_model("baseline", backbone=backbone, pretrained=False, output_stride=output_stride).eval()
    grid = NativeHeatmap(model).grid(input_size)
    registration = make_registration("geometric", grid)  # what localize and predict use
    heatmap = np.random.default_rng(output_stride).random(grid.shape)
    for size in ((1024, 1024), (900, 700)):
        centres = registration(heatmap.shape, size)
        np.testing.assert_array_equal(boxes_from_heatmap(heatmap, 120, size).boxes,
                                      boxes_from_heatmap(heatmap, 120, size, cell_centres=centres).boxes)
        np.testing.assert_allclose(upsample_heatmap(heatmap, size), upsample_heatmap(heatmap, size, centres))
        assert heatmap_peak(heatmap, size) == heatmap_peak(heatmap, size, centres)
        table = extract_boxes({("a", "Mass"): heatmap}, size, [60, 180])
        assert table.equals(extract_boxes({("a", "Mass"): heatmap}, size, [60, 180], registration=registration))
        legacy = tuple(legacy_cell_centres(n, s) for n, s in zip(heatmap.shape, size))
        assert not np.allclose(upsample_heatmap(heatmap, size), upsample_heatmap(heatmap, size, legacy))


def test_reports_of_old_localizations_keep_the_legacy_registration(tmp_path: Path) -> None:
    from thoracic.evaluation.protocol import load_registration

    (tmp_path / "localization_native.json").write_text(json.dumps({"method": "native"}))
    assert load_registration(tmp_path, "native").name == "legacy"
    assert load_registration(tmp_path, "gradcam").name == "legacy"


def test_normalize_images_names_the_expected_shape() -> None:
    from thoracic.data.transforms import normalize_images

    assert tuple(normalize_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape) == (2, 3, 8, 8)
    assert tuple(normalize_images(torch.zeros(2, 8, 8, dtype=torch.uint8)).shape) == (2, 3, 8, 8)
    with pytest.raises(DataError, match=r"expected grayscale images of shape \(B, 1, S, S\).*got \(2, 3, 8, 8\) "
                                        r"\(3 channels"):
        normalize_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(DataError, match=r"got \(1, 2, 1, 8, 8\)"):
        normalize_images(torch.zeros(1, 2, 1, 8, 8, dtype=torch.uint8))


# --------------------------------------------------------------------------------------------------
# train's words: the data at the start, the best epoch at the end
# --------------------------------------------------------------------------------------------------


def test_train_says_what_it_trains_on_and_what_it_found(phantom_dir: Path, phantom_cache: Path,
                                                         tmp_path: Path) -> None:
    from thoracic.commands.train import format_run_result
    from thoracic.config import load_config_by_name
    from thoracic.training.factory import build_datamodule
    from thoracic.training.run_folder import data_provenance, describe_training_data

    cfg = load_config_by_name("baseline", [f"data.root={phantom_dir}", "data.image_size=64", "data.num_workers=0"])
    module = build_datamodule(cfg)
    module.setup("fit")
    text = describe_training_data(module, data_provenance(cfg))
    sizes = module.splits.sizes()
    assert text.splitlines()[0] == (f"data: {phantom_dir.resolve()} (phantom); images: train {sizes['train']}, "
                                    f"val {sizes['val']}, test {sizes['test']}")
    positives = module.dataset.labels[module.splits.train].sum(axis=0).astype(int)
    assert f"Atelectasis {positives[0]}/" in text.splitlines()[1] and f"Hernia {positives[-1]}/" in text
    (tmp_path / "summary.json").write_text(json.dumps({"best_epoch": 2, "epochs_completed": 5,
                                                       "best_val_loss": 0.123456,
                                                       "metrics": {"val_auc_mean": 0.81234}}))
    assert format_run_result(tmp_path) == ("best epoch 2 (counting from 0; 5 run): validation loss 0.1235, "
                                           f"mean validation AUC 0.8123\nrun folder: {tmp_path}")


# --------------------------------------------------------------------------------------------------
# Every `thoracic ...` line of the README and the docs parses as written, in the current names
# --------------------------------------------------------------------------------------------------

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_COMMAND = re.compile(r"^\s*(?:srun thoracic|thoracic|.*-m thoracic\.cli)\s+(" + "|".join(map(re.escape, COMMANDS))
                      + r")(?=\s|$)(.*)")


def doc_command_lines() -> list[tuple[str, str]]:
    """(where, the command line) of every ``thoracic COMMAND ...`` line in a fenced block of the docs."""
    found = []
    for path in DOCS:
        inside, pending = False, ""
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.startswith("```"):
                inside = not inside
                continue
            if not inside:
                continue
            line = pending + line.split(" #")[0].rstrip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            match = _COMMAND.search(line)
            if match:
                found.append((f"{path.name}:{number}", f"{match.group(1)}{match.group(2)}"))
    return found


def test_the_docs_hold_command_lines() -> None:
    lines = doc_command_lines()
    assert len(lines) > 40
    assert {line.split()[0] for _, line in lines} == set(COMMANDS)  # every command is shown somewhere


@pytest.mark.parametrize("where, line", doc_command_lines(), ids=[where for where, _ in doc_command_lines()])
def test_every_doc_command_line_parses_in_the_current_names(where: str, line: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shlex

    args = parse(shlex.split(line))
    assert args.command == line.split()[0]
    if hasattr(args, "overrides"):
        from thoracic.config import parse_overrides

        parse_overrides(args.overrides)  # well-formed overrides
    assert "deprecated" not in capsys.readouterr().err, f"{where}: {line} uses an old spelling"


def test_options_named_in_the_docs_prose_exist() -> None:
    """Inline `thoracic COMMAND ... --option` spans name current options of that command."""
    current = {name: set(subparser(name)._option_string_actions) for name in COMMANDS}
    hidden = {name: {option for option, action in subparser(name)._option_string_actions.items()
                     if action.help == argparse.SUPPRESS or option in getattr(action, "old_spellings", ())}
              for name in COMMANDS}
    stale = []
    for path in DOCS:
        text = path.read_text()
        for span in re.findall(r"`thoracic ([a-z-]+)((?: [^`]*)?)`", text):
            command, rest = span
            if command not in COMMANDS:
                continue
            for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
                if option not in current[command] or option in hidden[command]:
                    if "." not in option and not option.startswith("--no-"):
                        stale.append(f"{path.name}: thoracic {command}{rest}: {option}")
    assert not stale, stale

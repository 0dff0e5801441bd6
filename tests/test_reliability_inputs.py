"""Every bad input of docs/reliability.md through the command line: exit 2 and a message that names the
file / key / value and what was expected, and nothing of the user's deleted.

Faults while running (SIGKILL, Ctrl-C, full disks, damaged caches): test_reliability_prepare.py and
test_reliability_train.py.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_run
from PIL import Image

from thoracic.cli import main
from thoracic.config import ConfigError, load_config
from thoracic.data.cache_writer import prepare_cache
from thoracic.data.images import read_image
from thoracic.errors import DataError
from thoracic.training.checkpoints import checkpoint_info

ENTRY = "Data_Entry_2017_v2020.csv"


def _copy(phantom_dir: Path, tmp_path: Path, name: str = "data") -> Path:
    return Path(shutil.copytree(phantom_dir, tmp_path / name, ignore=shutil.ignore_patterns("cache_*")))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def _expect(capsys, argv: list, *fragments: str, code: int = 2) -> str:
    rc, err = _run(capsys, argv)
    assert rc == code, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


# --------------------------------------------------------------------------------------------------
# The deletion rule
# --------------------------------------------------------------------------------------------------


def test_prepare_never_uses_the_data_folder_as_its_cache(phantom_dir, tmp_path, capsys):
    data = _copy(phantom_dir, tmp_path)
    before = _snapshot(data)
    for size, extra in ((64, []), (32, ["--overwrite"])):
        _expect(capsys, ["prepare", "--data", data, "--size", size, "--cache", data, "--workers", 1, "--no-progress",
                         *extra], f"--cache {data} is the data folder")
    _expect(capsys, ["prepare", "--data", data, "--size", 32, "--cache", data.parent, "--overwrite", "--no-progress"],
            "contains the data folder")
    assert _snapshot(data) == before


def test_prepare_overwrite_refuses_a_folder_that_is_not_its_cache(phantom_dir, tmp_path, capsys):
    foreign = tmp_path / "P"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"name": "x"}')
    _expect(capsys, ["prepare", "--data", phantom_dir, "--size", 32, "--cache", foreign, "--overwrite",
                     "--no-progress"], "not a thoracic cache manifest", "manifest.json")
    (foreign / "notes.txt").write_text("hi")
    _expect(capsys, ["prepare", "--data", phantom_dir, "--size", 32, "--cache", foreign, "--overwrite",
                     "--no-progress"], "notes.txt", "choose another --cache folder")
    assert (foreign / "notes.txt").read_text() == "hi" and (foreign / "manifest.json").read_text() == '{"name": "x"}'
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "thesis.txt").write_text("x")
    _expect(capsys, ["prepare", "--data", phantom_dir, "--size", 32, "--cache", plain, "--no-progress"],
            "holds no thoracic cache", "thesis.txt")
    assert (plain / "thesis.txt").read_text() == "x"
    # a cache of other settings with a file of the user's beside it: --overwrite deletes nothing
    cache = prepare_cache(phantom_dir, 32, cache_dir=tmp_path / "c", num_workers=1, progress=False)
    (cache / "readme.md").write_text("mine")
    _expect(capsys, ["prepare", "--data", phantom_dir, "--size", 48, "--cache", cache, "--overwrite",
                     "--no-progress"], "readme.md", "Nothing was deleted")
    assert (cache / "images.npy").is_file() and (cache / "readme.md").read_text() == "mine"
    (cache / "readme.md").unlink()
    _expect(capsys, ["prepare", "--data", phantom_dir, "--size", 48, "--cache", cache, "--overwrite", "--workers", 1,
                     "--no-progress"], code=0)
    assert json.loads((cache / "manifest.json").read_text())["image_size"] == 48


def test_synth_overwrite_deletes_only_what_synth_wrote(tmp_path, capsys):
    user = tmp_path / "U"
    user.mkdir()
    (user / "thesis.txt").write_text("years of work")
    _expect(capsys, ["synth", "--out", user, "--images", 8, "--size", 32, "--overwrite", "--no-progress"],
            "not written by thoracic synth", "thesis.txt", "Nothing was deleted")
    assert (user / "thesis.txt").read_text() == "years of work"
    out = tmp_path / "S"
    _expect(capsys, ["synth", "--out", out, "--images", 8, "--size", 32, "--workers", 1, "--no-progress"], code=0)
    prepare_cache(out, 32, num_workers=1, progress=False)  # its cache, inside: thoracic's own files too
    (out / "images" / "mine.png").write_bytes(b"not the generator's")
    _expect(capsys, ["synth", "--out", out, "--images", 12, "--size", 32, "--overwrite", "--no-progress"],
            "images/mine.png", "Nothing was deleted")
    assert (out / "images" / "mine.png").is_file() and (out / "cache_32" / "images.npy").is_file()
    (out / "images" / "mine.png").unlink()
    _expect(capsys, ["synth", "--out", out, "--images", 12, "--size", 32, "--overwrite", "--workers", 1,
                     "--no-progress"], code=0)
    assert len(list((out / "images").iterdir())) == 12 and not (out / "cache_32").exists()
    marker = json.loads((out / "thoracic_synth.json").read_text())
    assert sorted(marker["files"]) == sorted(p for p in _snapshot(out) if p != "thoracic_synth.json")


def test_experiment_refuses_a_folder_it_did_not_make(phantom_dir, tmp_path, capsys):
    folder = tmp_path / "F"
    (folder / "seed0").mkdir(parents=True)
    (folder / "seed0" / "thesis.txt").write_text("x")
    _expect(capsys, ["experiment", "--config", "baseline", "--seeds", 0, "--folder", folder, f"data.root={phantom_dir}",
                     "--no-model.pretrained"], "not an experiment folder", "seed0/thesis.txt")
    assert (folder / "seed0" / "thesis.txt").read_text() == "x" and not (folder / "config.yaml").exists()
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    before = _snapshot(run)
    _expect(capsys, ["experiment", "--config", "baseline", "--seeds", 0, "--folder", run, f"data.root={phantom_dir}"],
            "is a run folder")
    assert _snapshot(run) == before


# --------------------------------------------------------------------------------------------------
# Config values, devices, output paths
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("override", "fragment"), [
    ("optim.lr=-0.1", "optim.lr: expected a learning rate > 0 and <= 1"),
    ("optim.lr=1e38", "optim.lr: expected a learning rate > 0 and <= 1 (the paper used 1e-4), got 1e+38"),
    ("optim.lr=.nan", "optim.lr: expected a learning rate > 0"),
    ("train.batch_size=0", "train.batch_size: expected at least 1 image per batch, got 0"),
    ("train.precision=8-bit", "train.precision: expected one of 32-true"),
    ("train.max_epochs=0", "train.max_epochs: expected at least 1 epoch, got 0"),
    ("data.image_size=7", "data.image_size: expected an image side of at least 32 pixels"),
    ("data.val_fraction=1.5", "data.val_fraction: expected a fraction"),
    ("train.accelerator=banana", "train.accelerator: expected one of auto, cpu"),
    ("train.limit_train_batches=2.5", "train.limit_train_batches: expected a fraction in (0, 1]"),
])
def test_train_names_every_bad_config_value(override, fragment, phantom_dir, tmp_path, capsys):
    _expect(capsys, ["train", "--config", "baseline", f"data.root={phantom_dir}", f"output_dir={tmp_path / 'runs'}",
                     override], fragment)
    assert not (tmp_path / "runs").exists()


def test_precision_shortcut_is_checked_too(capsys):
    _expect(capsys, ["train", "--config", "baseline", "--precision", "8-bit"], "train.precision", "'8-bit'")


def test_a_failed_start_leaves_no_run_folder(phantom_dir, phantom_cache, tmp_path, capsys):
    runs = tmp_path / "runs"
    common = [f"data.root={phantom_dir}", "data.image_size=64", f"output_dir={runs}", "--no-model.pretrained",
              "model.backbone=resnet10", "--run-name", "mine"]
    _expect(capsys, ["train", "--config", "baseline", *common, "model.name=banana"], "unknown model 'banana'")
    _expect(capsys, ["train", "--config", "baseline", *common, "model.backbone=resnet11"], "resnet11")
    _expect(capsys, ["train", "--config", "baseline", *common, "data.image_size=48"], "no image cache",
            "thoracic prepare")
    assert not runs.exists() or not any(runs.iterdir())


def test_output_paths_that_are_files(phantom_dir, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep")
    _expect(capsys, ["synth", "--out", taken, "--images", 4, "--size", 32], f"--out {taken} is an existing file")
    _expect(capsys, ["train", "--config", "baseline", f"data.root={phantom_dir}", f"output_dir={taken}"],
            f"output_dir {taken} is an existing file")
    _expect(capsys, ["prepare", "--data", phantom_dir, "--size", 32, "--cache", taken], "is an existing file")
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    _expect(capsys, ["predict", str(next((phantom_dir / "images").iterdir())), "--checkpoint", run, "--out", taken,
                     "--no-progress"], f"--out {taken} is an existing file")
    _expect(capsys, ["predict", str(next((phantom_dir / "images").iterdir())), "--checkpoint", run,
                     "--out", taken / "sub", "--no-progress"], "is a file, so no folder can be made under it")
    assert taken.read_text() == "keep"


def test_an_unwritable_output_folder_is_named(tmp_path, capsys, monkeypatch):
    """A folder without write permission for this user. Root bypasses permission bits, so when the tests
    run as root the permission check itself is made to answer "no" for that folder."""
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == locked
                            else real_access(p, mode, *a, **k))
    else:
        os.chmod(locked, 0o555)
    try:
        _expect(capsys, ["synth", "--out", locked / "phantom", "--images", 4, "--size", 32, "--no-progress"],
                f"--out {locked / 'phantom'}: the folder {locked} is not writable by this user")
    finally:
        os.chmod(locked, 0o755)
    assert not (locked / "phantom").exists()


def test_file_system_errors_deep_inside_a_command_are_named(phantom_dir, tmp_path, capsys, monkeypatch):
    """The command line's last line of defence: an OSError a user can fix (permission, read-only file
    system, full disk) is one line naming the file, not a traceback."""
    import errno

    from thoracic.data.synth import folder as synth  # the module whose save_png the generator calls

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x" / "images"))

    monkeypatch.setattr(synth, "save_png", refuse)
    _expect(capsys, ["synth", "--out", tmp_path / "x", "--images", 4, "--size", 32, "--workers", 1, "--no-progress"],
            f"{tmp_path / 'x' / 'images'}: permission denied")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "y" / "images" / "a.png"))

    monkeypatch.setattr(synth, "save_png", full)
    _expect(capsys, ["synth", "--out", tmp_path / "y", "--images", 4, "--size", 32, "--workers", 1, "--no-progress"],
            "the disk is full", "free on the file system")


def test_devices_that_do_not_exist(phantom_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    image = str(next((phantom_dir / "images").iterdir()))
    _expect(capsys, ["predict", image, "--checkpoint", run, "--device", "banana", "--no-progress"],
            "--device: expected auto, cpu, cuda or cuda:N, got 'banana'")
    _expect(capsys, ["evaluate", run, "--device", "banana", "--no-progress"], "got 'banana'")
    _expect(capsys, ["localize", run, "--device", "meta", "--no-progress"], "got 'meta'")
    if torch.cuda.is_available():
        _expect(capsys, ["evaluate", run, "--device", f"cuda:{torch.cuda.device_count()}", "--no-progress"],
                f"this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    else:
        _expect(capsys, ["predict", image, "--checkpoint", run, "--device", "cuda", "--no-progress"],
                "--device cuda: no CUDA GPU is visible on this machine")
        _expect(capsys, ["localize", run, "--device", "cuda:1", "--no-progress"], "no CUDA GPU is visible")
        _expect(capsys, ["train", "--config", "baseline", f"data.root={phantom_dir}", "data.image_size=64",
                         "train.accelerator=cuda", "--no-model.pretrained", f"output_dir={tmp_path / 'r'}"],
                "train.accelerator: 'cuda' asks for a GPU")


@pytest.mark.parametrize("threshold", ["nan", "-1", "2"])
def test_predict_threshold_must_be_a_probability(threshold, phantom_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    image = str(next((phantom_dir / "images").iterdir()))
    _expect(capsys, ["predict", image, "--checkpoint", run, "--threshold", threshold, "--out", tmp_path / "p"],
            f"--threshold: expected a probability between 0 and 1, got {float(threshold)}")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("fraction", ["1.5", "0", "1"])
def test_synth_test_fraction_must_leave_both_lists(fraction, tmp_path, capsys):
    _expect(capsys, ["synth", "--out", tmp_path / "x", "--images", 10, "--size", 32, "--test-fraction", fraction],
            f"--test-fraction: expected a fraction of patients strictly between 0 and 1, got {float(fraction)}")


def test_checkpoint_whose_weights_do_not_fit_its_model(phantom_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", phantom_dir, "attention_gated", 0)
    path = run / "checkpoints" / "best.ckpt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"]["config"]["model"]["name"] = "baseline"  # the name no longer fits the weights
    torch.save(ckpt, path)
    image = str(next((phantom_dir / "images").iterdir()))
    _expect(capsys, ["predict", image, "--checkpoint", run, "--out", tmp_path / "p", "--no-progress"],
            f"checkpoint {path}: its weights do not fit the model its config names (baseline")
    path.write_bytes(b"not a checkpoint")
    _expect(capsys, ["evaluate", run, "--no-progress"], f"cannot read checkpoint {path}")


# --------------------------------------------------------------------------------------------------
# Damaged files
# --------------------------------------------------------------------------------------------------


def test_damaged_cache_files_are_named_or_rebuilt(phantom_dir, tmp_path, capsys):
    data = _copy(phantom_dir, tmp_path)
    reference = prepare_cache(data, 64, cache_dir=tmp_path / "ref", num_workers=1, progress=False)
    cache = prepare_cache(data, 64, num_workers=1, progress=False)
    run = make_run(tmp_path / "run", data, "baseline", 0)
    # a truncated images.npy: evaluate refuses it (it would read black images), prepare rebuilds the lost rows
    with open(cache / "images.npy", "r+b") as handle:
        handle.truncate(200_000)
    _expect(capsys, ["evaluate", run, "--no-progress", "--bootstrap", 0],
            f"{cache / 'images.npy'} is 200,000 bytes, expected", "truncated or damaged", "thoracic prepare")
    _expect(capsys, ["prepare", "--data", data, "--size", 64, "--workers", 1, "--no-progress"], code=0)
    for name in ("images.npy", "done.npy", "original_sizes.npy", "checksums.npy", "index.csv"):
        assert (cache / name).read_bytes() == (reference / name).read_bytes(), name
    # damaged done.npy: the finished rows are found again by their checksums
    (cache / "done.npy").write_bytes(b"\x93NUMPY garbage")
    _expect(capsys, ["prepare", "--data", data, "--size", 64, "--workers", 1, "--no-progress"], code=0)
    assert (cache / "done.npy").read_bytes() == (reference / "done.npy").read_bytes()
    # a damaged manifest is named; --overwrite rebuilds (only the cache's own files are there)
    (cache / "manifest.json").write_text("{ not json")
    _expect(capsys, ["evaluate", run, "--no-progress"], f"{cache / 'manifest.json'} is not valid JSON")
    _expect(capsys, ["prepare", "--data", data, "--size", 64, "--no-progress"], "is not valid JSON",
            "pass --overwrite")
    _expect(capsys, ["prepare", "--data", data, "--size", 64, "--workers", 1, "--no-progress", "--overwrite"], code=0)
    assert (cache / "images.npy").read_bytes() == (reference / "images.npy").read_bytes()


def test_a_damaged_evaluation_file_is_named(phantom_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    (run / "evaluation").mkdir()
    (run / "evaluation" / "auc_test.json").write_text('{"per_class": ')
    _expect(capsys, ["report", run], f"{run / 'evaluation' / 'auc_test.json'}: an evaluation file is not valid JSON")
    (run / "evaluation" / "auc_test.json").write_text('{"mean_auc": 0.5}')
    _expect(capsys, ["report", run], "no 'per_class' table")


def test_report_names_every_damaged_file_of_a_run(phantom_dir, phantom_cache, tmp_path, capsys):
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    _expect(capsys, ["evaluate", run, "--bootstrap", 0, "--no-progress"], code=0)
    evaluation = run / "evaluation"
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text("model: [unclosed\n")
    _expect(capsys, ["report", run], f"{run / 'config.yaml'}: the run's config is not valid YAML")
    (run / "config.yaml").write_text(config)
    points = (evaluation / "operating_points.json").read_text()
    (evaluation / "operating_points.json").write_text("{")
    _expect(capsys, ["report", run], f"{evaluation / 'operating_points.json'}: an evaluation file is not valid JSON")
    (evaluation / "operating_points.json").write_text(points)
    (evaluation / "operating_points_test.csv").write_bytes(b"")  # a kill mid-write, before writes were atomic
    _expect(capsys, ["report", run], f"{evaluation / 'operating_points_test.csv'}: unreadable",
            "rerun `thoracic evaluate`")
    _expect(capsys, ["evaluate", run, "--bootstrap", 0, "--no-progress"], code=0)
    (evaluation / "subgroups_test.json").write_text("[1, 2")
    _expect(capsys, ["report", run], f"{evaluation / 'subgroups_test.json'}: an evaluation file is not valid JSON")


@pytest.mark.parametrize(("argv", "fragment"), [
    (["evaluate", "RUN", "--bootstrap", "-5"], "--bootstrap: expected 0 (no confidence intervals) or a positive number"),
    (["evaluate", "RUN", "--batch-size", "0"], "--batch-size: expected at least 1 image per batch, got 0"),
    (["localize", "RUN", "--batch-size", "0"], "--batch-size: expected at least 1 image per batch, got 0"),
    (["evaluate", "RUN", "--calibration-bins", "0"], "--calibration-bins: expected at least 1 probability bin, got 0"),
])
def test_out_of_range_options_are_named_not_replaced(argv, fragment, phantom_dir, tmp_path, capsys):
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    _expect(capsys, [run if a == "RUN" else a for a in argv] + ["--no-progress"], fragment)
    assert not (run / "evaluation").exists()  # refused before anything was written


def test_a_run_name_stays_inside_the_output_folder(phantom_dir, tmp_path, capsys):
    out = tmp_path / "a" / "b"
    out.mkdir(parents=True)
    _expect(capsys, ["train", "--config", "baseline", f"data.root={phantom_dir}", f"output_dir={out}",
                     "--run-name", "../../x"], "run_name: expected a folder name inside output_dir", "'../../x'")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_a_dicom_with_a_non_finite_rescale_is_named_not_black(phantom_dir, tmp_path, capsys):
    from test_predict import write_dicom

    from thoracic.data.images import read_image

    path = write_dicom(tmp_path / "nan.dcm", np.tile(np.arange(0, 4000, 40, dtype=np.uint16), (60, 1)))
    import pydicom

    dataset = pydicom.dcmread(path)
    dataset.RescaleSlope, dataset.RescaleIntercept = "NaN", "0"
    dataset.save_as(path)
    with pytest.raises(DataError, match=r"nan.dcm: the DICOM modality transform gives non-finite values \(RescaleSlope"):
        read_image(path)
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)  # predict: that file fails, named (exit 1)
    err = _expect(capsys, ["predict", run, path, "--out", tmp_path / "p", "--no-progress"], code=1)
    assert "non-finite values" in err and "1 of 1 file(s) failed" in err


def test_synth_interrupted_then_the_same_command_finishes(tmp_path, monkeypatch):
    from thoracic.data.synth import folder as synth_folder
    from thoracic.data.synth import generate_phantom_dataset
    from thoracic.errors import Interrupted

    real, calls = synth_folder._render_job, [0]

    def ctrl_c_at_the_fifth(job):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(synth_folder, "_render_job", ctrl_c_at_the_fifth)
    with pytest.raises(Interrupted, match="is unfinished: rerun the same command to write it again") as error:
        generate_phantom_dataset(tmp_path / "s", 12, 32, progress=False)
    assert error.value.exit_code == 130
    monkeypatch.setattr(synth_folder, "_render_job", real)
    out = generate_phantom_dataset(tmp_path / "s", 12, 32, progress=False)  # the same call, no --overwrite
    assert len(list((out / "images").iterdir())) == 12 and (out / "phantom.json").is_file()
    finished = _snapshot(out)
    with pytest.raises(DataError, match="exists and is not empty"):  # a finished folder is never rewritten
        generate_phantom_dataset(tmp_path / "s", 12, 32, progress=False)
    assert _snapshot(out) == finished


def test_byte_order_marks_in_the_metadata_are_read_through(phantom_dir, tmp_path, capsys):
    data = _copy(phantom_dir, tmp_path)
    for name in ("BBox_List_2017.csv", "test_list.txt", ENTRY):
        path = data / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    _expect(capsys, ["prepare", "--data", data, "--image-size", 32, "--num-workers", 1, "--no-progress"], code=0)
    from thoracic.data.metadata import load_chestxray14

    original, marked = load_chestxray14(phantom_dir), load_chestxray14(data)
    assert marked.test_ids == original.test_ids and len(marked.boxes) == len(original.boxes)


# --------------------------------------------------------------------------------------------------
# Metadata and images
# --------------------------------------------------------------------------------------------------


def test_no_finding_combined_with_a_finding(phantom_dir, tmp_path, capsys):
    data = _copy(phantom_dir, tmp_path)
    lines = (data / ENTRY).read_text().splitlines()
    fields = lines[3].split(",")
    fields[1] = "Mass|No Finding"
    lines[3] = ",".join(fields)
    (data / ENTRY).write_text("\n".join(lines) + "\n")
    _expect(capsys, ["prepare", "--data", data, "--size", 32, "--no-progress"],
            f"'Finding Labels' 'Mass|No Finding' in data row 3 (CSV line 4, image {fields[0]}) combines 'No Finding'")


def test_a_box_whose_class_its_image_is_not_labelled_with(phantom_dir, tmp_path, capsys):
    data = _copy(phantom_dir, tmp_path)
    boxes = (data / "BBox_List_2017.csv").read_text().splitlines()
    image, label = boxes[1].split(",")[:2]
    entry = (data / ENTRY).read_text().splitlines()
    row = next(k for k, line in enumerate(entry) if line.startswith(image + ","))
    fields = entry[row].split(",")
    fields[1] = "Hernia" if label != "Hernia" else "Edema"
    entry[row] = ",".join(fields)
    (data / ENTRY).write_text("\n".join(entry) + "\n")
    _expect(capsys, ["prepare", "--data", data, "--size", 32, "--no-progress"],
            f"line 2 (image {image}) has a box of", f"(CSV line {row + 1}) are {fields[1]}",
            "expected the box's class among its image's labels")


def test_a_huge_image_is_called_too_large_not_corrupt(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (120, 100)).save(path)
    # Pillow's limit (89.5 M pixels, ~9459 px square) lowered for the test: same code path as 9500 x 9500
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(DataError, match="too large to decode.*decompression bombs.*downscale the file") as error:
        read_image(path)
    assert "corrupt" not in str(error.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # over twice the limit: Pillow's error, same message
    with pytest.raises(DataError, match="too large to decode"):
        read_image(path)


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def test_checkpoint_info_reads_the_checkpoint_not_the_folder(phantom_dir, tmp_path):
    run = make_run(tmp_path / "baseline_run", phantom_dir, "attention_gated", 3)
    info = checkpoint_info(run)
    assert info["model_name"] == "attention_gated" and info["backbone"] == "resnet10" and info["image_size"] == 64
    assert info["path"] == str((run / "checkpoints" / "best.ckpt").resolve()) and info["epoch"] == 0
    assert info["data_kind"] == "phantom" and info["data_root"] == str(phantom_dir)
    import hashlib

    assert info["sha256"] == hashlib.sha256((run / "checkpoints" / "best.ckpt").read_bytes()).hexdigest()
    assert {"global_step"} <= set(info)
    real = tmp_path / "real"
    real.mkdir()
    assert checkpoint_info(make_run(tmp_path / "r2", real, "baseline", 0))["data_kind"] == "real"


def test_report_labels_by_the_checkpoint_and_marks_stale_evaluations(phantom_dir, phantom_cache, tmp_path, capsys):
    from thoracic.workflows.evaluate import evaluate_run
    from thoracic.workflows.report import build_report
    from thoracic.reporting.runs import load_run_summary

    run = make_run(tmp_path / "bl", phantom_dir, "baseline", 0)
    evaluate_run(run, bootstrap=0, progress=False)
    auc = json.loads((run / "evaluation" / "auc_test.json").read_text())
    assert auc["checkpoint"]["sha256"] == checkpoint_info(run)["sha256"]
    assert auc["checkpoint"]["model_name"] == "baseline" and auc["checkpoint"]["data_kind"] == "phantom"
    fresh = load_run_summary(run)
    assert not fresh.stale and fresh.warnings == []
    # trained further: a new best.ckpt; the evaluation on disk is of the old one
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", weights_only=False)
    ckpt["epoch"] = 4
    torch.save(ckpt, run / "checkpoints" / "best.ckpt")
    stale = load_run_summary(run)
    assert stale.stale and any(w.startswith("STALE: auc_test.json") for w in stale.warnings)
    markdown, _ = build_report([run], tmp_path / "report")
    text = markdown.read_text()
    assert "bl: baseline (resnet10, 64 px) (STALE)" in text
    assert "STALE: auc_test.json evaluated a checkpoint (epoch 0" in text
    # an attention-gated checkpoint copied into a baseline run is reported as attention-gated
    gated = make_run(tmp_path / "gated", phantom_dir, "attention_gated", 0)
    shutil.copy(gated / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.ckpt")
    evaluate_run(run, bootstrap=0, progress=False)
    summary = load_run_summary(run)
    assert summary.model == "attention_gated" and not summary.stale
    assert any("config.yaml names model baseline" in w for w in summary.warnings)
    text = build_report([run], tmp_path / "report2")[0].read_text()
    assert "bl: attention_gated (resnet10, 64 px)" in text and "config.yaml names model baseline" in text
    from thoracic.reporting.classification_tables import report_table1
    from thoracic.reporting.runs import group_runs

    columns = list(report_table1(group_runs([summary])).columns)
    assert columns[columns.index("bl: attention_gated (resnet10, 64 px)") + 1] == "Paper AG"  # not beside BL


def test_config_checks_apply_to_config_files_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 2.0\n")
    with pytest.raises(ConfigError, match=r"c.yaml: optim.lr: expected a learning rate > 0 and <= 1"):
        load_config(path)
    assert math.isclose(load_config(None, ["optim.lr=1"]).optim.lr, 1.0)
    assert np.isfinite(load_config(None).optim.lr)

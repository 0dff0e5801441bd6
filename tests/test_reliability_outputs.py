"""Outputs never become inputs and never replace the user's files; every derived artefact says which
checkpoint it came from; a kill while any output file is written leaves the previous file whole.

Output folders (``predict --out``, ``report --out``, a run's ``evaluation/`` and ``export/``) list the files
thoracic wrote in ``thoracic_outputs.json`` and the checkpoint each came from (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import make_run

from thoracic.cli import main
from thoracic.evaluation.predictions import heatmaps_checkpoint
from thoracic.provenance import file_sha256
from thoracic.safety import OUTPUT_MANIFEST

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(capsys, argv: list) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def _manifest(folder: Path) -> dict:
    return json.loads((folder / OUTPUT_MANIFEST).read_text())


@pytest.fixture(scope="module")
def done(phantom_dir, phantom_cache, tmp_path_factory) -> Path:
    """A run after evaluate, localize, export and report (read-only: tests copy it)."""
    run = make_run(tmp_path_factory.mktemp("done") / "run", phantom_dir, "baseline", 0)
    for argv in (["evaluate", run, "--bootstrap", "0", "--no-progress"],
                 ["localize", run, "--no-progress", "--num-examples", "2", "--draws", "2"],
                 ["export", run], ["report", run]):
        assert main([str(a) for a in argv]) == 0, argv
    return run


@pytest.fixture()
def scans(phantom_dir, tmp_path) -> Path:
    """A folder of two X-rays, a.png and c.png."""
    folder = tmp_path / "s"
    folder.mkdir()
    images = sorted((phantom_dir / "images").iterdir())
    shutil.copy(images[0], folder / "a.png")
    shutil.copy(images[1], folder / "c.png")
    return folder


def test_predict_refuses_an_out_inside_its_inputs_and_never_reads_its_own_figures(done, scans, tmp_path, capsys,
                                                                                    monkeypatch):
    monkeypatch.chdir(scans)
    code, err = _run(capsys, ["predict", done, ".", "--no-progress"])  # default --out predictions
    assert code == 2 and "lies inside the input folder" in err and "Choose an --out outside it" in err
    assert sorted(p.name for p in scans.iterdir()) == ["a.png", "c.png"]
    for _ in range(2):  # twice: the second run sees the same two X-rays, nothing of the first's
        code, err = _run(capsys, ["predict", done, ".", "--out", "../p", "--no-progress"])
        assert code == 0, err
        assert [Path(i["path"]).name for i in json.loads((tmp_path / "p" / "predictions.json").read_text())
                ["images"]] == ["a.png", "c.png"]
    # figures of an earlier predict among the inputs (listed in its manifest) are left out, and said so
    code, err = _run(capsys, ["predict", done, scans, tmp_path / "p", "--out", tmp_path / "p2",
                              "--no-progress"])
    assert code == 0, err
    assert "skipped 2 file(s) that thoracic wrote itself" in err
    assert len(json.loads((tmp_path / "p2" / "predictions.json").read_text())["images"]) == 2


def test_predict_never_overwrites_an_input_or_a_users_file(done, scans, tmp_path, capsys):
    shutil.copy(scans / "c.png", scans / "a_native.png")  # an input that has the name of a's figure
    before = (scans / "a_native.png").read_bytes()
    code, err = _run(capsys, ["predict", done, scans / "a.png", "--out", scans, "--no-progress"])
    assert code == 2 and "a_native.png exists and was not written by thoracic" in err and "choose another --out" in err
    assert (scans / "a_native.png").read_bytes() == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "predictions.json").write_text("my notes")
    code, err = _run(capsys, ["predict", done, scans / "a.png", "--out", mine, "--no-progress"])
    assert code == 2 and "predictions.json exists and was not written by thoracic" in err
    assert (mine / "predictions.json").read_text() == "my notes"
    assert sorted(p.name for p in mine.iterdir()) == ["predictions.json"]  # nothing written beside it either


def test_predict_out_holds_one_model_and_replaces_only_its_own_files(done, phantom_dir, scans, tmp_path, capsys):
    out = tmp_path / "o"
    assert _run(capsys, ["predict", done, scans, "--out", out, "--no-progress"])[0] == 0
    other = make_run(tmp_path / "other", phantom_dir, "baseline", 1)
    code, err = _run(capsys, ["predict", other, scans / "a.png", "--out", out, "--no-progress"])
    assert code == 2 and f"holds the outputs of thoracic predict of checkpoint {done.resolve()}" in err
    assert "does not mix the outputs of two models" in err and f"{out}-2" in err
    # the same model again, on fewer images: its earlier figures of other images go, predictions.json matches
    code, err = _run(capsys, ["predict", done, scans / "a.png", "--out", out, "--no-progress"])
    assert code == 0, err
    assert "removed 1 earlier file(s) of this model" in err
    assert sorted(p.name for p in out.iterdir()) == ["a_native.png", "predictions.json", OUTPUT_MANIFEST]
    files = _manifest(out)["files"]
    assert set(files) == {"a_native.png", "predictions.json"}
    assert {e["source"] for e in files.values()} == {file_sha256(done / "checkpoints" / "best.ckpt")}


def test_report_and_export_never_replace_a_users_file(done, tmp_path, capsys):
    run = Path(shutil.copytree(done, tmp_path / "run"))
    user = tmp_path / "u"
    user.mkdir()
    (user / "report.md").write_text("my report")
    (user / "model.onnx").write_bytes(b"my model")
    code, err = _run(capsys, ["report", run, "--out", user])
    assert code == 2 and "report.md exists and was not written by thoracic" in err
    code, err = _run(capsys, ["export", run, "--out", user / "model.onnx"])
    assert code == 2 and "model.onnx exists and was not written by thoracic" in err
    assert (user / "report.md").read_text() == "my report" and (user / "model.onnx").read_bytes() == b"my model"
    assert sorted(p.name for p in user.iterdir()) == ["model.onnx", "report.md"]
    # its own files it replaces (a second report in the run folder; exports: the kill test reruns one)
    assert _run(capsys, ["report", run])[0] == 0
    assert set(_manifest(run)["files"]) == {"report.md", "report.html"}
    assert (run / "report.md").read_text() != "my report"


def test_every_derived_artefact_records_its_checkpoint(done):
    evaluation = done / "evaluation"
    sha = file_sha256(done / "checkpoints" / "best.ckpt")
    assert json.loads((evaluation / "operating_points.json").read_text())["checkpoint"]["sha256"] == sha
    assert json.loads((evaluation / "subgroups_test.json").read_text())["checkpoint"]["sha256"] == sha
    assert json.loads((evaluation / "localization_native.json").read_text())["checkpoint"]["sha256"] == sha
    assert sha in (evaluation / "table1_test.md").read_text()
    assert heatmaps_checkpoint(evaluation / "heatmaps_native.npz") == sha
    assert json.loads((done / "export" / "baseline.onnx.json").read_text())["checkpoint_info"]["sha256"] == sha
    manifest = _manifest(evaluation)
    written = {p.name for p in evaluation.iterdir() if p.name != OUTPUT_MANIFEST}
    assert set(manifest["files"]) == written  # every file, CSVs and figures too, with its checkpoint
    assert {e["source"] for e in manifest["files"].values()} == {sha}
    assert manifest["sources"][sha]["path"] == str((done / "checkpoints" / "best.ckpt").resolve())


def test_thresholds_of_another_checkpoint_are_refused_or_marked(done, phantom_dir, scans, tmp_path, capsys):
    """`evaluate --checkpoint last` then `predict` (best): the thresholds belong to other weights."""
    run = Path(shutil.copytree(done, tmp_path / "run"))
    later = make_run(tmp_path / "later", phantom_dir, "baseline", 1)
    shutil.copy(later / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt")
    assert _run(capsys, ["evaluate", run, "--checkpoint", "last", "--bootstrap", "0", "--no-subgroups",
                         "--no-progress"])[0] == 0
    code, err = _run(capsys, ["predict", run, scans / "a.png", "--out", tmp_path / "p",
                              "--no-progress"])
    assert code == 2
    assert "operating_points.json: its thresholds were chosen for checkpoint" in err and "last.ckpt" in err
    assert "but predict uses" in err and "best.ckpt" in err and "--threshold P" in err
    assert _run(capsys, ["predict", run, scans / "a.png", "--out", tmp_path / "p", "--threshold",
                         "0.5", "--no-progress"])[0] == 0
    from thoracic.training.checkpoints import load_run
    from thoracic.workflows.export import export_metadata

    metadata = export_metadata(load_run(run), "onnx")  # what `thoracic export RUN` stores (and warns about)
    assert metadata["operating_points"] is None
    assert metadata["operating_points_note"].startswith("not embedded: ") and "chosen for checkpoint" in \
        metadata["operating_points_note"]
    assert _run(capsys, ["report", run])[0] == 0
    markdown = (run / "report.md").read_text()
    assert "STALE: operating_points.json" in markdown


def test_report_marks_an_evaluation_folder_of_two_checkpoints(done, phantom_dir, tmp_path, capsys):
    run = Path(shutil.copytree(done, tmp_path / "run"))
    later = make_run(tmp_path / "later", phantom_dir, "baseline", 1)
    shutil.copy(later / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt")
    assert _run(capsys, ["localize", run, "--checkpoint", "last", "--no-progress", "--num-examples", "1", "--draws",
                         "2"])[0] == 0
    assert _run(capsys, ["report", run])[0] == 0
    markdown = (run / "report.md").read_text()
    assert "MIXED:" in markdown and "heatmaps_native.npz" in markdown and "last.ckpt" in markdown


# --------------------------------------------------------------------------------------------------
# SIGKILL at the moment an output file is opened, then what a user does next
# --------------------------------------------------------------------------------------------------

#: Child: the command line, SIGKILLed while a file named TARGET is written: as soon as it (or its temporary
#: file) changes on disk after being opened for writing (an audit hook sees Python's opens; a thread watches
#: the file), at the latest just before the temporary file is moved over it; a temporary file appearing in
#: FOLDER (writers outside Python) also triggers it.
KILLER = textwrap.dedent("""
    import os, signal, sys, threading, time
    target, folder = sys.argv[1], sys.argv[2]
    sys.setswitchinterval(1e-6)  # the watching thread runs between the writer's steps
    def matches(name):
        name = os.path.basename(os.fsdecode(name))
        return name == target or name.startswith("." + target + ".tmp-")
    def state(path):
        try:
            s = os.stat(path)
            return (s.st_ino, s.st_size, s.st_mtime_ns)
        except OSError:
            return None
    def kill_when_changed(path, before):
        while state(path) == before:
            time.sleep(0)
        os.kill(os.getpid(), signal.SIGKILL)
    def hook(event, args):
        if event == "os.rename" and matches(args[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        mode = args[1] if len(args) > 1 else None
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & (os.O_WRONLY | os.O_RDWR))
        if writing and matches(args[0]):
            path = os.fsdecode(args[0])
            threading.Thread(target=kill_when_changed, args=(path, state(path)), daemon=True).start()
    def watch():
        before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        while True:
            if os.path.isdir(folder):
                for name in os.listdir(folder):
                    if name.startswith("." + target + ".tmp-") and name not in before:
                        os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.001)
    sys.addaudithook(hook)
    threading.Thread(target=watch, daemon=True).start()
    from thoracic.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def _killed(target: Path, argv: list) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    process = subprocess.run([sys.executable, "-c", KILLER, target.name, str(target.parent), *map(str, argv)],
                             capture_output=True, text=True, env=env, timeout=600)
    assert process.returncode == -signal.SIGKILL, f"not killed at {target.name}: {process.stderr[-2000:]}"


@pytest.mark.slow
@pytest.mark.parametrize(("command", "target", "next_step"), [
    ("evaluate", "evaluation/auc_test.csv", "report"),
    ("evaluate", "evaluation/operating_points.json", "predict"),
    ("evaluate", "evaluation/roc_test.png", "report"),
    ("localize", "evaluation/heatmaps_native.npz", "report"),
    ("report", "report.html", "report"),
    ("export", "export/baseline.onnx", "predict --model"),
    ("predict", "p/predictions.json", "predict"),
])
def test_a_kill_while_an_output_is_written_keeps_the_previous_file(command, target, next_step, done, scans,
                                                                     tmp_path, capsys):
    run = Path(shutil.copytree(done, tmp_path / "run"))
    image = scans / "a.png"
    out = tmp_path / "p"
    argv = {"evaluate": ["evaluate", run, "--bootstrap", "0", "--no-progress"],
            "localize": ["localize", run, "--no-progress", "--num-examples", "2", "--draws", "2"],
            "report": ["report", run], "export": ["export", run],
            "predict": ["predict", run, image, "--out", out, "--no-progress"]}[command]
    if command == "predict":
        assert main([str(a) for a in argv]) == 0
    path = (tmp_path if command == "predict" else run) / target
    before = path.read_bytes()
    _killed(path, argv)
    assert path.read_bytes() == before, f"{target} was damaged by the kill"
    follow = {"report": ["report", run],
              "predict": ["predict", run, image, "--out", out, "--no-progress"],
              "predict --model": ["predict", image, "--model", run / "export" / "baseline.onnx", "--out",
                                  tmp_path / "m", "--no-progress"]}[next_step]
    code, err = _run(capsys, follow)
    assert code == 0, err
    assert _run(capsys, argv)[0] == 0  # the same command again finishes, and leaves no temporary file
    leftovers = [str(p) for p in run.rglob(".*.tmp-*")] + [str(p) for p in tmp_path.glob("p/.*.tmp-*")]
    assert not leftovers
    if path.suffix == ".npz":
        assert len(np.load(path).files) > 1


@pytest.fixture()
def file_size_limit():
    """``ulimit -f`` for this process (soft limit, lifted again): writes past it fail with EFBIG where a full
    disk fails with ENOSPC (Python ignores SIGXFSZ)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(size: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize(("argv", "target"), [
    (["report", "RUN"], "report.html"),
    pytest.param(["export", "RUN"], "export/baseline.onnx", marks=pytest.mark.slow),
])
def test_a_full_disk_names_the_file_and_keeps_the_previous_one(argv, target, done, tmp_path, capsys,
                                                                file_size_limit):
    run = Path(shutil.copytree(done, tmp_path / "run"))
    path = run / target
    before = path.read_bytes()
    file_size_limit(len(before) // 2)
    code = main([str(run) if a == "RUN" else a for a in argv])
    file_size_limit(resource_infinity())
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot write a file ({path}): the file-size limit of this process (ulimit -f) was reached" in err
    assert f"free on the file system of {path.parent}" in err and "Traceback" not in err
    assert path.read_bytes() == before
    assert not list(path.parent.glob(".*.tmp-*"))


def resource_infinity() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[1]

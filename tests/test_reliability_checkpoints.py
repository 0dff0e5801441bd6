"""Opening a checkpoint never runs code: every command that reads one refuses a checkpoint whose pickle
calls a Python function (named error: the file, what it needs, --trust-checkpoint; nothing runs), and
--trust-checkpoint opens it the old way. Lightning's own resume reads through the same function.

The malicious checkpoint here is harmless: unpickling it calls ``Path.touch`` on a marker file, where a
real one would call ``os.system``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import make_run

from thoracic.cli import main
from thoracic.errors import UnsafeCheckpointError
from thoracic.training.checkpoints import SAFE_CHECKPOINT_GLOBALS, load_run, read_checkpoint


class Payload:
    """Unpickled, it creates ``marker`` (what ``__reduce__`` returns is called by pickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def poison(checkpoint: Path, marker: Path) -> Path:
    """Add a payload to a checkpoint's hyper-parameters, as an attacker editing a real checkpoint would."""
    data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data["hyper_parameters"]["payload"] = Payload(marker)
    torch.save(data, checkpoint)
    return checkpoint


def _run(capsys, argv: list) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_thoracic_checkpoints_need_no_allow_listed_type(trained_run):
    """The allow-list holds exactly what a real checkpoint needs: Lightning 2.6 checkpoints of thoracic's
    module (weights, optimizer, scheduler, callback and loop states, hyper-parameters) are plain data."""
    assert SAFE_CHECKPOINT_GLOBALS == ()
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    for name in ("best", "last"):
        path = trained_run / "checkpoints" / f"{name}.ckpt"
        if finder is not None:
            assert finder(str(path)) == [], name
        checkpoint = read_checkpoint(path)
        assert {"state_dict", "optimizer_states", "callbacks", "loops", "hyper_parameters"} <= set(checkpoint)


def test_plain_data_spec_in_hyper_parameters_stays_loadable(phantom_dir, tmp_path):
    """The model spec, plain str / int / float / list / dict / None, loads without trust and is read back."""
    from thoracic.constants import CLASS_NAMES
    from thoracic.spec import FeatureGrid, ModelSpec

    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    path = run / "checkpoints" / "best.ckpt"
    data = torch.load(path, weights_only=True)
    spec = ModelSpec(tuple(reversed(CLASS_NAMES)), 64, heatmap_grid=FeatureGrid((2, 2), (32.0, 32.0), (0.0, 0.0),
                                                                                 (64, 64)),
                     dataset="chestxray14", uncertain="ignore", views=("frontal",))
    data["hyper_parameters"]["spec"] = spec.to_dict()
    torch.save(data, path)
    assert read_checkpoint(path)["hyper_parameters"]["spec"] == spec.to_dict()
    loaded = load_run(run)
    assert loaded.info["sha256"] and loaded.spec == spec and not loaded.spec.derived
    assert loaded.class_names == tuple(reversed(CLASS_NAMES))


def test_read_checkpoint_refuses_code_and_trust_opens_it(phantom_dir, tmp_path):
    marker = tmp_path / "PWNED"
    run = make_run(tmp_path / "run", phantom_dir, "baseline", 0)
    path = poison(run / "checkpoints" / "best.ckpt", marker)
    with pytest.raises(UnsafeCheckpointError) as error:
        read_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "pathlib" in message and "--trust-checkpoint" in message
    assert not marker.exists()
    assert error.value.exit_code == 2
    read_checkpoint(path, trust=True)  # the old way: the payload runs
    assert marker.exists()


def test_lightning_resume_reads_through_the_same_function(trained_run, tmp_path):
    """Lightning's resume (``fit(ckpt_path=...)``) reads with the strategy's checkpoint IO: thoracic's."""
    from thoracic.config import config_from_dict
    from thoracic.training.factory import AtomicCheckpointIO, build_trainer

    marker = tmp_path / "PWNED"
    path = poison(Path(shutil.copy(trained_run / "checkpoints" / "last.ckpt", tmp_path / "last.ckpt")), marker)
    cfg = config_from_dict(read_checkpoint(trained_run / "checkpoints" / "last.ckpt")["hyper_parameters"]["config"])
    trainer, _ = build_trainer(cfg, tmp_path / "run")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO) and not trainer.strategy.checkpoint_io.trust
    with pytest.raises(UnsafeCheckpointError):
        trainer.strategy.load_checkpoint(path)
    assert not marker.exists()
    trusted, _ = build_trainer(cfg, tmp_path / "run", trust_checkpoint=True)
    trusted.strategy.load_checkpoint(path)
    assert marker.exists()


@pytest.fixture(scope="module")
def evaluated(phantom_dir, phantom_cache, tmp_path_factory) -> Path:
    """An evaluated run (for report): its best.ckpt is replaced by a malicious one in the test."""
    run = make_run(tmp_path_factory.mktemp("evaluated") / "run", phantom_dir, "baseline", 0)
    assert main(["evaluate", str(run), "--bootstrap", "0", "--no-subgroups", "--no-progress"]) == 0
    return run


@pytest.mark.parametrize("command", ["predict", "evaluate", "localize", "export", "train RUN", "report"])
def test_every_command_refuses_a_malicious_checkpoint(command, trained_run, evaluated, phantom_dir, tmp_path,
                                                      capsys):
    marker = tmp_path / "PWNED"
    source = evaluated if command == "report" else trained_run
    run = Path(shutil.copytree(source, tmp_path / "run"))
    for name in ("best", "last"):
        if (run / "checkpoints" / f"{name}.ckpt").is_file():
            poison(run / "checkpoints" / f"{name}.ckpt", marker)
    image = next((phantom_dir / "images").iterdir())
    argv = {"predict": ["predict", run, image, "--out", tmp_path / "p", "--no-progress"],
            "evaluate": ["evaluate", run, "--bootstrap", "0", "--no-progress"],
            "localize": ["localize", run, "--no-progress"],
            "export": ["export", run],
            "train RUN": ["train", run, "train.max_epochs=2"],
            "report": ["report", run]}[command]
    code, err = _run(capsys, argv)
    assert not marker.exists(), f"{command} ran the checkpoint's code"
    assert "Traceback" not in err
    if command == "report":  # report reads the evaluation files and only hashes the checkpoint
        assert code == 0, err
        return
    assert code == 2, err
    assert "refused to open checkpoint" in err and "checkpoints/" in err and "--trust-checkpoint" in err
    assert "pathlib" in err  # what the file needs, named


def test_trust_checkpoint_opens_it_the_old_way(trained_run, phantom_dir, tmp_path, capsys):
    """The risk, demonstrated: with --trust-checkpoint the file's code runs (here: it creates a file)."""
    marker = tmp_path / "PWNED"
    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    poison(run / "checkpoints" / "best.ckpt", marker)
    image = next((phantom_dir / "images").iterdir())
    code, err = _run(capsys, ["predict", run, image, "--out", tmp_path / "p", "--no-progress",
                              "--trust-checkpoint"])
    assert code == 0, err
    assert marker.exists()


def test_garbage_is_not_called_unsafe(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception) as error:
        read_checkpoint(path)
    assert not isinstance(error.value, UnsafeCheckpointError)
    assert f"cannot read checkpoint {path}: not a checkpoint, or a damaged one" in str(error.value)


def test_a_moved_runs_checkpoint_state_is_rebased_onto_its_new_folder(tmp_path):
    """Lightning restores the best score only when the folder did not move; the state is rebased instead."""
    from thoracic.training.factory import RunFolderCheckpoint

    old, new = "/old/runs/m/checkpoints", str((tmp_path / "mv" / "m" / "checkpoints").resolve())
    state = {"monitor": "val_loss", "best_model_score": torch.tensor(19.529), "best_model_path": f"{old}/best.ckpt",
             "current_score": torch.tensor(19.529), "dirpath": old, "best_k_models": {f"{old}/best.ckpt": 19.529},
             "kth_best_model_path": f"{old}/best.ckpt", "kth_value": torch.tensor(19.529),
             "last_model_path": ""}
    callback = RunFolderCheckpoint(dirpath=new, filename="best", monitor="val_loss", mode="min")
    callback.load_state_dict(state)
    assert float(callback.best_model_score) == pytest.approx(19.529)  # kept: the next worse epoch is not "best"
    assert callback.best_model_path == f"{new}/best.ckpt" and callback.best_k_models == {f"{new}/best.ckpt": 19.529}
    assert callback.state_key.startswith("ModelCheckpoint{")  # where Lightning's own class kept it


def test_finished_reason(tmp_path):
    from thoracic.config import Config, TrainConfig
    from thoracic.training.trainer import finished_reason

    cfg = Config(train=TrainConfig(max_epochs=3, patience=2))
    stopped = {"epoch": 2, "callbacks": {"EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}":
                                         {"stopped_epoch": 2, "wait_count": 2, "patience": 2}}}
    running = {"epoch": 1, "callbacks": {"EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}":
                                         {"stopped_epoch": 0, "wait_count": 0, "patience": 2}}}
    assert finished_reason(tmp_path, stopped, cfg) is None  # no summary.json: the fit did not end
    (tmp_path / "summary.json").write_text("{}")
    assert "early stopping ended it after epoch 2" in finished_reason(tmp_path, stopped, cfg)
    assert finished_reason(tmp_path, running, cfg) is None
    assert "trained all 2 epochs" in finished_reason(tmp_path, running, Config(train=TrainConfig(max_epochs=2)))

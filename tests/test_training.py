"""Training: run folders, checkpoints, early stopping, exact resume, determinism, NaN guard,
lr sweep, multi-seed experiments and the pure helpers they rely on. CPU, 64 px phantoms, resnet10."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch import Callback
from sklearn.metrics import roc_auc_score

from thoracic.config import Config, ConfigError, load_config, load_config_by_name, replace, save_config, to_dict
from thoracic.constants import CLASS_NAMES
from thoracic.errors import RunError, UnsafeDeleteError
from thoracic.geometry import heatmap_grid
from thoracic.models import build_model
from thoracic.models.output import ModelOutput
from thoracic.spec import ModelSpec
from thoracic.training.checkpoints import load_run
from thoracic.workflows.experiment import aggregate_metrics, format_mean_std, run_experiment
from thoracic.training.module import DeduplicatedAUROC, NonFiniteLossError, compute_loss
from thoracic.training.seeding import EpochSeededSampler, ShardedSampler
from thoracic.workflows.sweep import PAPER_LR_GRID, choose_learning_rate, lr_sweep
from thoracic.training.factory import AtomicCheckpointIO
from thoracic.training.trainer import config_for_resume, train
from thoracic.training.run_folder import read_epoch_metrics
from thoracic.evaluation.predictions import predict
from thoracic.losses import WeightedBCEWithLogits
from thoracic.workflows.common import open_run

REPO = Path(__file__).resolve().parents[1]
MODELS = ("baseline", "space_attention", "attention_gated")

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Lightning's small-data / few-workers hints
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*"),  # lightning's pytree shim on recent torch
]


@pytest.fixture(autouse=True)
def quiet_lightning():
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    yield


def small_config(phantom_dir: Path, out: Path, model: str = "baseline", *overrides: str) -> Config:
    """A paper config scaled down: resnet10 at 64 px, batch 16, one epoch, no workers."""
    return load_config_by_name(model, [
        "model.backbone=resnet10", "--no-model.pretrained", "data.image_size=64", f"data.root={phantom_dir}",
        "data.val_fraction=0.3", "data.num_workers=0", f"output_dir={out}", "train.batch_size=16",
        "train.max_epochs=1", "--no-train.progress_bar", "train.log_every_n_steps=1", "train.accelerator=cpu",
        "train.devices=1", "optim.lr=1e-3", *overrides,
    ])


def model_state(path: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]}"


# --------------------------------------------------------------------------------------------------
# Configs and command line
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_packaged_configs_are_the_repository_configs(name):
    packaged = REPO / "src" / "thoracic" / "configs" / f"{name}.yaml"
    assert packaged.read_bytes() == (REPO / "configs" / f"{name}.yaml").read_bytes()
    assert load_config_by_name(name) == load_config(REPO / "configs" / f"{name}.yaml")


def test_configs_hold_the_paper_settings():
    base, space, gated = (load_config_by_name(name) for name in MODELS)
    for cfg, model in zip((base, space, gated), MODELS):
        assert cfg.model.name == model and cfg.model.backbone == "resnet34" and cfg.model.pretrained
        assert cfg.data.image_size == 256 and cfg.optim.lr == 1e-4 and cfg.loss.name == "wcel"
        assert (cfg.train.max_epochs, cfg.train.patience, cfg.train.min_delta) == (30, 3, 0.001)
        assert not cfg.data.augment
    assert base.train.batch_size == space.train.batch_size == 128 and gated.train.batch_size == 32
    assert (space.optim.weight_decay, space.optim.lr_step_epochs, space.optim.lr_gamma) == (1e-4, 20, 0.1)
    assert base.optim.weight_decay == 0 and base.optim.lr_step_epochs == 0 and gated.optim.lr_step_epochs == 0


def test_cli_reports_config_errors(tmp_path, capsys):
    from thoracic.cli import main

    assert main(["train", "--config", "baseline", "train.batch_sise=3"]) == 2
    assert "unknown config key(s) train.batch_sise" in capsys.readouterr().err
    assert main(["train", "--config", "baseline", "train.max_epochs=many"]) == 2
    assert "train.max_epochs: expected an integer, got 'many'" in capsys.readouterr().err
    assert main(["train", "--config", "baseline", "--no-model.pretrained", f"data.root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "nowhere" in err and "does not exist" in err
    # a model option the chosen model does not take: refused before anything is read or written
    assert main(["train", "--config", "attention_gated", "model.pooling=avg", f"output_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "model.pooling='avg': model 'attention_gated' does not take this option" in err and "model.gating" in err
    assert not any(tmp_path.iterdir())
    assert main(["train", "--config", "no_such_model"]) == 2
    assert "packaged: attention_gated, baseline, space_attention" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "--config" in capsys.readouterr().err


def test_boolean_overrides_work_both_ways():
    cfg = load_config_by_name("baseline", ["--no-model.pretrained", "--train.channels_last"])
    assert cfg.model.pretrained is False and cfg.train.channels_last is True
    cfg = load_config_by_name("baseline", ["model.pretrained=false", "train.channels_last=yes"])
    assert cfg.model.pretrained is False and cfg.train.channels_last is True


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def test_compute_loss_adds_one_term_per_deep_supervision_head():
    bce = torch.nn.BCEWithLogitsLoss()
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    main, aux1, aux2 = torch.tensor([[2.0, -1.0], [0.5, 0.5]]), torch.zeros(2, 2), torch.ones(2, 2)
    total, main_loss = compute_loss(bce, ModelOutput(logits=main, aux_logits=(aux1, aux2)), targets)
    # By hand: BCE(aux1) = ln 2; BCE(aux2) = mean over 4 entries of (ln(1+e^-1) x2, ln(1+e^1) x2).
    expected_aux = math.log(2) + (2 * math.log1p(math.exp(-1)) + 2 * math.log1p(math.e)) / 4
    assert main_loss.item() == pytest.approx(bce(main, targets).item())
    assert total.item() == pytest.approx(main_loss.item() + expected_aux, rel=1e-6)
    alone, _ = compute_loss(bce, ModelOutput(logits=main), targets)
    assert alone.item() == pytest.approx(main_loss.item())


def test_deduplicated_auroc_matches_sklearn_and_gives_nan_for_single_valued_classes():
    rng = np.random.default_rng(0)
    labels = (rng.random((30, 3)) < 0.4).astype(np.float32)
    labels[:, 2] = 0  # no positive: AUC undefined
    scores = rng.random((30, 3)).astype(np.float32)
    metric = DeduplicatedAUROC(3)
    metric.update(torch.from_numpy(scores[:20]), torch.from_numpy(labels[:20]), torch.arange(20))
    # padded shard: rows 0-4 again (as a DistributedSampler would repeat them), then the rest
    metric.update(torch.from_numpy(scores[:5]), torch.from_numpy(labels[:5]), torch.arange(5))
    metric.update(torch.from_numpy(scores[20:]), torch.from_numpy(labels[20:]), torch.arange(20, 30))
    auc = metric.compute()
    for c in range(2):
        assert auc[c].item() == pytest.approx(roc_auc_score(labels[:, c], scores[:, c]), abs=1e-6)
    assert math.isnan(auc[2].item())


def test_training_auc_equals_the_torchmetrics_values_it_logged_before():
    """The validation AUC is the one pure function now; on the same data it logs what torchmetrics' exact
    ``multilabel_auroc`` logged before (ties, float32 probabilities, an undefined class)."""
    from torchmetrics.functional.classification import multilabel_auroc

    rng = np.random.default_rng(1)
    labels = (rng.random((500, 5)) < [0.05, 0.2, 0.5, 0.3, 0.0]).astype(np.float32)
    scores = (rng.random((500, 5)) + 0.3 * labels).astype(np.float32)
    scores[:, 1] = np.round(scores[:, 1], 2)  # ties
    metric = DeduplicatedAUROC(5)
    metric.update(torch.from_numpy(scores), torch.from_numpy(labels), torch.arange(500))
    auc = metric.compute()
    before = multilabel_auroc(torch.from_numpy(scores[:, :4]), torch.from_numpy(labels[:, :4]).long(), num_labels=4,
                              average=None, thresholds=None)
    np.testing.assert_allclose(auc[:4].numpy(), before.numpy(), rtol=0, atol=1e-6)
    assert math.isnan(auc[4].item())


def test_epoch_seeded_sampler_depends_only_on_seed_and_epoch(monkeypatch):
    data = list(range(11))
    a, b = EpochSeededSampler(data, seed=3), EpochSeededSampler(data, seed=3)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b) and sorted(a) == data
    b.set_epoch(5)
    assert list(a) != list(b)
    assert list(EpochSeededSampler(data, seed=4, epoch=4)) != list(a)
    # two processes: same number of steps each, together every index (padded by repeating the first)
    import thoracic.training.seeding as seeding

    shards = []
    for rank in range(2):
        monkeypatch.setattr(seeding, "distributed_rank_and_world", lambda rank=rank: (rank, 2))
        shards.append(list(a))
        assert len(a) == 6
        shards_eval = list(ShardedSampler(data))
        assert shards_eval == list(range(rank, 11, 2))
    order = a.permutation()
    assert sorted(shards[0] + shards[1]) == sorted(data + order[:1])


def test_aggregate_metrics_by_hand():
    per_seed = {0: {"auc": 0.70, "loss": 1.0, "odd": None}, 1: {"auc": 0.80, "loss": float("nan"), "odd": None},
                2: {"auc": 0.90, "loss": 3.0, "odd": 2.0}}
    summary = aggregate_metrics(per_seed)
    assert list(summary.index) == ["auc", "loss", "odd"]
    assert summary.loc["auc", "mean"] == pytest.approx(0.8)
    assert summary.loc["auc", "std"] == pytest.approx(0.1)  # sample std of 0.7, 0.8, 0.9
    assert summary.loc["loss", "n"] == 2 and summary.loc["loss", "std"] == pytest.approx(math.sqrt(2))
    assert summary.loc["odd", "n"] == 1 and math.isnan(summary.loc["odd", "std"])
    assert (summary.loc["auc", "min"], summary.loc["auc", "max"]) == (0.7, 0.9)
    table = format_mean_std(summary)
    assert "| auc | 0.800 +- 0.100 | 3 |" in table and "| odd | 2.000 | 1 |" in table
    assert aggregate_metrics(pd.DataFrame.from_dict(per_seed, orient="index")).equals(summary)


def test_choose_learning_rate_ignores_diverged_runs():
    table = pd.DataFrame({"lr": [1e-3, 1e-4, 1e-5], "best_val_loss": [float("nan"), 2.0, 3.0]})
    assert choose_learning_rate(table) == 1e-4
    assert choose_learning_rate(table.assign(best_val_loss=float("nan"))) is None
    assert len(PAPER_LR_GRID) == 10 and PAPER_LR_GRID[0] == pytest.approx(1e-3)
    assert PAPER_LR_GRID[-1] == pytest.approx(1e-6) and PAPER_LR_GRID[3] == pytest.approx(1e-4)


def test_atomic_checkpoint_io_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"value": 1}, path)

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"value": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"value": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary file left


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model,extra", [("baseline", ()), ("space_attention", ()),
                                         ("attention_gated", ()),  # the paper config: concat aggregation
                                         ("attention_gated", ("model.aggregation=deep_supervision",))])
def test_one_epoch_of_each_paper_model_writes_the_run_folder(phantom_dir, phantom_cache, tmp_path, model, extra):
    cfg = small_config(phantom_dir, tmp_path, model, *extra)
    if model == "attention_gated" and not extra:
        assert cfg.model.aggregation == "concat"  # the paper config's own aggregation is trained too
    run = train(cfg, command_line=["thoracic", "train", "--config", model])
    assert run.parent == tmp_path and run.name.startswith(f"{model}-seed0-")
    assert cfg.model.num_classes is None  # follows the data: the run stores the resolved count
    cfg = replace(cfg, **{"model.num_classes": len(CLASS_NAMES)})
    assert yaml.safe_load((run / "config.yaml").read_text()) == to_dict(cfg)
    info = json.loads((run / "run_info.json").read_text())
    assert info["seed"] == 0 and info["class_names"] == list(CLASS_NAMES)
    assert info["command_line"] == ["thoracic", "train", "--config", model]
    assert info["versions"]["torch"] and info["versions"]["lightning"] and "commit" in info["git"]
    for which in ("best", "last"):
        ckpt = torch.load(run / "checkpoints" / f"{which}.ckpt", map_location="cpu", weights_only=False)
        assert ckpt["hyper_parameters"]["config"] == to_dict(cfg)
        assert ckpt["hyper_parameters"]["class_names"] == list(CLASS_NAMES)
        spec = ModelSpec.from_dict(ckpt["hyper_parameters"]["spec"])
        assert spec.class_names == CLASS_NAMES and spec.image_size == 64 and spec.dataset == "chestxray14"
        assert spec.heatmap_grid == heatmap_grid(build_model(cfg.model), 64) and spec.views == ("frontal",)
    epochs = read_epoch_metrics(run)
    assert list(epochs.index) == [0]
    for column in ["train_loss_epoch", "val_loss", "val_auc_mean", "lr", *(f"val_auc/{c}" for c in CLASS_NAMES)]:
        assert column in epochs.columns
    assert np.isfinite(epochs.loc[0, "val_loss"])
    assert list((run / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_epoch"] == 0 and summary["best_val_loss"] == pytest.approx(epochs.loc[0, "val_loss"])
    loaded = load_run(run)
    assert loaded.config == cfg and loaded.spec == spec and loaded.class_names == CLASS_NAMES
    output = loaded.model(torch.zeros(2, 3, 64, 64))
    assert output.logits.shape == (2, len(CLASS_NAMES))
    assert_same_state({f"model.{k}": v for k, v in loaded.model.state_dict().items()},
                      model_state(run / "checkpoints" / "best.ckpt"))


def test_one_epoch_with_per_class_weights_logs_their_validation_loss(phantom_dir, phantom_cache, tmp_path):
    """``loss.name=wcel_per_class`` trains with the fractions of positives of the run's own train split, and
    the validation loss it logs is Eq. 1 with those per-class weights, recomputed here from the checkpoint's
    logits on the validation images."""
    cfg = small_config(phantom_dir, tmp_path, "baseline", "loss.name=wcel_per_class", "train.batch_size=6")
    run = train(cfg)
    opened = open_run(run, device="cpu")
    data = opened.data
    frequencies = np.asarray(torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
                             ["hyper_parameters"]["class_frequencies"])
    np.testing.assert_allclose(frequencies, data.dataset.labels[data.splits.train].mean(axis=0), rtol=1e-12)
    assert ((frequencies > 0) & (frequencies < 1)).all()  # every class weighted on both sides
    validation = predict(opened.loaded.model, data.dataloader("val"), progress=False,
                         class_names=opened.loaded.class_names)
    y, z = validation.labels, validation.logits
    assert len(y) % 6 != 0  # a partial last batch: the logged loss must weigh batches by their images
    per_image = (y / frequencies * np.logaddexp(0, -z) + (1 - y) / (1 - frequencies) * np.logaddexp(0, z)).sum(1)
    logged = read_epoch_metrics(run).loc[0, "val_loss"]
    assert logged == pytest.approx(per_image.mean(), rel=1e-5)
    # the batch-wise weights of Eq. 1 (wcel) would have logged another value
    batch_wise = compute_loss(WeightedBCEWithLogits(), ModelOutput(logits=torch.from_numpy(z).float()),
                              torch.from_numpy(y).float())[0].item()
    assert abs(batch_wise - logged) > 1e-3 * logged  # a hundred times the tolerance above


@pytest.mark.slow
def test_loss_decreases_on_the_phantom_set(phantom_dir, phantom_cache, tmp_path):
    run = train(small_config(phantom_dir, tmp_path, "baseline", "train.max_epochs=4", "train.patience=10"))
    losses = read_epoch_metrics(run)["train_loss_epoch"].to_numpy()
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]


@pytest.mark.slow
def test_same_seed_and_config_give_identical_weights_and_metrics(phantom_dir, phantom_cache, tmp_path):
    cfg = small_config(phantom_dir, tmp_path, "space_attention", "data.augment=true")
    first, second = train(cfg), train(cfg)
    assert first != second  # the second run gets its own folder
    assert_same_state(model_state(first / "checkpoints" / "last.ckpt"), model_state(second / "checkpoints" / "last.ckpt"))
    pd.testing.assert_frame_equal(read_epoch_metrics(first), read_epoch_metrics(second))
    other = train(small_config(phantom_dir, tmp_path, "space_attention", "data.augment=true", "seed=1"))
    assert not torch.equal(model_state(first / "checkpoints" / "last.ckpt")["model.classifier.weight"],
                           model_state(other / "checkpoints" / "last.ckpt")["model.classifier.weight"])


class Snapshots(Callback):
    """Copies of the model weights at the end of each validation (what a checkpoint would hold)."""

    def __init__(self):
        self.states = {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.states[trainer.current_epoch] = copy.deepcopy(
                {f"model.{k}": v for k, v in pl_module.model.state_dict().items()})


class Sabotage(Callback):
    """From epoch 1 on, add large noise to the weights before validation so a later epoch is worse."""

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch >= 1 and not trainer.sanity_checking:
            generator = torch.Generator().manual_seed(trainer.current_epoch)
            with torch.no_grad():
                for parameter in pl_module.model.parameters():
                    parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)


@pytest.mark.slow
def test_best_checkpoint_holds_the_best_epoch_not_the_last(phantom_dir, phantom_cache, tmp_path):
    snapshots = Snapshots()
    run = train(small_config(phantom_dir, tmp_path, "baseline", "train.max_epochs=3", "train.patience=10"),
                callbacks=[Sabotage(), snapshots])
    epochs = read_epoch_metrics(run)
    best_epoch = int(epochs["val_loss"].idxmin())
    assert best_epoch != 2, "the sabotaged last epoch should not be the best"
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == best_epoch
    assert_same_state(model_state(run / "checkpoints" / "best.ckpt"), snapshots.states[best_epoch])
    assert_same_state(model_state(run / "checkpoints" / "last.ckpt"), snapshots.states[2])
    assert json.loads((run / "summary.json").read_text())["best_epoch"] == best_epoch


@pytest.mark.slow
def test_early_stopping_triggers_when_validation_loss_stalls(phantom_dir, phantom_cache, tmp_path, capsys):
    # min_delta larger than any possible change: after the first epoch nothing counts as an improvement
    run = train(small_config(phantom_dir, tmp_path, "baseline", "train.max_epochs=6", "train.patience=2",
                             "train.min_delta=1e6"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"] is True
    assert summary["epochs_completed"] == 3 and list(read_epoch_metrics(run).index) == [0, 1, 2]
    assert_resume_changes_nothing(run, ["train.max_epochs=10"], "early stopping ended it after epoch 2", capsys)


def assert_resume_changes_nothing(run, overrides, reason, capsys):
    """``thoracic train RUN`` of a finished run: says so on stderr, exit 0, every file as it was, and none of
    Lightning's messages (no validation pass, no warnings with library paths)."""
    from thoracic.cli import main

    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["train", str(run), *overrides]) == 0
    captured = capsys.readouterr()
    assert f"run {run} already finished: {reason}" in captured.err and "nothing was changed" in captured.err
    assert "site-packages" not in captured.err and "Validation" not in captured.err, captured.err
    assert captured.out.strip().endswith(f"run folder: {run}")
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


class Killed(Exception):
    pass


class KillAt(Callback):
    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise Killed(f"killed at epoch {self.epoch}, batch {batch_idx}")


@pytest.mark.slow
def test_run_killed_mid_epoch_and_resumed_ends_like_the_uninterrupted_run(phantom_dir, phantom_cache, tmp_path):
    # augmentation, a step schedule and early-stopping state all have to survive the resume exactly
    overrides = ("train.max_epochs=3", "train.patience=5", "data.augment=true", "optim.lr_step_epochs=1",
                 "optim.lr_gamma=0.5", "optim.weight_decay=1e-4")
    full = train(small_config(phantom_dir, tmp_path, "baseline", *overrides, "run_name=full"))
    with pytest.raises(Killed):
        train(small_config(phantom_dir, tmp_path, "baseline", *overrides, "run_name=killed"),
              callbacks=[KillAt(epoch=1, batch=2)])
    killed = tmp_path / "killed"
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    assert not (killed / "summary.json").exists()
    resumed = train(None, resume=killed)
    assert resumed == killed
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    assert_same_state(model_state(full / "checkpoints" / "last.ckpt"), model_state(killed / "checkpoints" / "last.ckpt"))
    assert a["lr_schedulers"] == b["lr_schedulers"]
    for state_a, state_b in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])
    early = [k for k in a["callbacks"] if k.startswith("EarlyStopping")][0]
    assert a["callbacks"][early]["wait_count"] == b["callbacks"][early]["wait_count"]
    assert torch.equal(a["callbacks"][early]["best_score"], b["callbacks"][early]["best_score"])
    pd.testing.assert_frame_equal(read_epoch_metrics(full), read_epoch_metrics(killed))
    info = json.loads((killed / "run_info.json").read_text())
    assert len(info["resumes"]) == 1 and info["resumes"][0]["checkpoint"].endswith("last.ckpt")


class PrecisionProbe(Callback):
    """Records, for every forward pass of the model during fit, whether its input was channels-last and the
    dtype of the backbone's final map, and whether the convolution weights were channels-last."""

    def __init__(self):
        self.inputs_channels_last, self.feature_dtypes, self.weights_channels_last = [], [], []

    def on_fit_start(self, trainer, pl_module):
        model = pl_module.model
        self.handles = [
            model.register_forward_pre_hook(lambda module, args: self.inputs_channels_last.append(
                args[0].is_contiguous(memory_format=torch.channels_last))),
            model.backbone.register_forward_hook(lambda module, args, output: self.feature_dtypes.append(
                output["final"].dtype)),
        ]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.weights_channels_last += [m.weight.is_contiguous(memory_format=torch.channels_last)
                                       for m in pl_module.model.modules() if isinstance(m, torch.nn.Conv2d)]

    def on_fit_end(self, trainer, pl_module):
        for handle in self.handles:
            handle.remove()


def test_bf16_mixed_precision_and_channels_last(phantom_dir, phantom_cache, tmp_path):
    # bf16 autocast runs on the CPU too; the loss and metrics stay float32
    probe = PrecisionProbe()
    run = train(small_config(phantom_dir, tmp_path, "space_attention", "train.precision=bf16-mixed",
                             "--train.channels_last"), callbacks=[probe])
    # the options reach the forward passes: channels-last inputs and weights, bf16 activations
    assert probe.inputs_channels_last and all(probe.inputs_channels_last)
    assert probe.weights_channels_last and all(probe.weights_channels_last)
    assert probe.feature_dtypes and set(probe.feature_dtypes) == {torch.bfloat16}
    epochs = read_epoch_metrics(run)
    assert np.isfinite(epochs.loc[0, "val_loss"]) and np.isfinite(epochs.loc[0, "train_loss_epoch"])
    state = model_state(run / "checkpoints" / "last.ckpt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


class PoisonAt(Callback):
    """Make the weights NaN at the start of one epoch (a diverged update)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            with torch.no_grad():
                next(pl_module.model.parameters()).fill_(float("nan"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(phantom_dir, phantom_cache, tmp_path):
    cfg = small_config(phantom_dir, tmp_path, "baseline", "train.max_epochs=3", "run_name=nan")
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 1.*last\.ckpt"):
        train(cfg, callbacks=[PoisonAt(epoch=1)])
    last = torch.load(tmp_path / "nan" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def _batchnorm_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.detach().clone() for name, buffer in module.named_buffers()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


class ValidationModeProbe(Callback):
    """Records, for every validation batch, whether the module was in eval mode with gradients off, and
    whether validation changed any BatchNorm running statistic (the seed code's validation did)."""

    def __init__(self):
        self.batches = 0
        self.failures = []
        self.changed_by_training = False

    def on_train_epoch_start(self, trainer, pl_module):
        self.before_training = _batchnorm_buffers(pl_module)

    def on_validation_epoch_start(self, trainer, pl_module):
        self.before = _batchnorm_buffers(pl_module)
        if not trainer.sanity_checking:  # the check below must be able to fail: training moves them
            self.changed_by_training |= any(not torch.equal(self.before_training[k], v)
                                            for k, v in self.before.items())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.batches += 1
        if pl_module.training or torch.is_grad_enabled():
            self.failures.append(f"batch {batch_idx}: training={pl_module.training}, "
                                 f"grad enabled={torch.is_grad_enabled()}")
        if any(m.training for m in pl_module.modules()):
            self.failures.append(f"batch {batch_idx}: a submodule is in training mode")

    def on_validation_epoch_end(self, trainer, pl_module):
        after = _batchnorm_buffers(pl_module)
        changed = [k for k, v in after.items() if not torch.equal(self.before[k], v)]
        if changed:
            self.failures.append(f"validation changed BatchNorm statistics: {changed[:3]}")


def test_validation_runs_in_eval_mode_without_gradients(phantom_dir, phantom_cache, tmp_path):
    probe = ValidationModeProbe()
    train(small_config(phantom_dir, tmp_path, "attention_gated", "train.limit_train_batches=2"), callbacks=[probe])
    assert probe.batches > 2  # sanity check batches and the epoch's validation
    assert probe.changed_by_training and any("running_mean" in k for k in probe.before)
    assert probe.failures == []


def test_resume_refuses_changes_to_what_the_run_learns(phantom_dir, phantom_cache, tmp_path):
    run = train(small_config(phantom_dir, tmp_path, "baseline"))
    assert config_for_resume(run, ["train.max_epochs=2"]).train.max_epochs == 2
    with pytest.raises(ConfigError, match="cannot change optim.lr when resuming"):
        config_for_resume(run, ["optim.lr=0.1"])
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(RunError, match="no last checkpoint"):
        train(None, resume=tmp_path / "empty_run")


@pytest.mark.slow
def test_cli_train_then_resume_to_more_epochs(phantom_dir, phantom_cache, tmp_path, capsys):
    from thoracic.cli import main

    args = ["train", "--config", "baseline", "model.backbone=resnet10", "--no-model.pretrained",
            "data.image_size=64", f"data.root={phantom_dir}", "data.val_fraction=0.3", "data.num_workers=0",
            "train.batch_size=16", "train.max_epochs=1", "--no-train.progress_bar", "--devices", "1",
            "train.accelerator=cpu", "--output-dir", str(tmp_path), "--run-name", "cli"]
    assert main(args) == 0
    run = tmp_path / "cli"
    assert f"run folder: {run}" in capsys.readouterr().out
    assert main(["train", "--resume", str(run), "train.max_epochs=2"]) == 0
    err = capsys.readouterr().err
    assert "Previous log files" not in err and "exists and is not empty" not in err, err  # nothing is deleted
    assert list(read_epoch_metrics(run).index) == [0, 1]
    info = json.loads((run / "run_info.json").read_text())
    assert info["command_line"][:4] == ["thoracic", "train", "--config", "baseline"]
    assert info["resumes"][0]["command_line"] == ["thoracic", "train", "--resume", str(run), "train.max_epochs=2"]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_epochs"] == 1  # as first resolved
    assert main(["train", "--resume", str(run), "--config", "baseline"]) == 2
    assert_resume_changes_nothing(run, [], "it trained all 2 epochs of train.max_epochs", capsys)


@pytest.mark.slow
def test_lr_sweep_picks_the_lowest_validation_loss(phantom_dir, phantom_cache, tmp_path):
    cfg = small_config(phantom_dir, tmp_path, "baseline")
    result = lr_sweep(cfg, [1e-2, 1e-3, 1e-4], epochs=1, out=tmp_path / "sweep")
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert list(table["lr"]) == [1e-2, 1e-3, 1e-4] and (table["status"] == "ok").all()
    assert result.best_lr == table.loc[table["best_val_loss"].idxmin(), "lr"]
    for row in table.itertuples():
        summary = json.loads((tmp_path / "sweep" / row.run / "summary.json").read_text())
        assert summary["best_val_loss"] == pytest.approx(row.best_val_loss)
        assert yaml.safe_load((tmp_path / "sweep" / row.run / "config.yaml").read_text())["optim"]["lr"] == row.lr
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["best_lr"] == result.best_lr
    assert "(chosen)" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    again = lr_sweep(cfg, [1e-2, 1e-3, 1e-4], epochs=1, out=tmp_path / "sweep")  # finished runs are skipped
    assert again.best_lr == result.best_lr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == list(table["run"].sort_values())


@pytest.mark.slow
def test_experiment_aggregates_every_metric_over_seeds(phantom_dir, phantom_cache, tmp_path):
    from thoracic.workflows.report import build_report

    cfg = small_config(phantom_dir, tmp_path, "baseline")
    result = run_experiment(cfg, [0, 1], out=tmp_path / "exp", bootstrap=20, localize=True)
    per_seed = pd.read_csv(tmp_path / "exp" / "per_seed.csv", index_col="seed")
    assert list(per_seed.index) == [0, 1]
    for column in ("val_loss", "val_auc_mean", "test_loss", "test_auc_mean", "best_epoch", "test_auc/Hernia"):
        assert column in per_seed.columns
    assert per_seed.loc[0, "val_loss"] != per_seed.loc[1, "val_loss"]  # different seeds, different runs
    for seed in (0, 1):
        run_cfg = yaml.safe_load((tmp_path / "exp" / f"seed{seed}" / "config.yaml").read_text())
        assert run_cfg["seed"] == seed and run_cfg["data"]["split_seed"] == cfg.data.split_seed
    summary = pd.read_csv(tmp_path / "exp" / "summary.csv", index_col="metric")
    assert summary.loc["val_loss", "mean"] == pytest.approx(per_seed["val_loss"].mean())
    assert summary.loc["val_loss", "std"] == pytest.approx(per_seed["val_loss"].std(ddof=1))
    stored = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert stored["seeds"] == [0, 1] and stored["metrics"]["test_auc_mean"]["n"] == 2
    assert "val_auc_mean" in (tmp_path / "exp" / "summary.md").read_text()
    pd.testing.assert_frame_equal(result.summary, aggregate_metrics(result.per_seed))
    # every seed went through `thoracic evaluate`, so the experiment folder itself is reportable
    for seed in (0, 1):
        auc = json.loads((tmp_path / "exp" / f"seed{seed}" / "evaluation" / "auc_test.json").read_text())
        assert auc["seed"] == seed and auc["bootstrap"]["n_resamples"] == 20
        # the bootstrap pipeline and Lightning's test metric agree on the same checkpoint and images
        assert auc["mean_auc"] == pytest.approx(per_seed.loc[seed, "test_auc_mean"], abs=1e-5)
    markdown, html = build_report([tmp_path / "exp"])
    assert markdown == tmp_path / "exp" / "report.md" and html.is_file()
    text = markdown.read_text()
    assert "baseline (resnet10, 64 px) x2 seeds" in text and "±" in text and "on the test split" in text
    assert "IoBB > 0.5" in text and "centre box" in text  # localization of both seeds, as mean ± std


@pytest.mark.slow
def test_rerun_sweep_restarts_a_run_that_died_before_its_first_checkpoint(phantom_dir, phantom_cache, tmp_path):
    cfg = small_config(phantom_dir, tmp_path, "baseline")
    with pytest.raises(Killed):
        lr_sweep(cfg, [1e-3], epochs=1, out=tmp_path / "sweep", callbacks=[KillAt(epoch=0, batch=1)])
    half_made = tmp_path / "sweep" / "lr_1.00e-03"
    assert not half_made.exists()  # a run that fails before its first checkpoint removes its own files
    # what a SIGKILL before the first checkpoint leaves (no chance to clean up): config, logs, no .ckpt
    (half_made / "logs" / "tensorboard").mkdir(parents=True)
    (half_made / "checkpoints").mkdir()
    save_config(cfg, half_made / "config.yaml")
    (half_made / "run_info.json").write_text("{}")
    (half_made / "logs" / "metrics.csv").write_text("epoch,step,train_loss_step\n0,0,1.0\n")
    (half_made / "logs" / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"x")
    (half_made / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeDeleteError, match="notes.txt"):  # never deletes what it did not write
        lr_sweep(cfg, [1e-3], epochs=1, out=tmp_path / "sweep")
    assert (half_made / "notes.txt").read_text() == "mine" and (half_made / "config.yaml").is_file()
    (half_made / "notes.txt").unlink()
    result = lr_sweep(cfg, [1e-3], epochs=1, out=tmp_path / "sweep")
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["lr_1.00e-03"]  # no "-2"
    assert result.table.loc[0, "status"] == "ok" and (half_made / "summary.json").is_file()
    assert "resumes" not in json.loads((half_made / "run_info.json").read_text())  # started again, fresh


@pytest.mark.slow
def test_rerun_experiment_resumes_a_seed_stopped_after_an_epoch(phantom_dir, phantom_cache, tmp_path):
    cfg = small_config(phantom_dir, tmp_path, "baseline", "train.max_epochs=2", "train.patience=5")
    with pytest.raises(Killed):
        run_experiment(cfg, [0], out=tmp_path / "exp", test=False, callbacks=[KillAt(epoch=1, batch=0)])
    run = tmp_path / "exp" / "seed0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0
    other = small_config(phantom_dir, tmp_path, "baseline", "train.max_epochs=2", "train.patience=5", "optim.lr=1e-2")
    with pytest.raises(RunError, match=r"another config \(optim\.lr differ"):
        run_experiment(other, [0], out=tmp_path / "exp", test=False)
    run_experiment(cfg, [0], out=tmp_path / "exp", test=False)
    assert sorted(p.name for p in (tmp_path / "exp").iterdir() if p.is_dir()) == ["seed0"]
    assert list(read_epoch_metrics(run).index) == [0, 1]
    assert len(json.loads((run / "run_info.json").read_text())["resumes"]) == 1


def test_train_or_resume_never_deletes_checkpoints(tmp_path):
    from thoracic.training.trainer import train_or_resume

    run = tmp_path / "lr_1e-3"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    cfg = load_config_by_name("baseline", [f"output_dir={tmp_path}", "run_name=lr_1e-3"])
    with pytest.raises(RunError, match=r"best\.ckpt.*no checkpoints/last\.ckpt"):
        train_or_resume(cfg)
    assert (run / "checkpoints" / "best.ckpt").read_bytes() == b"weights"


@pytest.mark.slow
@pytest.mark.nih
def test_the_three_paper_models_train_on_the_real_sample(nih_sample_dir, tmp_path):
    from thoracic.data.cache_writer import prepare_cache

    prepare_cache(nih_sample_dir, 64, num_workers=1, progress=False)
    for model in MODELS:
        run = train(small_config(nih_sample_dir, tmp_path, model, "train.batch_size=8"))
        assert np.isfinite(read_epoch_metrics(run).loc[0, "val_loss"])
        assert (run / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_lr_sweep_and_experiment_commands(phantom_dir, phantom_cache, tmp_path, capsys):
    from thoracic.cli import main

    common = ["--config", "baseline", "model.backbone=resnet10", "--no-model.pretrained", "data.image_size=64",
              f"data.root={phantom_dir}", "data.val_fraction=0.3", "data.num_workers=0", "train.batch_size=16",
              "--no-train.progress_bar", "train.accelerator=cpu", "--devices", "1"]
    assert main(["lr-sweep", *common, "--lrs", "1e-3", "--epochs", "1", "--folder", str(tmp_path / "sweep")]) == 0
    assert "chosen learning rate: 1.00e-03" in capsys.readouterr().out
    assert main(["experiment", *common, "train.max_epochs=1", "--seeds", "3", "--no-test",
                 "--folder", str(tmp_path / "exp")]) == 0
    assert "| val_loss |" in capsys.readouterr().out
    per_seed = pd.read_csv(tmp_path / "exp" / "per_seed.csv", index_col="seed")
    assert list(per_seed.index) == [3] and "test_loss" not in per_seed.columns
    assert not (tmp_path / "exp" / "seed3" / "evaluation").exists()
    assert main(["experiment", *common, "--seeds", "3", "--no-test", "--localize"]) == 2
    assert "--localize" in capsys.readouterr().err
    assert main(["experiment", *common, "--seeds", "1", "1"]) == 2
    assert "seeds must be distinct" in capsys.readouterr().err


def test_uint8_batches_are_normalised_on_the_device_like_the_float_dataset(phantom_dir, phantom_cache, tmp_path):
    """The trainer's loaders send uint8 images; on_after_batch_transfer must give what the float dataset gives."""
    from thoracic.training.module import ThoracicModule
    from thoracic.training.factory import build_datamodule

    cfg = small_config(phantom_dir, tmp_path)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["image"].dtype == torch.uint8
    module = ThoracicModule(cfg)
    moved = module.on_after_batch_transfer(batch, 0)
    reference = datamodule.split_dataset("val")
    float_dataset = type(reference)(reference.dataset, reference.cache, reference.indices,
                                    normalize=cfg.data.normalize)
    expected = torch.stack([float_dataset[i]["image"] for i in range(len(batch["labels"]))])
    assert moved["image"].dtype == torch.float32
    torch.testing.assert_close(moved["image"], expected)

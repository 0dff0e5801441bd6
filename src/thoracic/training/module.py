"""The LightningModule: one model of the registry, its loss, Adam and the paper's step schedule.

What it logs each epoch: ``train_loss_step`` and ``train_loss_epoch``, ``lr``, ``val_loss``,
``val_auc/<class>`` for every label the run trains on (its spec's ``class_names``) and ``val_auc_mean``
(mean over the classes whose AUC is defined: the AUC of :func:`thoracic.metrics.per_class_auc`, the same
function and rules as ``thoracic evaluate``); every epoch-level value is logged by the end of
validation, before the epoch's checkpoints are written. Validation runs in eval mode without gradients (Lightning's evaluation loop),
unlike the seed paper's code, which validated in train mode and so updated BatchNorm statistics on
validation images (seed NOTES, "Training as it really was").

The AUC is computed over *all* processes: predictions, labels and dataset indices are gathered from
every rank (torchmetrics ``cat`` states) and de-duplicated by index, because a ``DistributedSampler``
pads the last shard by repeating images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from thoracic.config import Config, config_from_dict, to_dict
from thoracic.data.dataset import normalize_images
from thoracic.errors import RunError
from thoracic.losses import build_loss
from thoracic.metrics import per_class_auc
from thoracic.models import build_model
from thoracic.models.output import ModelOutput
from thoracic.spec import SPEC_KEY, ModelSpec, legacy_class_names
from thoracic.training.checkpoints import training_spec


class NonFiniteLossError(RunError):
    """The training or validation loss became NaN or infinite; the run stops, last.ckpt is kept."""


class DeduplicatedAUROC(Metric):
    """Per-class ROC AUC over every process, counting each dataset index once.

    A cumulative wrapper around the one pure AUC function, :func:`thoracic.metrics.per_class_auc` (the
    pattern of MONAI's ``ROCAUCMetric`` around ``compute_roc_auc``): states are concatenated across
    processes on ``compute`` (torchmetrics syncs them under DDP), rows with a repeated ``index``
    (DistributedSampler padding) are dropped, and the function does the rest, with the same rules as
    ``thoracic evaluate``: NaN labels (not labelled) are skipped per class, and a class whose labelled rows
    hold a single value has no AUC (NaN, never 0).
    """

    full_state_update = False

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor, indices: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())  # NaN (not labelled) kept: the AUC skips it
        self.indices.append(indices.detach().long().reshape(-1))

    def compute(self) -> torch.Tensor:
        # After a DDP sync the list states are already concatenated tensors.
        if isinstance(self.preds, list) and not self.preds:
            return torch.full((self.num_labels,), float("nan"))
        preds = dim_zero_cat(self.preds)
        target = dim_zero_cat(self.target)
        indices = dim_zero_cat(self.indices)
        preds, target = _deduplicate(preds, target, indices)
        result = per_class_auc(target.cpu().double().numpy(), preds.cpu().double().numpy())
        return torch.from_numpy(result.auc).to(device=preds.device, dtype=torch.float32)


class ImageWeightedMean(Metric):
    """The mean of per-batch losses weighted by their batch's image count, summed over every process.

    torchmetrics' ``MeanMetric`` would do this, but with ``nan_strategy="disable"`` (no NaN check, so no
    device synchronisation per step) torchmetrics 1.9 replaces the weights by ones (its issue #3434): a
    partial last batch would then count as much as a full one. Sums in float64; no NaN check either (the
    module checks the losses itself).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("weight", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int | float) -> None:
        self.total += value.detach().double() * float(weight)
        self.weight += float(weight)

    def compute(self) -> torch.Tensor:
        return (self.total / self.weight).float()


def _deduplicate(
    preds: torch.Tensor, target: torch.Tensor, indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the first row of every dataset index (rows are in gather order)."""
    order = torch.argsort(indices, stable=True)
    sorted_indices = indices[order]
    keep = torch.ones_like(sorted_indices, dtype=torch.bool)
    keep[1:] = sorted_indices[1:] != sorted_indices[:-1]
    rows = order[keep]
    return preds[rows], target[rows]


def compute_loss(
    loss_fn: nn.Module, output: ModelOutput, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(total, main)``: the loss of the logits plus one term per deep-supervision head.

    The attention-gated network's ``aggregation=deep_supervision`` returns auxiliary per-level
    predictions that are trained with the same loss (Schlemper et al. 2019, deep supervision);
    each auxiliary term has weight 1, as the summed objective of the published code. The loss is
    computed in float32 even under mixed precision.
    """
    targets = targets.float()
    main = loss_fn(output.logits.float(), targets)
    total = main
    for aux in output.aux_logits:
        total = total + loss_fn(aux.float(), targets)
    return total, main


#: On accelerators, how often (in steps) the training loss is checked for NaN / inf.
FINITE_CHECK_EVERY = 50


class ThoracicModule(LightningModule):
    """Trains one registry model with the config's loss and optimiser.

    Args:
        config: the resolved run config (stored in every checkpoint with the spec).
        class_frequencies: fraction of positive training images per class (per-class loss weights);
            ``None`` when the loss does not need them.
        class_names: the labels trained on, in the order of the model's outputs (without ``spec``);
            default ChestX-ray14's.
        model: an already built model (resume, evaluation, benchmarks); by default
            ``build_model(config.model)``.
        spec: the run's :class:`~thoracic.spec.ModelSpec` (what ``train`` passes); by default built from
            the config, ``class_names`` and the model (:func:`~thoracic.training.checkpoints.training_spec`).

    Checkpoints hold ``hyper_parameters = {"config": to_dict(config), "class_names": [...],
    "class_frequencies": [...] or None, "spec": spec.to_dict()}`` and the model under
    ``state_dict["model.*"]`` (the contract of :mod:`thoracic.training.checkpoints`).

    Raises:
        RunError: the labels do not fit the model's outputs, or ``class_frequencies`` has another length.
    """

    def __init__(
        self,
        config: Config | Mapping[str, Any],
        class_frequencies: Sequence[float] | np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
        model: nn.Module | None = None,
        spec: ModelSpec | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(config, Config):
            config = config_from_dict(config)
        self.model = build_model(config.model) if model is None else model
        if spec is None:
            names = tuple(class_names) if class_names is not None else legacy_class_names()
            spec = training_spec(config, names, self.model)
        elif not isinstance(spec, ModelSpec):  # load_from_checkpoint passes the stored plain data back
            spec = ModelSpec.from_dict(spec, "hyper_parameters['spec']")
        outputs = getattr(self.model, "num_classes", spec.num_classes)
        if outputs != spec.num_classes:
            raise RunError(f"the model has {outputs} outputs for {spec.num_classes} labels "
                           f"({', '.join(spec.class_names)})")
        frequencies = None if class_frequencies is None else [float(f) for f in np.asarray(class_frequencies)]
        if frequencies is not None and len(frequencies) != spec.num_classes:
            raise RunError(f"{len(frequencies)} class frequencies for {spec.num_classes} labels")
        # Set directly (not save_hyperparameters, which inspects the __init__ arguments): these are exactly
        # the keys the checkpoint contract names, and load_from_checkpoint passes them back as arguments.
        self.hparams.update(
            {"config": to_dict(config), "class_names": list(spec.class_names), "class_frequencies": frequencies,
             SPEC_KEY: spec.to_dict()}
        )
        self.config = config
        self.spec = spec
        self.class_names = spec.class_names
        self.loss_fn = build_loss(config.loss, None if frequencies is None else np.asarray(frequencies))
        self.val_auc = DeduplicatedAUROC(len(self.class_names))
        self.test_auc = DeduplicatedAUROC(len(self.class_names))
        # Image-weighted mean over every process (Lightning's sync_dist would average per-rank means).
        self.val_loss = ImageWeightedMean()
        self.test_loss = ImageWeightedMean()
        self.train_loss = ImageWeightedMean()

    #: What the run trains on (:func:`thoracic.training.run_folder.data_provenance`); saved into every
    #: checkpoint as ``thoracic_data`` (read back by :func:`thoracic.training.checkpoints.checkpoint_info`).
    data_provenance: dict[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.data_provenance is not None:
            checkpoint["thoracic_data"] = dict(self.data_provenance)

    # ------------------------------------------------------------------ forward / steps

    def configure_model(self) -> None:
        if self.config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor, return_maps: bool = False) -> ModelOutput:
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images, return_maps=return_maps)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Normalise uint8 image batches on the device (the data module sends them as uint8)."""
        if isinstance(batch, Mapping) and batch["image"].dtype == torch.uint8:
            batch = dict(batch)
            batch["image"] = normalize_images(batch["image"], self.config.data.normalize)
        return batch

    def _check_finite(self, loss: torch.Tensor, stage: str, reduce: bool = True) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        # All ranks must take the same decision, or the others would wait forever in the next all-reduce.
        if reduce and self.trainer is not None and self.trainer.world_size > 1:
            finite = bool(self.trainer.strategy.reduce_boolean_decision(finite, all=True))
        if not finite:
            raise NonFiniteLossError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}: "
                "training stopped; checkpoints/last.ckpt (if any) holds the last finished, finite epoch. "
                "Lower optim.lr, or use train.precision=32-true or bf16-mixed instead of 16-mixed."
            )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        output = self(batch["image"])
        loss, _ = compute_loss(self.loss_fn, output, batch["labels"])
        # Reading the loss on the host waits for the accelerator: on a GPU check every
        # FINITE_CHECK_EVERY steps (and at the end of every epoch, through the validation loss).
        if loss.device.type == "cpu" or batch_idx % FINITE_CHECK_EVERY == 0:
            self._check_finite(loss, "training")
        self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch["labels"].shape[0])
        self.train_loss.update(loss.detach(), weight=batch["labels"].shape[0])
        return loss

    def _log_training_epoch(self) -> None:
        """``train_loss_epoch`` (image-weighted mean over every process) and the epoch's ``lr``.

        Logged at the end of validation, not of the training epoch: Lightning writes the checkpoints at
        the end of validation and logs training-epoch metrics only after them, so a run killed between
        the two would resume after an epoch whose row in the CSV log was never written. The learning
        rate is the one this epoch ran with (the step schedule updates it after the epoch).
        """
        if self.train_loss.update_count == 0:
            return
        optimizer = self.optimizers()
        optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
        self.log("train_loss_epoch", self.train_loss.compute(), on_step=False, on_epoch=True)
        self.log("lr", float(optimizer.param_groups[0]["lr"]), on_step=False, on_epoch=True)
        self.train_loss.reset()

    def _evaluate_step(self, batch: Mapping[str, Any], stage: str) -> torch.Tensor:
        output = self(batch["image"])
        loss, _ = compute_loss(self.loss_fn, output, batch["labels"])
        metric: DeduplicatedAUROC = getattr(self, f"{stage}_auc")
        metric.update(torch.sigmoid(output.logits.float()), batch["labels"], _as_index_tensor(batch, loss.device))
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=batch["labels"].shape[0])
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._evaluate_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        return self._evaluate_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        """Loss and per-class AUC over all processes (each computed once, identical on every rank)."""
        loss_metric: ImageWeightedMean = getattr(self, f"{stage}_loss")
        auc_metric: DeduplicatedAUROC = getattr(self, f"{stage}_auc")
        loss = loss_metric.compute()
        auc = auc_metric.compute().cpu().reshape(-1)  # (torchmetrics returns one class's AUC as a scalar)
        loss_metric.reset()
        auc_metric.reset()
        if stage == "val":
            # Same value on every rank after the metric's sync, so every rank takes the same decision.
            self._check_finite(loss, "validation", reduce=False)
        values = {f"{stage}_auc/{name}": float(v) for name, v in zip(self.class_names, auc.tolist())}
        defined = [v for v in auc.tolist() if not math.isnan(v)]
        self.log_dict(values, on_step=False, on_epoch=True)
        self.log(f"{stage}_auc_mean", float(np.mean(defined)) if defined else float("nan"),
                 on_step=False, on_epoch=True, prog_bar=True)
        self.log(f"{stage}_loss", float(loss), on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.val_auc.reset()
            self.val_loss.reset()
            return
        self._log_epoch_metrics("val")
        self._log_training_epoch()

    def on_train_epoch_end(self) -> None:
        # an epoch without validation (none configured for it): its training row is logged here
        self._log_training_epoch()

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> Any:
        """Adam (paper section 4) with optional weight decay and ``lr * gamma`` every ``lr_step_epochs``."""
        optim = self.config.optim
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
        if optim.lr_step_epochs <= 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim.lr_step_epochs, gamma=optim.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def _as_index_tensor(batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    index = batch.get("index")
    if index is None:  # no dataset index: every row counts (no de-duplication possible)
        raise RunError("validation batches must carry the dataset 'index' of each image (data contract)")
    return torch.as_tensor(index, device=device).long()

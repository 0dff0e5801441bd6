"""Training losses on raw logits: Eq. 1's weighted cross-entropy (WCEL) and its alternatives.

All losses take ``(logits, targets)`` of shape ``(B, C)`` (targets 0/1 floats) and return a scalar with
the same reduction as the paper's code: **summed over the classes, averaged over the batch**. Every
log-probability is computed with ``F.logsigmoid`` on the logits, so saturated sigmoids (logits of
+-100) give finite losses and gradients (the original code took ``log`` of sigmoid outputs: NaN).

**Missing labels are missing**: a target of NaN (an image not labelled for a class, or an uncertain label
to be ignored) adds nothing to the loss and gets no gradient, and Eq. 1's weights count only labelled
entries. The reduction stays "summed over the (labelled) classes, averaged over the batch's images".
A label matrix without NaN (ChestX-ray14) gives exactly the unmasked losses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from thoracic.config import ConfigError, LossConfig


def _log_probabilities(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p, log (1 - p))`` with ``p = sigmoid(logits)``, both stable for extreme logits."""
    return F.logsigmoid(logits), F.logsigmoid(-logits)


def _check(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, labelled)``: targets in the logits' dtype with NaN replaced by 0 (so that no NaN reaches
    the arithmetic or its gradient) and the 0/1 mask of labelled entries."""
    if logits.shape != targets.shape:
        raise ValueError(f"loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    targets = targets.to(logits.dtype)
    labelled = ~torch.isnan(targets)
    return torch.where(labelled, targets, torch.zeros_like(targets)), labelled.to(logits.dtype)


class WeightedBCEWithLogits(nn.Module):
    """Weighted cross-entropy of Eq. 1 (Wang et al. 2017), one weight pair per batch.

    ``beta_P = (|P| + |N|) / |P|`` and ``beta_N = (|P| + |N|) / |N|``, where ``|P|`` and ``|N|`` count the
    ones and zeros of the batch's **whole** label matrix (all classes together, as the paper's code did;
    NaN entries, not labelled, count in neither and add no term), and per image ``L = beta_P sum_{y_c=1} -ln p_c + beta_N sum_{y_c=0} -ln(1 - p_c)``; the batch loss is
    the mean of ``L`` over images.

    A batch without positives (or without negatives) has no term for that side, so its weight is
    irrelevant; the counts are clamped at 1 to keep it finite, which makes the other side's weight
    ``(|P|+|N|)/|N| = 1``: an all-negative batch gets the plain cross-entropy.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets, labelled = _check(logits, targets)
        positives = targets.sum().detach()
        negatives = labelled.sum().detach() - positives
        total = positives + negatives
        # reciprocal, then the product: the very arithmetic of `float / tensor` (Tensor.__rtruediv__) with
        # which the weights were computed before labels could be missing, so that a label matrix without NaN
        # (ChestX-ray14) trains bit for bit as it did (an exact division rounds differently in the last bit)
        beta_p = positives.clamp_min(1.0).reciprocal() * total
        beta_n = negatives.clamp_min(1.0).reciprocal() * total
        log_p, log_not_p = _log_probabilities(logits)
        per_element = -(beta_p * targets * log_p + beta_n * (labelled - targets) * log_not_p)
        return per_element.sum(dim=1).mean()


class PerClassWeightedBCEWithLogits(nn.Module):
    """Eq. 1 with fixed per-class weights from training-set frequencies (an option; not the paper's).

    For class ``c`` with positive frequency ``f_c`` in the training set: ``beta_P,c = 1 / f_c`` and
    ``beta_N,c = 1 / (1 - f_c)``, i.e. Eq. 1's ratios counted per class over the training set's rows
    labelled for ``c`` (:func:`thoracic.metrics.positive_fractions`). A class with no positives
    (``f_c = 0``) or no negatives (``f_c = 1``) in the training set gets weight 1 on the side that never
    occurred there, and a class never labelled (``f_c`` NaN) weight 1 on both. NaN targets add no term. Reduction: summed over
    classes, averaged over the batch.
    """

    def __init__(self, class_frequencies: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        frequencies = torch.as_tensor(np.asarray(class_frequencies, dtype=np.float64))
        if frequencies.ndim != 1 or bool(((frequencies < 0) | (frequencies > 1)).any()):
            raise ValueError(f"class_frequencies must be a vector of fractions in [0, 1] (NaN: never labelled), "
                             f"got {class_frequencies!r}")
        ones = torch.ones_like(frequencies)
        labelled = ~torch.isnan(frequencies)
        beta_p = torch.where(labelled & (frequencies > 0), 1.0 / frequencies.clamp_min(1e-12), ones)
        beta_n = torch.where(labelled & (frequencies < 1), 1.0 / (1.0 - frequencies).clamp_min(1e-12), ones)
        self.register_buffer("beta_positive", beta_p.float())
        self.register_buffer("beta_negative", beta_n.float())

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets, labelled = _check(logits, targets)
        if logits.shape[1] != self.beta_positive.numel():
            raise ValueError(f"loss: {logits.shape[1]} classes but {self.beta_positive.numel()} class frequencies")
        log_p, log_not_p = _log_probabilities(logits)
        per_element = -(self.beta_positive * targets * log_p
                        + self.beta_negative * (labelled - targets) * log_not_p)
        return per_element.sum(dim=1).mean()


class BCEWithLogits(nn.Module):
    """Plain (unweighted) binary cross-entropy; summed over the labelled classes, averaged over the batch."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets, labelled = _check(logits, targets)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * labelled
        return loss.sum(dim=1).mean()


class FocalLossWithLogits(nn.Module):
    """Focal loss (Lin et al. 2017) without class balancing: ``-(1 - p_t)^gamma ln p_t``.

    ``gamma = 0`` is plain cross-entropy. Summed over the labelled classes, averaged over the batch.
    """

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal loss: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets, labelled = _check(logits, targets)
        log_p, log_not_p = _log_probabilities(logits)
        log_p_true = targets * log_p + (1.0 - targets) * log_not_p
        modulation = (1.0 - log_p_true.exp()).clamp_min(0.0).pow(self.gamma)
        return (-modulation * log_p_true * labelled).sum(dim=1).mean()


def build_loss(cfg: LossConfig, class_frequencies: np.ndarray | None = None) -> nn.Module:
    """The loss named by ``cfg.name``: ``wcel`` (Eq. 1, default), ``wcel_per_class``, ``bce`` or ``focal``.

    Args:
        cfg: the loss section of the config.
        class_frequencies: fraction of positive training images per class, over the images labelled for it
            (:func:`thoracic.metrics.positive_fractions`; needed by ``wcel_per_class``).
    """
    if cfg.name == "wcel":
        return WeightedBCEWithLogits()
    if cfg.name == "wcel_per_class":
        if class_frequencies is None:
            raise ConfigError("loss.name: wcel_per_class needs the training-set class frequencies (none were given)")
        return PerClassWeightedBCEWithLogits(class_frequencies)
    if cfg.name == "bce":
        return BCEWithLogits()
    if cfg.name == "focal":
        return FocalLossWithLogits(cfg.focal_gamma)
    raise ConfigError(f"loss.name: expected one of wcel, wcel_per_class, bce, focal, got {cfg.name!r}")

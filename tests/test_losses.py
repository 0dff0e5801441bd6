"""Hand-computed values of the training losses (paper Eq. 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from thoracic.config import ConfigError, LossConfig
from thoracic.losses import (
    BCEWithLogits,
    FocalLossWithLogits,
    PerClassWeightedBCEWithLogits,
    WeightedBCEWithLogits,
    build_loss,
)


def neg_log_sigmoid(z: float) -> float:
    """-ln(sigmoid(z)) = ln(1 + e^-z)."""
    return math.log1p(math.exp(-z))


def neg_log_one_minus_sigmoid(z: float) -> float:
    """-ln(1 - sigmoid(z)) = ln(1 + e^z)."""
    return math.log1p(math.exp(z))


LOGITS = torch.tensor([[0.0, 2.0, -1.0], [-1.0, 0.5, 3.0]])
TARGETS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_wcel_hand_computed() -> None:
    # |P| = 2, |N| = 4 over the whole 2x3 label matrix: beta_P = 6/2 = 3, beta_N = 6/4 = 1.5.
    image1 = 3 * neg_log_sigmoid(0.0) + 1.5 * (neg_log_one_minus_sigmoid(2.0) + neg_log_one_minus_sigmoid(-1.0))
    image2 = 1.5 * (neg_log_one_minus_sigmoid(-1.0) + neg_log_one_minus_sigmoid(0.5)) + 3 * neg_log_sigmoid(3.0)
    expected = (image1 + image2) / 2  # summed over classes, averaged over the batch
    assert WeightedBCEWithLogits()(LOGITS, TARGETS).item() == pytest.approx(expected, rel=1e-6)


def test_wcel_all_zero_batch_is_plain_cross_entropy() -> None:
    targets = torch.zeros_like(LOGITS)
    # No positives: beta_N = 6/6 = 1 and the (absent) positive term is irrelevant.
    expected = sum(neg_log_one_minus_sigmoid(z) for z in LOGITS.flatten().tolist()) / 2
    assert WeightedBCEWithLogits()(LOGITS, targets).item() == pytest.approx(expected, rel=1e-6)


def test_wcel_all_one_batch_is_plain_cross_entropy() -> None:
    targets = torch.ones_like(LOGITS)
    expected = sum(neg_log_sigmoid(z) for z in LOGITS.flatten().tolist()) / 2
    assert WeightedBCEWithLogits()(LOGITS, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [WeightedBCEWithLogits(), PerClassWeightedBCEWithLogits([0.5, 0.5]), BCEWithLogits(), FocalLossWithLogits(2.0)],
)
def test_extreme_logits_stay_finite(loss: torch.nn.Module) -> None:
    logits = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # first image right, second confidently wrong
    value = loss(logits, targets)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    if isinstance(loss, WeightedBCEWithLogits):
        # |P| = |N| = 2: both betas 2; only the wrong image costs 2 * (100 + 100), averaged over 2 images.
        assert value.item() == pytest.approx(200.0, rel=1e-5)


def test_per_class_weights_hand_computed() -> None:
    loss = PerClassWeightedBCEWithLogits(np.array([0.25, 0.5, 0.0]))
    # beta_P = 1/f = (4, 2, 1: no positives in training), beta_N = 1/(1-f) = (4/3, 2, 1).
    image1 = 4 * neg_log_sigmoid(0.0) + 2 * neg_log_one_minus_sigmoid(2.0) + 1 * neg_log_one_minus_sigmoid(-1.0)
    image2 = 4 / 3 * neg_log_one_minus_sigmoid(-1.0) + 2 * neg_log_one_minus_sigmoid(0.5) + 1 * neg_log_sigmoid(3.0)
    assert loss(LOGITS, TARGETS).item() == pytest.approx((image1 + image2) / 2, rel=1e-6)
    with pytest.raises(ValueError, match="class_frequencies"):
        PerClassWeightedBCEWithLogits(np.array([1.5]))


def test_bce_and_focal_hand_computed() -> None:
    per_element = [
        neg_log_sigmoid(z) if y else neg_log_one_minus_sigmoid(z)
        for z, y in zip(LOGITS.flatten().tolist(), TARGETS.flatten().tolist())
    ]
    assert BCEWithLogits()(LOGITS, TARGETS).item() == pytest.approx(sum(per_element) / 2, rel=1e-6)
    assert FocalLossWithLogits(0.0)(LOGITS, TARGETS).item() == pytest.approx(sum(per_element) / 2, rel=1e-6)
    # gamma = 2: each term scaled by (1 - p_t)^2 with p_t = exp(-term).
    focal = sum((1 - math.exp(-t)) ** 2 * t for t in per_element) / 2
    assert FocalLossWithLogits(2.0)(LOGITS, TARGETS).item() == pytest.approx(focal, rel=1e-5)


def test_build_loss_names() -> None:
    assert isinstance(build_loss(LossConfig(name="wcel")), WeightedBCEWithLogits)
    assert isinstance(build_loss(LossConfig(name="bce")), BCEWithLogits)
    focal = build_loss(LossConfig(name="focal", focal_gamma=1.5))
    assert isinstance(focal, FocalLossWithLogits) and focal.gamma == 1.5
    per_class = build_loss(LossConfig(name="wcel_per_class"), class_frequencies=np.full(14, 0.1))
    assert isinstance(per_class, PerClassWeightedBCEWithLogits)
    with pytest.raises(ConfigError, match="frequencies"):
        build_loss(LossConfig(name="wcel_per_class"))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        WeightedBCEWithLogits()(LOGITS, TARGETS[:, :2])


def test_wcel_without_missing_labels_is_bit_identical_to_the_unmasked_formula() -> None:
    """A label matrix without NaN (ChestX-ray14) must train exactly as before labels could be missing: the
    weights computed as ``float(B * C) / count`` (Python float over a tensor), not an exact division."""
    torch.manual_seed(0)
    logits = torch.randn(16, 14, requires_grad=True)
    targets = (torch.rand(16, 14) < 0.2).float()
    loss = WeightedBCEWithLogits()(logits, targets)
    total = float(targets.numel())
    positives = targets.sum()
    beta_p = total / positives.clamp_min(1.0)
    beta_n = total / (total - positives).clamp_min(1.0)
    reference = -(beta_p * targets * F.logsigmoid(logits) + beta_n * (1.0 - targets) * F.logsigmoid(-logits))
    assert torch.equal(loss, reference.sum(dim=1).mean())

"""Loss functions for dense detectors, always evaluated in fp32."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss (Lin et al. 2017), unreduced.

    ``alpha`` weights the positives and ``1 - alpha`` the negatives (alpha < 0 disables it).
    Written out instead of calling ``torchvision.ops.sigmoid_focal_loss`` so that it always runs
    in fp32 under autocast and computes the modulating factor from log-probabilities, which
    stays finite for logits far from zero.
    """
    logits = logits.float()
    targets = targets.float()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # log(1 - p_t) = log-sigmoid of the logit pointing away from the target.
    signed = torch.where(targets > 0.5, -logits, logits)
    modulator = torch.exp(gamma * F.logsigmoid(signed)) if gamma != 0 else torch.ones_like(ce)
    loss = ce * modulator
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Summed box loss: ``huber`` (TPU, delta 0.1), ``smooth_l1`` (beta = delta) or ``l1``."""
    pred = pred.float()
    target = target.float()
    if kind == "huber":
        return F.huber_loss(pred, target, delta=delta, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=delta, reduction="sum")
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    raise ValueError(f"unknown box loss {kind!r}; allowed: huber, smooth_l1, l1")

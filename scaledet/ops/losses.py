"""Loss functions for dense detectors, always evaluated in fp32."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scaledet.errors import UsageError


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
    raise UsageError(f"unknown box loss {kind!r}; allowed: huber, smooth_l1, l1")


def focal_loss_per_image(logits: torch.Tensor, valid: torch.Tensor, pos_image: torch.Tensor, pos_anchor: torch.Tensor,
                         pos_class: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Per-image sums of :func:`sigmoid_focal_loss` for one-hot targets given as positive indices.

    ``logits [B, A, C]``; ``valid [B, A]`` masks ignored anchors; the target is 1 exactly at
    ``(pos_image, pos_anchor, pos_class)``. Every entry is first scored as a negative, which
    needs no dense target tensor and few element-wise passes over the B*A*C logits, and the
    handful of positive entries is then corrected. Equal to the dense form up to rounding.
    """
    logits = logits.float()
    neg_weight = (1 - alpha) if alpha >= 0 else 1.0
    pos_weight = alpha if alpha >= 0 else 1.0

    def as_negative(x: torch.Tensor) -> torch.Tensor:
        log_p = F.logsigmoid(x)  # -log(1 - p) = x - log p; the modulator p^gamma = exp(gamma log p)
        return torch.exp(gamma * log_p) * (x - log_p) if gamma != 0 else x - log_p

    def as_positive(x: torch.Tensor) -> torch.Tensor:
        log_p = F.logsigmoid(x)
        return -log_p * torch.exp(gamma * F.logsigmoid(-x)) if gamma != 0 else -log_p

    negative = as_negative(logits).sum(dim=-1)  # [B, A]
    if not bool(valid.all()):
        negative = negative * valid
    per_image = negative.sum(dim=1) * neg_weight
    x = logits[pos_image, pos_anchor, pos_class]
    correction = pos_weight * as_positive(x) - neg_weight * as_negative(x)
    return per_image.index_add(0, pos_image, correction)

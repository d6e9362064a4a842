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


class _SparseFocalLoss(torch.autograd.Function):
    """Per-image focal loss sums for one-hot targets given as positive indices (see
    :func:`focal_loss_per_image`), with a hand-written backward.

    Written by hand (no library has it) because autograd through the composed ops makes about 19
    passes over the ``B*A*C`` logits: the negative term's five intermediates, its row gradient
    pushed back as a stride-0 expansion through four multiplications, and a zero-filled
    full-size gradient for the few positive entries that is then added to the rest. Here the
    forward makes 6 passes and the backward 5, using the closed form of the negative term's
    derivative ``d/dx [p^gamma * softplus(x)] = p^gamma * (gamma * (1 - p) * softplus(x) + p)``;
    the positives' correction is differentiated on their own few entries and added in place.
    With ``log p = x - softplus(x)`` and ``-log(1 - p) = softplus(x)`` it stays finite for
    logits far from zero.
    """

    @staticmethod
    def forward(ctx, x, valid, pos_image, pos_anchor, pos_class, alpha: float, gamma: float):
        neg_weight, pos_weight = _focal_weights(alpha)
        softplus = F.softplus(x)
        if gamma == 0:
            p_gamma = None
            negative = softplus.sum(dim=-1)
        else:
            p_gamma = torch.sub(x, softplus).mul_(gamma).exp_()  # exp(gamma * log p)
            negative = torch.mul(p_gamma, softplus).sum(dim=-1)  # [B, A]
        row_weight = valid.to(x.dtype) * neg_weight
        per_image = (negative * row_weight).sum(dim=1)
        positives = x[pos_image, pos_anchor, pos_class]
        per_image = per_image.index_add(0, pos_image, _positive_correction(positives, alpha, gamma))
        ctx.save_for_backward(x, softplus, p_gamma, row_weight, pos_image, pos_anchor, pos_class, positives)
        ctx.alpha, ctx.gamma = alpha, gamma
        return per_image

    @staticmethod
    def backward(ctx, grad):
        x, softplus, p_gamma, row_weight, pos_image, pos_anchor, pos_class, positives = ctx.saved_tensors
        p = torch.sigmoid(x)
        if ctx.gamma == 0:
            d = p
        else:
            d = torch.addcmul(p, torch.rsub(p, 1.0), softplus, value=ctx.gamma).mul_(p_gamma)
        d.mul_((row_weight * grad[:, None]).unsqueeze(-1))
        with torch.enable_grad():
            at = positives.detach().requires_grad_()
            (pos_grad,) = torch.autograd.grad(_positive_correction(at, ctx.alpha, ctx.gamma), at, grad[pos_image])
        d.index_put_((pos_image, pos_anchor, pos_class), pos_grad, accumulate=True)
        return d, None, None, None, None, None, None


def _focal_weights(alpha: float) -> tuple[float, float]:
    """(negative, positive) weights: ``1 - alpha`` and ``alpha``, or 1 and 1 when alpha < 0."""
    return ((1 - alpha), alpha) if alpha >= 0 else (1.0, 1.0)


def _positive_correction(x: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss of entries scored as positives minus their score as negatives."""
    neg_weight, pos_weight = _focal_weights(alpha)
    log_p, log_q = F.logsigmoid(x), F.logsigmoid(-x)  # log p, log(1 - p)
    if gamma == 0:
        return -pos_weight * log_p + neg_weight * log_q
    return -pos_weight * log_p * torch.exp(gamma * log_q) + neg_weight * torch.exp(gamma * log_p) * log_q


def focal_loss_per_image(logits: torch.Tensor, valid: torch.Tensor, pos_image: torch.Tensor, pos_anchor: torch.Tensor,
                         pos_class: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Per-image sums of :func:`sigmoid_focal_loss` for one-hot targets given as positive indices.

    ``logits [B, A, C]``; ``valid [B, A]`` masks ignored anchors; the target is 1 exactly at
    ``(pos_image, pos_anchor, pos_class)``. Every entry is first scored as a negative, which
    needs no dense target tensor and few element-wise passes over the B*A*C logits, and the
    handful of positive entries is then corrected. Equal to the dense form up to rounding.
    """
    if logits.dtype != torch.float64:
        logits = logits.float()  # half-precision logits are scored in fp32
    return _SparseFocalLoss.apply(logits, valid, pos_image, pos_anchor, pos_class, float(alpha),
                                  float(gamma))

"""Semantic segmentation mean IoU from an accumulated confusion matrix.

Hand-written (a ``torch.bincount`` over ``target * C + pred``) because torchvision has no
segmentation metric. Semantics follow TensorFlow's ``tf.metrics.mean_iou`` used by BlitzNet:
the mean is taken over classes whose denominator (ground truth + predicted - intersection) is
non-zero, so classes absent from both targets and predictions do not count.
"""
from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255


class ConfusionMatrix:
    """Accumulates ``matrix[target, pred]`` pixel counts over ``num_classes`` classes."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix.zero_()

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: ``pred`` and ``target`` are class indices of the same shape (any shape).

        Target pixels equal to ``ignore_index`` are skipped; other values outside
        ``0..num_classes-1`` (in either) are an error rather than silently wrong counts.
        """
        pred_t = torch.as_tensor(pred).reshape(-1).to(device="cpu", dtype=torch.int64)
        target_t = torch.as_tensor(target).reshape(-1).to(device="cpu", dtype=torch.int64)
        if pred_t.shape != target_t.shape:
            raise ValueError(f"pred has {pred_t.numel()} pixels but target has "
                             f"{target_t.numel()}; shapes {tuple(torch.as_tensor(pred).shape)} "
                             f"and {tuple(torch.as_tensor(target).shape)} differ")
        valid = target_t != self.ignore_index
        pred_t, target_t = pred_t[valid], target_t[valid]
        for name, values in (("target", target_t), ("pred", pred_t)):
            if values.numel() and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(f"{name} has class indices outside 0..{self.num_classes - 1} "
                                 f"(min {int(values.min())}, max {int(values.max())})")
        counts = torch.bincount(target_t * self.num_classes + pred_t,
                                minlength=self.num_classes ** 2)
        self.matrix += counts.reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict:
        """``{"miou": float, "iou_per_class": list[float] (NaN where undefined), "pixel_acc"}``."""
        matrix = self.matrix.to(torch.float64)
        intersection = matrix.diagonal()
        union = matrix.sum(0) + matrix.sum(1) - intersection
        defined = union > 0
        iou = torch.where(defined, intersection / union.clamp(min=1), torch.nan)
        total = matrix.sum()
        return {
            "miou": float(iou[defined].mean()) if bool(defined.any()) else float("nan"),
            "iou_per_class": iou.tolist(),
            "pixel_acc": float(intersection.sum() / total) if total > 0 else float("nan"),
        }

"""IoU matching of anchors to ground-truth boxes."""
from __future__ import annotations

import torch
from torchvision.ops import box_iou

from scaledet.errors import UsageError

NEGATIVE = -1
IGNORE = -2


class IoUMatcher:
    """Assign each anchor a ground-truth index, ``NEGATIVE`` or ``IGNORE``.

    - IoU >= ``positive_threshold``: positive; < ``negative_threshold``: negative; between: ignore.
    - ``low_quality``:
      ``"force_best_anchor"`` (tensorflow/tpu, SSD): each ground truth's single best anchor is made
      positive for that ground truth; when two share a best anchor the lower index wins.
      ``"ties_keep_argmax"`` (torchvision/detectron2): every anchor tied for a ground truth's best
      IoU becomes positive for the ground truth *it* overlaps most.
      ``None``: thresholds only.
    - Anchors whose intersection-over-anchor-area with a crowd box exceeds ``crowd_ioa`` and that
      are not positive are ignored, so crowds teach neither object nor background.
    """

    def __init__(self, positive_threshold: float = 0.5, negative_threshold: float = 0.5,
                 low_quality: str | None = "force_best_anchor", crowd_ioa: float = 0.5):
        if negative_threshold > positive_threshold:
            raise UsageError("negative_threshold must not exceed positive_threshold")
        if low_quality not in (None, "force_best_anchor", "ties_keep_argmax"):
            raise UsageError(f"unknown low_quality mode {low_quality!r}")
        self.positive_threshold = positive_threshold
        self.negative_threshold = negative_threshold
        self.low_quality = low_quality
        self.crowd_ioa = crowd_ioa

    def __call__(self, gt_boxes: torch.Tensor, anchors: torch.Tensor,
                 crowd_boxes: torch.Tensor | None = None) -> torch.Tensor:
        num_anchors = anchors.shape[0]
        matches = torch.full((num_anchors,), NEGATIVE, dtype=torch.long, device=anchors.device)
        if gt_boxes.numel() > 0:
            iou = box_iou(gt_boxes.float(), anchors.float())  # [G, A]
            best_iou, best_gt = iou.max(dim=0)
            matches = torch.where(best_iou >= self.positive_threshold, best_gt, matches)
            between = (best_iou >= self.negative_threshold) & (best_iou < self.positive_threshold)
            matches = torch.where(between, torch.full_like(matches, IGNORE), matches)
            if self.low_quality is not None:
                matches = self._low_quality(iou, best_gt, matches)
        if crowd_boxes is not None and crowd_boxes.numel() > 0:
            matches = self._ignore_crowd(crowd_boxes.float(), anchors.float(), matches)
        return matches

    def _low_quality(self, iou: torch.Tensor, best_gt: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
        gt_best_iou, gt_best_anchor = iou.max(dim=1)
        has_overlap = gt_best_iou > 0  # a degenerate box must not grab every anchor
        if self.low_quality == "force_best_anchor":
            num_gt = iou.shape[0]
            rows = torch.arange(num_gt, device=iou.device)[has_overlap]
            # per anchor, the lowest ground-truth index that chose it (num_gt: none did); touches
            # the G chosen anchors instead of a G x A mask
            first_gt = torch.full_like(matches, num_gt).scatter_reduce_(0, gt_best_anchor[has_overlap], rows,
                                                                       reduce="amin")
            return torch.where(first_gt < num_gt, first_gt, matches)
        tied = (iou == gt_best_iou[:, None]) & has_overlap[:, None]
        return torch.where(tied.any(dim=0), best_gt, matches)

    def _ignore_crowd(self, crowd: torch.Tensor, anchors: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
        lt = torch.maximum(anchors[None, :, :2], crowd[:, None, :2])
        rb = torch.minimum(anchors[None, :, 2:], crowd[:, None, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=-1)
        area = (anchors[:, 2:] - anchors[:, :2]).clamp(min=0).prod(dim=-1)
        ioa = (inter / area.clamp(min=1e-6)[None]).max(dim=0).values
        on_crowd = (ioa > self.crowd_ioa) & (matches < 0)
        return torch.where(on_crowd, torch.full_like(matches, IGNORE), matches)

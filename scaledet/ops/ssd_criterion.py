"""BlitzNet / SSD training loss (docs/reference/BLITZNET.md §2.2-2.4, §3.3-3.5), computed in fp32.

- matching: IoU >= 0.5 plus each ground truth's best default box (lower GT index wins ties);
- classification: softmax cross-entropy (class 0 = background), hard negatives mined over the
  whole batch, k = max(1, min(ratio * N_pos, A - N_pos)) with A the per-image box count
  (the reference's quirk), negative term zero when the batch has no positive;
- localisation: smooth-L1 on variance-coded offsets, summed over coordinates, / max(1, N_pos);
- segmentation: pixel cross-entropy at the head's resolution (ground truth downsampled by
  nearest), 255 and labels > C ignored, mean over the valid pixels of the batch.

Every output tensor always reaches the total loss (masked terms are multiplied by zero rather
than indexed away), so under DDP no parameter is left without a gradient, even in a batch with
no positives or no masks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from scaledet.errors import UsageError
from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.criterion import Criterion
from scaledet.ops.matcher import NEGATIVE, IoUMatcher

MASK_IGNORE = 255


def hard_negative_mask(ce: torch.Tensor, positive: torch.Tensor, candidate: torch.Tensor,
                       neg_pos_ratio: float = 3.0) -> torch.Tensor:
    """Boolean ``[B, A]``: the batch-wide highest-loss negatives among ``candidate``.

    Ranks by a sort rather than ``topk`` so ``k`` can stay a tensor (no host sync)."""
    batch, per_image = ce.shape
    num_pos = positive.sum().to(ce.dtype)
    k = torch.clamp(torch.minimum(num_pos * neg_pos_ratio, per_image - num_pos), min=1.0)
    k = torch.where(num_pos > 0, k, torch.zeros_like(k))
    scores = torch.where(candidate, ce.detach(), torch.full_like(ce, float("-inf"))).flatten()
    order = scores.argsort(descending=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return (rank < k).reshape(batch, per_image) & candidate


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an integer ``[B, H, W]`` label map."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0].long()


class SSDCriterion(Criterion):
    """Under DDP, :meth:`distribute_normalizer` divides by the positives (and valid pixels) of the
    global batch (:class:`~scaledet.ops.criterion.Criterion`); hard negatives are still mined per
    process, from its own batch."""

    def __init__(self, num_classes: int, box_coder: BoxCoder | None = None, matcher: IoUMatcher | None = None, *,
                 neg_pos_ratio: float = 3.0, seg_weight: float = 1.0, det_weight: float = 1.0):
        super().__init__()
        self.num_classes = num_classes  # foreground classes; outputs have num_classes + 1
        self.box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.matcher = matcher or IoUMatcher(0.5, 0.5, "force_best_anchor")
        self.neg_pos_ratio = neg_pos_ratio
        self.seg_weight = seg_weight
        self.det_weight = det_weight

    def _normalizer(self, count: torch.Tensor) -> torch.Tensor:
        return self.global_count(count.float()).clamp(min=1) / self.num_processes

    @torch.no_grad()
    def targets(self, default_boxes: torch.Tensor, targets: list[dict], input_hw: tuple[int, int]):
        """Class targets ``[B, A]`` (0 = background, -1 = ignored), box targets ``[B, A, 4]``,
        positive mask ``[B, A]``; ground-truth boxes are normalised by the network input size."""
        h, w = input_hw
        scale = default_boxes.new_tensor([w, h, w, h])
        labels_out, boxes_out = [], []
        for t in targets:
            boxes = t["boxes"].to(default_boxes.device).float().reshape(-1, 4) / scale
            labels = t["labels"].to(default_boxes.device).long().reshape(-1)
            crowd = t.get("iscrowd")
            crowd = (crowd.to(default_boxes.device).bool().reshape(-1) if crowd is not None
                     else torch.zeros_like(labels, dtype=torch.bool))
            boxes, labels, crowd_boxes = boxes[~crowd], labels[~crowd], boxes[crowd]
            matches = self.matcher(boxes, default_boxes, crowd_boxes)
            positive = matches >= 0
            cls = torch.where(matches == NEGATIVE, 0, -1)
            box_t = torch.zeros_like(default_boxes)
            if positive.any():
                gt = matches[positive]
                cls[positive] = labels[gt] + 1
                box_t[positive] = self.box_coder.encode(boxes[gt], default_boxes[positive])
            labels_out.append(cls)
            boxes_out.append(box_t)
        cls_t = torch.stack(labels_out)
        return cls_t, torch.stack(boxes_out), cls_t > 0

    def forward(self, loc: torch.Tensor | None, conf: torch.Tensor | None, seg: torch.Tensor | None,
                default_boxes: torch.Tensor, targets: list[dict], input_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """``loc [B, A, 4]``, ``conf [B, A, C+1]``, ``seg [B, C+1, h, w]``, ``default_boxes [A, 4]``;
        a task's outputs are None when the model does not have it (its loss terms are then 0)."""
        if conf is not None and conf.shape[1] != default_boxes.shape[0]:
            raise UsageError(f"{conf.shape[1]} box predictions but {default_boxes.shape[0]} default boxes "
                             f"for input size {tuple(input_hw)}")
        with torch.autocast(device_type=default_boxes.device.type, enabled=False):
            if conf is not None:
                cls_loss, loc_loss, num_pos = self.detection_losses(loc.float(), conf.float(), default_boxes.float(),
                                                                    targets, input_hw)
            else:
                cls_loss = loc_loss = default_boxes.new_zeros((), dtype=torch.float32)
                num_pos = torch.zeros((), dtype=torch.long, device=default_boxes.device)
            seg_loss = (self.segmentation_loss(seg.float(), targets, input_hw) if seg is not None
                        else cls_loss.new_zeros(()))
        total = self.det_weight * (cls_loss + loc_loss) + self.seg_weight * seg_loss
        return {"loss": total, "det_cls_loss": cls_loss.detach(), "det_loc_loss": loc_loss.detach(),
                "seg_loss": seg_loss.detach(), "num_positives": num_pos.detach()}

    def detection_losses(self, loc, conf, default_boxes, targets, input_hw):
        cls_t, box_t, positive = self.targets(default_boxes, targets, input_hw)
        ce = F.cross_entropy(conf.transpose(1, 2), cls_t.clamp(min=0), reduction="none")  # [B, A]
        negatives = hard_negative_mask(ce, positive, cls_t == 0, self.neg_pos_ratio)
        num_pos = positive.sum()
        norm = self._normalizer(num_pos).to(ce.dtype)
        cls_loss = (ce * (positive | negatives).to(ce.dtype)).sum() / norm
        smooth = F.smooth_l1_loss(loc, box_t, beta=1.0, reduction="none").sum(dim=-1)
        loc_loss = (smooth * positive.to(smooth.dtype)).sum() / norm
        return cls_loss, loc_loss, num_pos

    def segmentation_loss(self, seg: torch.Tensor, targets: list[dict], input_hw: tuple[int, int]) -> torch.Tensor:
        batch = seg.shape[0]
        labels = torch.full((batch, *input_hw), MASK_IGNORE, dtype=torch.long, device=seg.device)
        # an image without a mask stays all-ignore (docs/reference/BLITZNET.md §3.3)
        for i, t in enumerate(targets):
            mask = t.get("mask")
            if mask is not None:
                mh, mw = mask.shape[-2:]
                labels[i, :mh, :mw] = mask.to(seg.device).long()[:input_hw[0], :input_hw[1]]
        labels = downsample_mask(labels, tuple(seg.shape[-2:]))
        labels = torch.where((labels >= 0) & (labels <= self.num_classes), labels, MASK_IGNORE)
        valid = (labels != MASK_IGNORE).sum()
        ce_sum = F.cross_entropy(seg, labels, ignore_index=MASK_IGNORE, reduction="sum")
        # The zero-weighted seg.sum() keeps the head in the graph when no pixel is valid.
        return ce_sum / self._normalizer(valid).to(seg.dtype) + seg.sum() * 0.0

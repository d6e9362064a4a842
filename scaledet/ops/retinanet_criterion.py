"""Target assignment and losses of RetinaNet, computed in fp32 outside the model."""
from __future__ import annotations

import torch

from scaledet.errors import UsageError
from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.criterion import Criterion
from scaledet.ops.losses import box_regression_loss, focal_loss_per_image
from scaledet.ops.matcher import IGNORE, IoUMatcher


class RetinaNetCriterion(Criterion):
    """Focal classification loss + box regression loss.

    ``normalize``:
      ``"batch"`` — both losses divided by (positives in the batch + 1), box loss further by 4
      coordinates (tensorflow/tpu ``retinanet_model``; pair with huber delta 0.1 and weight 50);
      ``"per_image"`` — each image's sums divided by max(1, its positives), then averaged over
      images (torchvision ``RetinaNetHead``; pair with l1 and weight 1).

    ``background_channel``: the logits carry an extra sigmoid channel 0 for "background", which
    is the target of every matched-negative anchor (the MindSpore NAS-FPN port's 81-channel head,
    docs/reference/MINDSPORE_FORMATS.md §6); class ``k`` is then channel ``k + 1``.

    Under DDP call :meth:`distribute_normalizer` so that ``"batch"`` normalises by the positives of
    the global batch (see :class:`~scaledet.ops.criterion.Criterion`).
    """

    def __init__(self, num_classes: int, box_coder: BoxCoder, matcher: IoUMatcher, *, focal_alpha: float = 0.25,
                 focal_gamma: float = 1.5, box_loss: str = "huber", box_loss_delta: float = 0.1,
                 box_loss_weight: float = 50.0, normalize: str = "batch", background_channel: bool = False):
        super().__init__()
        if normalize not in ("batch", "per_image"):
            raise UsageError(f"unknown normalize {normalize!r}; allowed: batch, per_image")
        self.num_classes = num_classes
        self.box_coder = box_coder
        self.matcher = matcher
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.box_loss = box_loss
        self.box_loss_delta = box_loss_delta
        self.box_loss_weight = box_loss_weight
        self.normalize = normalize
        self.background_channel = background_channel

    @torch.no_grad()
    def assign(self, anchors: torch.Tensor, targets: list[dict]) -> torch.Tensor:
        """Matched ground-truth index per anchor and image: ``[B, A]`` (negative/ignore < 0)."""
        out = []
        for t in targets:
            boxes = t["boxes"].to(anchors.device).float()
            crowd = t.get("iscrowd")
            crowd = crowd.to(anchors.device).bool() if crowd is not None else torch.zeros(
                len(boxes), dtype=torch.bool, device=anchors.device)
            out.append(self.matcher(boxes[~crowd], anchors, boxes[crowd]) if crowd.any()
                       else self.matcher(boxes, anchors))
        return torch.stack(out)

    def forward(self, cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: torch.Tensor,
                targets: list[dict]) -> dict[str, torch.Tensor]:
        """``cls_logits [B, A, C]``, ``box_deltas [B, A, 4]``, ``anchors [A, 4]`` (all levels)."""
        with torch.autocast(device_type=cls_logits.device.type, enabled=False):
            return self._losses(cls_logits.float(), box_deltas.float(), anchors.float(), targets)

    def _losses(self, cls_logits, box_deltas, anchors, targets):
        matches = self.assign(anchors, targets)
        positive = matches >= 0
        valid = matches != IGNORE
        box_target = torch.zeros_like(box_deltas)
        pos_image, pos_anchor, pos_class = [], [], []
        for i, t in enumerate(targets):
            crowd = t.get("iscrowd")
            boxes = t["boxes"].to(anchors.device).float()
            labels = t["labels"].to(anchors.device).long()
            if crowd is not None and crowd.any():
                keep = ~crowd.to(anchors.device).bool()
                boxes, labels = boxes[keep], labels[keep]
            pos = positive[i]
            if pos.any():
                gt = matches[i][pos]
                anchor_index = torch.nonzero(pos).squeeze(1)
                pos_image.append(torch.full_like(anchor_index, i))
                pos_anchor.append(anchor_index)
                pos_class.append(labels[gt])
                box_target[i, pos] = self.box_coder.encode(boxes[gt], anchors[pos])
        if self.background_channel:
            pos_class = [c + 1 for c in pos_class]
            background = torch.nonzero(valid & ~positive)
            pos_image.append(background[:, 0])
            pos_anchor.append(background[:, 1])
            pos_class.append(torch.zeros_like(background[:, 0]))
        empty = torch.zeros(0, dtype=torch.long, device=anchors.device)
        focal = focal_loss_per_image(cls_logits, valid, torch.cat(pos_image) if pos_image else empty,
                                     torch.cat(pos_anchor) if pos_anchor else empty,
                                     torch.cat(pos_class) if pos_class else empty,
                                     self.focal_alpha, self.focal_gamma)  # [B]
        num_pos = positive.sum(dim=1).float()  # [B]
        if self.normalize == "batch":
            # under DDP each process divides by its share of the global normaliser
            norm = (self.global_count(num_pos.sum()) + 1.0) / self.num_processes
            cls_loss = focal.sum() / norm
            box_loss = box_regression_loss(box_deltas[positive], box_target[positive], self.box_loss,
                                           self.box_loss_delta) / (norm * 4.0)
        else:
            per_image_norm = num_pos.clamp(min=1.0)
            cls_loss = (focal / per_image_norm).mean()
            box_per_image = torch.stack([
                box_regression_loss(box_deltas[i][positive[i]], box_target[i][positive[i]], self.box_loss,
                                    self.box_loss_delta) for i in range(len(targets))
            ])
            box_loss = (box_per_image / per_image_norm).mean()
        total = cls_loss + self.box_loss_weight * box_loss
        return {"loss": total, "cls_loss": cls_loss.detach(), "box_loss": box_loss.detach(),
                "num_positives": num_pos.sum().detach()}

"""The MindSpore NAS-FPN port's detection rule with a fixed-size padded output.

Per image and class: every anchor scoring above ``score_threshold`` (no pre-NMS top-k), greedy
NMS at ``nms_iou`` with the "+1 pixel" area convention (``(w + 1) * (h + 1)`` in original-image
pixels), at most ``per_class`` boxes kept, and no per-image cap
(docs/reference/MINDSPORE_FORMATS.md §6). The output holds ``per_class * num_classes`` slots
per image, best score first, so nothing the port keeps is cut.

The +1 convention is reproduced with torchvision's ``batched_nms`` on boxes grown by one original
pixel at the bottom/right: IoU is unchanged by scaling x and y separately, so growing a box in
network pixels by ``(sx, sy)`` (network pixels per original pixel) gives the port's IoU exactly.
Without the original sizes the boxes are grown by one network pixel.
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.postprocess import clip_rows, pad_detections, rank_within_image, scores_above


class PortPostProcessor(torch.nn.Module):
    def __init__(self, box_coder: BoxCoder, num_classes: int, *, score_threshold: float = 0.1,
                 nms_iou: float = 0.6, per_class: int = 100, max_detections: int | None = None):
        super().__init__()
        self.box_coder = box_coder
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.per_class = per_class
        self.max_detections = max_detections or per_class * num_classes

    def forward(self, cls_logits: list[torch.Tensor], box_deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                image_sizes: torch.Tensor, original_sizes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``cls_logits[l]: [B, N_l, C]`` (real classes, background dropped), ``box_deltas[l]: [B, N_l, 4]``,
        ``anchors[l]: [N_l, 4]``; ``image_sizes [B, 2]`` network ``(h, w)``; ``original_sizes [B, 2]``
        the decoded files' ``(h, w)``."""
        logits = torch.cat(cls_logits, 1)
        deltas = torch.cat(box_deltas, 1)
        anchor_boxes = torch.cat(anchors, 0)
        batch, _, num_classes = logits.shape
        sizes = image_sizes.to(logits.device)
        image, index, scores = scores_above(logits.flatten(1), self.score_threshold)  # no pre-NMS top-k
        anchor_idx = torch.div(index, num_classes, rounding_mode="floor")
        labels = index - anchor_idx * num_classes
        boxes = clip_rows(self.box_coder.decode(deltas[image, anchor_idx].float(), anchor_boxes[anchor_idx]),
                          sizes[image])
        if original_sizes is None:
            grow = torch.ones_like(boxes[:, :2])
        else:
            scale = sizes.to(boxes.dtype) / original_sizes.to(device=boxes.device, dtype=boxes.dtype)  # (sy, sx)
            grow = scale[image].flip(-1)  # (sx, sy)
        grown = torch.cat([boxes[:, :2], boxes[:, 2:] + grow], dim=1)
        group = image * num_classes + labels
        kept = batched_nms(grown, scores, group, self.nms_iou)
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
        image, group = image[kept], group[kept]
        # rank_within_image ranks within any grouping: here (image, class) pairs
        order, rank, _ = rank_within_image(group, scores, batch * num_classes)
        top = order[rank < self.per_class]
        return pad_detections(boxes[top], scores[top], labels[top], image[top], batch, self.max_detections)


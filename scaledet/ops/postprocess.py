"""Decoding and NMS for sigmoid dense detectors, with a fixed-size padded output.

Vectorised over the batch (no Python loop over images or classes) so that the same code runs
eagerly, under torch.compile and inside an exported ONNX graph.
"""
from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from scaledet.ops.box_coder import BoxCoder


def clip_boxes(boxes: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
    """Clip ``[B, N, 4]`` xyxy boxes to per-image ``(h, w)`` in ``image_sizes [B, 2]``."""
    h = image_sizes[:, 0].to(boxes.dtype)[:, None]
    w = image_sizes[:, 1].to(boxes.dtype)[:, None]
    zero = torch.zeros_like(boxes[..., 0])
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def pad_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image_index: torch.Tensor,
                   batch_size: int, max_detections: int) -> dict[str, torch.Tensor]:
    """Scatter detections sorted by descending score into ``[B, K]`` slots per image.

    ``image_index`` says which image each detection belongs to; the first ``K`` per image are kept.
    """
    order_key = image_index.to(torch.float64) * 2.0 + (1.0 - scores.to(torch.float64))
    order = torch.argsort(order_key)
    boxes, scores, labels, image_index = boxes[order], scores[order], labels[order], image_index[order]
    images = torch.arange(batch_size, device=scores.device)
    counts = (image_index[None, :] == images[:, None]).sum(dim=1)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(scores.shape[0], device=scores.device) - starts[image_index]
    keep = rank < max_detections
    slot = image_index[keep] * max_detections + rank[keep]
    total = batch_size * max_detections
    out_boxes = boxes.new_zeros((total, 4)).index_put((slot,), boxes[keep])
    out_scores = scores.new_zeros((total,)).index_put((slot,), scores[keep])
    out_labels = torch.full((total,), -1, dtype=torch.long, device=scores.device).index_put((slot,), labels[keep])
    return {
        "boxes": out_boxes.reshape(batch_size, max_detections, 4),
        "scores": out_scores.reshape(batch_size, max_detections),
        "labels": out_labels.reshape(batch_size, max_detections),
        "num_detections": counts.clamp(max=max_detections),
    }


class SigmoidPostProcessor(torch.nn.Module):
    """Per-level top-k over (anchor, class) pairs, score threshold, class-wise NMS, max detections.

    ``pre_nms_topk`` candidates per level as torchvision (1000); the TPU keeps 5000 per class,
    which the same knob approximates when set high.
    """

    def __init__(self, box_coder: BoxCoder, *, score_threshold: float = 0.05, pre_nms_topk: int = 1000,
                 nms_iou: float = 0.5, max_detections: int = 100):
        super().__init__()
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.pre_nms_topk = pre_nms_topk
        self.nms_iou = nms_iou
        self.max_detections = max_detections

    def forward(self, cls_logits: list[torch.Tensor], box_deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cls_logits[l]: [B, N_l, C]``, ``box_deltas[l]: [B, N_l, 4]``, ``anchors[l]: [N_l, 4]``."""
        batch = cls_logits[0].shape[0]
        all_boxes, all_scores, all_labels = [], [], []
        for logits, deltas, level_anchors in zip(cls_logits, box_deltas, anchors):
            num_classes = logits.shape[-1]
            scores = torch.sigmoid(logits.float()).flatten(1)
            k = min(self.pre_nms_topk, scores.shape[1])
            top_scores, top_idx = scores.topk(k, dim=1)
            anchor_idx = torch.div(top_idx, num_classes, rounding_mode="floor")
            labels = top_idx - anchor_idx * num_classes
            picked = torch.gather(deltas.float(), 1, anchor_idx[..., None].expand(-1, -1, 4))
            boxes = self.box_coder.decode(picked, level_anchors[anchor_idx])
            all_boxes.append(clip_boxes(boxes, image_sizes))
            all_scores.append(top_scores)
            all_labels.append(labels)
        boxes = torch.cat(all_boxes, dim=1)
        scores = torch.cat(all_scores, dim=1)
        labels = torch.cat(all_labels, dim=1)
        per_image = scores.shape[1]
        flat_boxes, flat_scores, flat_labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
        candidates = torch.nonzero(flat_scores > self.score_threshold).squeeze(1)
        image_index = torch.div(candidates, per_image, rounding_mode="floor")
        num_classes = cls_logits[0].shape[-1]
        groups = image_index * num_classes + flat_labels[candidates]
        keep = batched_nms(flat_boxes[candidates], flat_scores[candidates], groups, self.nms_iou)
        kept = candidates[keep]
        return pad_detections(flat_boxes[kept], flat_scores[kept], flat_labels[kept], image_index[keep],
                              batch, self.max_detections)

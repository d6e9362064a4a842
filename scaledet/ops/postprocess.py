"""Decoding and NMS for sigmoid dense detectors, with a fixed-size padded output.

Vectorised over the batch (no Python loop over images or classes) so that the same code runs
eagerly, under torch.compile and inside an exported ONNX graph.
"""
from __future__ import annotations

import math

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


def has_area(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` xyxy -> bool: finite with positive width and height. A box pushed entirely
    outside the image collapses to a line or point when clipped; it is no detection."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1]) & torch.isfinite(boxes).all(dim=-1)


def rank_within_image(image_index: torch.Tensor, scores: torch.Tensor, batch_size: int):
    """Order items image by image, best score first; return (order, rank in its image, counts)."""
    order_key = image_index.to(torch.float64) * 2.0 + (1.0 - scores.to(torch.float64))
    order = torch.argsort(order_key)
    sorted_image = image_index[order]
    images = torch.arange(batch_size, device=scores.device)
    # a broadcast count instead of bincount, which the ONNX exporter does not handle
    counts = (sorted_image[None, :] == images[:, None]).sum(dim=1)
    starts = torch.cumsum(counts, dim=0) - counts
    rank = torch.arange(scores.shape[0], device=scores.device) - starts[sorted_image]
    return order, rank, counts


def pad_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image_index: torch.Tensor,
                   batch_size: int, max_detections: int) -> dict[str, torch.Tensor]:
    """Scatter detections into ``[B, K]`` slots per image, best first; the first ``K`` are kept.

    ``image_index`` says which image each detection belongs to.
    """
    order, rank, counts = rank_within_image(image_index, scores, batch_size)
    boxes, scores, labels, image_index = boxes[order], scores[order], labels[order], image_index[order]
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


def scores_above(flat_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(image, flat index, sigmoid score)`` of every entry of ``[B, N]`` logits scoring above
    ``threshold``. The threshold is applied to the logits first (sigmoid is monotonic; the margin
    keeps rounding from dropping a borderline entry), so the sigmoid runs on the survivors only."""
    floor = math.log(threshold / (1 - threshold)) - 1e-4 if 0 < threshold < 1 else -math.inf
    image, index = torch.nonzero(flat_logits > floor, as_tuple=True)
    scores = torch.sigmoid(flat_logits[image, index].float())
    keep = scores > threshold
    return image[keep], index[keep], scores[keep]


class SigmoidPostProcessor(torch.nn.Module):
    """Per-level top-k over (anchor, class) pairs, score threshold, class-wise NMS, max detections.

    ``pre_nms_topk`` candidates per level as torchvision (1000); the TPU keeps 5000 per class,
    which the same knob approximates when set high. ``drop_zero_boxes``: boxes that clip to
    (0, 0, 0, 0) are dropped, as tensorflow/tpu's padded NMS reads them as padding
    (docs/reference/TF_ARITHMETIC.md §8). ``drop_degenerate_boxes`` (default): boxes without
    area after clipping (pushed outside the image) are no detections; converted TF / torchvision
    checkpoints turn it off to reproduce those codes, which keep them.
    """

    def __init__(self, box_coder: BoxCoder, *, score_threshold: float = 0.05, pre_nms_topk: int = 1000,
                 nms_iou: float = 0.5, max_detections: int = 100, drop_zero_boxes: bool = False,
                 drop_degenerate_boxes: bool = True):
        super().__init__()
        self.drop_degenerate_boxes = drop_degenerate_boxes
        self.drop_zero_boxes = drop_zero_boxes
        self.box_coder = box_coder
        self.score_threshold = score_threshold
        self.pre_nms_topk = pre_nms_topk
        self.nms_iou = nms_iou
        self.max_detections = max_detections

    def forward(self, cls_logits: list[torch.Tensor], box_deltas: list[torch.Tensor], anchors: list[torch.Tensor],
                image_sizes: torch.Tensor) -> dict[str, torch.Tensor]:
        """``cls_logits[l]: [B, N_l, C]``, ``box_deltas[l]: [B, N_l, 4]``, ``anchors[l]: [N_l, 4]``.

        The score threshold is applied to the logits first (sigmoid is monotonic), so the top-k
        runs over the few survivors instead of every (anchor, class) pair; the result equals
        top-k first then threshold, as torchvision does it.
        """
        batch = cls_logits[0].shape[0]
        num_classes = cls_logits[0].shape[-1]
        sizes = image_sizes.to(cls_logits[0].device)
        all_boxes, all_scores, all_labels, all_images = [], [], [], []
        for logits, deltas, level_anchors in zip(cls_logits, box_deltas, anchors):
            image, index, scores = scores_above(logits.flatten(1), self.score_threshold)
            order, rank, _ = rank_within_image(image, scores, batch)
            top = order[rank < self.pre_nms_topk]
            image, index, scores = image[top], index[top], scores[top]
            anchor_idx = torch.div(index, num_classes, rounding_mode="floor")
            decoded = self.box_coder.decode(deltas[image, anchor_idx].float(), level_anchors[anchor_idx])
            # the legacy +1 convention's last pixel is size - 1 (docs/reference/TF_ARITHMETIC.md §8)
            boxes = clip_rows(decoded, sizes[image] - self.box_coder.pixel_offset)
            labels = index - anchor_idx * num_classes
            if self.drop_zero_boxes:
                real = (boxes > 0).any(dim=1)
                boxes, scores, labels, image = boxes[real], scores[real], labels[real], image[real]
            all_boxes.append(boxes)
            all_scores.append(scores)
            all_labels.append(labels)
            all_images.append(image)
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        labels, image = torch.cat(all_labels), torch.cat(all_images)
        if self.drop_degenerate_boxes:
            valid = has_area(boxes)
            boxes, scores, labels, image = boxes[valid], scores[valid], labels[valid], image[valid]
        keep = batched_nms(boxes, scores, image * num_classes + labels, self.nms_iou)
        return pad_detections(boxes[keep], scores[keep], labels[keep], image[keep], batch, self.max_detections)


def clip_rows(boxes: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
    """Clip ``[N, 4]`` xyxy boxes, each to its own image's ``(h, w)`` in ``hw [N, 2]``."""
    h = hw[:, 0].to(boxes.dtype)
    w = hw[:, 1].to(boxes.dtype)
    zero = torch.zeros_like(h)
    return torch.stack([torch.minimum(torch.maximum(boxes[:, 0], zero), w),
                        torch.minimum(torch.maximum(boxes[:, 1], zero), h),
                        torch.minimum(torch.maximum(boxes[:, 2], zero), w),
                        torch.minimum(torch.maximum(boxes[:, 3], zero), h)], dim=1)

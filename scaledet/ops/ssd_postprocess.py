"""BlitzNet test-time post-processing (docs/reference/BLITZNET.md §2.3, §2.5, §1.7), vectorised over the batch.

Detection: softmax over C+1 classes; per class keep the top ``pre_nms_topk`` boxes (400), drop
scores <= ``score_threshold`` (0.01), class-wise greedy NMS (IoU 0.45), at most
``max_per_class`` (50) per class and ``max_detections`` (200) per image. Boxes are decoded with
the reference quirk (a box leaving the left/top edge is shifted inside, not cut) and returned in
network-input pixels; labels are 0-based foreground classes (internal class 0 = background).
Segmentation: logits bilinearly upsampled to the network input, argmax -> ``mask [B, H, W]``
(the fast label map); the logits themselves are passed on as ``mask_logits [B, C+1, h, w]`` so
the reference label map (logits resized to the original image, then argmax) can be made once the
original size is known (:func:`scaledet.data.prediction.unpack_detections`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from scaledet.ops.box_coder import BoxCoder
from scaledet.ops.postprocess import clip_boxes, has_area, pad_detections


def decode_shift_inside(box_coder: BoxCoder, loc: torch.Tensor, default_boxes: torch.Tensor) -> torch.Tensor:
    """Normalised xyxy; x1 = max(0, cx - w/2), x2 = min(1, x1 + w), same for y (reference)."""
    boxes = box_coder.decode(loc, default_boxes)
    size = boxes[..., 2:] - boxes[..., :2]
    start = boxes[..., :2].clamp(min=0.0)
    end = (start + size).clamp(max=1.0)
    return torch.cat([start, end], dim=-1)


class SSDPostProcessor(torch.nn.Module):
    def __init__(self, box_coder: BoxCoder | None = None, *, score_threshold: float = 0.01, pre_nms_topk: int = 400,
                 nms_iou: float = 0.45, max_per_class: int | None = 50, max_detections: int = 200):
        super().__init__()
        self.box_coder = box_coder or BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.score_threshold = score_threshold
        self.pre_nms_topk = pre_nms_topk
        self.nms_iou = nms_iou
        self.max_per_class = max_per_class
        self.max_detections = max_detections

    def forward(self, loc: torch.Tensor | None, conf: torch.Tensor | None, default_boxes: torch.Tensor | None,
                input_hw: tuple[int, int], image_sizes: torch.Tensor | None = None, seg: torch.Tensor | None = None,
                *, batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """``loc [B, N, 4]``, ``conf [B, N, C+1]``, ``default_boxes [N, 4]`` normalised,
        ``input_hw`` the (padded) network input size, ``image_sizes [B, 2]`` to clip to.
        ``conf`` None (a segmentation-only model): no detections for the ``batch_size`` images."""
        if conf is None:
            empty = seg.new_zeros((0,))
            out = pad_detections(empty.reshape(0, 4), empty, empty.long(), empty.long(), batch_size,
                                 self.max_detections)
            return self._add_mask(out, seg, input_hw)
        batch, _, num_outputs = conf.shape
        num_classes = num_outputs - 1
        height, width = input_hw
        scores = torch.softmax(conf.float(), dim=-1)[..., 1:].transpose(1, 2)  # [B, C, N]
        k = min(self.pre_nms_topk, scores.shape[-1])
        top_scores, top_idx = scores.topk(k, dim=-1)  # [B, C, k], sorted per class
        boxes = decode_shift_inside(self.box_coder, loc.float(), default_boxes)
        boxes = boxes * boxes.new_tensor([width, height, width, height])
        if image_sizes is not None:
            boxes = clip_boxes(boxes, image_sizes)
        picked = torch.gather(boxes, 1, top_idx.reshape(batch, -1, 1).expand(-1, -1, 4))  # [B, C*k, 4]

        flat_scores = top_scores.reshape(-1)
        candidates = torch.nonzero((flat_scores > self.score_threshold) & has_area(picked.reshape(-1, 4))).squeeze(1)
        groups = torch.div(candidates, k, rounding_mode="floor")  # image * C + class
        keep = candidates[batched_nms(picked.reshape(-1, 4)[candidates], flat_scores[candidates], groups,
                                      self.nms_iou)]
        marks = torch.zeros_like(flat_scores).index_put((keep,), torch.ones_like(flat_scores[keep]))
        kept = (marks > 0).reshape(batch, num_classes, k)
        if self.max_per_class is not None:
            # each class row is already in descending score order, so a running count ranks it
            kept = kept & (torch.cumsum(kept.int(), dim=-1) <= self.max_per_class)
        final = torch.nonzero(kept.reshape(-1)).squeeze(1)
        image_index = torch.div(final, num_classes * k, rounding_mode="floor")
        labels = torch.div(final, k, rounding_mode="floor") - image_index * num_classes
        out = pad_detections(picked.reshape(-1, 4)[final], flat_scores[final], labels, image_index, batch,
                             self.max_detections)
        return self._add_mask(out, seg, input_hw)

    @staticmethod
    def _add_mask(out: dict[str, torch.Tensor], seg: torch.Tensor | None, input_hw: tuple[int, int]):
        if seg is not None:
            logits = F.interpolate(seg.float(), size=tuple(input_hw), mode="bilinear", align_corners=False)
            out["mask"] = logits.argmax(dim=1)
            out["mask_logits"] = seg.float()
        return out

"""Faster R-CNN box coding (centre offsets over anchor size, log size ratios).

Weights (wx, wy, ww, wh) multiply the targets: (1, 1, 1, 1) is the TPU RetinaNet coder and
torchvision's RetinaNet; SSD variances (0.1, 0.2) are weights (10, 10, 5, 5).

``pixel_offset=1`` is the legacy convention of the tensorflow/tpu detection code
(docs/reference/TF_ARITHMETIC.md): a box spans ``max - min + 1`` pixels, so sizes get +1 and a
decoded box's max corner is ``min + size - 1``.
"""
from __future__ import annotations

import math

import torch

# torchvision's bound on exp() arguments when decoding sizes: log(1000 / 16).
DEFAULT_SIZE_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 size_clip: float = DEFAULT_SIZE_CLIP, pixel_offset: float = 0.0):
        self.weights = tuple(float(w) for w in weights)
        self.size_clip = size_clip
        self.pixel_offset = float(pixel_offset)

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Targets (dx, dy, dw, dh) that turn ``anchors`` into ``boxes`` (both xyxy, same shape)."""
        wx, wy, ww, wh = self.weights
        offset = self.pixel_offset
        aw = anchors[..., 2] - anchors[..., 0] + offset
        ah = anchors[..., 3] - anchors[..., 1] + offset
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        bw = boxes[..., 2] - boxes[..., 0] + offset
        bh = boxes[..., 3] - boxes[..., 1] + offset
        bx = boxes[..., 0] + 0.5 * bw
        by = boxes[..., 1] + 0.5 * bh
        return torch.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah,
                            ww * torch.log(bw / aw), wh * torch.log(bh / ah)], dim=-1)

    def decode(self, deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`encode`; broadcasts over leading dimensions."""
        wx, wy, ww, wh = self.weights
        offset = self.pixel_offset
        anchors = anchors.to(deltas.dtype)
        aw = anchors[..., 2] - anchors[..., 0] + offset
        ah = anchors[..., 3] - anchors[..., 1] + offset
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        cx = deltas[..., 0] / wx * aw + ax
        cy = deltas[..., 1] / wy * ah + ay
        w = torch.exp((deltas[..., 2] / ww).clamp(max=self.size_clip)) * aw
        h = torch.exp((deltas[..., 3] / wh).clamp(max=self.size_clip)) * ah
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w - offset, cy + 0.5 * h - offset], dim=-1)

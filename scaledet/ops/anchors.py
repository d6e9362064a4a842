"""Anchor boxes for dense detectors on a pyramid of feature maps.

Written by hand: torchvision's AnchorGenerator takes an ImageList and per-call Python loops; we
need the TPU conventions (centre offset, scale-major order, w/h aspect) as well as torchvision's
(no offset, ratio-major order, h/w aspect, rounded base anchors) behind one small class.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from scaledet.errors import UsageError


class AnchorGenerator:
    """Anchors in absolute xyxy pixels, flattened per level in (y, x, anchor) order.

    ``sizes[i]`` lists the anchor sides (one per scale) of level i. For aspect ratio ``a`` the
    width is multiplied by sqrt(a) and the height divided by it (``a = w/h``, the TPU convention)
    unless ``ratio_is_h_over_w`` (torchvision).
    """

    def __init__(self, strides: Sequence[int], sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float], *,
                 center_offset: float = 0.5, scale_major: bool = True, ratio_is_h_over_w: bool = False,
                 round_base: bool = False):
        if len(strides) != len(sizes) or len({len(s) for s in sizes}) != 1:
            raise UsageError("need one list of sizes per stride, all of the same length")
        self.strides = tuple(int(s) for s in strides)
        self.sizes = tuple(tuple(float(x) for x in level) for level in sizes)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.center_offset = center_offset
        self.scale_major = scale_major
        self.ratio_is_h_over_w = ratio_is_h_over_w
        self.round_base = round_base
        self._cell = [self._cell_anchors(level) for level in self.sizes]
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @classmethod
    def tpu(cls, min_level: int = 3, max_level: int = 7, anchor_size: float = 4.0, num_scales: int = 3,
            aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5)) -> "AnchorGenerator":
        """tensorflow/tpu ``anchor.py``: side = anchor_size * 2^level * 2^(s/num_scales)."""
        levels = range(min_level, max_level + 1)
        sizes = [[anchor_size * 2 ** level * 2 ** (s / num_scales) for s in range(num_scales)] for level in levels]
        return cls(strides=[2 ** level for level in levels], sizes=sizes, aspect_ratios=aspect_ratios)

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.sizes[0]) * len(self.aspect_ratios)

    def _cell_anchors(self, level_sizes: Sequence[float]) -> torch.Tensor:
        scales = torch.tensor(level_sizes, dtype=torch.float64)
        root = torch.tensor(self.aspect_ratios, dtype=torch.float64).sqrt()
        w_mult, h_mult = (1 / root, root) if self.ratio_is_h_over_w else (root, 1 / root)
        if self.scale_major:  # outer loop over scales, inner over ratios
            ws = (scales[:, None] * w_mult[None, :]).reshape(-1)
            hs = (scales[:, None] * h_mult[None, :]).reshape(-1)
        else:
            ws = (w_mult[:, None] * scales[None, :]).reshape(-1)
            hs = (h_mult[:, None] * scales[None, :]).reshape(-1)
        cell = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
        return cell.round() if self.round_base else cell

    def grid_sizes(self, image_h: int, image_w: int) -> list[tuple[int, int]]:
        return [(math.ceil(image_h / s), math.ceil(image_w / s)) for s in self.strides]

    def num_anchors(self, image_h: int, image_w: int) -> int:
        return sum(h * w for h, w in self.grid_sizes(image_h, image_w)) * self.num_anchors_per_location

    def __call__(self, feature_sizes: Sequence[tuple[int, int]], device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        """One ``[H*W*A, 4]`` tensor per level for the given feature-map sizes."""
        key = (tuple((int(h), int(w)) for h, w in feature_sizes), str(device), dtype)
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
        if not tracing and key in self._cache:
            return self._cache[key]
        out = []
        for (h, w), stride, cell in zip(feature_sizes, self.strides, self._cell):
            ys = (torch.arange(h, device=device, dtype=torch.float32) + self.center_offset) * stride
            xs = (torch.arange(w, device=device, dtype=torch.float32) + self.center_offset) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + cell.to(device=device, dtype=torch.float32)[None]).reshape(-1, 4).to(dtype))
        if not tracing:
            self._cache[key] = out
        return out

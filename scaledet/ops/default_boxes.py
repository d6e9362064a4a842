"""SSD default boxes as BlitzNet defines them (docs/reference/BLITZNET.md §2.1).

Written by hand: torchvision's ``DefaultBoxGenerator`` uses a different scale schedule, clips
to [0, 1] and orders the boxes differently. Coordinates are normalised xyxy, centres on the map
grid ((j + 0.5) / f_w, (i + 0.5) / f_h), not clipped, flattened (y, x, box) map by map.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from scaledet.errors import UsageError

# (smallest, min, max) scale per number of source maps; reproduces the reference configs:
# 6 maps = 300 no-x4, 7 = 300 x4 and 512 no-x4, 8 = 512 x4.
BLITZNET_SCALES: dict[int, tuple[float, float, float]] = {
    6: (0.10, 0.20, 0.95),
    7: (0.04, 0.10, 0.95),
    8: (0.02, 0.08, 0.95),
}


def scale_schedule(num_layers: int, smallest: float, min_scale: float, max_scale: float) -> list[float]:
    """``num_layers + 1`` scales: ``smallest`` for the finest map, evenly spaced ``min..max``
    for the others, and one more step past ``max`` as the last map's "next" scale."""
    if num_layers < 3:
        raise UsageError(f"the BlitzNet scale schedule needs at least 3 maps, got {num_layers}")
    step = (max_scale - min_scale) / (num_layers - 2)
    return [smallest] + [min_scale + i * step for i in range(num_layers - 1)] + [max_scale + step]


class DefaultBoxes:
    """Per location: square s_k, then w/h = s_k*sqrt(r), s_k/sqrt(r) for r in 2, 1/2, 3, 1/3
    (for each ``aspect_ratios`` entry a, the pair a, 1/a), then the square sqrt(s_k * s_{k+1})."""

    def __init__(self, scales: Sequence[float], aspect_ratios: Sequence[float] = (2.0, 3.0)):
        self.scales = [float(s) for s in scales]
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self._cache: dict[tuple, torch.Tensor] = {}

    @classmethod
    def blitznet(cls, num_layers: int, scales: tuple[float, float, float] | None = None,
                 aspect_ratios: Sequence[float] = (2.0, 3.0)) -> "DefaultBoxes":
        if scales is None:
            if num_layers not in BLITZNET_SCALES:
                raise UsageError(f"no reference BlitzNet scales for {num_layers} source maps; pass "
                                 f"(smallest, min, max) explicitly")
            scales = BLITZNET_SCALES[num_layers]
        return cls(scale_schedule(num_layers, *scales), aspect_ratios)

    @property
    def boxes_per_location(self) -> int:
        return 2 + 2 * len(self.aspect_ratios)

    def shapes(self, layer: int) -> torch.Tensor:
        """``[A, 2]`` (w, h) of the boxes of map ``layer``."""
        s, s_next = self.scales[layer], self.scales[layer + 1]
        wh = [(s, s)]
        for a in self.aspect_ratios:
            r = math.sqrt(a)
            wh += [(s * r, s / r), (s / r, s * r)]
        wh.append((math.sqrt(s * s_next),) * 2)
        return torch.tensor(wh, dtype=torch.float64)

    def num_boxes(self, feature_sizes: Sequence[tuple[int, int]]) -> int:
        return sum(h * w for h, w in feature_sizes) * self.boxes_per_location

    def __call__(self, feature_sizes: Sequence[tuple[int, int]], device: torch.device | str = "cpu") -> torch.Tensor:
        """``[N, 4]`` normalised xyxy boxes for maps of the given (h, w), finest first."""
        sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
        if len(sizes) != len(self.scales) - 1:
            raise UsageError(f"default boxes were set up for {len(self.scales) - 1} maps, got {len(sizes)}")
        key = (sizes, str(device))
        if key not in self._cache:
            out = []
            for layer, (h, w) in enumerate(sizes):
                cy = (torch.arange(h, dtype=torch.float64) + 0.5) / h
                cx = (torch.arange(w, dtype=torch.float64) + 0.5) / w
                yy, xx = torch.meshgrid(cy, cx, indexing="ij")
                centres = torch.stack([xx, yy], dim=-1).reshape(-1, 1, 2)
                half = self.shapes(layer)[None] / 2
                out.append(torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4))
            self._cache[key] = torch.cat(out).to(device=device, dtype=torch.float32)
        return self._cache[key]

"""BlitzNet segmentation head (docs/reference/BLITZNET.md §1.7): every detection source -> conv to
``base_channels`` + ReLU, nearest resize to the finest map, concat, 3x3 conv -> class logits."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledet.errors import UsageError
from scaledet.models.common import FeatureInfo


class SegHead(nn.Module):
    """Logits ``[B, num_outputs, h, w]`` at the size of the first (finest) source."""

    def __init__(self, in_features: list[FeatureInfo], num_outputs: int, *, base_channels: int = 64,
                 first_kernel: int = 1):
        super().__init__()
        self.reduce = nn.ModuleList(nn.Conv2d(f.channels, base_channels, first_kernel, padding=first_kernel // 2)
                                    for f in in_features)
        self.classifier = nn.Conv2d(base_channels * len(in_features), num_outputs, 3, padding=1)
        for conv in list(self.reduce) + [self.classifier]:
            nn.init.xavier_uniform_(conv.weight)  # slim default (Glorot uniform), zero bias
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.reduce):
            raise UsageError(f"SegHead built for {len(self.reduce)} sources, got {len(features)}")
        size = features[0].shape[-2:]
        # PyTorch "nearest" picks floor(i * in / out), the same pixel as TF1's legacy resize.
        maps = [F.interpolate(F.relu(conv(x)), size=size, mode="nearest") for conv, x in zip(self.reduce, features)]
        return self.classifier(torch.cat(maps, dim=1))

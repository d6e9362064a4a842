"""SSD-style detection heads of BlitzNet: one non-shared pair of 3x3 convs per source map
(docs/reference/BLITZNET.md §1.6). Bias, no BN, no activation."""
from __future__ import annotations

import torch
import torch.nn as nn

from scaledet.errors import UsageError
from scaledet.models.backbones.blitz_resnet import variance_scaling_
from scaledet.models.common import FeatureInfo


def flatten_nhwc(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """``[B, A*K, H, W]`` -> ``[B, H*W*A, K]`` in (y, x, anchor) order, as the reference's NHWC reshape."""
    b = x.shape[0]
    return x.permute(0, 2, 3, 1).reshape(b, -1, per_anchor)


class SSDHead(nn.Module):
    """Returns ``loc [B, N, 4]`` and ``conf [B, N, num_outputs]`` concatenated over the sources
    in the order given. ``num_outputs`` counts the background class."""

    def __init__(self, in_features: list[FeatureInfo], num_outputs: int, num_anchors: int = 6):
        super().__init__()
        self.num_outputs = num_outputs
        self.num_anchors = num_anchors
        self.loc = nn.ModuleList(nn.Conv2d(f.channels, num_anchors * 4, 3, padding=1) for f in in_features)
        self.conf = nn.ModuleList(nn.Conv2d(f.channels, num_anchors * num_outputs, 3, padding=1)
                                  for f in in_features)
        for conv in list(self.loc) + list(self.conf):
            variance_scaling_(conv.weight, 0.1)  # reference: variance scaling, factor 0.1
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(features) != len(self.loc):
            raise UsageError(f"SSDHead built for {len(self.loc)} sources, got {len(features)}")
        loc = [flatten_nhwc(conv(x), 4) for conv, x in zip(self.loc, features)]
        conf = [flatten_nhwc(conv(x), self.num_outputs) for conv, x in zip(self.conf, features)]
        return torch.cat(loc, dim=1), torch.cat(conf, dim=1)

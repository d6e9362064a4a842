"""Feature Pyramid Network with RetinaNet's extra P6/P7 levels.

Written by hand rather than wrapping ``torchvision.ops.FeaturePyramidNetwork`` because our necks
take and expose ``feature_info`` and return a plain list; the layout and init are torchvision's
(lateral 1x1 and output 3x3 convs with bias, nearest top-down upsampling, kaiming-uniform a=1),
so ``retinanet_resnet50_fpn`` weights convert one to one.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledet.errors import UsageError
from scaledet.models.common import FeatureInfo


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=True)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    nn.init.zeros_(conv.bias)
    return conv


class FPN(nn.Module):
    """Top-down pyramid over the upstream maps plus ``extra_levels`` stride-2 3x3 convs.

    ``extra_input``: where P6 comes from — ``"p5"`` (torchvision ``retinanet_resnet50_fpn``, whose
    ``LastLevelP6P7(256, 256)`` convolves P5) or ``"c5"`` (the RetinaNet paper and torchvision's
    v2 model). Each further level is a 3x3/2 conv on ReLU of the previous one.
    """

    def __init__(self, in_features: list[FeatureInfo], out_channels: int = 256, *, extra_levels: int = 2,
                 extra_input: Literal["p5", "c5"] = "p5"):
        super().__init__()
        if extra_input not in ("p5", "c5"):
            raise UsageError(f"unknown extra_input {extra_input!r}; allowed: p5, c5")
        strides = [f.stride for f in in_features]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise UsageError(f"FPN needs inputs whose strides double level to level, got {strides}")
        self.extra_input = extra_input
        self.lateral_convs = nn.ModuleList(_conv(f.channels, out_channels, 1) for f in in_features)
        self.output_convs = nn.ModuleList(_conv(out_channels, out_channels, 3) for _ in in_features)
        extra_cin = out_channels if extra_input == "p5" else in_features[-1].channels
        self.extra_convs = nn.ModuleList(
            _conv(extra_cin if i == 0 else out_channels, out_channels, 3, stride=2) for i in range(extra_levels)
        )
        top = strides[-1]
        self.feature_info = [FeatureInfo(out_channels, s) for s in strides] + [
            FeatureInfo(out_channels, top * 2 ** (i + 1)) for i in range(extra_levels)
        ]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        merged = self.lateral_convs[-1](features[-1])
        outputs = [self.output_convs[-1](merged)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[i](features[i])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output_convs[i](merged))
        x = outputs[-1] if self.extra_input == "p5" else features[-1]
        for i, conv in enumerate(self.extra_convs):
            x = conv(x if i == 0 else F.relu(x))
            outputs.append(x)
        return outputs

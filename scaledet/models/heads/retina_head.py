"""RetinaNet class and box subnets: convolutions shared across levels, optional norm per level."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from scaledet.errors import UsageError
from scaledet.models.common import TPU_RETINANET_NORM, FeatureInfo, NormSettings, activation


class SharedTower(nn.Module):
    """A class or box tower whose convolutions are shared by every pyramid level (BatchNorm or
    GroupNorm per level with ``per_level_bn``), ending in the shared predictor."""

    def __init__(self, cin: int, width: int, num_convs: int, num_levels: int, norm: str,
                 norm_settings: NormSettings, act: str, outputs: int, init_std: float, predictor_std: float):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(cin if i == 0 else width, width, 3, padding=1, bias=True) for i in range(num_convs)
        )
        if norm == "per_level_bn":
            # TPU RetinanetHead: conv weights shared by all levels, BN statistics kept per level.
            self.norms = nn.ModuleList(
                nn.ModuleList(norm_settings.make(width) for _ in range(num_convs)) for _ in range(num_levels)
            )
        elif norm == "gn":
            self.norms = nn.ModuleList([nn.ModuleList(nn.GroupNorm(32, width) for _ in range(num_convs))])
        elif norm == "none":
            self.norms = None
        else:
            raise UsageError(f"unknown head norm {norm!r}; allowed: per_level_bn, gn, none")
        self.act = activation(act)
        self.predictor = nn.Conv2d(width, outputs, 3, padding=1, bias=True)
        for conv in self.convs:
            nn.init.normal_(conv.weight, std=init_std)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.predictor.weight, std=predictor_std)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[level if len(self.norms) > 1 else 0][i](x)
            x = self.act(x)
        return self.predictor(x)


class RetinaHead(nn.Module):
    """Returns per level the raw ``[B, A*C, H, W]`` class logits and ``[B, A*4, H, W]`` deltas.

    Channel layout is anchor-major (``a * C + c``), as torchvision, so weights convert directly.
    Init follows the TPU head (towers N(0, 0.01), predictors N(0, 1e-5), prior-probability class
    bias); ``predictor_init_std=0.01`` gives torchvision's.
    """

    def __init__(self, in_features: list[FeatureInfo], num_classes: int, num_anchors: int, *, width: int = 256,
                 num_convs: int = 4, norm: str = "per_level_bn", norm_settings: NormSettings = TPU_RETINANET_NORM,
                 act: str = "relu", prior_prob: float = 0.01, predictor_init_std: float = 1e-5):
        super().__init__()
        cin = level_channels(in_features, "RetinaHead")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.strides = [f.stride for f in in_features]
        levels = len(in_features)
        self.cls_tower = SharedTower(cin, width, num_convs, levels, norm, norm_settings, act, num_anchors * num_classes,
                                0.01, predictor_init_std)
        self.box_tower = SharedTower(cin, width, num_convs, levels, norm, norm_settings, act, num_anchors * 4,
                                0.01, predictor_init_std)
        nn.init.constant_(self.cls_tower.predictor.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        return {
            "cls_logits": [self.cls_tower(f, i) for i, f in enumerate(features)],
            "box_deltas": [self.box_tower(f, i) for i, f in enumerate(features)],
        }


def level_channels(in_features: list[FeatureInfo], head: str) -> int:
    """The one channel count of every level a head reads (its towers' input width)."""
    channels = sorted({f.channels for f in in_features})
    if len(channels) != 1:
        raise UsageError(f"{head} needs the same number of channels on every level, got {channels}")
    return channels[0]


def flatten_level(x: torch.Tensor, per_anchor: int) -> torch.Tensor:
    """``[B, A*K, H, W] -> [B, H*W*A, K]`` in (y, x, anchor) order, matching the anchors."""
    b, _, h, w = x.shape
    return x.view(b, -1, per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, per_anchor)

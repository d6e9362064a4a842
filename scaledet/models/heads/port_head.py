"""The MindSpore NAS-FPN port's RetinaNet head: one class and one box tower per pyramid level.

Unlike :class:`~scaledet.models.heads.retina_head.RetinaHead`, nothing is shared across levels,
no conv has a bias and there is no norm (docs/reference/MINDSPORE_FORMATS.md §6). The class
predictor has ``num_classes + 1`` outputs per anchor, channel 0 being the port's sigmoid
"background" class. Outputs are raw ``[B, A*K, H, W]`` maps with channel ``a * K + k``, as
``RetinaHead``'s, so :func:`~scaledet.models.heads.retina_head.flatten_level` reads both.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from scaledet.models.common import FeatureInfo
from scaledet.models.heads.retina_head import level_channels


class PerLevelTower(nn.Sequential):
    """``num_convs`` x (3x3 conv without bias, ReLU), then a 3x3 predictor without bias.

    Indices 0, 2, ..., 2 * num_convs hold the convs, the port's ``feats`` layout."""

    def __init__(self, cin: int, width: int, num_convs: int, outputs: int):
        layers: list[nn.Module] = []
        for i in range(num_convs):
            layers += [nn.Conv2d(cin if i == 0 else width, width, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(width if num_convs else cin, outputs, 3, padding=1, bias=False))
        super().__init__(*layers)


class PortRetinaHead(nn.Module):
    """Per level: class logits ``[B, A*(C+1), H, W]`` (channel ``a*(C+1)`` is background) and box
    deltas ``[B, A*4, H, W]`` in scaledet's (dx, dy, dw, dh) order.

    The port orders its deltas (dy, dx, dh, dw); ``scaledet convert mindspore-nasfpn`` permutes the
    box predictors' output channels, so the same weights give scaledet's order here.
    Init is the port's: every conv TruncatedNormal(0.01), cut at two standard deviations.
    """

    def __init__(self, in_features: list[FeatureInfo], num_classes: int, num_anchors: int, *,
                 width: int = 256, num_convs: int = 4, init_std: float = 0.01):
        super().__init__()
        cin = level_channels(in_features, "PortRetinaHead")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        outputs = num_anchors * (num_classes + 1)
        self.cls_towers = nn.ModuleList(PerLevelTower(cin, width, num_convs, outputs) for _ in in_features)
        self.box_towers = nn.ModuleList(PerLevelTower(cin, width, num_convs, num_anchors * 4) for _ in in_features)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                truncated_normal_(module.weight, init_std)

    def forward(self, features: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        return {
            "cls_logits": [tower(f) for tower, f in zip(self.cls_towers, features)],
            "box_deltas": [tower(f) for tower, f in zip(self.box_towers, features)],
        }


def truncated_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """MindSpore's ``TruncatedNormal(sigma)``: N(0, sigma) redrawn outside +-2 sigma
    (docs/reference/MINDSPORE_FORMATS.md §6)."""
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)

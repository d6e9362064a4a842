"""Contracts and small building blocks shared by every backbone, neck and head.

Contract: a backbone or neck has ``feature_info: list[FeatureInfo]`` describing, in order,
each feature map its ``forward`` returns (a ``list[Tensor]``). Consumers size themselves
from that declaration and never from hard-coded channel counts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class FeatureInfo:
    channels: int
    stride: int

    @property
    def level(self) -> int:
        return self.stride.bit_length() - 1


@dataclass(frozen=True)
class NormSettings:
    """BatchNorm hyper-parameters in PyTorch convention (momentum = 1 - TF decay)."""

    momentum: float = 0.1
    eps: float = 1e-5

    @classmethod
    def from_tf(cls, decay: float, eps: float) -> "NormSettings":
        return cls(momentum=round(1.0 - decay, 10), eps=eps)

    def make(self, channels: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(channels, momentum=self.momentum, eps=self.eps)


# tensorflow/tpu RetinaNet defaults: decay 0.997, eps 1e-4 (docs/reference/SPINENET.md §1.16).
TPU_RETINANET_NORM = NormSettings.from_tf(0.997, 1e-4)


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name in ("swish", "silu"):
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; allowed: relu, swish")


class ConvNormAct(nn.Sequential):
    """conv (no bias) -> BN -> optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, *, norm: NormSettings,
                 act: str | None = None, groups: int = 1):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False, groups=groups),
            norm.make(cout),
        ]
        if act is not None:
            layers.append(activation(act))
        super().__init__(*layers)


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth on a residual branch (per-sample), as in the TPU blocks."""
    if not training or rate <= 0.0:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NCHW batch at the bottom/right so H and W divide ``multiple``."""
    h, w = images.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return images
    return torch.nn.functional.pad(images, (0, pw, 0, ph))

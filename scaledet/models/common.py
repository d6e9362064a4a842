"""Contracts and small building blocks shared by every backbone, neck and head.

Contract: a backbone or neck has ``feature_info: list[FeatureInfo]`` describing, in order,
each feature map its ``forward`` returns (a ``list[Tensor]``). Consumers size themselves
from that declaration and never from hard-coded channel counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, Mapping, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from scaledet.errors import UsageError


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


# A builder's ``norm`` argument: settings, a mapping from a YAML config, or None for the default.
NormLike = Union[NormSettings, Mapping[str, float], None]


def norm_settings(norm: NormLike, default: NormSettings) -> NormSettings:
    """The one place a builder's ``norm`` argument becomes :class:`NormSettings`: ``None`` is
    ``default``; a mapping (``{momentum, eps}`` in PyTorch convention, as YAML gives it) is
    converted; settings pass through."""
    if norm is None:
        return default
    if isinstance(norm, NormSettings):
        return norm
    allowed = [f.name for f in fields(NormSettings)]
    unknown = sorted(set(norm) - set(allowed))
    if unknown:
        raise UsageError(f"norm settings take {', '.join(allowed)}; got unknown {', '.join(unknown)}")
    return NormSettings(**norm)


# tensorflow/tpu RetinaNet defaults: decay 0.997, eps 1e-4 (docs/reference/SPINENET.md §1.16).
TPU_RETINANET_NORM = NormSettings.from_tf(0.997, 1e-4)


def activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name in ("swish", "silu"):
        return nn.SiLU(inplace=True)
    raise UsageError(f"unknown activation {name!r}; allowed: relu, swish")


# How strided convs and max pools pad (docs/reference/TF_ARITHMETIC.md):
# "symmetric": kernel // 2 on every side (PyTorch's usual choice, and the tensorflow/tpu convs);
# "same": TensorFlow's 'SAME', which puts the odd extra row/column at the bottom/right.
Padding = Literal["symmetric", "same"]
PADDINGS: tuple[str, ...] = ("symmetric", "same")


def check_padding(padding: str, owner: str) -> None:
    if padding not in PADDINGS:
        raise UsageError(f"{owner}: unknown padding {padding!r}; allowed: {', '.join(PADDINGS)}")


def tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial dimension under TensorFlow's 'SAME' rule."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: int, stride: int, value: float) -> torch.Tensor:
    top, bottom = tf_same_pads(x.shape[-2], kernel, stride)
    left, right = tf_same_pads(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` padded like TensorFlow's 'SAME' (parameter names unchanged).

    Written by hand: PyTorch's ``padding="same"`` refuses strides above 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, self.kernel_size[0], self.stride[0], 0.0))


class MaxPool2dSame(nn.MaxPool2d):
    """``nn.MaxPool2d`` padded with -inf like TensorFlow's 'SAME'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_pad_same(x, self.kernel_size, self.stride, float("-inf")))


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, *, padding: Padding = "symmetric",
           bias: bool = False, groups: int = 1) -> nn.Conv2d:
    """A square conv; 'same' only changes strided convs (odd kernels at stride 1 agree anyway)."""
    if padding == "same" and stride > 1:
        return Conv2dSame(cin, cout, kernel, stride, padding=0, bias=bias, groups=groups)
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=bias, groups=groups)


def max_pool2d(kernel: int, stride: int, *, padding: Padding = "symmetric") -> nn.MaxPool2d:
    if padding == "same":
        return MaxPool2dSame(kernel, stride)
    return nn.MaxPool2d(kernel, stride, padding=kernel // 2)


class ConvNormAct(nn.Sequential):
    """conv (no bias) -> BN -> optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, *, norm: NormSettings,
                 act: str | None = None, groups: int = 1, padding: Padding = "symmetric"):
        layers: list[nn.Module] = [
            conv2d(cin, cout, kernel, stride, padding=padding, groups=groups),
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
    return x * mask.div_(keep)  # scale the [B,1,1,1] mask, not the branch: one pass over x instead of two


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad an NCHW batch at the bottom/right so H and W divide ``multiple``."""
    h, w = images.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return images
    return torch.nn.functional.pad(images, (0, pw, 0, ph))
